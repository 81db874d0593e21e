//! Connection pools and circuit breakers (DestinationRule `connectionPool`) through real
//! proxies: Envoy's overflow answer and its counters at the admin's `/stats`.

use crate::support::{get, sample, Mesh, Reply};

/// `n` requests at once through the gateway to httpbin's `path`.
fn burst(mesh: &Mesh, n: usize, path: &'static str) -> Vec<Reply> {
    let gw = mesh.gateway();
    let threads: Vec<_> =
        (0..n).map(|_| std::thread::spawn(move || get(gw, "httpbin.example.com", path).unwrap())).collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The gateway's `/stats` lines for httpbin's cluster, as `name: value` pairs.
fn stats(mesh: &Mesh, filter: &str) -> Vec<(String, u64)> {
    let admin = mesh.admin("istio-ingressgateway");
    let reply = get(admin, "admin", &format!("/stats?filter={filter}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
        .body
        .lines()
        .map(|l| {
            let (name, value) = l.rsplit_once(": ").unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn stat(all: &[(String, u64)], suffix: &str) -> u64 {
    all.iter().find(|(n, _)| n.ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix} in {all:?}")).1
}

const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n";

#[test]
fn a_connection_pool_overflows_with_envoys_answer_and_counts_it_across_a_push() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    // Without limits, five slow requests at once all get through.
    assert!(burst(&mesh, 5, "/delay/2").iter().all(|r| r.status == 200));

    mesh.apply_yaml("httpbin-dr.yaml", RULE);
    let replies = burst(&mesh, 5, "/delay/2");
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let overflowed: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    // One request holds the only connection (or two: each of the proxy's two workers may open
    // a first one, as Envoy's per-worker pools may), one may wait; the rest overflow at once.
    assert!(
        (1..=3).contains(&ok) && ok + overflowed.len() == 5,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &overflowed {
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
        assert_eq!(r.body, "upstream connect error or disconnect/reset before headers. reset reason: overflow");
    }
    // The filter is a regular expression (`|` would be an alternation: escape it, or name less).
    let cluster = "outbound%5C%7C8000%5C%7C%5C%7Chttpbin";
    let s = stats(&mesh, cluster);
    assert!(s.iter().all(|(n, _)| n.starts_with("cluster.outbound|8000||httpbin.default.svc.cluster.local.")), "{s:?}");
    assert_eq!(stat(&s, ".upstream_rq_pending_overflow"), overflowed.len() as u64);
    assert_eq!(stat(&s, ".circuit_breakers.default.remaining_pending"), 1);
    assert_eq!(stat(&s, ".circuit_breakers.default.rq_pending_open"), 0);
    assert_eq!(stat(&s, ".upstream_rq_pending_active"), 0);
    assert!(stat(&s, ".upstream_rq_pending_total") >= ok as u64);
    // As Istio's task reads them: `pilot-agent request GET stats | grep httpbin | grep pending`.
    let out = mesh.ok(&[
        "exec",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        "-c",
        "istio-proxy",
        "--",
        "pilot-agent",
        "request",
        "GET",
        "stats",
    ]);
    let pending: Vec<&str> = out.lines().filter(|l| l.contains("httpbin") && l.contains("pending")).collect();
    assert_eq!(pending.len(), 7, "{pending:#?}");
    assert!(
        pending.contains(
            &format!(
                "cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_pending_overflow: {}",
                overflowed.len()
            )
            .as_str()
        ),
        "{pending:#?}"
    );
    let wrong = mesh.run(&[
        "exec",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        "-c",
        "istio-proxy",
        "--",
        "curl",
        "localhost:15000/stats",
    ]);
    assert!(!wrong.status.success() && crate::support::text(&wrong).contains("pilot-agent request GET PATH"));
    // maxRequestsPerConnection: 1 closes each connection after its request.
    assert!(stat(&s, ".upstream_cx_total") >= ok as u64);

    // A push (a looser limit) keeps the counts; the new limit lets all five through.
    mesh.apply_yaml(
        "httpbin-dr.yaml",
        &RULE
            .replace("maxConnections: 1", "maxConnections: 10")
            .replace("http1MaxPendingRequests: 1", "http1MaxPendingRequests: 10"),
    );
    assert_eq!(stat(&stats(&mesh, cluster), ".upstream_rq_pending_overflow"), overflowed.len() as u64);
    assert!(burst(&mesh, 5, "/delay/2").iter().all(|r| r.status == 200));
    let json =
        get(mesh.admin("istio-ingressgateway"), "admin", &format!("/stats?filter={cluster}.*overflow&format=json"))
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert!(
        v["stats"].as_array().unwrap().iter().any(|s| s["name"]
            .as_str()
            .unwrap()
            .ends_with("upstream_rq_pending_overflow")
            && s["value"] == overflowed.len()),
        "{v}"
    );
}

const FLAKY: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: flaky\nspec:\n  selector: {app: flaky}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: flaky-v1\nspec:\n  selector:\n    matchLabels: {app: flaky, version: v1}\n  template:\n    metadata:\n      labels: {app: flaky, version: v1}\n    spec:\n      containers:\n      - name: app\n        image: example.com/flaky:1\n        ports: [{containerPort: 8080}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: flaky-v2\nspec:\n  selector:\n    matchLabels: {app: flaky, version: v2}\n  template:\n    metadata:\n      labels: {app: flaky, version: v2}\n      annotations: {echo.meshrig.dev/error-rate: 100%}\n    spec:\n      containers:\n      - name: app\n        image: example.com/flaky:2\n        ports: [{containerPort: 8080}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: flaky\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [flaky.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: flaky\nspec:\n  hosts: [flaky.example.com]\n  gateways: [flaky]\n  http:\n  - route:\n    - destination: {host: flaky}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: flaky\nspec:\n  host: flaky\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 5s\n      maxEjectionPercent: 100\n";

#[test]
fn outlier_detection_ejects_a_failing_endpoint_shows_it_and_tries_it_again_later() {
    let mesh = Mesh::up();
    mesh.apply_yaml("flaky.yaml", FLAKY);
    let gw = mesh.gateway();
    let codes = |n: usize| -> Vec<u16> { (0..n).map(|_| get(gw, "flaky.example.com", "/").unwrap().status).collect() };
    let first = codes(20);
    let errors = first.iter().filter(|c| **c == 503).count();
    // The failing version answers once, is ejected for 5 s, and users stop seeing errors.
    assert!((1..=2).contains(&errors) && errors + first.iter().filter(|c| **c == 200).count() == 20, "{first:?}");
    let endpoints =
        mesh.ok(&["proxy-config", "endpoints", &format!("{}.istio-system", mesh.pod("istio-ingressgateway"))]);
    let flaky: Vec<&str> = endpoints.lines().filter(|l| l.contains("||flaky.default")).collect();
    assert_eq!(flaky.iter().filter(|l| l.contains(" FAILED ")).count(), 1, "{endpoints}");
    // A config push (another rule for the same host's subsets) keeps the ejection.
    mesh.apply_yaml(
        "other.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  subsets: [{name: v1, labels: {version: v1}}]\n",
    );
    let admin = mesh.admin("istio-ingressgateway");
    assert!(
        get(admin, "admin", "/clusters").unwrap().body.contains("/failed_outlier_check"),
        "still ejected after a push"
    );
    let s = stats(&mesh, "flaky");
    assert!(stat(&s, ".outlier_detection.ejections_enforced_total") >= 1);
    assert!(stat(&s, ".outlier_detection.ejections_enforced_consecutive_5xx") >= 1);
    // After its ejection time the next sweep brings it back: wait for the flag to clear, then
    // it is tried (and fails) again.
    let every = std::time::Duration::from_millis(100);
    crate::support::within(std::time::Duration::from_secs(20), every, "the endpoint back", || {
        let clusters = get(admin, "admin", "/clusters").unwrap().body;
        (!clusters.contains("/failed_outlier_check")).then_some(()).ok_or(clusters)
    });
    assert!(codes(40).contains(&503), "the failing endpoint is tried again");
}

#[test]
fn istios_circuit_breaking_task_on_our_samples() {
    crate::scenarios::circuit_breaking_scenario(&Mesh::up(), &sample(""));
}

/// `meshrig load --json`, parsed.
fn load_json(mesh: &Mesh, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["load", "--json"];
    all.extend_from_slice(args);
    let out = mesh.run(&all);
    assert!(out.status.success(), "{}", crate::support::text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", crate::support::text(&out)))
}

#[test]
fn meshrig_load_counts_answers_keeps_its_rate_and_calls_out_overflows() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    // A path alone goes to the ingress gateway.
    let v = load_json(&mesh, &["/get", "-H", "Host: httpbin.example.com", "-n", "40", "-c", "4"]);
    assert_eq!((v["calls"].as_u64(), v["codes"]["200"].as_u64()), (Some(40), Some(40)), "{v}");
    assert!(v["connections_opened"].as_u64().unwrap() <= 4, "keep-alive: {v}");
    // Open loop: 25/s for 2 s is exactly 50 calls, due 40 ms apart.
    let v = load_json(&mesh, &["/status/200", "-q", "25", "-t", "2s", "-c", "2"]);
    assert_eq!(v["calls"], 50, "{v}");
    assert!(v["seconds"].as_f64().unwrap() >= 1.9, "{v}");
    // From a workload, through its sidecar, by the service's name.
    let v = load_json(&mesh, &["http://httpbin:8000/status/418", "--from", "curl", "-n", "10", "-c", "2"]);
    assert_eq!(v["codes"]["418"], 10, "{v}");
    // Under Istio's circuit-breaking rule, five slow calls at once overflow.
    mesh.apply_yaml("httpbin-dr.yaml", RULE);
    let v = load_json(&mesh, &["http://httpbin:8000/delay/1", "--from", "curl", "-n", "5", "-c", "5"]);
    let overflowed = v["overloaded"].as_u64().unwrap();
    assert!(overflowed >= 2 && v["codes"]["503"] == overflowed && v["codes"]["200"].as_u64().unwrap() >= 1, "{v}");
    // The summary for people says so.
    let out = mesh.ok(&["load", "http://httpbin:8000/delay/1", "--from", "curl", "-n", "5", "-c", "5"]);
    assert!(out.contains("with x-envoy-overloaded: a circuit breaker's overflow"), "{out}");
    assert!(out.starts_with("5 calls in "), "{out}");
}
