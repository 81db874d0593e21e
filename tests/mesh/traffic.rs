//! Istio's traffic management through real processes: route timeouts, retries, per-try
//! timeouts, fault injection, inbound metrics and a proxy's refusal to call itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::{get, request, requests_total, Mesh};

const HOST: &str = "traffic.example.com";

const RULES: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: traffic}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [traffic.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: traffic}
spec:
  hosts: [traffic.example.com]
  gateways: [traffic]
  http:
  - match: [{uri: {prefix: /delay/2}}]
    timeout: 0.5s
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /delay/1}}]
    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: gateway-error}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /status/503}}]
    retries: {attempts: 3, retryOn: '503'}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /status/200}}]
    fault: {abort: {httpStatus: 555, percentage: {value: 100}}}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /anything/slow}}]
    fault: {delay: {fixedDelay: 300ms, percent: 100}}
    route: [{destination: {host: httpbin}}]
  - route: [{destination: {host: httpbin}}]
";

/// The value of the `istio_requests_total` series at `admin` whose labels contain all of `want`.
/// A proxy records a request when the response body ends, before its last byte is written, so
/// once a client has read a response every proxy on its path has counted it.
fn count(admin: SocketAddr, want: &[&str]) -> f64 {
    requests_total(admin).iter().filter(|(labels, _)| want.iter().all(|w| labels.contains(w))).map(|(_, v)| v).sum()
}

#[test]
fn timeouts_retries_and_faults_answer_as_envoy_does() {
    let mesh = Mesh::up();
    let rules = mesh.work.path().join("traffic.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let applied = mesh.ok(&["apply", "--wait", "-f", rules.to_str().unwrap()]);
    assert!(!applied.contains("not enforced"), "timeouts, retries and faults are enforced:\n{applied}");
    let gw = mesh.gateway();
    let gateway_admin = mesh.admin("istio-ingressgateway");
    let httpbin_admin = mesh.admin("httpbin");

    // Route timeout: 504 `upstream request timeout` near the configured 0.5 s.
    let t = Instant::now();
    let r = get(gw, HOST, "/delay/2").unwrap();
    let took = t.elapsed();
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(count(gateway_admin, &["response_code=\"504\"", "response_flags=\"UT\""]), 1.0);

    // Per-try timeout with retries: three tries of 0.2 s, then 504 with the retry limit flag.
    let t = Instant::now();
    let r = get(gw, HOST, "/delay/1").unwrap();
    let took = t.elapsed();
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(1000), "took {took:?}");
    assert_eq!(count(gateway_admin, &["response_code=\"504\"", "response_flags=\"UT,URX\""]), 1.0);

    // Retries on 503: the client sees the last 503; the app's sidecar saw 1 + 3 tries.
    let inbound_503 = ["reporter=\"destination\"", "response_code=\"503\""];
    let before = count(httpbin_admin, &inbound_503);
    let r = get(gw, HOST, "/status/503").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(count(httpbin_admin, &inbound_503) - before, 4.0);
    assert_eq!(count(gateway_admin, &["response_code=\"503\"", "response_flags=\"URX\""]), 1.0);
    // The inbound side reports the Service, not the Host header the client sent.
    assert!(
        count(httpbin_admin, &[inbound_503[0], "destination_service=\"httpbin.default.svc.cluster.local\""]) >= 4.0,
        "{:?}",
        requests_total(httpbin_admin)
    );

    // The upstream sees which attempt it serves.
    let r = get(gw, HOST, "/headers").unwrap();
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["headers"]["X-Envoy-Attempt-Count"][0], "1", "{}", r.body);

    // Fault abort: the configured status, Envoy's body, never reaching the app.
    let r = get(gw, HOST, "/status/200").unwrap();
    assert_eq!((r.status, r.body.as_str()), (555, "fault filter abort"));
    assert_eq!(count(gateway_admin, &["response_code=\"555\"", "response_flags=\"FI\""]), 1.0);

    // Fault delay: held, then forwarded.
    let t = Instant::now();
    let r = get(gw, HOST, "/anything/slow").unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "took {:?}", t.elapsed());
    assert_eq!(count(gateway_admin, &["response_code=\"200\"", "response_flags=\"DI\""]), 1.0);

    // From inside the mesh, the ingress gateway's Service reaches the gateway, as in Istio.
    let code = mesh.http_code_with(
        "curl",
        "default",
        "http://istio-ingressgateway.istio-system/headers",
        &["-H", "Host: traffic.example.com"],
    );
    assert_eq!(code, "200");
}

#[test]
fn a_sidecar_asked_to_call_itself_closes_the_connection_and_keeps_serving() {
    let mesh = Mesh::up();
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "curl").unwrap();
    let outbound: SocketAddr = pod["proxy_addrs"]["outbound"].as_str().unwrap().parse().unwrap();
    // A request for the outbound listener's own address, sent to that listener.
    let err = get(outbound, &outbound.to_string(), "/").err();
    assert!(err.is_some(), "the loop is refused without an answer, as Istio's black hole does");
    // The same port under another local spelling is the same listener.
    let port = outbound.port();
    for host in [
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::]:{port}"),
    ] {
        let url = format!("http://{host}/");
        let err = crate::support::request(outbound, "GET", &host, &url, &[]).err();
        // Refused at once (the connection closed), not after a loop ran out of sockets or time.
        let kind = err.as_ref().map(|e| e.kind());
        assert!(
            kind.is_some_and(|k| !matches!(k, std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "{host}: {err:?}"
        );
    }
    let proxy_pid = pod["pids"][0].as_u64().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{proxy_pid}/fd")).unwrap().count();
    assert!(fds < 200, "the sidecar holds {fds} open files after the refused loops");
    // Still serving after the refusal.
    assert_eq!(mesh.http_code("curl", "default", "http://httpbin:8000/status/200"), "200");
}

const EDITS: &str = "apiVersion: v1
kind: Service
metadata: {name: shadow}
spec:
  selector: {app: shadow}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shadow}
