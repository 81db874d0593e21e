//! The addons meshrig runs beside the local mesh (Prometheus today): which exist, where their
//! binary is, and what they are given (pure): Prometheus's configuration and its scrape
//! targets, one per proxy, labelled as Istio's Prometheus addon labels them (job
//! `kubernetes-pods`, `namespace`, `pod`, and the pod's labels), so Istio's documented PromQL
//! works unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::PodStatus;
use crate::ready::Listener;
use crate::snapshot::Role;

/// The addons `addons enable` and `up --addons` know.
pub const NAMES: [&str; 1] = ["prometheus"];

/// Prometheus's own port (Istio's addon Service uses it too); the settings' default.
pub use crate::env::PROMETHEUS_PORT;

/// How often every proxy is scraped. Istio's addon says 15s; 5s lets a learner see a change
/// in `rate(...[1m])` within seconds of sending traffic, at no cost worth counting on loopback.
pub const SCRAPE_INTERVAL: &str = "5s";

/// The job Istio's Prometheus addon scrapes sidecars and gateways under.
pub const JOB: &str = "kubernetes-pods";

/// How to get Prometheus when it is missing.
pub const PROMETHEUS_HINT: &str = "install it (Debian/Ubuntu: `sudo apt-get install prometheus`; elsewhere the \
     release from https://prometheus.io/download/ on PATH), or point MESHRIG_PROMETHEUS at the binary";

/// The Prometheus binary: `MESHRIG_PROMETHEUS`, else `prometheus` on PATH; a message saying
/// how to install it otherwise.
pub fn prometheus_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MESHRIG_PROMETHEUS").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("MESHRIG_PROMETHEUS={} is not an executable file: {PROMETHEUS_HINT}", path.display()))
        };
    }
    which::which("prometheus").map_err(|_| format!("prometheus was not found on PATH: {PROMETHEUS_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A Kubernetes label as Prometheus's Kubernetes discovery names it (`app.kubernetes.io/name`
/// becomes `app_kubernetes_io_name`).
pub fn label_name(key: &str) -> String {
    let mut out: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// One file-discovery target group (Prometheus's `file_sd_configs` JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// A target per running proxy (sidecars and gateways: the plain forwarder has no metrics),
/// at its admin listener, with the pod's labels, `namespace` and `pod`; sorted, so the same
/// pods give the same file.
pub fn targets(pods: &[PodStatus]) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = pods
        .iter()
        .filter(|p| p.role != Role::Plain)
        .filter_map(|p| {
            let admin: SocketAddr = *p.proxy_addrs.get(&Listener::Admin)?;
            let mut labels: BTreeMap<String, String> =
                p.labels.iter().map(|(k, v)| (label_name(k), v.clone())).collect();
            labels.insert("namespace".into(), p.namespace.clone());
            labels.insert("pod".into(), p.name.clone());
            Some(TargetGroup { targets: vec![admin.to_string()], labels })
        })
        .collect();
    groups.sort_by(|a, b| (&a.labels["namespace"], &a.labels["pod"]).cmp(&(&b.labels["namespace"], &b.labels["pod"])));
    groups
}

/// Prometheus's configuration: the proxies from `targets_file` (re-read as it changes), and
/// Prometheus itself at `own`.
pub fn prometheus_config(targets_file: &Path, own: SocketAddr) -> String {
    // Paths are quoted as YAML strings (JSON's syntax is YAML's).
    let file = serde_json::to_string(&targets_file.display().to_string()).unwrap_or_default();
    format!(
        "# Written by meshrig; rewritten whenever the addon starts.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n\
         - job_name: prometheus\n  static_configs:\n  - targets: ['{own}']\n\
         - job_name: {JOB}\n  metrics_path: /stats/prometheus\n  file_sd_configs:\n  - files: [{file}]\n    refresh_interval: 30s\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;

    fn pod(ns: &str, name: &str, role: Role, admin: Option<&str>, labels: &[(&str, &str)]) -> PodStatus {
        let mut p: PodStatus = serde_json::from_value(serde_json::json!({
            "namespace": ns, "name": name, "workload": name, "labels": {}, "service_account": "default",
            "role": role, "app": null, "phase": Phase::Running, "ready": true, "restarts": 0,
            "message": null, "created": "", "proxy_addrs": {}, "app_addrs": {}, "pids": [], "acked": null,
        }))
        .unwrap();
        p.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(a) = admin {
            p.proxy_addrs.insert(Listener::Admin, a.parse().unwrap());
        }
        p
    }

    #[test]
    fn every_proxy_is_a_target_labelled_as_istios_addon_labels_it() {
        let pods = [
            pod(
                "default",
                "reviews-v2-abc",
                Role::Sidecar,
                Some("127.0.0.1:4002"),
                &[("app", "reviews"), ("version", "v2")],
            ),
            pod(
                "default",
                "details-v1-xyz",
                Role::Sidecar,
                Some("127.0.0.1:4001"),
                &[("app.kubernetes.io/name", "details")],
            ),
            pod(
                "istio-system",
                "istio-ingressgateway-1",
                Role::Gateway,
                Some("127.0.0.1:4000"),
                &[("istio", "ingressgateway")],
            ),
            pod("legacy", "sleep-1", Role::Plain, Some("127.0.0.1:4003"), &[]),
            pod("default", "starting-1", Role::Sidecar, None, &[]),
        ];
        let t = targets(&pods);
        let pods_seen: Vec<&str> = t.iter().map(|g| g.labels["pod"].as_str()).collect();
        assert_eq!(pods_seen, ["details-v1-xyz", "reviews-v2-abc", "istio-ingressgateway-1"]);
        assert_eq!(t[1].targets, ["127.0.0.1:4002"]);
        assert_eq!(
            (t[1].labels["app"].as_str(), t[1].labels["version"].as_str(), t[1].labels["namespace"].as_str()),
            ("reviews", "v2", "default")
        );
        assert_eq!(t[0].labels["app_kubernetes_io_name"], "details");
        assert_eq!(label_name("9lives"), "_9lives");
    }

    #[test]
    fn the_config_scrapes_the_targets_file_under_istios_job_name() {
        let cfg = prometheus_config(Path::new("/tmp/s t/targets.json"), "127.0.0.1:9090".parse().unwrap());
        let v: serde_yaml::Value = serde_yaml::from_str(&cfg).unwrap();
        let jobs = v["scrape_configs"].as_sequence().unwrap();
        assert_eq!(jobs[1]["job_name"].as_str(), Some("kubernetes-pods"));
        assert_eq!(jobs[1]["metrics_path"].as_str(), Some("/stats/prometheus"));
        assert_eq!(jobs[1]["file_sd_configs"][0]["files"][0].as_str(), Some("/tmp/s t/targets.json"));
        assert_eq!(jobs[0]["static_configs"][0]["targets"][0].as_str(), Some("127.0.0.1:9090"));
    }
}
