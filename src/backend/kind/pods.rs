//! A Pod, as the API server has it, as the mesh's registry record (`registry::Workload`): what
//! the kind backend's workload source turns each Pod it watches into. The Deployment it belongs
//! to from its ReplicaSet owner, its role from what injection left (`sidecar.istio.io/status`)
//! or the proxy's `--role=gateway`, its endpoints at the pod's IP, the ports its sidecar takes
//! (the containers' ports within `traffic.sidecar.istio.io/includeInboundPorts` and not in
//! `excludeInboundPorts`, as istio-init redirects them), serving once the pod is Ready. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::backend::kind::inject::STATUS;
use crate::redirect::{parse_ports, Ports};
use crate::registry::Workload;
use crate::snapshot::{ProxyIdentity, Role};

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The Deployment a pod belongs to: its ReplicaSet owner's name less the pod-template-hash, else
/// its owner's name, else its own.
fn workload_name(pod: &Value, name: &str, labels: &BTreeMap<String, String>) -> String {
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| o.iter().find(|r| r["controller"] == true).or_else(|| o.first()))
        .and_then(|r| Some((r["kind"].as_str()?, r["name"].as_str()?)));
    match (owner, labels.get("pod-template-hash")) {
        (Some(("ReplicaSet", rs)), Some(hash)) => rs.strip_suffix(&format!("-{hash}")).unwrap_or(rs).to_string(),
        (Some((_, owner)), _) => owner.to_string(),
        (None, _) => name.to_string(),
    }
}

/// The registry record of `pod` (a Pod object as JSON).
pub fn workload(pod: &Value) -> Result<Workload, String> {
    let meta = &pod["metadata"];
    let name = meta["name"].as_str().ok_or("a pod without metadata.name")?.to_string();
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_string();
    let labels = strings(&meta["labels"]);
    let annotations = strings(&meta["annotations"]);
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let is_proxy = |c: &Value| c["name"] == "istio-proxy";
    let gateway = containers
        .iter()
        .any(|c| is_proxy(c) && c["args"].as_array().is_some_and(|a| a.iter().any(|x| x == "--role=gateway")));
    let role = if gateway {
        Role::Gateway
    } else if annotations.contains_key(STATUS) {
        Role::Sidecar
    } else {
        Role::Plain
    };
    let identity = ProxyIdentity {
        workload: workload_name(pod, &name, &labels),
        namespace,
        pod: name,
        labels,
        service_account: pod["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_string(),
        role,
    };
    let mut w = Workload::new(identity);
    let mut ports = BTreeSet::new();
    for c in containers.iter().filter(|c| !is_proxy(c)) {
        for p in c["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
            ports.insert(port);
            if let Some(n) = p["name"].as_str() {
                w.port_names.insert(n.to_string(), port);
            }
        }
    }
    let ip: Option<IpAddr> = pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
    if let Some(ip) = ip {
        for port in &ports {
            w.destinations.insert(*port, SocketAddr::new(ip, *port));
            // The pod's own sidecar reaches its app on localhost (Envoy's inbound cluster).
            w.apps.insert(*port, SocketAddr::from((Ipv4Addr::LOCALHOST, *port)));
        }
    }
    if role == Role::Sidecar {
        let include = Ports::parse(annotations.get("traffic.sidecar.istio.io/includeInboundPorts").map_or("*", |s| s))?;
        let exclude = parse_ports(annotations.get("traffic.sidecar.istio.io/excludeInboundPorts").map_or("", |s| s))?;
        w.intercepted = ports
            .iter()
            .copied()
            .filter(|p| match &include {
                Ports::All => true,
                Ports::Only(only) => only.contains(p),
            })
            .filter(|p| !exclude.contains(p) && !crate::backend::kind::PROXY_PORTS.contains(p))
            .collect();
    }
    let ready = pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    w.serving =
        ip.is_some() && pod["status"]["phase"] == "Running" && ready && pod["metadata"]["deletionTimestamp"].is_null();
    Ok(w)
}

/// The phase `meshrig status` shows for `pod`: Running once Ready, Starting while its
/// containers start, CrashLoopBackOff when the kubelet says so, Pending before.
pub fn phase(pod: &Value) -> crate::api::Phase {
    use crate::api::Phase;
    let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let init = pod["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    if statuses.iter().chain(&init).any(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff") {
        return Phase::CrashLoopBackOff;
    }
    let ready = pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    match pod["status"]["phase"].as_str() {
        Some("Running") if ready => Phase::Running,
        Some("Running") => Phase::Starting,
        _ if !statuses.is_empty() || !init.is_empty() => Phase::Starting,
        _ => Phase::Pending,
    }
}
