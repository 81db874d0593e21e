//! The proxy: one process per pod, a sidecar, an ingress gateway, or the plain forwarder.
//!
//! It binds its listeners first, announces them on stdout, then follows the control plane's
//! snapshots. Its listeners are where `Listen` says: loopback ports the OS picks (every one but
//! the gateway's published ports) on the local backend, whose apps send through `HTTP_PROXY`;
//! or Istio's fixed ports in a pod's network namespace, where iptables redirects the pod's
//! traffic and each connection is routed by its original destination (`SO_ORIGINAL_DST`).
//!
//! # Layout
//! - `connection`: accept, settle the transport (mTLS, PERMISSIVE, STRICT), then a record of
//!   the connection every request reads.
//! - `stream`: one stream type for plaintext and TLS connections, closed with a FIN or an RST.
//! - `identity`: the workload certificate (key made here, CSR, renewal).
//! - `gateway_tls`: a gateway's certificates from Secrets, fetched and kept by version.
//! - `forward`: the request path in phases, for each listener kind.
//! - `decide`: route, destination cluster, hash key and fault decision (pure).
//! - `route`: virtual host and route selection (pure).
//! - `router`: fault, route timeout, retries, per-try timeout.
//! - `tcp`: connections relayed as bytes (gateway TCP routes, TCP inbound ports).
//! - `explain`: the per-request decision record (`/explain?id=`), and its reasons (pure).
//! - `edits`: header operations, rewrites, redirects, CORS, mirror hosts (pure).
//! - `upstream`: connection pools per endpoint and typed upstream errors.
//! - `breakers`: Envoy's circuit breakers per cluster (`connectionPool`) and its counters.
//! - `outlier`: outlier detection (`outlierDetection`), a pure state machine.
//! - `clusters`: cluster and endpoint state that survives snapshots; load balancing.
//! - `outcome`: response flags, the local-reply table, one outcome per request.
//! - `runtime`: a snapshot compiled for the request path.
//! - `watch`: the long poll on the control plane.
//! - `admin`: `/ready`, `/stats` (Envoy's), `/stats/prometheus`, `/config_dump`, `/clusters`, `/explain`.
//! - `stats`: Istio's request metrics.

pub mod access_format;
pub mod access_log;
pub mod admin;
pub mod breakers;
pub mod clusters;
pub mod connection;
pub mod decide;
pub mod drain;
pub mod edits;
pub mod exchange;
pub mod explain;
pub mod forward;
pub mod gateway_tls;
pub mod identity;
pub mod outcome;
pub mod outlier;
pub mod route;
pub mod router;
pub mod runtime;
pub mod spans;
pub mod stats;
pub mod stream;
pub mod tcp;
pub mod upstream;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use crate::net::{self, log};
use crate::ready::{self, Listener};
use crate::snapshot::Role;
use forward::Direction;
use runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The environment variable that carries the control plane's token to a proxy.
pub const TOKEN_ENV: &str = "MESHRIG_PROXY_TOKEN";

/// How a proxy process is started (by the runner).
#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    /// The control plane to follow (address and token given at start, never read from disk).
    pub control_plane: crate::api::Client,
    pub namespace: String,
    pub pod: String,
    /// Sidecar: the container ports to put an inbound listener in front of.
    pub inbound_ports: Vec<u16>,
    /// Gateway: container port → the localhost address it is published on (8080 → 127.0.0.1:8080).
    pub publish: BTreeMap<u16, SocketAddr>,
    /// The most connections each listener holds at once.
    pub max_connections: usize,
    /// Where the listeners are.
    pub listen: Listen,
}

/// Where a proxy's listeners are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Loopback ports the OS picks (the local backend sends traffic to them by address).
    Loopback,
    /// Istio's fixed ports on every address, for traffic iptables redirects to them.
    Capture,
}

