//! Connections relayed as bytes: a gateway's TCP listener (VirtualService `tcp` rules pick a
//! weighted cluster and an endpoint per connection, as Envoy's tcp_proxy does) and a sidecar's
//! inbound listener for a TCP Service port (straight to the app). Decided when the connection
//! is accepted; everything else on a listener is HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::net::log;
use crate::proxy::connection::{Connection, Relay};
use crate::proxy::forward::Direction;
use crate::proxy::route;
use crate::proxy::runtime::Runtime;
use crate::proxy::Shared;

/// Envoy's default connect timeout (Istio's `connectTimeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a new connection goes when it is TCP here; `None` serves it as HTTP.
pub fn relay(shared: &Arc<Shared>, direction: Direction) -> Option<Relay> {
    let runtime = shared.runtime.borrow().clone();
    match direction {
        Direction::Inbound { port } => {
            let inbound = runtime.inbound.get(&port).filter(|i| i.tcp)?;
            let app = inbound.app;
            Some(Box::new(move |stream, _conn| {
                Box::pin(async move {
                    match app {
                        Some(app) => splice(stream, app).await,
                        None => log(&format!("tcp inbound {port}: the app is not started; closing")),
                    }
                })
            }))
        }
        Direction::Gateway { port } if runtime.tcp.contains_key(&port) => {
            let shared = shared.clone();
            Some(Box::new(move |stream, conn| Box::pin(gateway(shared, runtime, port, stream, conn))))
        }
        _ => None,
    }
}

/// The first `tcp` rule of the listener picks a weighted cluster, the cluster an endpoint.
/// With nothing to send to, the connection is closed (Envoy's tcp_proxy does the same).
async fn gateway(shared: Arc<Shared>, runtime: Arc<Runtime>, port: u16, stream: TcpStream, _conn: Arc<Connection>) {
    let Some(rule) = runtime.tcp.get(&port).and_then(|rules| rules.first()) else { return };
    let mut rng = fastrand::Rng::new();
    let total = route::total_weight(&rule.clusters);
    let Some(weighted) = route::pick_weighted(&rule.clusters, if total == 0 { 0 } else { rng.u64(..total) }) else {
        return;
    };
    let Some((_, cluster)) = runtime.clusters.get(&weighted.cluster) else {
        log(&format!("tcp {port}: {} names no cluster; closing", weighted.cluster));
        return;
    };
    let Some(host) = cluster.pick(None, &[], &mut rng) else {
        log(&format!("tcp {port}: no healthy upstream in {}; closing", cluster.name));
        return;
    };
    if shared.is_own_address(host.endpoint.address) {
        return;
    }
    let _active = host.state.start();
    splice(stream, host.endpoint.address).await;
}

/// Connects to `to` and copies bytes both ways until either side closes.
async fn splice(mut downstream: TcpStream, to: SocketAddr) {
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return log(&format!("tcp: connect {to}: {e}; closing")),
        Err(_) => return log(&format!("tcp: connect {to}: timed out; closing")),
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
}
