//! `proxy-status` and `proxy-config`: what each proxy holds, read from the proxies themselves.

use crate::support::Mesh;

#[test]
fn proxy_status_and_proxy_config_show_what_each_proxy_runs() {
    let mesh = Mesh::up();
    let status = mesh.ok(&["proxy-status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("CDS") && lines[0].contains("ISTIOD"), "{status}");
    let pods = mesh.status()["pods"].as_array().unwrap().len();
    assert_eq!(lines.len() - 1, pods, "one row per proxy:\n{status}");
    assert!(lines[1..].iter().all(|l| l.contains("SYNCED")), "every proxy is synced after up:\n{status}");

    let clusters = mesh.ok(&["proxy-config", "clusters", "curl"]);
    let row = clusters
        .lines()
        .find(|l| l.starts_with("httpbin.default.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no httpbin cluster:\n{clusters}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..], ["8000", "-", "OUTBOUND", "EDS", "1", "LEAST_REQUEST"], "{row}");

    let routes = mesh.ok(&["proxy-config", "routes", "curl.default"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("8000") && l.contains("httpbin.default.svc.cluster.local:8000") && l.contains("/*")),
        "{routes}"
    );
    let endpoints = mesh.ok(&["proxy-config", "endpoints", "deploy/curl"]);
    let httpbin_inbound = mesh.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workload"] == "httpbin")
        .map(|p| p["proxy_addrs"]["inbound:8080"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        endpoints.lines().any(|l| l.starts_with(&httpbin_inbound) && l.contains("HEALTHY")),
        "the endpoint is httpbin's sidecar inbound {httpbin_inbound}:\n{endpoints}"
    );
    let json = mesh.ok(&["proxy-config", "clusters", "curl", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["outbound|8000||httpbin.default.svc.cluster.local"]["endpoints"].is_array(), "{json}");

    let missing = mesh.run(&["proxy-config", "routes", "nosuchpod"]);
    assert!(!missing.status.success());
    assert!(crate::support::text(&missing).contains("no pod \"nosuchpod\""), "{}", crate::support::text(&missing));
}
