//! Built-in sample apps, and the mapping from container images to them.
//!
//! Istio's manifests name container images; the local backend runs none of them. Instead each
//! known image maps to a built-in app (or to the idle client, or to the gateway proxy).

pub mod httpbin;
pub mod tcp_echo;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use crate::ready;

/// What a container becomes on the local backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// A built-in app listening on `port` inside its pod.
    App { app: App, port: u16 },
    /// An idle client (`curl`, `sleep`): nothing runs; `meshrig exec` uses its proxy.
    Client,
    /// Istio's gateway injection (`image: auto` + `inject.istio.io/templates: gateway`).
    Gateway,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Httpbin,
    /// Istio's `tcp-echo-server`: its container `args` give the ports and the prefix.
    TcpEcho,
}

impl App {
    pub fn name(&self) -> &'static str {
        match self {
            App::Httpbin => "httpbin",
            App::TcpEcho => "tcp-echo",
        }
    }

    pub fn from_name(s: &str) -> Option<App> {
        match s {
            "httpbin" => Some(App::Httpbin),
            "tcp-echo" => Some(App::TcpEcho),
            _ => None,
        }
    }
}

/// Images the local backend knows, for error messages.
pub const KNOWN_IMAGES: &str = "mccutchen/go-httpbin (httpbin), kennethreitz/httpbin, istio/tcp-echo-server, \
curlimages/curl (idle client), \
governmentpaas/curl-ssl, and `auto` with the annotation inject.istio.io/templates: gateway (ingress gateway)";

/// Images that are known but not built in yet, with the reason.
const PLANNED: [(&str, &str); 2] = [("examples-bookinfo-", "Bookinfo"), ("fortio/fortio", "fortio")];

/// Maps a container image to what runs locally. `annotations` are the pod template's.
pub fn resolve(image: &str, annotations: &BTreeMap<String, String>) -> Result<Workload, String> {
    let repo = image_repository(image);
    if image == "auto" {
        return if annotations.get("inject.istio.io/templates").map(String::as_str) == Some("gateway") {
            Ok(Workload::Gateway)
        } else {
            Err("image `auto` is only known with the pod annotation inject.istio.io/templates: gateway".into())
        };
    }
    match repo.as_str() {
        "mccutchen/go-httpbin" => Ok(Workload::App { app: App::Httpbin, port: 8080 }),
        "kennethreitz/httpbin" => Ok(Workload::App { app: App::Httpbin, port: 80 }),
        "istio/tcp-echo-server" => Ok(Workload::App { app: App::TcpEcho, port: 9000 }),
        "curlimages/curl" | "governmentpaas/curl-ssl" | "curl" | "busybox" => Ok(Workload::Client),
        _ => {
            if let Some((_, what)) = PLANNED.iter().find(|(p, _)| repo.contains(p)) {
                return Err(format!(
                    "image {image:?} ({what}) is not built into meshrig yet; known images: {KNOWN_IMAGES}"
                ));
            }
            Err(format!("image {image:?} is not known to the local backend; known images: {KNOWN_IMAGES}"))
        }
    }
}

/// `docker.io/mccutchen/go-httpbin:v2.15.0` → `mccutchen/go-httpbin`.
fn image_repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = no_digest.split('/').collect();
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        parts.remove(0);
    }
    let mut repo = parts.join("/");
    if let Some(i) = repo.rfind(':') {
        repo.truncate(i);
    }
    repo.strip_prefix("library/").map(str::to_string).unwrap_or(repo)
}

/// Runs a built-in app on loopback; announces `{"<container port>": addr}` once bound. `args`
/// are the container's (tcp-echo reads its ports and prefix from them).
pub async fn run(app: App, container_port: u16, args: &[String]) -> std::io::Result<()> {
    if app == App::TcpEcho {
        return tcp_echo::run(args).await;
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let mut addrs = ready::Addrs::new();
    addrs.insert(ready::Listener::App(container_port), listener.local_addr()?);
    ready::announce(&addrs);
    let router = httpbin::router();
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_to_apps_whatever_the_registry_and_tag() {
        let none = BTreeMap::new();
        assert_eq!(
            resolve("docker.io/mccutchen/go-httpbin:v2.15.0", &none),
            Ok(Workload::App { app: App::Httpbin, port: 8080 })
        );
        assert_eq!(resolve("curlimages/curl:8.16.0", &none), Ok(Workload::Client));
        assert!(resolve("registry.istio.io/release/examples-bookinfo-details-v1:1.20.3", &none)
            .unwrap_err()
            .contains("Bookinfo"));
        assert!(resolve("nginx", &none).unwrap_err().contains("known images"));
        let gw = BTreeMap::from([("inject.istio.io/templates".to_string(), "gateway".to_string())]);
        assert_eq!(resolve("auto", &gw), Ok(Workload::Gateway));
    }
}
