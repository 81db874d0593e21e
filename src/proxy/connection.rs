//! The connection step: every proxy listener accepts, settles the transport (plaintext, or TLS
//! terminated here: PERMISSIVE tells the two apart by the first byte, STRICT resets a
//! plaintext client; a gateway's TLS port picks its server by SNI, or hands the connection
//! through untouched), records who is talking to whom, then relays the connection as bytes (a
//! TCP route or TLS passthrough, `tcp.rs`) or serves HTTP/1.1 on it. Requests read the record
//! and never re-derive it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};

use crate::net::{self, log, Body};
use crate::proxy::stream::{Resettable, Stream};
use crate::tls::Chain;

/// How long PERMISSIVE and STRICT wait for a client's first byte to tell TLS from plaintext
/// (a client that says nothing is taken as plaintext; under STRICT it is reset).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// The most request-header bytes (request line included) a listener reads: Envoy's default
/// `max_request_headers_kb` (60 KiB). More is answered 431 and the connection closed.
pub const MAX_REQUEST_HEADERS: usize = 60 * 1024;

/// What one listener allows a client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections held at once; past it a new connection is closed as it arrives.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and, between requests, how
    /// long a keep-alive connection may idle): the edge's guard against slowloris clients.
    pub header_timeout: Option<Duration>,
    /// iptables may redirect connections here (capture): each one's original destination is
    /// read. A loopback listener's clients dial it themselves, so the syscall is skipped.
    pub redirected: bool,
}

/// A gateway's request-header timeout. Sidecars keep Envoy's default (none): their clients are
/// other proxies' pools, whose idle connections must not be closed under them.
pub const GATEWAY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts a listener's open connections; a slot is given back when its connection ends.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What is known about a downstream connection, for every request on it.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Where the client connected before a redirect (`SO_ORIGINAL_DST`); `None` when the
    /// connection was not redirected (the local backend sends traffic to the proxy directly).
    pub original_dst: Option<SocketAddr>,
    /// The client's SPIFFE identity from its certificate, when it spoke mutual TLS.
    pub peer_identity: Option<Arc<str>>,
    /// SHA-256 of the client's certificate (`x-forwarded-client-cert`'s `Hash=`).
    pub peer_cert_hash: Option<String>,
    /// TLS server name (also of a connection handed through) and negotiated protocol, when
    /// TLS was terminated here.
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// A PASSTHROUGH server takes it: TLS goes on to the destination as bytes.
    pub passthrough: bool,
    /// The proxy worker it belongs to, as the kernel spreads Envoy's accepts over its worker
    /// threads (`upstream::WORKERS`): drawn at random, like the kernel's hash of the 4-tuple.
    pub worker: usize,
    /// The caller its last request's metadata exchange named, decoded once per connection.
    pub caller: std::sync::Mutex<Option<(http::HeaderValue, Arc<crate::proxy::stats::Peer>)>>,
    /// Close the connection with an RST rather than a FIN when it ends.
    reset: Arc<AtomicBool>,
}

