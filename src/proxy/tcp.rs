//! Connections relayed as bytes: a gateway's TCP listener (VirtualService `tcp` rules pick a
//! weighted cluster and an endpoint per connection, as Envoy's tcp_proxy does), a gateway's
//! PASSTHROUGH server (the `tls` rule that names the connection's SNI picks), and a sidecar's
//! inbound listener for a TCP Service port (straight to the app). Decided when the connection
//! is accepted; everything else on a listener is HTTP. A sidecar's outbound listener opens TCP
//! tunnels with HTTP CONNECT (`connect`). Every relay reports Istio's TCP metrics: opened
//! when the upstream connection is up, closed with the bytes both ways when either side ends.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::{self, log, Body};
use crate::proxy::clusters::{Cluster, Host};
use crate::proxy::connection::{Connection, Relay, Reset};
use crate::proxy::forward::Direction;
use crate::proxy::route;
use crate::proxy::runtime::Runtime;
use crate::proxy::stats::{ConnectionRecord, Reporter, Sides, Stats};
use crate::proxy::stream::Stream;
use crate::proxy::upstream::{self, Tls};
use crate::proxy::Shared;
use crate::snapshot::{OutboundMode, TcpRoute};

/// Where a new connection goes when it is TCP here; `None` serves it as HTTP.
pub fn relay(shared: &Arc<Shared>, direction: Direction, conn: &Connection) -> Option<Relay> {
    let runtime = shared.runtime.borrow().clone();
    match direction {
        Direction::Inbound { port } => {
            let inbound = runtime.inbound.get(&port).filter(|i| i.tcp)?;
            let (app, service) = (inbound.app, inbound.service.clone());
            let stats = shared.stats.clone();
            Some(Box::new(move |stream, conn| {
                Box::pin(async move {
                    if !allowed(&runtime, &conn, port) {
                        return;
                    }
                    let sides = Sides {
                        reporter: Reporter::Destination,
                        source: runtime.unknown.clone(),
                        destination: runtime.me.clone(),
                        service,
                        principals: conn.peer_identity.clone().zip(runtime.me.principal.clone()),
                        overrides: runtime.metrics.clone(),
                    };
                    match app {
                        Some(app) => {
                            if let Ok(upstream) = open(app, None).await {
                                let mtls = conn.mtls();
                                relay_counted(&stats, &sides, (port, mtls), stream, upstream).await;
                            }
                        }
                        None => log(&format!("tcp inbound {port}: the app is not started; closing")),
                    }
                })
            }))
        }
        Direction::Gateway { port } if conn.passthrough => {
            // Never served as HTTP: without a rule (none can be missing) the connection closes.
            let routes = runtime.passthrough.get(&port).map_or(&[][..], Vec::as_slice);
            let rule =
                crate::tls::best_by_sni(routes.iter().map(|r| (r.sni_hosts.as_slice(), &r.route)), conn.sni.as_deref());
            let rules: Vec<TcpRoute> = rule.into_iter().cloned().collect();
            let shared = shared.clone();
            Some(Box::new(move |stream, conn| Box::pin(gateway(shared, runtime, port, rules, stream, conn))))
        }
        Direction::Gateway { port } => {
            let rules = runtime.tcp.get(&port)?.clone();
            let shared = shared.clone();
            Some(Box::new(move |stream, conn| Box::pin(gateway(shared, runtime, port, rules, stream, conn))))
        }
        // A captured connection to a Service's cluster IP at one of its TCP ports (Envoy's
        // `clusterIP:port` listener): relayed by the mesh's `tcp` rules for that service.
        Direction::Outbound => {
            let dst = conn.original_dst?;
            let host = runtime
                .snapshot
                .outbound_tcp
                .iter()
                .find(|t| t.port == dst.port() && t.addresses.contains(&dst.ip()))?;
            let rules = host.routes.clone();
            let shared = shared.clone();
            Some(Box::new(move |stream, _conn| Box::pin(to_cluster(shared, runtime, dst.port(), rules, stream, false))))
        }
    }
}

/// The AuthorizationPolicies on a TCP connection: a denied one is closed (Envoy's network RBAC).
fn allowed(runtime: &Runtime, conn: &Connection, port: u16) -> bool {
    if runtime.snapshot.authz.is_empty() {
        return true;
    }
    let verdict = crate::authz::decide(&runtime.snapshot.authz, &crate::proxy::forward::attributes(conn, port, None));
    if verdict != crate::authz::Verdict::Allow {
        log(&format!("tcp {port}: connection from {} denied by authorization policy", conn.peer));
        return false;
    }
    true
}

/// The first of the rules picks a weighted cluster, the cluster an endpoint. With nothing to
/// send to, the connection is closed (Envoy's tcp_proxy does the same).
async fn gateway(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    port: u16,
    rules: Vec<TcpRoute>,
    stream: Stream,
    conn: Arc<Connection>,
) {
    if !allowed(&runtime, &conn, port) {
        return;
    }
    to_cluster(shared, runtime, port, rules, stream, conn.mtls()).await;
}

