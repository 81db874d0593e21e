//! The control plane: one process per environment. It reads its config source, has its backend run the
//! workloads (the local runner) and serves every proxy its snapshot.
//!
//! # Layout
//! - `config`: the config source (the applied resources, read and written) as a trait, with the
//!   API server's write semantics as pure functions; `store`: the local one, persisted.
//! - `certmanager`: Certificates issued into Secrets by `selfSigned` and `ca` issuers.
//! - `backend`: what runs workloads (admission, the workload source); `backend::local` today.
//! - `credentials`: who a proxy is, from its bearer token; the backend gives the check
//!   (`PodTokens` locally).
//! - `gateway_ports`: where the ingress gateway publishes each Gateway server, said at apply.
//! - `lock`: one control plane per environment (a file lock held for its life).
//! - `state`: config source + pods + the version counter + the world view, shared by everything below.
//! - `jwks`: RequestAuthentication `jwksUri` key sets, fetched and inlined for the proxies.
//! - `backoff`: restarts with back-off, as the kubelet's CrashLoopBackOff.
//! - `server`: the HTTP API (`api` has the wire types).
//! - `traces`: the trace collector and Jaeger's query API on its own port; `zipkin`: spans
//!   handed on to a Zipkin collector (istiod's, to the Jaeger addon on kind).
//! - `addons`: the addons it runs (Prometheus), supervised, their targets kept current.

pub mod addons;
pub mod backend;
pub mod backoff;
pub mod certmanager;
pub mod config;
pub mod credentials;
pub mod gateway_ports;
pub mod jwks;
pub mod lock;
pub mod server;
pub mod state;
pub mod store;
pub mod traces;
pub mod zipkin;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::env::{self, ControlPlaneInfo, Env};
use crate::{net, ready, reaper};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] env::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Ca(#[from] crate::ca::Error),
    #[error("bind the API listener: {0}")]
    Bind(std::io::Error),
    #[error("another control plane already runs for this environment (it holds the lock on {0}); `meshrig status` shows it, `meshrig down` stops it")]
    AlreadyRunning(String),
}

/// The control-plane process for `env`, its workloads run by the backend `backend` makes from
/// the environment's settings.
pub async fn run(env: Env, backend: impl FnOnce(&env::Settings) -> Box<dyn backend::Backend>) -> Result<(), Error> {
    env.ensure_dirs()?;
    // One control plane per environment, for as long as this process lives.
    let _lock = lock::try_lock(&env)?.ok_or_else(|| Error::AlreadyRunning(env.dir.display().to_string()))?;
    // Read everything first: a damaged store must not cost the pods that still serve.
    let store = store::Store::load(env.store_file())?;
    let settings = env.settings()?.unwrap_or_default();
    // Processes a previous control plane of this environment left behind (after a crash) are
    // stopped; their pods are started again from the store.
    let stale: Vec<u32> = reaper::environment_pids(&env.dir).into_iter().filter(|p| !is_control_plane(*p)).collect();
    if !stale.is_empty() {
        net::log(&format!("stopping {} process(es) left by an earlier run", stale.len()));
        reaper::stop(&stale, Duration::from_secs(2));
    }
    let backend = backend(&settings);
    let started = start(env, Box::new(store), settings, backend).await?;
    let mut addrs = ready::Addrs::new();
    addrs.insert(ready::Listener::Api, started.address);
    ready::announce(&addrs);
    net::log(&format!("control plane listening on {}", started.address));
    // Stopped (SIGTERM, as Kubernetes stops istiod): the API stops accepting and the process
    // exits. A change being committed is not cut: the store is written and swapped under the
    // state lock, in code that does not yield, and the lock is taken once more here. The pods
    // keep serving on the config they hold (the process exits without dropping the runner,
    // whose children would go with it); the next `meshrig up` takes them over.
    tokio::select! {
        _ = started.serving => {}
        _ = crate::shutdown::signalled() => {
            net::log("stopping: the API no longer accepts; the pods keep serving what they were last sent");
            drop(started.state.lock());
            std::process::exit(0);
        }
    }
    Ok(())
}