impl Connection {
    fn accepted(peer: SocketAddr, local: SocketAddr, original_dst: Option<SocketAddr>) -> Connection {
        Connection {
            peer,
            local,
            original_dst,
            peer_identity: None,
            peer_cert_hash: None,
            sni: None,
            alpn: None,
            passthrough: false,
            worker: fastrand::usize(..crate::proxy::upstream::WORKERS),
            caller: std::sync::Mutex::new(None),
            reset: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The client spoke mutual TLS (it presented a certificate from the mesh's root).
    pub fn mtls(&self) -> bool {
        self.peer_identity.is_some()
    }

    /// Makes the connection end with an RST (Envoy resetting it).
    pub fn reset_on_close(&self) {
        self.reset.store(true, Ordering::Release);
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

/// What the listener's transport is, decided per connection (from the current snapshot).
#[derive(Clone)]
pub enum Accept {
    Plain,
    /// PeerAuthentication PERMISSIVE: mTLS or plaintext, by the first byte.
    Permissive(Arc<ServerConfig>),
    /// PeerAuthentication STRICT: mTLS only; a plaintext client is reset.
    Strict(Arc<ServerConfig>),
    /// A gateway's HTTPS port: TLS with the certificate of the server the SNI names.
    Sni(Arc<crate::tls::SniConfigs>),
}

/// A connection taken as bytes rather than HTTP (a TCP route): runs until the relay ends.
pub type Relay = Box<dyn FnOnce(Stream, Arc<Connection>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

async fn starts_with_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == TLS_HANDSHAKE)
}

/// Settles the transport of an accepted connection; `None` when it was refused (reset, or a
/// failed handshake).
async fn establish(
    stream: TcpStream,
    (peer, local): (SocketAddr, SocketAddr),
    original_dst: Option<SocketAddr>,
    accept: Accept,
) -> Option<(Stream, Connection)> {
    let conn = Connection::accepted(peer, local, original_dst);
    let config = match accept {
        Accept::Plain => return Some((Stream::Plain(stream), conn)),
        Accept::Permissive(config) => {
            if !starts_with_tls(&stream).await {
                return Some((Stream::Plain(stream), conn));
            }
            config
        }
        Accept::Strict(config) => {
            if !starts_with_tls(&stream).await {
                // Envoy finds no filter chain for a plaintext client: the connection is reset.
                Stream::Plain(stream).reset();
                return None;
            }
            config
        }
        Accept::Sni(servers) if servers.passes_through() => {
            // The SNI decides whether TLS ends here, so it is read without taking any bytes.
            let sni = peek_sni(&stream).await?;
            return match servers.pick(sni.as_deref()) {
                Some(Chain::Passthrough) => {
                    let mut conn = conn;
                    conn.sni = sni;
                    conn.passthrough = true;
                    Some((Stream::Plain(stream), conn))
                }
                Some(Chain::Terminate(config)) => match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                    Ok(tls) => Some(terminated(tls, conn)),
                    Err(e) => {
                        log(&format!("tls: handshake with {peer} (SNI {sni:?}) failed: {e}"));
                        None
                    }
                },
                None => {
                    log(&format!("tls: no server for SNI {sni:?} from {peer}; closing"));
                    None
                }
            };
        }
        Accept::Sni(servers) => {
            let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let start = match tokio::time::timeout(SNIFF_TIMEOUT, lazy).await {
                Ok(Ok(start)) => start,
                _ => return None,
            };
            let sni = start.client_hello().server_name().map(str::to_string);
            let Some(Chain::Terminate(config)) = servers.pick(sni.as_deref()) else {
                log(&format!("tls: no server for SNI {sni:?} from {peer}; closing"));
                return None;
            };
            return match start.into_stream(config).await {
                Ok(tls) => Some(terminated(tls, conn)),
                Err(e) => {
                    log(&format!("tls: handshake with {peer} (SNI {sni:?}) failed: {e}"));
                    None
                }
            };
        }
    };
    match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
        Ok(tls) => Some(terminated(tls, conn)),
        Err(e) => {
            log(&format!("tls: handshake with {peer} failed: {e}"));
            None
        }
    }
}

/// The SNI of the ClientHello a client opens with, read without taking it off the socket:
/// `None` when it is not TLS or does not arrive in time, `Some(None)` when it names no server.
async fn peek_sni(stream: &TcpStream) -> Option<Option<String>> {
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut buf = vec![0u8; 5 + (1 << 14)];
    let mut seen = 0;
    let mut pause = Duration::from_millis(1);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if n > seen {
            seen = n;
            let mut acceptor = rustls::server::Acceptor::default();
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                acceptor.read_tls(&mut rest).ok()?;
            }
            match acceptor.accept() {
                Ok(Some(hello)) => return Some(hello.client_hello().server_name().map(str::to_string)),
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        if n == buf.len() || tokio::time::Instant::now() >= deadline {
            return None;
        }
        // The rest of a ClientHello split across segments (large key shares do that): peek
        // returns what is there without waiting, so look again shortly.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The record of a connection whose TLS was terminated here.
fn terminated(tls: tokio_rustls::server::TlsStream<TcpStream>, mut conn: Connection) -> (Stream, Connection) {
    let session = tls.get_ref().1;
    let (identity, hash) = crate::tls::peer_of(session.peer_certificates());
    conn.peer_identity = identity.map(Into::into);
    conn.peer_cert_hash = hash;
    conn.sni = session.server_name().map(str::to_string);
    conn.alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    (Stream::Server(Box::new(tls)), conn)
}

/// Accepts on `listener` until the task is dropped or the proxy drains (`drain`: the listener
/// is closed, and each HTTP connection closes once its request in flight is answered); each
/// connection runs on its own task.
/// `accept` says how its transport is settled, then `relay` decides from the connection's
/// record whether it is relayed as bytes (`accept` gets the connection's original destination
/// when iptables redirected it); otherwise `handler` gets every HTTP request with it.
/// A handler's `Err(Reset)` closes the connection with an RST, without a response.
pub async fn serve<A, F, Fut, R>(
    listener: TcpListener,
    limits: Limits,
    drain: Arc<super::drain::Drain>,
    accept: A,
    relay: R,
    handler: F,
) where
    A: Fn(Option<SocketAddr>) -> Accept,
    F: Fn(Request<Incoming>, Arc<Connection>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Reset>> + Send + 'static,
    R: Fn(&Connection) -> Option<Relay> + Clone + Send + Sync + 'static,
{
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = net::accept(&listener) => accepted,
            // Draining: the listener is dropped, so new connections are refused.
            _ = drain.started() => return,
        };
        let Some(slot) = Slot::take(&open, limits.max_connections) else {
            // Over the limit: closed at once (Envoy's downstream_cx_overflow).
            drop(stream);
            continue;
        };
        // Where the client connected, when iptables redirected it here (not when it connected
        // to this listener itself).
        let local = stream.local_addr().unwrap_or(peer);
        let original = if limits.redirected { original_dst(&stream).filter(|d| *d != local) } else { None };
        let transport = accept(original);
        let handler = handler.clone();
        let relay = relay.clone();
        let counted = drain.open();
        let drain = drain.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _counted = counted;
            let Some((stream, conn)) = establish(stream, (peer, local), original, transport).await else { return };
            let conn = Arc::new(conn);
            if let Some(relay) = relay(&conn) {
                return relay(stream, conn).await;
            }
            let io = Resettable { stream, reset: conn.reset.clone() };
            let conn_alpn_h2 = conn.alpn.as_deref() == Some("h2");
            let service = service_fn(move |req| {
                let handler = handler.clone();
                let conn = conn.clone();
                async move {
                    let result = handler(req, conn.clone()).await;
                    if result.is_err() {
                        conn.reset_on_close();
                    }
                    result
                }
            });
            // HTTP/2 when TLS negotiated it (a gateway's HTTPS port offers `h2`); HTTP/1.1 otherwise.
            // On drain, each connection finishes the request in flight and closes (HTTP/2: GOAWAY).
            if conn_alpn_h2 {
                let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_header_list_size(MAX_REQUEST_HEADERS as u32)
                    .serve_connection(TokioIo::new(io), service);
                until_drained(conn, &drain, |c| c.graceful_shutdown()).await;
            } else {
                let mut http1 = hyper::server::conn::http1::Builder::new();
                http1.keep_alive(true).max_header_size(MAX_REQUEST_HEADERS);
                if let Some(t) = limits.header_timeout {
                    http1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(t);
                } else {
                    http1.header_read_timeout(None);
                }
                let conn = http1.serve_connection(TokioIo::new(io), service).with_upgrades();
                until_drained(conn, &drain, |c| c.graceful_shutdown()).await;
            }
        });
    }
}

/// Serves `conn` to its end; once the proxy drains, `shutdown` tells it to finish the request
/// in flight and close (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY), and it is served to
/// that end.
async fn until_drained<C: Future>(conn: C, drain: &super::drain::Drain, shutdown: impl FnOnce(std::pin::Pin<&mut C>)) {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drain.started() => {
            shutdown(conn.as_mut());
            let _ = conn.await;
        }
    }
}
