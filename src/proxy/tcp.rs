//! Connections relayed as bytes: a gateway's TCP listener (VirtualService `tcp` rules pick a
//! weighted cluster and an endpoint per connection, as Envoy's tcp_proxy does), a gateway's
//! PASSTHROUGH server (the `tls` rule that names the connection's SNI picks), and a sidecar's
//! inbound listener for a TCP Service port (straight to the app). Decided when the connection
//! is accepted; everything else on a listener is HTTP. A sidecar's outbound listener opens TCP
//! tunnels with HTTP CONNECT (`connect`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::net::{self, log, Body};
use crate::proxy::clusters::Host;
use crate::proxy::connection::{Connection, Relay, Reset};
use crate::proxy::forward::Direction;
use crate::proxy::route;
use crate::proxy::runtime::Runtime;
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
            let app = inbound.app;
            Some(Box::new(move |stream, conn| {
                Box::pin(async move {
                    if !allowed(&runtime, &conn, port) {
                        return;
                    }
                    match app {
                        Some(app) => splice(stream, app).await,
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
        _ => None,
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
    let Some(host) = pick(&runtime, &rules, &mut fastrand::Rng::new()) else {
        return log(&format!("tcp {port}: no cluster or healthy endpoint; closing"));
    };
    if shared.is_own_address(host.endpoint.address) {
        return;
    }
    let _active = host.state.start();
    if let Ok(mut upstream) = open(host.endpoint.address, host.tls.as_deref()).await {
        let mut downstream = stream;
        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    }
}

/// The endpoint for a connection: the first rule's weighted cluster, then the cluster's choice.
fn pick<'a>(runtime: &'a Runtime, rules: &[TcpRoute], rng: &mut fastrand::Rng) -> Option<&'a Host> {
    let rule = rules.first()?;
    let total = route::total_weight(&rule.clusters);
    let weighted = route::pick_weighted(&rule.clusters, if total == 0 { 0 } else { rng.u64(..total) })?;
    let (_, cluster) = runtime.clusters.get(&weighted.cluster)?;
    cluster.pick(None, &[], rng)
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
    let (addr, active, tls) = match known {
        Some(t) => match pick(runtime, &t.routes, &mut fastrand::Rng::new()) {
            Some(h) => (h.endpoint.address, Some(h.state.start()), h.tls.clone()),
            None => return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")),
        },
        None if runtime.snapshot.outbound_policy == OutboundMode::RegistryOnly => {
            return Ok(net::text(StatusCode::BAD_GATEWAY, ""));
        }
        None => match tokio::net::lookup_host((host.as_str(), port)).await.ok().and_then(|mut a| a.next()) {
            Some(a) => (a, None, None),
            None => return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")),
        },
    };
    if shared.is_own_address(addr) {
        return Err(Reset("the tunnel is addressed to this proxy's own listener"));
    }
    let Ok(mut upstream) = open(addr, tls.as_deref()).await else {
        let body = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
        return Ok(net::text(StatusCode::SERVICE_UNAVAILABLE, body));
    };
    tokio::spawn(async move {
        let _active = active;
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        }
    });
    Ok(net::text(StatusCode::OK, ""))
}

/// A connection to `to` (mTLS when `tls` says so), within Envoy's connect timeout.
async fn open(to: SocketAddr, tls: Option<&Tls>) -> Result<Stream, upstream::Error> {
    upstream::dial(to, tls, &upstream::ConnOptions::default()).await.inspect_err(|e| log(&format!("tcp: {e}")))
}

/// Connects to `to` and copies bytes both ways until either side closes.
async fn splice(mut downstream: Stream, to: SocketAddr) {
    if let Ok(mut upstream) = open(to, None).await {
        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    }
}