/// Istio's proxy ports: where iptables sends a pod's outbound (15001) and inbound (15006)
/// traffic, the admin on localhost (15000), the readiness probe (15021) and the merged stats
/// Prometheus scrapes (15090).
pub mod ports {
    pub const OUTBOUND: u16 = 15001;
    pub const INBOUND: u16 = 15006;
    pub const ADMIN: u16 = 15000;
    pub const HEALTH: u16 = 15021;
    pub const STATS: u16 = 15090;
}

/// State every listener of the proxy shares.
pub struct Shared {
    pub runtime: channel::Sender<Arc<Runtime>>,
    pub stats: Arc<stats::Stats>,
    /// Each listener's connection limit (`up --max-connections`).
    pub max_connections: usize,
    /// Per-endpoint state (pools, active requests) that outlives snapshots.
    pub endpoints: clusters::Endpoints,
    /// The addresses this proxy listens on (a request addressed to one of them is a loop).
    own: OnceLock<Vec<SocketAddr>>,
    configured: AtomicBool,
    /// Gateway: the snapshot version whose listeners are bound. The watch acknowledges a
    /// snapshot only once this reaches it, so "synced" means "serving".
    pub listeners_bound: channel::Sender<crate::snapshot::Version>,
    /// Why the last requests that carried an `x-request-id` were answered so (`/explain`).
    pub explain: explain::Recorder,
    /// Gateway: container port → the address its listener is bound on (`/listeners`).
    pub gateway_bound: std::sync::Mutex<BTreeMap<u16, SocketAddr>>,
    /// The workload's certificate (sidecars and gateways; a plain forwarder has none).
    pub identity: Option<Arc<identity::Identity>>,
    /// Gateway: container port → its TLS servers by SNI (certificates from Secrets).
    pub gateway_tls: std::sync::Mutex<HashMap<u16, Arc<crate::tls::SniConfigs>>>,
    /// Finished spans on their way to the control plane's collector.
    pub spans: Arc<spans::Exporter>,
    /// The access log's writer, for the file the mesh config names (kept across snapshots).
    access_log: std::sync::Mutex<Option<(String, Arc<access_log::Writer>)>>,
    /// Set on SIGTERM: listeners close, connections finish their request and close.
    pub drain: Arc<drain::Drain>,
}

impl Shared {
    /// The writer for the configured access log (one task per file, kept while it stays the
    /// same) and whether lines are JSON; `None` when access logging is off.
    fn access_writer(
        &self,
        config: Option<&crate::snapshot::telemetry::AccessLog>,
    ) -> Option<access_log::AccessConfig> {
        let config = config?;
        let mut current = self.access_log.lock().unwrap_or_else(|p| p.into_inner());
        let writer = match &*current {
            Some((file, w)) if *file == config.file => w.clone(),
            _ => {
                let w = Arc::new(access_log::Writer::start(&config.file));
                *current = Some((config.file.clone(), w.clone()));
                w
            }
        };
        Some(access_log::AccessConfig {
            writer,
            json: config.json,
            filter: config.filter.clone().map(Arc::new),
            format: config.format.clone().map(Arc::new),
        })
    }

    pub fn has_config(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }
    fn mark_configured(&self) {
        self.configured.store(true, Ordering::Release);
    }
    /// Is `addr` one of this proxy's own listeners, however it is spelt: the same port on the
    /// listener's address, on an unspecified one (`0.0.0.0`, `::`), on any loopback (127/8, `::1`)
    /// or on their IPv4-mapped forms (`::ffff:127.0.0.1`)? A connection there would come back to
    /// this proxy, which would forward it to itself until out of sockets.
    pub fn is_own_address(&self, addr: SocketAddr) -> bool {
        self.own.get().is_some_and(|own| own.iter().any(|o| same_listener(*o, addr)))
    }
    /// Swaps in a new snapshot, reconciled with the running one.
    pub fn install(&self, snapshot: crate::snapshot::Snapshot) {
        let previous = self.runtime.borrow().clone();
        let access_log = self.access_writer(snapshot.client.access_log.as_ref());
        let inbound_access_log = match &snapshot.server {
            Some(server) => self.access_writer(server.access_log.as_ref()),
            None => access_log.clone(),
        };
        let mut runtime = Runtime::new(snapshot, Some(&previous), &self.endpoints, self.identity.as_ref());
        (runtime.access_log, runtime.inbound_access_log) = (access_log, inbound_access_log);
        self.runtime.send_replace(Arc::new(runtime));
        drop(previous);
        self.endpoints.sweep();
        self.mark_configured();
    }
}

