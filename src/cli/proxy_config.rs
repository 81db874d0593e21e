//! `proxy-status` and `proxy-config`, as istioctl has them: whether each proxy runs the config
//! the control plane holds, and what one proxy was sent (routes, clusters, listeners,
//! endpoints), read from the proxy's own admin `/config_dump`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};

use crate::api::PodStatus;
use crate::cli::term::table;
use crate::cli::Output;
use crate::env::Env;
use crate::net;
use crate::ready::Listener;
use crate::snapshot::{PathMatch, RouteAction, RouteMatch, Snapshot, Version};

/// SYNCED when the proxy acknowledged the control plane's current version, STALE when it holds
/// an older one, NOT SENT before its first.
fn sync_state(acked: Option<Version>, current: Version) -> &'static str {
    match acked {
        None => "NOT SENT",
        Some(a) if a.reached(current) => "SYNCED",
        Some(_) => "STALE",
    }
}

pub async fn status(env: &Env, pod: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let status = client.status().await?;
    let current = status.control_plane.version;
    let pods: Vec<&PodStatus> = match pod {
        Some(p) => vec![find(&status.pods, p, None)?],
        None => status.pods.iter().collect(),
    };
    if output != Output::Table {
        let rows: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": format!("{}.{}", p.name, p.namespace),
                    "state": sync_state(p.acked, current),
                    "acked": p.acked.map(|v| v.to_string()),
                    "current": current.to_string(),
                })
            })
            .collect();
        crate::cli::print_data(output, &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            let state = sync_state(p.acked, current);
            let with_version = match p.acked {
                Some(v) if state == "STALE" => format!("STALE ({v}, current {current})"),
                _ => state.to_string(),
            };
            vec![
                format!("{}.{}", p.name, p.namespace),
                "Kubernetes".into(),
                with_version.clone(),
                with_version.clone(),
                with_version.clone(),
                with_version,
                "NOT SENT".into(),
                "meshrig-control-plane".into(),
                env!("CARGO_PKG_VERSION").into(),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"], &rows));
    Ok(ExitCode::SUCCESS)
}

/// A pod named as istioctl takes it: `POD`, `POD.NAMESPACE`, or (meshrig) a Deployment name.
fn find<'a>(pods: &'a [PodStatus], name: &str, namespace: Option<&str>) -> anyhow::Result<&'a PodStatus> {
    let (name, ns) = match (name.split_once('.'), namespace) {
        (Some((pod, ns)), None) => (pod, ns),
        (_, ns) => (name, ns.unwrap_or("default")),
    };
    let name = name.strip_prefix("deploy/").or_else(|| name.strip_prefix("pod/")).unwrap_or(name);
    pods.iter()
        .find(|p| p.namespace == ns && p.name == name)
        .or_else(|| pods.iter().find(|p| p.namespace == ns && p.workload == name))
        .ok_or_else(|| {
            let known: Vec<String> = pods.iter().map(|p| format!("{}.{}", p.name, p.namespace)).collect();
            anyhow::Error::new(crate::cli::exit::NotFound(format!(
                "no pod {name:?} in namespace {ns}; pods: {}",
                known.join(", ")
            )))
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Routes,
    Clusters,
    Listeners,
    Endpoints,
    /// The workload certificate and the root (`istioctl proxy-config secret`).
    Secret,
}

pub async fn config(
    env: &Env,
    section: Section,
    pod: &str,
    namespace: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let status = client.status().await?;
    let pod = find(&status.pods, pod, namespace)?;
    let backend = crate::cli::backend::Backend::for_env(env);
    let admin = &backend.admin(pod).ok_or_else(|| anyhow!("pod {} has no proxy admin listener", pod.key()))?;
    if section == Section::Secret {
        let certs =
            admin_json(*admin, "/certs").await.with_context(|| format!("reading {}'s certificates", pod.key()))?;
        if output != Output::Table {
            crate::cli::print_data(output, &certs)?;
        } else {
            print!("{}", secret_table(&certs));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot: Snapshot = serde_json::from_value(
        admin_json(*admin, "/config_dump")
            .await
            .with_context(|| format!("reading {}'s config from {admin}", pod.key()))?,
    )?;
    if output != Output::Table {
        let value = match section {
            Section::Routes => serde_json::to_value((&snapshot.outbound, &snapshot.listeners))?,
            Section::Clusters | Section::Endpoints => serde_json::to_value(&snapshot.clusters)?,
            Section::Secret => unreachable!("answered above"),
            Section::Listeners => serde_json::json!({
                "addresses": pod.proxy_addrs,
                "inbound": snapshot.inbound,
                "gateway_ports": snapshot.listeners.iter().map(|l| (l.port, &l.protocol)).collect::<BTreeMap<_, _>>(),
            }),
        };
        crate::cli::print_data(output, &value)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Ejected endpoints, from Envoy's `/clusters` health flags.
    let ejected: std::collections::BTreeSet<String> = if section == Section::Endpoints {
        let text = String::from_utf8_lossy(&admin_bytes(*admin, "/clusters").await?).into_owned();
        text.lines()
            .filter_map(|l| l.strip_suffix("::health_flags::/failed_outlier_check"))
            .map(str::to_string)
            .collect()
    } else {
        Default::default()
    };
    print!("{}", render(section, &snapshot, pod, &ejected));
    Ok(ExitCode::SUCCESS)
}

async fn admin_json(admin: std::net::SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&admin_bytes(admin, path).await?)?)
}

async fn admin_bytes(admin: std::net::SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let (status, bytes) = net::get(&net::client(), &format!("http://{admin}{path}"), std::time::Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!("the proxy did not answer: {e}"))?;
    if !status.is_success() {
        bail!("the proxy answered {status}");
    }
    Ok(bytes.to_vec())
}

/// istioctl's short form of a route match: `/path*` for a prefix, the path for an exact match.
fn match_text(m: &RouteMatch) -> String {
    let mut s = match &m.path {
        PathMatch::Prefix(p) => format!("{p}*"),
        PathMatch::Exact(p) => p.clone(),
        PathMatch::Regex(r) => format!("regex {r}"),
    };
    for h in &m.headers {
        s.push_str(&format!(" {}{}", if h.invert { "!" } else { "" }, h.name));
    }
    s
}

fn domains_text(d: &[String]) -> String {
    match d {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} + {} more...", rest.len()),
    }
}

/// `outbound|8000|v1|httpbin.default.svc.cluster.local` → (fqdn, port, subset, direction).
fn split_cluster(name: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [dir, port, subset, fqdn] => (fqdn.to_string(), port.to_string(), subset.to_string(), dir.to_ascii_uppercase()),
        _ => (name.to_string(), String::new(), String::new(), String::new()),
    }
}

