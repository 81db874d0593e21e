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
    // One request holds the only connection, one may wait for it; the rest overflow at once.
    assert!(
        (1..=2).contains(&ok) && ok + overflowed.len() == 5,
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
