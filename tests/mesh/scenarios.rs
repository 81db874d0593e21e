//! Scenarios from Istio's tasks, run on the project's samples (`tests/mesh`) and on Istio's own
//! (`tests/conformance`).

use std::path::Path;

use crate::support::{get, requests_total, Mesh};

/// Istio's httpbin task: httpbin, curl and the httpbin gateway from `dir` (Istio's layout).
pub fn httpbin_scenario(mesh: &Mesh, dir: &Path) {
    let files = ["httpbin/httpbin.yaml", "curl/curl.yaml", "httpbin/httpbin-gateway.yaml"]
        .map(|f| dir.join(f).display().to_string());
    let mut args = vec!["apply", "--wait"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let applied = mesh.ok(&args);
    assert!(applied.contains("gateway/httpbin-gateway created"), "{applied}");
    assert!(!applied.contains("not enforced"), "everything in the samples is enforced:\n{applied}");

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
        assert_eq!(mesh.http_code("curl", "default", &format!("http://{host}:8000/get")), "200", "{host}");
    }
    let out = mesh.run(&["exec", "deploy/curl", "--", "curl", "-sS", "-D", "-", "http://httpbin:8000/status/418"]);
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("418") && reply.contains("I'm a teapot!"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("server: envoy"), "a sidecar answers with server: envoy:\n{reply}");

    // The gateway reports each request in Istio's metric, with Istio's label names.
    let series = requests_total(mesh.admin("istio-ingressgateway"));
    let (line, _) = series
        .iter()
        .find(|(labels, _)| labels.contains("response_code=\"503\""))
        .unwrap_or_else(|| panic!("no istio_requests_total for the 503: {series:?}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"istio-ingressgateway\"",
        "destination_workload=\"httpbin\"",
        "destination_service=\"httpbin.default.svc.cluster.local\"",
        "destination_app=\"httpbin\"",
        "destination_version=\"v1\"",
        "response_flags=\"-\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }

    // A name the mesh does not know is not silently routed somewhere else.
    assert_ne!(mesh.http_code("curl", "default", "http://nosuchservice:8000/"), "200");
}

/// Istio's sleep sample in a namespace without injection reaches httpbin by its namespaced name.
pub fn sleep_scenario(mesh: &Mesh, sleep: &Path) {
    let legacy = mesh.work.path().join("legacy.yaml");
    std::fs::write(&legacy, "apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n").unwrap();
    mesh.ok(&["apply", "-f", legacy.to_str().unwrap()]);
    let sleep = sleep.display().to_string();
    mesh.ok(&["apply", "--wait", "-n", "legacy", "-f", &sleep]);
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["namespace"] == "legacy").unwrap();
    assert_eq!(pod["role"], "plain", "no injection label on the namespace: no sidecar");
    assert_eq!(mesh.http_code("sleep", "legacy", "http://httpbin.default:8000/ip"), "200");
    // The short name is only for clients in the same namespace, as in Kubernetes.
    assert_ne!(mesh.http_code("sleep", "legacy", "http://httpbin:8000/ip"), "200");
}