/// Would a connection to `addr` reach the listener bound at `own`? (Pure.)
pub fn same_listener(own: SocketAddr, addr: SocketAddr) -> bool {
    use std::net::IpAddr;
    if own.port() != addr.port() {
        return false;
    }
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (own_ip, ip) = (canonical(own.ip()), canonical(addr.ip()));
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
    ip == own_ip || (local(ip) && local(own_ip))
}

fn loopback0() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    net::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

/// A captured inbound listener's direction for one connection: the port the client dialled.
fn captured(direction: Direction, original_dst: Option<SocketAddr>) -> Direction {
    match direction {
        Direction::Inbound { port: 0 } => Direction::Inbound { port: original_dst.map_or(0, |d| d.port()) },
        d => d,
    }
}

/// Serves `listener` in `direction`; `Direction::Inbound { port: 0 }` is a captured inbound
/// listener, whose connections are each for the port they were sent to.
fn serve(
    shared: &Arc<Shared>,
    listener: tokio::net::TcpListener,
    direction: Direction,
    redirected: bool,
) -> JoinHandle<()> {
    let shared = shared.clone();
    let relay_shared = shared.clone();
    let accept_shared = shared.clone();
    let limits = connection::Limits {
        max_connections: shared.max_connections,
        header_timeout: matches!(direction, Direction::Gateway { .. }).then_some(connection::GATEWAY_HEADER_TIMEOUT),
        redirected,
    };
    tokio::spawn(connection::serve(
        listener,
        limits,
        shared.drain.clone(),
        move |original_dst| accept(&accept_shared, captured(direction, original_dst)),
        move |conn: &connection::Connection| tcp::relay(&relay_shared, captured(direction, conn.original_dst), conn),
        move |req, conn| forward::handle(shared.clone(), captured(direction, conn.original_dst), req, conn),
    ))
}

/// How a listener takes a new connection: a sidecar's inbound port by its PeerAuthentication
/// mode (mTLS needs the workload's certificate); everything else plaintext.
fn accept(shared: &Shared, direction: Direction) -> connection::Accept {
    // (A captured inbound connection's direction names the port it was sent to.)
    use crate::snapshot::MtlsMode;
    if let Direction::Gateway { port } = direction {
        let tls = shared.gateway_tls.lock().unwrap_or_else(|e| e.into_inner()).get(&port).cloned();
        return tls.map_or(connection::Accept::Plain, connection::Accept::Sni);
    }
    let (Direction::Inbound { port }, Some(identity)) = (direction, &shared.identity) else {
        return connection::Accept::Plain;
    };
    let mode = shared.runtime.borrow().inbound.get(&port).map_or(MtlsMode::Permissive, |i| i.mtls);
    match mode {
        MtlsMode::Disable => connection::Accept::Plain,
        MtlsMode::Strict => connection::Accept::Strict(identity.mtls.server()),
        MtlsMode::Permissive => connection::Accept::Permissive(identity.mtls.server()),
    }
}

/// The proxy process: started, announced (`READY`), serving until SIGTERM, then drained.
pub async fn run(config: Config) -> Result<(), Error> {
    let started = start(config).await?;
    ready::announce(&started.addrs);
    tokio::select! {
        _ = started.serving => {}
        _ = drain::signalled() => drain::drain_then_exit(&started.shared.drain).await,
    }
    Ok(())
}

/// A proxy serving: its listeners' addresses and its shared state.
pub struct Started {
    pub addrs: ready::Addrs,
    pub shared: Arc<Shared>,
    /// Runs for the proxy's life (a gateway's listeners follow its Gateway servers here).
    pub serving: JoinHandle<()>,
}

