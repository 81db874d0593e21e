//! The middle test tier (`cfg(test)`, or the `testing` feature for other crates' tests): a
//! control plane and sidecars in one process, on loopback ports the OS picks, over a store in
//! a directory the test gives and pods the test registers (a backend that runs nothing), so
//! push, pool and mTLS interactions are tested in milliseconds rather than through ten
//! processes. Everything below is the real code: the API server, translation, the proxies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::api::{self, ApplyRequest};
use crate::control_plane::backend::{Admitted, Backend};
use crate::control_plane::state::{Pod as PodRecord, State};
use crate::control_plane::{self, Started};
use crate::env::{Env, Settings};
use crate::ready::Listener;
use crate::registry::Workload;
use crate::snapshot::{ProxyIdentity, Role, Version};

/// The test's backend: it runs nothing (the test registers its pods, with tokens from
/// `tokens`), so every version is as reconciled as it will be.
struct Registered {
    tokens: std::sync::Arc<crate::control_plane::credentials::PodTokens>,
}

impl Backend for Registered {
    fn admit(&self, _: &crate::resources::core::Deployment, _: &BTreeMap<String, String>) -> Result<Admitted, String> {
        Ok(Admitted::default())
    }

    fn max_pods(&self) -> Option<u64> {
        None
    }

    fn run(&self, state: std::sync::Arc<State>) {
        tokio::spawn(async move {
            let mut changes = state.changes.subscribe();
            loop {
                let seen = *changes.borrow_and_update();
                state.reconciled.send_replace(seen);
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn credentials(&self) -> std::sync::Arc<dyn crate::control_plane::credentials::Credentials> {
        self.tokens.clone()
    }
}

/// A control plane in this process, and the pods registered with it.
pub struct Mesh {
    pub control_plane: Started,
    pub env: Env,
    /// The proxies' credentials (the test's backend issues one per registered pod).
    tokens: std::sync::Arc<crate::control_plane::credentials::PodTokens>,
}

/// A registered pod: its app and its sidecar, both in this process.
pub struct Pod {
    pub key: String,
    /// Where the app listens.
    pub app: SocketAddr,
    pub proxy: crate::proxy::Started,
}

impl Pod {
    /// The sidecar's outbound listener (the app's HTTP proxy).
    pub fn outbound(&self) -> SocketAddr {
        self.proxy.addrs[&Listener::Outbound]
    }

    /// The sidecar's admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.proxy.addrs[&Listener::Admin]
    }

    /// The sidecar's inbound listener for container `port`.
    pub fn inbound(&self, port: u16) -> SocketAddr {
        self.proxy.addrs[&Listener::Inbound(port)]
    }

    /// A client that sends through this pod's sidecar, as its app does (one connection per
    /// request).
    pub fn client(&self) -> reqwest::Client {
        crate::net::per_request()
            .proxy(reqwest::Proxy::http(format!("http://{}", self.outbound())).expect("a proxy URL"))
            .build()
            .expect("a client with no TLS settings builds")
    }
}

impl Mesh {
    /// A control plane over an in-memory config source and no pods; its state (CA, token) in `dir`.
    pub async fn start(dir: &Path) -> Mesh {
        let env = Env::resolve("testing", Some(dir.to_path_buf())).expect("an environment name");
        env.ensure_dirs().expect("the state directory");
        let settings = Settings { tracing_port: 0, ..Settings::default() };
        let config = Box::new(control_plane::config::Memory::default());
        let tokens = std::sync::Arc::new(crate::control_plane::credentials::PodTokens::default());
        let control_plane =
            control_plane::start(env.clone(), config, settings, Box::new(Registered { tokens: tokens.clone() }))
                .await
                .expect("the control plane starts");
        Mesh { control_plane, env, tokens }
    }

    /// The API client, with the environment's token.
    pub fn client(&self) -> api::Client {
        api::Client::new(self.control_plane.address, self.control_plane.token.clone())
    }

    /// Applies `yaml` (namespace `default` where none is given); the version it made.
    pub async fn apply(&self, yaml: &str) -> Result<Version, api::Error> {
        let docs = crate::resources::parse::parse_documents("test.yaml", yaml).expect("the test's YAML parses");
        let resources = docs
            .into_iter()
            .map(|d| {
                let mut r = d.resource;
                r.set_default_namespace("default");
                r
            })
            .collect();
        Ok(self.client().apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?.version)
    }

    /// Waits until every registered pod's proxy runs the current config.
    pub async fn settled(&self) {
        let status = self.client().wait_settled(None, Duration::from_secs(10)).await.expect("the status");
        assert!(status.settled, "the pods did not settle: {:?}", status.pods);
    }

    /// Registers a pod `namespace/name` with `labels` whose app is `app` on container `port`,
    /// starts its sidecar, and waits until the sidecar has its config.
    pub async fn sidecar(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        port: u16,
        app: axum::Router,
    ) -> Pod {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
        let app_addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let workload = labels.get("app").cloned().unwrap_or_else(|| name.to_string());
        let identity = ProxyIdentity {
            namespace: namespace.into(),
            pod: name.into(),
            workload,
            labels,
            service_account: "default".into(),
            role: Role::Sidecar,
        };
        let key = format!("{namespace}/{name}");
        let state = &self.control_plane.state;
        state
            .lock()
            .pods
            .insert(key.clone(), PodRecord::new(Workload::new(identity), Some("app".into()), String::new()));
        let token = self.tokens.issue(&key);
        let config = crate::proxy::Config {
            role: Role::Sidecar,
            control_plane: api::Client::new(self.control_plane.address, token),
            namespace: namespace.into(),
            pod: name.into(),
            inbound_ports: vec![port],
            publish: BTreeMap::new(),
            max_connections: crate::env::DEFAULT_MAX_CONNECTIONS,
            listen: crate::proxy::Listen::Loopback,
        };
        let proxy = crate::proxy::start(config).await.expect("the sidecar starts");
        state.update_pod(&key, |p, v| {
            p.set_listeners(Some(proxy.addrs.clone()), Some(BTreeMap::from([(port, app_addr)])));
            p.set_phase(crate::api::Phase::Running);
            p.run.running_since = v;
        });
        self.settled().await;
        Pod { key, app: app_addr, proxy }
    }
}

/// `GET url` through `client`: the status and the body ("" when there was no answer, with the
/// error as the body and status 0).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, crate::net::error_chain(&e)),
    }
}

pub mod kube_api;
#[cfg(test)]
mod tests;
