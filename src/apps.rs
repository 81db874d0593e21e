//! Built-in sample apps, and the mapping from container images to them.
//!
//! Istio's manifests name container images; the local backend runs none of them. Instead each
//! known image maps to a built-in app (or to the idle client, or to the gateway proxy), with
//! the environment its image bakes in (reviews' `ENABLE_RATINGS` and `STAR_COLOR`, ratings'
//! `SERVICE_VERSION`). An image meshrig does not know runs the echo stand-in.

pub mod bookinfo;
pub mod echo;
pub mod fortio;
pub mod httpbin;
pub mod jwt_issuer;
pub mod outbound;
pub mod tcp_echo;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::ready;

/// What a container becomes on the local backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// A built-in app listening on `port` inside its pod; `env` is what its image sets (the
    /// container's own `env` overrides it, as with a real image).
    App { app: App, port: u16, env: Vec<(String, String)> },
    /// An idle client (`curl`, `sleep`): nothing runs; `meshrig exec` uses its proxy.
    Client,
    /// Istio's gateway injection (`image: auto` + `inject.istio.io/templates: gateway`).
    Gateway,
    /// An image meshrig does not know: the echo app answers on each container port.
    StandIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Httpbin,
    /// Istio's `tcp-echo-server`: its container `args` give the ports and the prefix.
    TcpEcho,
    Productpage,
    Details,
    Reviews,
    Ratings,
    /// `fortio/fortio`: fortio's echo server (`fortio.rs`); `exec` runs its client side.
    Fortio,
    /// `meshrig/jwt-issuer`: signs tokens and serves its JWKS (`jwt_issuer.rs`).
    JwtIssuer,
    /// The stand-in for unknown images: its args are the ports to answer on.
    Echo,
}

const APPS: [(App, &str); 9] = [
    (App::Httpbin, "httpbin"),
    (App::TcpEcho, "tcp-echo"),
    (App::Productpage, "productpage"),
    (App::Details, "details"),
    (App::Reviews, "reviews"),
    (App::Ratings, "ratings"),
    (App::JwtIssuer, "jwt-issuer"),
    (App::Fortio, "fortio"),
    (App::Echo, "echo"),
];

impl App {
    pub fn name(&self) -> &'static str {
        APPS.iter().find(|(a, _)| a == self).map(|(_, n)| *n).unwrap_or("app")
    }

    pub fn from_name(s: &str) -> Option<App> {
        APPS.iter().find(|(_, n)| *n == s).map(|(a, _)| *a)
    }
}

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
    let app = |app, port| Ok(Workload::App { app, port, env: Vec::new() });
    match repo.as_str() {
        "mccutchen/go-httpbin" => app(App::Httpbin, 8080),
        "kennethreitz/httpbin" => app(App::Httpbin, 80),
        "istio/tcp-echo-server" => app(App::TcpEcho, 9000),
        "meshrig/jwt-issuer" => app(App::JwtIssuer, 8000),
        "fortio/fortio" => app(App::Fortio, 8080),
        "curlimages/curl" | "governmentpaas/curl-ssl" | "curl" | "busybox" => Ok(Workload::Client),
        _ => Ok(bookinfo::image(&repo).unwrap_or(Workload::StandIn)),
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

/// Runs a built-in app on `listen` (a loopback port 0 on the local backend); announces
/// `{"<container port>": addr}` once bound. `args` are the container's (tcp-echo reads its
/// ports and prefix from them; echo its ports, on loopback); `state_dir` is the environment's
/// (the JWT issuer keeps its key there).
pub async fn run(
    app: App,
    container_port: u16,
    listen: SocketAddr,
    args: &[String],
    state_dir: &std::path::Path,
) -> std::io::Result<()> {
    let router = match app {
        App::TcpEcho => return tcp_echo::run(args).await,
        App::Echo => return echo::run(container_port, args).await,
        App::JwtIssuer => jwt_issuer::router(
            jwt_issuer::Issuer::load_or_create(&jwt_issuer::key_path(state_dir)).map_err(std::io::Error::other)?,
        ),
        App::Httpbin => httpbin::router(),
        App::Fortio => fortio::router(),
        App::Productpage => bookinfo::productpage::router(),
        App::Details => bookinfo::details::router(),
        App::Reviews => bookinfo::reviews::router(bookinfo::reviews::Config::from_env()),
        App::Ratings => bookinfo::ratings::router(bookinfo::ratings::Version::from_env()),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut addrs = ready::Addrs::new();
    addrs.insert(ready::Listener::App(container_port), listener.local_addr()?);
    ready::announce(&addrs);
    // On SIGTERM (the runner stopping the pod) the requests in flight are answered first.
    crate::shutdown::serve_app(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_to_apps_whatever_the_registry_and_tag() {
        let none = BTreeMap::new();
        assert_eq!(
            resolve("docker.io/mccutchen/go-httpbin:v2.15.0", &none),
            Ok(Workload::App { app: App::Httpbin, port: 8080, env: vec![] })
        );
        assert_eq!(resolve("curlimages/curl:8.16.0", &none), Ok(Workload::Client));
        let Ok(Workload::App { app, port, env }) =
            resolve("registry.istio.io/release/examples-bookinfo-reviews-v3:1.20.3", &none)
        else {
            panic!("reviews-v3 is built in")
        };
        assert_eq!((app, port), (App::Reviews, 9080));
        assert!(env.contains(&("STAR_COLOR".to_string(), "red".to_string())), "{env:?}");
        assert_eq!(resolve("nginx", &none), Ok(Workload::StandIn));
        let gw = BTreeMap::from([("inject.istio.io/templates".to_string(), "gateway".to_string())]);
        assert_eq!(resolve("auto", &gw), Ok(Workload::Gateway));
        for a in APPS {
            assert_eq!(App::from_name(a.0.name()), Some(a.0));
        }
    }
}