/// Starts a proxy in this process: its certificate first (sidecars and gateways), then its
/// listeners, then it follows the control plane.
pub async fn start(config: Config) -> Result<Started, Error> {
    crate::tls::install_default();
    let pod_key = format!("{}/{}", config.namespace, config.pod);
    // A sidecar or gateway has its certificate before it says it is ready.
    let identity = match config.role {
        Role::Plain => None,
        Role::Sidecar | Role::Gateway => Some(identity::obtain(&config.control_plane, &pod_key).await),
    };
    if let Some(id) = &identity {
        tokio::spawn(identity::renew(id.clone(), config.control_plane.clone(), pod_key.clone()));
    }
    let (tx, _rx) = channel::channel(Arc::new(Runtime::empty()));
    let shared = Arc::new(Shared {
        runtime: tx,
        stats: Arc::new(stats::Stats::new()),
        max_connections: config.max_connections,
        endpoints: clusters::Endpoints::default(),
        own: OnceLock::new(),
        configured: AtomicBool::new(false),
        listeners_bound: channel::channel(crate::snapshot::Version::default()).0,
        explain: explain::Recorder::default(),
        gateway_bound: Default::default(),
        identity,
        gateway_tls: Default::default(),
        spans: Default::default(),
        access_log: Default::default(),
        drain: Default::default(),
    });
    let mut addrs = ready::Addrs::new();
    let mut tasks = Vec::new();

    let capture = config.listen == Listen::Capture;
    let any = |port: u16| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let admin = bind(if capture { SocketAddr::from((Ipv4Addr::LOCALHOST, ports::ADMIN)) } else { loopback0() }).await?;
    addrs.insert(Listener::Admin, admin.local_addr().expect("bound"));
    let mut admins = vec![admin];
    if capture {
        // The kubelet's readiness probe and Prometheus reach the pod's address, not localhost.
        admins.push(bind(any(ports::HEALTH)).await?);
        admins.push(bind(any(ports::STATS)).await?);
    }
    for admin in admins {
        let s = shared.clone();
        tasks.push(tokio::spawn(net::serve(admin, move |req, _| admin::handle(s.clone(), req))));
    }

    if config.role != Role::Gateway {
        let outbound = bind(if capture { any(ports::OUTBOUND) } else { loopback0() }).await?;
        addrs.insert(Listener::Outbound, outbound.local_addr().expect("bound"));
        tasks.push(serve(&shared, outbound, Direction::Outbound, capture));
    }
    if config.role == Role::Sidecar && capture {
        // One listener for every port: a connection is for the port it was sent to.
        let l = bind(any(ports::INBOUND)).await?;
        for port in &config.inbound_ports {
            addrs.insert(Listener::Inbound(*port), l.local_addr().expect("bound"));
        }
        tasks.push(serve(&shared, l, Direction::Inbound { port: 0 }, true));
    } else if config.role == Role::Sidecar {
        for port in &config.inbound_ports {
            let l = bind(loopback0()).await?;
            addrs.insert(Listener::Inbound(*port), l.local_addr().expect("bound"));
            tasks.push(serve(&shared, l, Direction::Inbound { port: *port }, false));
        }
    }
    let _ = shared.own.set(addrs.values().copied().collect());

    // Idle upstream connections close within a second of their idle timeout.
    let reaper = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            reaper.endpoints.reap();
        }
    });
    if config.role != Role::Plain {
        let (exporter, client) = (shared.spans.clone(), config.control_plane.clone());
        tokio::spawn(spans::export(exporter, client, config.namespace.clone(), config.pod.clone()));
    }
    tokio::spawn(watch::run(
        shared.clone(),
        config.control_plane.clone(),
        config.namespace.clone(),
        config.pod.clone(),
    ));
    let serving = match config.role {
        Role::Gateway => {
            tokio::spawn(gateway_listeners(shared.clone(), config.publish, config.control_plane.clone(), config.listen))
        }
        _ => tokio::spawn(std::future::pending::<()>()),
    };
    Ok(Started { addrs, shared, serving })
}