/// Relays `stream` to an endpoint the first rule picks (`mtls`: the downstream connection's).
async fn to_cluster(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    port: u16,
    rules: Vec<TcpRoute>,
    stream: Stream,
    mtls: bool,
) {
    let Some((cluster, host)) = pick(&runtime, &rules, &mut fastrand::Rng::new()) else {
        return log(&format!("tcp {port}: no cluster or healthy endpoint; closing"));
    };
    if shared.is_own_address(host.endpoint.address) {
        return;
    }
    let _active = host.state.start();
    if let Ok(upstream) = open(host.endpoint.address, host.tls.as_deref()).await {
        let sides = outbound_sides(&runtime, cluster.service.clone(), host);
        relay_counted(&shared.stats, &sides, (port, mtls), stream, upstream).await;
    }
}

/// A client-side relay's labels: this proxy to the endpoint, mTLS when it originates it.
fn outbound_sides(runtime: &Runtime, service: Arc<str>, host: &Host) -> Sides {
    let principals = match &host.tls {
        Some(_) => runtime.me.principal.clone().zip(host.peer.principal.clone()),
        None => None,
    };
    Sides {
        reporter: Reporter::Source,
        source: runtime.me.clone(),
        destination: host.peer.clone(),
        service,
        principals,
        overrides: runtime.metrics.clone(),
    }
}

/// Copies bytes both ways until either side ends, reporting the connection to the metrics.
/// `port` and `mtls`: the downstream connection's (`destination.port`, `connection.mtls`).
async fn relay_counted<D, U>(stats: &Stats, sides: &Sides, (port, mtls): (u16, bool), downstream: D, mut upstream: U)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // A connection has no request: labels set from `request.*` read `unknown`.
    let facts = crate::cel::Facts { request: None, code: None, destination_port: Some(port), mtls };
    let values = sides.overrides.values(sides.reporter, &facts);
    stats.tcp_opened(sides, &values);
    let mut downstream = Counted { inner: downstream, read: 0, written: 0 };
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    let record = ConnectionRecord {
        sides,
        flags: Default::default(),
        received: downstream.read,
        sent: downstream.written,
        values: &values,
    };
    stats.tcp_closed(&record);
}

/// A stream that counts the bytes read from and written to it (kept when the copy fails).
struct Counted<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written += *n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The endpoint for a connection: the first rule's weighted cluster, then the cluster's choice.
fn pick<'a>(runtime: &'a Runtime, rules: &[TcpRoute], rng: &mut fastrand::Rng) -> Option<(&'a Cluster, &'a Host)> {
    let rule = rules.first()?;
    let total = route::total_weight(&rule.clusters);
    let weighted = route::pick_weighted(&rule.clusters, if total == 0 { 0 } else { rng.u64(..total) })?;
    let (_, cluster) = runtime.clusters.get(&weighted.cluster)?;
    Some((cluster, cluster.pick(None, &[], rng)?))
}

/// HTTP CONNECT on a sidecar's outbound listener: how a local app opens a TCP connection
/// through the mesh (`curl -p telnet://tcp-echo:9000`, `nc -X connect`). A Service's TCP port
/// goes by the mesh's `tcp` rules; another host passes through under `ALLOW_ANY` and gets 502
/// under `REGISTRY_ONLY`. The tunnel opens (200) once the upstream connection is up.
pub async fn connect(shared: &Shared, runtime: &Runtime, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(net::text(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n"));
    };
    let (host, port) =
        (authority.host().trim_end_matches('.').to_ascii_lowercase(), authority.port_u16().unwrap_or(443));
    let known = runtime.snapshot.outbound_tcp.iter().find(|t| t.port == port && t.domains.contains(&host));
    let (addr, active, tls, sides) = match known {
        Some(t) => match pick(runtime, &t.routes, &mut fastrand::Rng::new()) {
            Some((c, h)) => (
                h.endpoint.address,
                Some(h.state.start()),
                h.tls.clone(),
                outbound_sides(runtime, c.service.clone(), h),
            ),
            None => return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")),
        },
        None if runtime.snapshot.outbound_policy == OutboundMode::RegistryOnly => {
            return Ok(net::text(StatusCode::BAD_GATEWAY, ""));
        }
        None => match tokio::net::lookup_host((host.as_str(), port)).await.ok().and_then(|mut a| a.next()) {
            // Istio's PassthroughCluster.
            Some(a) => (
                a,
                None,
                None,
                Sides {
                    reporter: Reporter::Source,
                    source: runtime.me.clone(),
                    destination: runtime.unknown.clone(),
                    service: "PassthroughCluster".into(),
                    principals: None,
                    overrides: runtime.metrics.clone(),
                },
            ),
            None => return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")),
        },
    };
    if shared.is_own_address(addr) {
        return Err(Reset("the tunnel is addressed to this proxy's own listener"));
    }
    let Ok(upstream) = open(addr, tls.as_deref()).await else {
        let body = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
        return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, body));
    };
    let stats = shared.stats.clone();
    tokio::spawn(async move {
        let _active = active;
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            relay_counted(&stats, &sides, (port, false), TokioIo::new(upgraded), upstream).await;
        }
    });
    Ok(net::text(StatusCode::OK, ""))
}

/// A connection to `to` (mTLS when `tls` says so), within Envoy's connect timeout.
async fn open(to: SocketAddr, tls: Option<&Tls>) -> Result<Stream, upstream::Error> {
    upstream::dial(to, tls, &upstream::ConnOptions::default()).await.inspect_err(|e| log(&format!("tcp: {e}")))
}
