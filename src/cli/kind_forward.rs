//! `meshrig dashboard kiali|grafana|jaeger|prometheus` on the kind backend, as istioctl's: a
//! port-forward (kube-rs, over the API server's WebSocket) from 127.0.0.1 on the addon's usual
//! port to a running pod behind the addon's Service, printing the URL and serving until
//! interrupted. Each connection to the local port is its own port-forward, as kubectl's.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use crate::backend::kind::cluster::objects;
use crate::cli::{kind_up, term};
use crate::env::Env;

/// An addon's dashboard: its Service in istio-system, the Service port, the local port istioctl
/// uses, and the path its UI is under.
#[derive(Debug, PartialEq, Eq)]
pub struct Dashboard {
    pub service: &'static str,
    pub port: i32,
    pub local: u16,
    pub path: &'static str,
}

/// The dashboard `name` names (istioctl's names; `tracing` is Jaeger's Service). Pure.
pub fn dashboard_of(name: &str) -> Option<Dashboard> {
    Some(match name {
        "kiali" => Dashboard { service: "kiali", port: 20001, local: 20001, path: "/kiali" },
        "grafana" => Dashboard { service: "grafana", port: 3000, local: 3000, path: "/" },
        "jaeger" | "tracing" => Dashboard { service: "tracing", port: 80, local: 16686, path: "/jaeger" },
        "prometheus" => Dashboard { service: "prometheus", port: 9090, local: 9090, path: "/" },
        _ => return None,
    })
}

/// The pod and container port a Service port reaches: the Service's targetPort (a number, or
/// the name of a container port) on the first running, ready pod its selector picks.
async fn target(client: &kube::Client, d: &Dashboard, name: &str) -> anyhow::Result<(String, u16)> {
    let services: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    let service =
        services.get_opt(d.service).await.map_err(|e| anyhow!("service {}: {}", d.service, objects::reason(&e)))?;
    let Some(service) = service else {
        bail!("{name} is not installed: `meshrig up --backend kind --addons {name}` adds it");
    };
    let spec = service.spec.unwrap_or_default();
    let port = spec.ports.unwrap_or_default().into_iter().find(|p| p.port == d.port);
    let target = port.and_then(|p| p.target_port);
    let selector: Vec<String> = spec.selector.unwrap_or_default().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    let list = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .map_err(|e| anyhow!("pods of {}: {}", d.service, objects::reason(&e)))?;
    let running = list.items.into_iter().find(|p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.container_statuses.as_ref().is_some_and(|cs| cs.iter().all(|c| c.ready))
        })
    });
    let Some(pod) = running else {
        bail!(
            "no running pod of {name} yet; `meshrig status` shows the pods (a first pull of its image takes a while)"
        );
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let container_port = match target {
        Some(IntOrString::Int(n)) => u16::try_from(n).ok(),
        Some(IntOrString::String(named)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
        None => u16::try_from(d.port).ok(),
    }
    .ok_or_else(|| anyhow!("service {} has no port {} to forward to", d.service, d.port))?;
    Ok((pod.metadata.name.unwrap_or_default(), container_port))
}

/// `dashboard NAME` on kind.
pub async fn dashboard(env: &Env, name: &str, open: bool) -> anyhow::Result<ExitCode> {
    let d = dashboard_of(name).ok_or_else(|| {
        anyhow!("no dashboard {name:?} on the kind backend: choose kiali, grafana, jaeger or prometheus")
    })?;
    let client = kind_up::client(env).await?;
    let (pod, port) = target(&client, &d, name).await?;
    let listener = match crate::net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, d.local))).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{} port {} is taken ({e}); using a free port", term::warn_mark(), d.local);
            crate::net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?
        }
    };
    let local = listener.local_addr()?;
    let url = format!("http://localhost:{}{}", local.port(), d.path);
    println!("{url}");
    eprintln!("forwarding {local} to pod istio-system/{pod} port {port}; Ctrl-C stops");
    if open {
        crate::cli::addons::open_browser(&url);
    }
    let pods: Api<Pod> = Api::namespaced(client, "istio-system");
    loop {
        let (mut conn, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = crate::shutdown::signalled() => return Ok(ExitCode::SUCCESS),
        };
        let (pods, pod) = (pods.clone(), pod.clone());
        tokio::spawn(async move {
            let mut forwarder = match pods.portforward(&pod, &[port]).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("{} port-forward to {pod}: {}", term::fail_mark(), objects::reason(&e));
                    return;
                }
            };
            if let Some(mut upstream) = forwarder.take_stream(port) {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            }
            let _ = forwarder.join().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboards_are_istioctls() {
        assert_eq!(dashboard_of("kiali").unwrap().local, 20001);
        assert_eq!(dashboard_of("jaeger"), dashboard_of("tracing"));
        assert_eq!(dashboard_of("jaeger").unwrap().path, "/jaeger");
        assert!(dashboard_of("envoy").is_none());
    }
}