/// istioctl's `proxy-config secret` table from Envoy's `/certs`, with the names each
/// certificate carries.
fn secret_table(certs: &serde_json::Value) -> String {
    let mut rows = Vec::new();
    for set in certs["certificates"].as_array().into_iter().flatten() {
        for (resource, kind, key) in [("default", "Cert Chain", "cert_chain"), ("ROOTCA", "CA", "ca_cert")] {
            if let Some(c) = set[key].as_array().and_then(|a| a.first()) {
                let sans: Vec<&str> = c["subject_alt_names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["uri"].as_str().or_else(|| s["dns"].as_str()))
                    .collect();
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                rows.push(vec![
                    resource.to_string(),
                    kind.to_string(),
                    "ACTIVE".into(),
                    "true".into(),
                    text("serial_number"),
                    text("expiration_time"),
                    text("valid_from"),
                    if sans.is_empty() { text("subject") } else { sans.join(",") },
                ]);
            }
        }
    }
    if rows.is_empty() {
        return "this proxy has no workload certificate (a pod without a sidecar)\n".into();
    }
    table(
        &["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE", "IDENTITY"],
        &rows,
    )
}

/// `ejected` holds `CLUSTER::ADDRESS` of the endpoints outlier detection has ejected.
pub fn render(section: Section, s: &Snapshot, pod: &PodStatus, ejected: &std::collections::BTreeSet<String>) -> String {
    match section {
        Section::Routes => {
            let mut rows = Vec::new();
            let outbound = s.outbound.iter().map(|rc| (rc.port.to_string(), &rc.virtual_hosts));
            let gateway = s.listeners.iter().map(|l| (format!("http.{}", l.port), &l.virtual_hosts));
            for (name, vhosts) in outbound.chain(gateway) {
                for vh in vhosts {
                    for r in &vh.routes {
                        let target = match &r.action {
                            RouteAction::Direct { status, .. } => format!("direct {status}"),
                            RouteAction::Redirect(x) => format!("redirect {}", x.code),
                            RouteAction::Clusters(_) => r.name.clone(),
                        };
                        rows.push(vec![
                            name.clone(),
                            vh.name.clone(),
                            domains_text(&vh.domains),
                            match_text(&r.matcher),
                            target,
                        ]);
                    }
                }
            }
            table(&["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"], &rows)
        }
        Section::Clusters => {
            let rows: Vec<Vec<String>> = s
                .clusters
                .values()
                .map(|c| {
                    let (fqdn, port, subset, dir) = split_cluster(&c.name);
                    let lb = serde_json::to_value(&c.lb)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_object()?.keys().next().cloned()))
                        .unwrap_or_default()
                        .to_ascii_uppercase();
                    vec![
                        fqdn,
                        port,
                        if subset.is_empty() { "-".into() } else { subset },
                        dir,
                        c.discovery.envoy_type().into(),
                        c.endpoints.len().to_string(),
                        lb,
                    ]
                })
                .collect();
            table(&["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "ENDPOINTS", "LB"], &rows)
        }
        Section::Secret => String::new(),
        Section::Endpoints => {
            let mut rows = Vec::new();
            for c in s.clusters.values() {
                for e in c.endpoints.iter() {
                    // As istioctl shows an endpoint Envoy's outlier detection has ejected.
                    let check = if ejected.contains(&format!("{}::{}", c.name, e.address)) { "FAILED" } else { "OK" };
                    rows.push(vec![e.address.to_string(), "HEALTHY".into(), check.into(), c.name.clone()]);
                }
            }
            table(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
        }
        Section::Listeners => {
            let mut rows = Vec::new();
            for (name, addr) in &pod.proxy_addrs {
                let (dir, dest) = match name {
                    Listener::Inbound(port) => ("inbound".to_string(), format!("app port {port}")),
                    Listener::Outbound => ("outbound".into(), "routes by destination port".into()),
                    Listener::Admin => ("admin".into(), "/ready /stats/prometheus /config_dump".into()),
                    other => (other.to_string(), String::new()),
                };
                rows.push(vec![addr.ip().to_string(), addr.port().to_string(), dir, dest]);
            }
            for l in &s.listeners {
                rows.push(vec![
                    "127.0.0.1".into(),
                    l.port.to_string(),
                    format!("gateway {}", l.protocol),
                    format!("Route: http.{}", l.port),
                ]);
            }
            table(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"], &rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_states_compare_with_the_current_version() {
        let current = Version { epoch: 1, counter: 5 };
        assert_eq!(sync_state(None, current), "NOT SENT");
        assert_eq!(sync_state(Some(Version { epoch: 1, counter: 5 }), current), "SYNCED");
        assert_eq!(sync_state(Some(Version { epoch: 1, counter: 4 }), current), "STALE");
        assert_eq!(sync_state(Some(Version { epoch: 2, counter: 9 }), current), "STALE");
    }

    #[test]
    fn cluster_names_split_as_istio_writes_them() {
        let (fqdn, port, subset, dir) = split_cluster("outbound|8000|v1|httpbin.default.svc.cluster.local");
        assert_eq!(
            (fqdn.as_str(), port.as_str(), subset.as_str(), dir.as_str()),
            ("httpbin.default.svc.cluster.local", "8000", "v1", "OUTBOUND")
        );
        assert_eq!(domains_text(&["a".into(), "b".into(), "c".into()]), "a + 2 more...");
    }
}
