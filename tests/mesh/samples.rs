//! The project's samples (written out by `meshrig samples`) behave as Istio's docs say of
//! Istio's; `tests/conformance` runs the same scenarios on Istio's own files.

use crate::scenarios::{httpbin_scenario, sleep_scenario};
use crate::support::{requests_total, sample, text, Mesh};

#[test]
fn the_samples_command_writes_httpbin_curl_and_the_gateway_and_they_work() {
    let mesh = Mesh::up();
    let written = mesh.ok(&["samples"]);
    assert!(written.contains("samples/httpbin/httpbin-gateway.yaml"), "{written}");
    let again = mesh.run(&["samples"]);
    assert!(!again.status.success() && text(&again).contains("--force"), "{}", text(&again));
    httpbin_scenario(&mesh, &mesh.work.path().join("samples"));
}

#[test]
fn a_misspelt_field_is_refused_with_its_line_and_nothing_is_applied() {
    let mesh = Mesh::up();
    let bad = mesh.work.path().join("bad.yaml");
    // Document 1 is fine; document 2 misspells `host` on line 21. Neither may be stored.
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

#[test]
fn a_workload_without_sidecar_reaches_services_through_the_plain_forwarder() {
    sleep_scenario(&Mesh::up(), &sample("sleep/sleep.yaml"));
}

#[test]
fn undefined_and_empty_subsets_answer_503_like_envoy_and_unenforced_fields_warn() {
    let mesh = Mesh::up();
    let rules = mesh.work.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - match: [{uri: {prefix: /status/201}, statPrefix: s201}]
    route: [{destination: {host: httpbin, subset: v1}}]
  - match: [{uri: {prefix: /none}}]
    route: [{destination: {host: httpbin, subset: v2}}]
  - match: [{uri: {prefix: /undefined}}]
    route: [{destination: {host: httpbin, subset: v9}}]
  - route: [{destination: {host: httpbin}}]
",
    )
    .unwrap();
    let applied = mesh.ok(&["apply", "--wait", "-f", rules.to_str().unwrap()]);
    assert!(applied.contains("spec.http[0].match[0].statPrefix is accepted but not enforced yet"), "{applied}");
    let code = |path: &str| {
        let out = mesh.run(&[
            "exec",
            "curl",
            "--",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://httpbin:8000{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(code("/status/201").ends_with("\n201"));
    let none = code("/none");
    assert!(none.starts_with("no healthy upstream") && none.ends_with("\n503"), "subset without pods: {none:?}");
    assert!(code("/undefined").ends_with("\n503"), "subset no DestinationRule defines");
    assert!(code("/headers").ends_with("\n200"));
}

#[test]
fn weights_split_traffic_between_subsets_and_replicas_all_serve() {
    let mesh = Mesh::up();
    let v2 = mesh.work.path().join("v2.yaml");
    std::fs::write(
        &v2,
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin-v2}
spec:
  replicas: 2
  selector: {matchLabels: {app: httpbin, version: v2}}
  template:
    metadata: {labels: {app: httpbin, version: v2}}
    spec:
      containers: [{name: httpbin, image: mccutchen/go-httpbin:v2.15.0}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - route:
    - {destination: {host: httpbin, subset: v1}, weight: 4}
    - {destination: {host: httpbin, subset: v2}, weight: 1}
",
    )
    .unwrap();
    mesh.ok(&["apply", "--wait", "-f", v2.to_str().unwrap()]);
    let status = mesh.status();
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.iter().filter(|p| p["workload"] == "httpbin-v2" && p["ready"] == true).count(), 2, "replicas: 2");

    // 200 requests from the curl workload, one curl over a kept-alive connection.
    let urls: Vec<String> = (0..200).map(|i| format!("http://httpbin:8000/get?i={i}")).collect();
    let mut args = vec!["exec", "curl", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\n"];
    args.extend(urls.iter().map(String::as_str));
    let out = mesh.run(&args);
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), 200, "{}", text(&out));

    // What the client sidecar reports, per destination version (weights 4:1 → 160/40 expected;
    // the bounds are over 5 standard deviations wide, so this does not flake).
    let series = requests_total(mesh.admin("curl"));
    let count = |version: &str| -> f64 {
        series.iter().filter(|(l, _)| l.contains(&format!("destination_version=\"{version}\""))).map(|(_, v)| v).sum()
    };
    let (v1, v2) = (count("v1"), count("v2"));
    assert_eq!(v1 + v2, 200.0, "{series:?}");
    assert!((130.0..=190.0).contains(&v1), "v1 got {v1} of 200, expected about 160 (4:1)");

    // Both v2 replicas served some of v2's share (round-robin over endpoints).
    let v2_pods: Vec<&serde_json::Value> = pods.iter().filter(|p| p["workload"] == "httpbin-v2").collect();
    for p in v2_pods {
        let admin: std::net::SocketAddr = p["proxy_addrs"]["admin"].as_str().unwrap().parse().unwrap();
        assert!(
            requests_total(admin).iter().any(|(l, _)| l.contains("reporter=\"destination\"")),
            "{} served nothing",
            p["name"]
        );
    }
}