/// A control plane serving its API.
pub struct Started {
    pub state: Arc<state::State>,
    pub address: SocketAddr,
    pub token: String,
    /// The trace collector the proxies' spans go to.
    pub traces: Arc<traces::Collector>,
    /// The API server; it runs until dropped.
    pub serving: tokio::task::JoinHandle<()>,
}

/// Starts a control plane for `env` over `config`: its API on a loopback port the OS picks
/// (written to the environment's `control-plane.json`), the trace collector, the enabled
/// addons, the JWKS fetcher, and `backend`'s workloads.
pub async fn start(
    env: Env,
    config: Box<dyn config::ConfigSource>,
    settings: env::Settings,
    backend: Box<dyn backend::Backend>,
) -> Result<Started, Error> {
    let ca = crate::ca::Ca::load_or_create(&env.dir.join("ca"))?;
    start_with(env, config, settings, backend, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), ca).await
}

/// `start`, with the API on `listen` and the CA given (on Kubernetes: every interface of the
/// pod, and the root kept in a Secret).
pub async fn start_with(
    env: Env,
    config: Box<dyn config::ConfigSource>,
    settings: env::Settings,
    backend: Box<dyn backend::Backend>,
    listen: SocketAddr,
    ca: crate::ca::Ca,
) -> Result<Started, Error> {
    let tracing_port = settings.tracing_port;
    let token = env.token()?;
    let listener = net::bind(listen).await.map_err(Error::Bind)?;
    let address = listener.local_addr().map_err(Error::Bind)?;
    let api = state::Api { address, token: token.clone() };
    let enabled = settings.addons.clone();
    let state = Arc::new(state::State::new(env.clone(), settings, config, api, backend, ca));
    env::write_json(&env.control_plane_file(), &ControlPlaneInfo { address, pid: std::process::id() })?;
    state.save_processes();
    let collector = Arc::new(traces::Collector::default());
    let tracing = serve_traces(collector.clone(), tracing_port).await;
    let addons = Arc::new(addons::Addons::default());
    for name in &enabled {
        if let Err(e) = addons.enable(&state, name) {
            net::log(&format!("addon {name}: {e}"));
        }
    }
    let server = Arc::new(server::Server {
        addons,
        state: state.clone(),
        token: token.clone(),
        started: env::rfc3339_now(),
        address,
        traces: collector.clone(),
        tracing,
    });
    tokio::spawn(jwks::run(state.clone()));
    state.backend.run(state.clone());
    let serving = tokio::spawn(net::serve(listener, move |req, _| server::handle(server.clone(), req)));
    Ok(Started { state, address, token, traces: collector, serving })
}

/// Jaeger's query API on 127.0.0.1:`port` (16686 unless `up --tracing-port` chose), or on
/// any free port when that one is taken (`meshrig status` shows where).
async fn serve_traces(collector: Arc<traces::Collector>, port: u16) -> Option<SocketAddr> {
    let listener = match net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
        Ok(l) => l,
        Err(e) => {
            net::log(&format!("tracing: port {port} is taken ({e}); serving the Jaeger API on a free port"));
            net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.ok()?
        }
    };
    let address = listener.local_addr().ok()?;
    net::log(&format!("tracing: Jaeger query API on http://{address}/jaeger/api/traces?service=SERVICE"));
    tokio::spawn(net::serve(listener, move |req, _| {
        let collector = collector.clone();
        async move { traces::handle(&collector, &req) }
    }));
    Some(address)
}

/// True for a control-plane process (its argv names the `control-plane` subcommand).
fn is_control_plane(pid: u32) -> bool {
    reaper::args(pid).iter().any(|a| a == b"control-plane")
}
