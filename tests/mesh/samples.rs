//! Istio's own sample manifests, unmodified, behave as Istio's docs say.

use crate::support::{get, sample, text, Mesh};

#[test]
fn istio_httpbin_curl_and_gateway_samples_work() {
    let mesh = Mesh::up();
    let files = ["httpbin/httpbin.yaml", "curl/curl.yaml", "httpbin/httpbin-gateway.yaml"]
        .map(|f| sample(f).display().to_string());
    let mut args = vec!["apply", "--wait"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let applied = mesh.ok(&args);
    assert!(applied.contains("gateway/httpbin-gateway created"), "{applied}");

    // Through the ingress gateway on localhost: the VirtualService routes every host and path.
    let gw = mesh.gateway();
    let r = get(gw, "anything.example", "/headers").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("server"), Some("istio-envoy"));
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["headers"]["Host"][0], "anything.example", "the gateway keeps the Host header");
    assert!(json["headers"]["X-Request-Id"][0].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(get(gw, "x", "/status/503").unwrap().status, 503);

    // From inside the curl workload, by every name form, on port 8000.
    for host in ["httpbin", "httpbin.default", "httpbin.default.svc.cluster.local"] {
        let out = mesh.run(&[
            "exec",
            "curl",
            "--",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{host}:8000/get"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{host}: {}", text(&out));
    }
    let out = mesh.run(&["exec", "deploy/curl", "--", "curl", "-sS", "-D", "-", "http://httpbin:8000/status/418"]);
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("418") && reply.contains("I'm a teapot!"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("server: envoy"), "a sidecar answers with server: envoy:\n{reply}");

    // A name the mesh does not know is not silently routed somewhere else.
    let out = mesh.run(&[
        "exec",
        "curl",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://nosuchservice:8000/",
    ]);
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn a_misspelt_field_is_refused_with_its_line_and_nothing_is_applied() {
    let mesh = Mesh::up();
    let bad = mesh.work.path().join("bad.yaml");
    // Document 1 is fine; document 2 misspells `host` on line 17. Neither may be stored.
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: typo-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: typo
spec:
  hosts: [\"*\"]
  gateways: [typo-gateway]
  http:
  - route:
    - destination:
        hots: httpbin
",
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("bad.yaml:21:"), "names the file and line:\n{msg}");
    assert!(msg.contains("document 2"), "{msg}");
    assert!(msg.contains("spec.http[0].route[0].destination"), "names the field path:\n{msg}");
    assert!(msg.contains("did you mean `host`"), "{msg}");
    let gws = mesh.ok(&["get", "gateways", "-A"]);
    assert!(!gws.contains("typo-gateway"), "an apply is all or nothing:\n{gws}");

    // A semantic error (all weights zero) is refused by the control plane, also all or nothing.
    let weights = mesh.work.path().join("weights.yaml");
    std::fs::write(
        &weights,
        "apiVersion: v1
kind: Namespace
metadata: {name: extra}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: zero}
spec:
  hosts: [httpbin]
  http:
  - route:
    - {destination: {host: httpbin, subset: v1}, weight: 0}
    - {destination: {host: httpbin, subset: v2}, weight: 0}
",
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", weights.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing was applied"), "{}", text(&out));
    assert!(!mesh.ok(&["get", "ns"]).contains("extra"));
}
