//! The connection step: every proxy listener accepts, records who is talking to whom, then
//! relays the connection as bytes (a TCP route, `tcp.rs`) or serves HTTP/1.1 on it. Requests read the record and never re-derive it; TLS
//! termination, peer identity, PERMISSIVE detection and STRICT resets plug in here.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::net::{self, Body};

/// What is known about a downstream connection, for every request on it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Where the client connected before a redirect (`SO_ORIGINAL_DST`); `None` when the
    /// connection was not redirected (the local backend sends traffic to the proxy directly).
    pub original_dst: Option<SocketAddr>,
    /// The client's SPIFFE identity from its TLS certificate (mTLS, not yet).
    pub peer_identity: Option<String>,
    /// TLS server name and negotiated protocol (not yet).
    pub sni: Option<String>,
    pub alpn: Option<String>,
}

impl Connection {
    fn accepted(stream: &TcpStream, peer: SocketAddr) -> Connection {
        let local = stream.local_addr().unwrap_or(peer);
        let original_dst = original_dst(stream).filter(|d| *d != local);
        Connection { peer, local, original_dst, peer_identity: None, sni: None, alpn: None }
    }
}

#[cfg(target_os = "linux")]
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt::OriginalDst, SockaddrIn};
    let raw = getsockopt(stream, OriginalDst).ok()?;
    Some(SocketAddr::V4(SockaddrIn::from(raw).into()))
}

#[cfg(not(target_os = "linux"))]
fn original_dst(_: &TcpStream) -> Option<SocketAddr> {
    None
}

/// The proxy closes the connection without answering (Envoy's black hole, a STRICT reset).
#[derive(Debug, thiserror::Error)]
#[error("connection closed without a response: {0}")]
pub struct Reset(pub &'static str);

/// A connection taken as bytes rather than HTTP (a TCP route): runs until the relay ends.
pub type Relay = Box<dyn FnOnce(TcpStream, Arc<Connection>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Accepts on `listener` until the task is dropped; each connection runs on its own task.
/// `relay` decides first whether the connection is relayed as TCP; otherwise `handler` gets
/// every HTTP request with the connection's record. A handler's `Err(Reset)` closes the
/// connection without a response.
pub async fn serve<F, Fut, R>(listener: TcpListener, relay: R, handler: F)
where
    F: Fn(Request<Incoming>, Arc<Connection>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Reset>> + Send + 'static,
    R: Fn() -> Option<Relay>,
{
    loop {
        let (stream, peer) = net::accept(&listener).await;
        let conn = Arc::new(Connection::accepted(&stream, peer));
        if let Some(relay) = relay() {
            tokio::spawn(relay(stream, conn));
            continue;
        }
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                let conn = conn.clone();
                async move { handler(req, conn).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
