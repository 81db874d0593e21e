//! The Prometheus addon: a real Prometheus (CI names Debian's binary in MESHRIG_PROMETHEUS)
//! scraping every proxy under Istio's job and labels, following pods as they come and go,
//! restarted when it dies, stopped by `down`; and what a learner without it is told.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{alive, get, within, Mesh};

/// `query` percent-encoded for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus API answer, read with curl (Prometheus answers in chunks, which the tests'
/// own minimal client does not decode).
fn prometheus_api(prometheus: SocketAddr, path: &str) -> serde_json::Value {
    let out = std::process::Command::new("curl").args(["-sS", &format!("http://{prometheus}{path}")]).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    assert_eq!(v["status"], "success", "{path}: {v}");
    v
}

/// An instant query's result vector, as (labels, value).
fn query(prometheus: SocketAddr, promql: &str) -> Vec<(serde_json::Value, f64)> {
    prometheus_api(prometheus, &format!("/api/v1/query?query={}", encode(promql)))["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
        .collect()
}

/// The pods Prometheus scrapes under `kubernetes-pods`, with their health.
fn scraped_pods(prometheus: SocketAddr) -> Vec<(String, String)> {
    let v = prometheus_api(prometheus, "/api/v1/targets?state=active");
    let mut pods: Vec<(String, String)> = v["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["labels"]["job"] == "kubernetes-pods")
        .map(|t| (t["labels"]["pod"].as_str().unwrap().to_string(), t["health"].as_str().unwrap().to_string()))
        .collect();
    pods.sort();
    pods
}

fn addon(mesh: &Mesh) -> serde_json::Value {
    mesh.status()["control_plane"]["addons"][0].clone()
}

/// How often Prometheus is asked again (it scrapes every 5 s).
const POLL: Duration = Duration::from_millis(500);

#[test]
fn prometheus_scrapes_every_proxy_and_istios_promql_shows_the_canary_split() {
    let Some(binary) = crate::support::tool("MESHRIG_PROMETHEUS", "the Prometheus addon") else { return };
    let mesh = Mesh::up_with_env(&[("MESHRIG_PROMETHEUS", &binary)]);
    mesh.bookinfo_with("virtual-service-reviews-50-v3.yaml");
    let out = mesh.ok(&["addons", "enable", "prometheus"]);
    assert!(out.contains("prometheus: http://127.0.0.1:"), "{out}");
    let status = addon(&mesh);
    assert_eq!((status["name"].as_str(), status["ready"].as_bool()), (Some("prometheus"), Some(true)), "{status}");
    let prometheus: SocketAddr = status["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(mesh.ok(&["dashboard", "prometheus", "--no-browser"]).trim(), format!("http://{prometheus}"));

    // Every proxy is a target, and up: the gateway and the sidecars (not the plain pods).
    let proxies: Vec<String> = mesh.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] != "plain")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    within(Duration::from_secs(40), POLL, "every proxy scraped and up", || {
        let seen = scraped_pods(prometheus);
        let all_up = seen.len() == proxies.len() && seen.iter().all(|(_, h)| h == "up");
        all_up.then_some(()).ok_or_else(|| format!("{seen:?}"))
    });

    // Istio's documented query, while traffic flows (rate needs an increase between scrapes).
    let promql = r#"sum(rate(istio_requests_total{destination_service_name="reviews"}[1m])) by (destination_version)"#;
    let split = within(Duration::from_secs(60), POLL, "reviews' canary split in Prometheus", || {
        for _ in 0..10 {
            assert_eq!(get(mesh.gateway(), "bookinfo.local", "/productpage").unwrap().status, 200);
        }
        let result = query(prometheus, promql);
        let rate = |v: &str| result.iter().find(|(m, _)| m["destination_version"] == v).map(|(_, r)| *r);
        match (rate("v1"), rate("v3")) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Ok((a, b)),
            _ => Err(format!("{result:?}")),
        }
    });
    assert!(split.0 > 0.0 && split.1 > 0.0, "{split:?}");
    // The targets carry the pod's labels, as Istio's addon's relabelling gives them.
    let by_app = query(prometheus, r#"count(up{job="kubernetes-pods",app="reviews"}) by (namespace)"#);
    assert_eq!(by_app.len(), 1, "{by_app:?}");
    assert_eq!((by_app[0].0["namespace"].as_str(), by_app[0].1), (Some("default"), 3.0));

    // Pods come and go: a deleted Deployment's pod stops being a target.
    mesh.ok(&["delete", "deployment", "ratings-v1"]);
    within(Duration::from_secs(40), POLL, "ratings gone from the targets", || {
        let seen = scraped_pods(prometheus);
        (!seen.iter().any(|(p, _)| p.starts_with("ratings-v1"))).then_some(()).ok_or_else(|| format!("{seen:?}"))
    });

    // Prometheus dies: the control plane starts it again.
    let pid = status["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let again = within(Duration::from_secs(60), POLL, "prometheus restarted and ready", || {
        let a = addon(&mesh);
        if a["ready"] == true && a["restarts"].as_u64() >= Some(1) {
            Ok(a)
        } else {
            Err(a.to_string())
        }
    });
    let new_pid = again["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, pid as u32);

    // `down` stops it with everything else.
    mesh.ok(&["down"]);
    within(Duration::from_secs(10), POLL, "prometheus stopped by down", || {
        (!alive(new_pid)).then_some(()).ok_or_else(|| format!("pid {new_pid} alive"))
    });
}

#[test]
fn without_prometheus_the_learner_is_told_how_to_get_it() {
    let mesh = Mesh::up_with_env(&[("MESHRIG_PROMETHEUS", "/nonexistent/prometheus")]);
    let out = mesh.run(&["addons", "enable", "prometheus"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MESHRIG_PROMETHEUS=/nonexistent/prometheus") && err.contains("apt-get install prometheus"),
        "{err}"
    );
    let out = mesh.run(&["addons", "enable", "grafana"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown addon \"grafana\"; meshrig has: prometheus"));
    let out = mesh.run(&["dashboard", "prometheus"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`meshrig addons enable prometheus`"));
    assert!(mesh.ok(&["addons", "list"]).contains("disabled"));
    // Nothing was recorded: a restart does not try again.
    assert_eq!(mesh.status()["control_plane"]["addons"], serde_json::json!([]));
}

/// The Grafana dashboard's queries, as `up --backend kind --dry-run` prints them, pass promtool
/// (`check rules`, each query as a recording rule). (The kind Prometheus config is checked as
/// data in the unit tests: Debian's promtool is built without Kubernetes service discovery, so
/// `check config` cannot read `kubernetes_sd_configs`.)
#[test]
fn the_kind_addons_dashboard_queries_pass_promtool() {
    let Some(promtool) = crate::support::tool("MESHRIG_PROMTOOL", "checking the kind addons with promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .args(["up", "--backend", "kind", "--dry-run", "--addons", "prometheus,grafana"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::support::text(&out));
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect();
    let config_map = |name: &str| {
        docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name).unwrap()["data"].clone()
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(config_map("istio-grafana-dashboards")["istio-mesh.json"].as_str().unwrap()).unwrap();
    let mut rules = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let record = format!("meshrig:panel_{}_{}", panel["id"], t["refId"].as_str().unwrap().to_lowercase());
            rules.push(serde_json::json!({"record": record, "expr": t["expr"]}));
        }
    }
    let file = dir.path().join("dashboard-rules.yml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let check = std::process::Command::new(&promtool).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(check.status.success(), "promtool check rules: {}", crate::support::text(&check));
}