spec:
  selector: {matchLabels: {app: shadow}}
  template:
    metadata: {labels: {app: shadow, version: v1}}
    spec:
      containers:
      - {name: httpbin, image: docker.io/mccutchen/go-httpbin:v2.15.0, ports: [{containerPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edits}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edits.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edits}
spec:
  hosts: [edits.example.com]
  gateways: [edits]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: moved.example.com}
  - match: [{uri: {prefix: /api/}}]
    rewrite: {uri: /anything/}
    headers:
      request: {set: {x-team: blue}, remove: [x-drop]}
      response: {add: {x-served-by: meshrig}}
    route:
    - destination: {host: httpbin}
      headers: {request: {add: {x-dest: v1}}}
  - match: [{uri: {prefix: /status}}]
    corsPolicy:
      allowOrigins: [{exact: 'https://ok.example'}]
      allowMethods: [GET, POST]
      maxAge: 24h
    route: [{destination: {host: httpbin}}]
  - route: [{destination: {host: httpbin}}]
    mirror: {host: shadow}
";

#[test]
fn redirects_rewrites_header_edits_cors_and_mirrors_land_where_istios_would() {
    let mesh = Mesh::up();
    let file = mesh.work.path().join("edits.yaml");
    std::fs::write(&file, EDITS).unwrap();
    let applied = mesh.ok(&["apply", "--wait", "-f", file.to_str().unwrap()]);
    assert!(!applied.contains("not enforced"), "{applied}");
    let gw = mesh.gateway();
    let host = "edits.example.com";

    // Redirect: 301 to the new authority and path, the query kept.
    let r = get(gw, host, "/old/x?y=1").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://moved.example.com/new?y=1"));

    // Rewrite and header edits: the app sees the rewritten path and the edited headers.
    let r = request(gw, "GET", host, "/api/hello?q=1", &[("x-drop", "1"), ("x-team", "red")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-served-by"), Some("meshrig"));
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(json["url"].as_str().unwrap().ends_with("/anything/hello?q=1"), "{}", json["url"]);
    assert_eq!(json["headers"]["X-Team"], serde_json::json!(["blue"]));
    assert_eq!(json["headers"]["X-Dest"], serde_json::json!(["v1"]));
    assert!(json["headers"].get("X-Drop").is_none(), "{}", json["headers"]);

    // CORS: an allowed preflight is answered by the proxy itself (no upstream service time);
    // a preflight from another origin goes upstream (`unmatchedPreflights: FORWARD`), where
    // httpbin answers with its own CORS headers, as it does under Istio.
    let preflight = [("origin", "https://ok.example"), ("access-control-request-method", "POST")];
    let r = request(gw, "OPTIONS", host, "/status/200", &preflight).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://ok.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("x-envoy-upstream-service-time"), None, "answered by the proxy");
    let other = [("origin", "https://other.example"), ("access-control-request-method", "POST")];
    let r = request(gw, "OPTIONS", host, "/status/200", &other).unwrap();
    assert!(r.header("x-envoy-upstream-service-time").is_some(), "forwarded upstream");
    assert_ne!(r.header("access-control-allow-methods"), Some("GET,POST"));
    let r = request(gw, "GET", host, "/status/200", &[("origin", "https://ok.example")]).unwrap();
    assert_eq!(r.header("access-control-allow-origin"), Some("https://ok.example"));

    // Mirror: the client sees only the primary; the shadow gets a copy.
    let shadow_admin = mesh.admin("shadow");
    let inbound = ["reporter=\"destination\"", "destination_workload=\"shadow\""];
    assert_eq!(count(shadow_admin, &inbound), 0.0);
    let r = get(gw, host, "/get").unwrap();
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["headers"]["Host"][0], host, "the primary keeps its Host");
    // The copy is fire and forget: nothing signals its arrival, so poll its metric (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(shadow_admin, &inbound) < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(shadow_admin, &inbound), 1.0, "{:?}", requests_total(shadow_admin));
}

#[test]
fn a_delegating_rule_routes_by_its_delegates_rules_inside_the_root_match() {
    let mesh = Mesh::up();
    let rules = mesh.work.path().join("delegate.yaml");
    std::fs::write(
        &rules,
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: delegating}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [delegate.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [delegate.example.com]
  gateways: [delegating]
  http:
  - match: [{uri: {prefix: /status}}]
    delegate: {name: status-routes}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: status-routes}
spec:
  http:
  - match: [{uri: {prefix: /status/2}}]
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /headers}}]
    route: [{destination: {host: httpbin}}]
  - directResponse: {status: 403, body: {string: not for you}}
",
    )
    .unwrap();
    let out = mesh.ok(&["apply", "-f", rules.to_str().unwrap(), "--wait"]);
    assert!(!out.contains("delegate is accepted but not enforced"), "{out}");
    let gw = mesh.gateway();
    let at = |path: &str| get(gw, "delegate.example.com", path).unwrap();
    assert_eq!(at("/status/201").status, 201, "a delegate rule inside the root's /status");
    let denied = at("/status/500");
    assert_eq!((denied.status, denied.body.as_str()), (403, "not for you"), "the delegate's catch-all, under /status");
    assert_eq!(at("/headers").status, 404, "a delegate rule outside the root match is dropped");
}
