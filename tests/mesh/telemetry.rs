//! Istio's standard metrics as the proxies expose them: both reporters of one hop, the caller
//! named through the metadata exchange, sizes, and an exposition `promtool` accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::{get, series, sum, Mesh};

/// `promtool check metrics` on a proxy's exposition, when CI names promtool
/// (`MESHRIG_PROMTOOL`; `.ci/run` installs Debian's `prometheus` package for it). It must
/// parse (exit 1 is a format error) and lint clean but for the one problem Istio's own metric
/// name has: promtool wants seconds, Istio's name says milliseconds (exit 3, lint only).
fn promtool_accepts(admin: SocketAddr) {
    let Ok(promtool) = std::env::var("MESHRIG_PROMTOOL") else {
        eprintln!("MESHRIG_PROMTOOL is not set: the exposition is not checked with promtool");
        return;
    };
    let text = get(admin, "localhost", "/stats/prometheus").unwrap().body;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let istios_name = "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"";
    let only_istios_name =
        out.status.code() == Some(3) && said.lines().all(|l| l.trim().is_empty() || l == istios_name);
    assert!(out.status.success() || only_istios_name, "promtool check metrics:\n{said}\n{text}");
}

#[test]
fn one_hop_is_reported_by_both_sides_with_the_caller_named_and_its_sizes() {
    let mesh = Mesh::up();
    let body = mesh.ok(&["exec", "curl", "--", "curl", "-s", "http://httpbin:8000/headers"]);
    // The server-side proxy takes the exchange headers off before the app sees the request.
    assert!(body.contains("X-Forwarded-Client-Cert"), "{body}");
    assert!(!body.to_ascii_lowercase().contains("x-envoy-peer-metadata"), "{body}");

    let (client, server) = (mesh.admin("curl"), mesh.admin("httpbin"));
    let hop = [
        "source_workload=\"curl\"",
        "source_app=\"curl\"",
        "source_workload_namespace=\"default\"",
        "destination_workload=\"httpbin\"",
        "destination_app=\"httpbin\"",
        "destination_version=\"v1\"",
        "destination_service=\"httpbin.default.svc.cluster.local\"",
        "destination_service_name=\"httpbin\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/curl\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/httpbin\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { hop.iter().chain(extra).copied().collect() };
    let outbound = with(&["reporter=\"source\"", "connection_security_policy=\"unknown\""]);
    let inbound = with(&["reporter=\"destination\"", "connection_security_policy=\"mutual_tls\""]);
    assert_eq!(sum(client, "istio_requests_total", &outbound), 1.0, "{:#?}", series(client, "istio_requests_total"));
    assert_eq!(sum(server, "istio_requests_total", &inbound), 1.0, "{:#?}", series(server, "istio_requests_total"));
    for admin in [client, server] {
        assert_eq!(sum(admin, "istio_request_duration_milliseconds_count", &hop), 1.0);
        assert_eq!(sum(admin, "istio_request_bytes_count", &hop), 1.0);
        // The response's size counts its headers and the body curl printed.
        let response = sum(admin, "istio_response_bytes_sum", &hop);
        assert!(response > body.len() as f64 && response < body.len() as f64 + 1024.0, "{response} for {}", body.len());
        let request = sum(admin, "istio_request_bytes_sum", &hop);
        assert!(request > 30.0 && request < 4096.0, "{request}");
    }
    assert_eq!(series(server, "istio_build").len(), 1);

    // A request through the ingress gateway: the gateway reports as the source, and the
    // server side names it as its caller.
    let gw = mesh.gateway();
    mesh.apply_yaml(
        "gw.yaml",
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: ['*']
  gateways: [httpbin-gateway]
  http: [{route: [{destination: {host: httpbin, port: {number: 8000}}}]}]
",
    );
    assert_eq!(get(gw, "httpbin.example.com", "/status/418").unwrap().status, 418);
    let from_gateway = [
        "source_workload=\"istio-ingressgateway\"",
        "source_workload_namespace=\"istio-system\"",
        "response_code=\"418\"",
    ];
    assert_eq!(
        sum(server, "istio_requests_total", &from_gateway),
        1.0,
        "{:#?}",
        series(server, "istio_requests_total")
    );
    let gateway_admin = mesh.admin_in("istio-system", "istio-ingressgateway");
    assert_eq!(sum(gateway_admin, "istio_requests_total", &["reporter=\"source\"", "response_code=\"418\""]), 1.0);

    for admin in [client, server, gateway_admin] {
        promtool_accepts(admin);
    }
}