/// Binds and unbinds the gateway's listeners as Gateway servers come and go: like Envoy, a
/// port without a Gateway server refuses connections. A published gateway (the ingress
/// gateway, given `--publish`) publishes every other port too, by `env::extra_gateway_port`;
/// any other gateway listens on ports the OS picks; a gateway in a pod (`Listen::Capture`)
/// listens on each port on every address, as Envoy's gateway listeners do.
async fn gateway_listeners(
    shared: Arc<Shared>,
    publish: BTreeMap<u16, SocketAddr>,
    api: crate::api::Client,
    listen: Listen,
) {
    let address = |port: u16| match publish.get(&port) {
        Some(a) => *a,
        None if listen == Listen::Capture => SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        None if publish.is_empty() => loopback0(),
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, crate::env::extra_gateway_port(port))),
    };
    let mut rx = shared.runtime.subscribe();
    let mut bound: HashMap<u16, JoinHandle<()>> = HashMap::new();
    let mut credentials = gateway_tls::Credentials::default();
    loop {
        let (version, listeners) = {
            let runtime = rx.borrow_and_update();
            (runtime.snapshot.version, runtime.snapshot.listeners.clone())
        };
        let wanted: Vec<u16> = listeners.iter().map(|l| l.port).collect();
        // Certificates first, so an HTTPS port never serves without them.
        let mesh = shared.identity.as_ref().map(|i| i.mtls.server());
        let configs = credentials.configs(&api, &listeners, mesh).await;
        *shared.gateway_tls.lock().unwrap_or_else(|e| e.into_inner()) = configs;
        bound.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
                shared.gateway_bound.lock().unwrap_or_else(|e| e.into_inner()).remove(port);
                log(&format!("gateway: closed listener for port {port}"));
            }
            keep
        });
        let mut all_bound = true;
        for port in wanted {
            if bound.contains_key(&port) {
                continue;
            }
            let addr = address(port);
            match bind(addr).await {
                Ok(l) => {
                    let at = l.local_addr().expect("bound");
                    log(&format!("gateway: listening for port {port} on {at}"));
                    shared.gateway_bound.lock().unwrap_or_else(|e| e.into_inner()).insert(port, at);
                    bound.insert(port, serve(&shared, l, Direction::Gateway { port }, false));
                }
                Err(e) => {
                    all_bound = false;
                    log(&format!("gateway: {e}; is another program using it? (`meshrig doctor`)"));
                }
            }
        }
        // Only a snapshot whose listeners all serve counts as applied; the watch retries the
        // others (it receives the snapshot again, and this loop binds again).
        if all_bound {
            shared.listeners_bound.send_replace(version);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_listener;

    #[test]
    fn a_listener_is_recognised_under_every_local_spelling() {
        let own: std::net::SocketAddr = "127.0.0.1:15001".parse().unwrap();
        for addr in [
            "127.0.0.1:15001",
            "0.0.0.0:15001",
            "[::]:15001",
            "[::1]:15001",
            "[::ffff:127.0.0.1]:15001",
            "127.9.9.9:15001",
            "[::ffff:0.0.0.0]:15001",
        ] {
            assert!(same_listener(own, addr.parse().unwrap()), "{addr}");
        }
        for addr in ["127.0.0.1:15002", "10.0.0.1:15001", "[2001:db8::1]:15001"] {
            assert!(!same_listener(own, addr.parse().unwrap()), "{addr}");
        }
        let pod_ip: std::net::SocketAddr = "10.244.0.7:15001".parse().unwrap();
        assert!(same_listener(pod_ip, "10.244.0.7:15001".parse().unwrap()));
        assert!(!same_listener(pod_ip, "127.0.0.1:15001".parse().unwrap()), "a pod IP listener is not on loopback");
        assert!(same_listener("0.0.0.0:15001".parse().unwrap(), "127.0.0.1:15001".parse().unwrap()));
    }
}
