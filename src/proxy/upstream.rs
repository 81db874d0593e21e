//! The upstream step: one HTTP/1.1 connection pool per endpoint (plaintext and mTLS connections
//! kept apart), and a typed error for every way an upstream call can fail, so the router can
//! retry and the reply table can answer as Envoy.
//!
//! A connection goes back to its pool only when the response body has been read to the end;
//! a body dropped half-way closes the connection (HTTP/1.1 cannot reuse it). Idle connections
//! per endpoint are bounded, so a burst leaves nothing behind but that bound.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::net::Body;
use crate::proxy::breakers::{Breakers, Guard, Resource};
use crate::proxy::stream::Stream;

/// Istio's default `connectTimeout` (MeshConfig).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 64;

/// How an upstream call failed. Each maps to one of Envoy's local replies (`outcome::Reply`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {addr}: {source}")]
    ConnectFailure { addr: SocketAddr, source: std::io::Error },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    /// The connection closed or reset before response headers arrived.
    #[error("{addr} closed the connection before the response headers: {source}")]
    ResetBeforeHeaders { addr: SocketAddr, source: hyper::Error },
    /// The upstream answered with something that is not HTTP/1.1.
    #[error("{addr} answered with a protocol error: {source}")]
    Protocol { addr: SocketAddr, source: hyper::Error },
    /// The TLS handshake failed (an endpoint without a sidecar, or the wrong identity).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    /// A circuit breaker is open (too many requests in flight, or waiting for a connection).
    #[error("circuit breaker open (overflow)")]
    Overflow,
}

impl Error {
    /// True when no byte of the request reached the upstream (Envoy's `connect-failure`).
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Error::ConnectFailure { .. } | Error::ConnectTimeout { .. } | Error::Tls { .. })
    }
}

/// TLS this proxy originates to an endpoint: the client config (this workload's certificate
/// and the server identities it accepts), the SNI, and a key that keeps pooled connections of
/// different TLS settings apart.
#[derive(Debug)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: rustls_pki_types::ServerName<'static>,
    pub key: u64,
    /// The server's SPIFFE id (metrics' `destination_principal`).
    pub principal: Arc<str>,
}

/// How a cluster's connections are made and kept (DestinationRule `connectionPool`'s options
/// beside its limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOptions {
    /// `maxRequestsPerConnection` (0: unlimited).
    pub per_connection: u32,
    /// TCP connect and TLS handshake, together.
    pub connect_timeout: Duration,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// A connection this old is closed once idle (`maxConnectionDuration`).
    pub max_duration: Option<Duration>,
    pub keepalive: Option<crate::snapshot::Keepalive>,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions::from(&crate::snapshot::ConnectionPool::default())
    }
}

impl From<&crate::snapshot::ConnectionPool> for ConnOptions {
    fn from(p: &crate::snapshot::ConnectionPool) -> Self {
        ConnOptions {
            per_connection: p.max_requests_per_connection,
            connect_timeout: Duration::from_millis(p.connect_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(p.idle_timeout_ms.max(1)),
            max_duration: (p.max_connection_duration_ms > 0)
                .then(|| Duration::from_millis(p.max_connection_duration_ms)),
            keepalive: p.keepalive,
        }
    }
}

/// SO_KEEPALIVE with the probes' settings (`None`: the OS's).
fn set_keepalive(stream: &TcpStream, k: &crate::snapshot::Keepalive) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    if let Some(t) = k.time_s {
        let _ = setsockopt(stream, sockopt::TcpKeepIdle, &t);
    }
    if let Some(i) = k.interval_s {
        let _ = setsockopt(stream, sockopt::TcpKeepInterval, &i);
    }
    if let Some(p) = k.probes {
        let _ = setsockopt(stream, sockopt::TcpKeepCount, &p);
    }
}

/// A connection to `addr` with TLS when `tls` says so, connected and handshaken within the
/// cluster's connect timeout.
pub async fn dial(addr: SocketAddr, tls: Option<&Tls>, options: &ConnOptions) -> Result<Stream, Error> {
    let deadline = tokio::time::Instant::now() + options.connect_timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(Error::ConnectFailure { addr, source }),
        Err(_) => return Err(Error::ConnectTimeout { addr }),
    };
    let _ = stream.set_nodelay(true);
    if let Some(k) = &options.keepalive {
        set_keepalive(&stream, k);
    }
    let Some(tls) = tls else { return Ok(Stream::Plain(stream)) };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout_at(deadline, connector.connect(tls.sni.clone(), stream)).await {
        Ok(Ok(s)) => Ok(Stream::Client(Box::new(s))),
        Ok(Err(e)) => Err(Error::Tls { addr, reason: e.to_string() }),
        Err(_) => Err(Error::ConnectTimeout { addr }),
    }
}

/// Envoy's worker threads in an Istio sidecar (`concurrency: 2`). Envoy keeps one connection
/// pool per worker; a downstream connection stays on the worker that accepted it, and each
/// worker's pool may open a first connection to an endpoint whatever `maxConnections` says.
/// That is the "leeway" Istio's circuit-breaking task shows at `-c 2`; meshrig keeps the same
/// split so the task's numbers look alike.
pub const WORKERS: usize = 2;

/// Which cluster a request goes out under: its breakers, its connection options, and the
/// worker of the downstream connection it came on.
pub type Under<'a> = (&'a Arc<Breakers>, &'a ConnOptions, usize);

/// The idle connections to one endpoint, and its counters (Envoy's per-host `cx_total`,
/// `rq_total`, shown by the admin's `/clusters`).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Conn>>,
    /// Connections open to this endpoint now, per worker (a worker with none may always open
    /// one).
    open: Arc<[AtomicU64; WORKERS]>,
    connections: AtomicU64,
    requests: AtomicU64,
}

/// A connection between requests: the TLS key it was made with (0: plaintext), the cluster
/// (and limits) it was opened under (Envoy's pools are per cluster: a connection counts
/// against one cluster's `maxConnections`), and how many requests it has carried (for
/// `maxRequestsPerConnection`).
struct Conn {
    key: u64,
    worker: usize,
    /// Its place under `maxConnections` and in the worker's open count, given back as soon as
    /// the pool drops it (as Envoy's count falls when it closes a connection), or when the
    /// upstream closes it.
    place: Arc<Place>,
    owner: (usize, u64),
    sender: SendRequest<Body>,
    used: u32,
    opened: Instant,
    /// While idle: when it is closed (idle timeout, or its maximum duration).
    expires: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropped by the pool (or with its request): the connection closes, its place is free.
        self.place.give_back();
    }
}

/// What a request holds until its response is read: its connection, and its place in the
/// cluster's active requests.
struct Lease {
    conn: Conn,
    pool: Arc<Pool>,
    breakers: Arc<Breakers>,
    options: ConnOptions,
    _request: Guard,
}

impl Pool {
    fn take_idle(&self, key: u64, owner: (usize, u64), worker: usize) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Connections opened under this cluster's previous limits are closed, not reused; so
        // are those past their idle timeout or maximum duration.
        let now = Instant::now();
        idle.retain(|c| (c.owner.0 != owner.0 || c.owner.1 == owner.1) && c.expires > now);
        let i = idle.iter().rposition(|c| c.key == key && c.owner == owner && c.worker == worker)?;
        Some(idle.swap_remove(i))
    }

    fn has_idle(&self, key: u64, owner: (usize, u64), worker: usize) -> bool {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|c| c.key == key && c.owner == owner && c.worker == worker)
    }

    /// A connection whose response was read: idle again (a request waiting for one is woken),
    /// or closed when it has carried `maxRequestsPerConnection` requests or lived its
    /// `maxConnectionDuration`.
    fn put_back(&self, mut conn: Conn, options: &ConnOptions, breakers: &Breakers) {
        conn.used += 1;
        let now = Instant::now();
        let end_of_life = options.max_duration.map(|d| conn.opened + d);
        if conn.sender.is_closed()
            || (options.per_connection > 0 && conn.used >= options.per_connection)
            || end_of_life.is_some_and(|t| t <= now)
        {
            return; // dropped: the connection closes
        }
        let idle_end = now + options.idle_timeout;
        conn.expires = end_of_life.map_or(idle_end, |t| t.min(idle_end));
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
            drop(idle);
            breakers.connection_freed();
        }
    }

    /// Closes idle connections past their idle timeout or maximum duration (the proxy calls
    /// this every second, so an idle connection closes within a second of its time).
    pub fn reap(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.iter().any(|c| c.expires <= now) {
            idle.retain(|c| c.expires > now);
        }
    }

    /// Idle connections right now (for tests and the admin page).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections opened to this endpoint since the proxy started.
    pub fn connections_total(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests sent to this endpoint since the proxy started.
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends `req` to `addr` on an idle connection made with the same TLS, or a new one,
    /// within the cluster's circuit breakers, as Envoy's HTTP/1.1 pool does: a request is
    /// active (`http2MaxRequests`) until its response is read; without an idle connection it
    /// is pending (`http1MaxPendingRequests`) until a new connection is up or, when the cluster
    /// may open no more (`maxConnections`), until one comes free. An open breaker answers
    /// `Error::Overflow`. A request that an idle connection could not take (closed meanwhile)
    /// moves on to another without being sent twice.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        tls: Option<&Tls>,
        cluster: Under<'_>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let breakers = cluster.0;
        let counters = &breakers.counters;
        self.requests.fetch_add(1, Ordering::Relaxed);
        counters.rq_total.fetch_add(1, Ordering::Relaxed);
        let Some(request) = breakers.try_acquire(Resource::Request) else {
            // Envoy counts a `max_requests` overflow with the pending ones.
            counters.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overflow);
        };
        let key = tls.map_or(0, |t| t.key);
        let owner = breakers.owner();
        let worker = cluster.2 % WORKERS;
        let mut pending = None;
        loop {
            while let Some(mut conn) = self.take_idle(key, owner, worker) {
                if conn.sender.ready().await.is_err() {
                    continue;
                }
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => return Ok(self.leased(resp, conn, cluster, request)),
                    Err(mut e) => match e.take_message() {
                        // Not sent: the connection was gone before the request was written.
                        Some(back) => req = back,
                        None => return Err(classify(addr, e.into_error())),
                    },
                }
            }
            if pending.is_none() {
                let Some(p) = breakers.try_acquire(Resource::Pending) else {
                    counters.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Overflow);
                };
                counters.rq_pending_total.fetch_add(1, Ordering::Relaxed);
                pending = Some(p);
            }
            // Envoy lets a worker's pool with no connection to the endpoint open one whatever
            // the limit, so its pending requests always have a way to be served.
            let slot = breakers.try_acquire(Resource::Connection).or_else(|| {
                (self.open[worker].load(Ordering::Acquire) == 0).then(|| breakers.acquire_anyway(Resource::Connection))
            });
            let Some(slot) = slot else {
                counters.cx_overflow.fetch_add(1, Ordering::Relaxed);
                breakers
                    .wait_for_connection(|| {
                        breakers.remaining(Resource::Connection) > 0 || self.has_idle(key, owner, worker)
                    })
                    .await;
                continue;
            };
            let place = Arc::new(Place { slot: Mutex::new(Some(slot)), open: self.open.clone(), worker });
            let sender = match connect(addr, tls, cluster.1, place.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    counters.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            drop(pending);
            self.connections.fetch_add(1, Ordering::Relaxed);
            counters.cx_total.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let mut conn = Conn { key, worker, place, owner, sender, used: 0, opened: now, expires: now };
            return match conn.sender.send_request(req).await {
                Ok(resp) => Ok(self.leased(resp, conn, cluster, request)),
                Err(e) => Err(classify(addr, e)),
            };
        }
    }
}

impl Pool {
    /// The response, holding its connection and its place among the cluster's active
    /// requests until its body has been read.
    fn leased(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        conn: Conn,
        (breakers, options, _): Under<'_>,
        request: Guard,
    ) -> Response<Body> {
        let lease =
            Lease { conn, pool: self.clone(), breakers: breakers.clone(), options: options.clone(), _request: request };
        let (parts, body) = resp.into_parts();
        let done = body.is_end_stream();
        let mut body = PooledBody { inner: body, lease: Some(lease) };
        if done {
            body.release();
        }
        Response::from_parts(parts, body.boxed())
    }
}

fn classify(addr: SocketAddr, e: hyper::Error) -> Error {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Error::Protocol { addr, source: e }
    } else {
        Error::ResetBeforeHeaders { addr, source: e }
    }
}

/// A new connection; its `place` is held until it closes or the pool drops it.
async fn connect(
    addr: SocketAddr,
    tls: Option<&Tls>,
    options: &ConnOptions,
    place: Arc<Place>,
) -> Result<SendRequest<Body>, Error> {
    let stream = dial(addr, tls, options).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| Error::ResetBeforeHeaders { addr, source })?;
    place.open[place.worker].fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        // Ends when the upstream closes or the last sender is dropped.
        let _ = conn.await;
        place.give_back();
    });
    Ok(sender)
}

/// A connection's place under its cluster's `maxConnections` and in its worker's open count.
struct Place {
    slot: Mutex<Option<Guard>>,
    open: Arc<[AtomicU64; WORKERS]>,
    worker: usize,
}

impl Place {
    /// Gives the place back, once (the pool dropping the connection, or the connection ending).
    fn give_back(&self) {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(slot) = slot {
            self.open[self.worker].fetch_sub(1, Ordering::AcqRel);
            drop(slot);
        }
    }
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.put_back(lease.conn, &lease.options, &lease.breakers);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net;
    use http::StatusCode;

    async fn upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(net::text(StatusCode::OK, "hello"))
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        (addr, connections)
    }

    fn get(addr: SocketAddr) -> Request<Body> {
        Request::get(format!("http://{addr}/")).header("host", "x").body(net::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (addr, conns) = upstream().await;
        let pool = Arc::new(Pool::default());
        for _ in 0..5 {
            let resp = pool
                .send(addr, None, (&crate::proxy::breakers::unlimited(), &ConnOptions::default(), 0), get(addr))
                .await
                .unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_way_does_not_return_its_connection() {
        let (addr, conns) = upstream().await;
        let pool = Arc::new(Pool::default());
        let resp = pool
            .send(addr, None, (&crate::proxy::breakers::unlimited(), &ConnOptions::default(), 0), get(addr))
            .await
            .unwrap();
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool
            .send(addr, None, (&crate::proxy::breakers::unlimited(), &ConnOptions::default(), 0), get(addr))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_close_at_their_idle_timeout_or_maximum_duration() {
        let (addr, conns) = upstream().await;
        let pool = Arc::new(Pool::default());
        let options = ConnOptions {
            idle_timeout: Duration::from_secs(60),
            max_duration: Some(Duration::from_secs(600)),
            ..ConnOptions::default()
        };
        let send = |pool: Arc<Pool>, options: ConnOptions| async move {
            let resp =
                pool.send(addr, None, (&crate::proxy::breakers::unlimited(), &options, 0), get(addr)).await.unwrap();
            resp.into_body().collect().await.unwrap();
        };
        send(pool.clone(), options.clone()).await;
        pool.reap(Instant::now() + Duration::from_secs(30));
        assert_eq!(pool.idle_count(), 1, "idle for 30 s of 60: kept");
        pool.reap(Instant::now() + Duration::from_secs(61));
        assert_eq!(pool.idle_count(), 0, "idle past its timeout: closed");
        send(pool.clone(), options.clone()).await;
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2, "a new connection after the idle one closed");
        // The maximum duration counts from the connection's opening, whatever the idle time.
        let short_life = ConnOptions { idle_timeout: Duration::from_secs(3600), ..options };
        send(pool.clone(), short_life).await;
        pool.reap(Instant::now() + Duration::from_secs(601));
        assert_eq!(pool.idle_count(), 0, "past its maximum duration: closed");
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_the_tls_handshake_and_keepalive_is_set() {
        // Accepts, then never speaks TLS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap().0);
            }
        });
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let tls = Tls {
            config: Arc::new(config),
            sni: rustls_pki_types::ServerName::try_from("x.example").unwrap(),
            key: 1,
            principal: "x".into(),
        };
        let options = ConnOptions { connect_timeout: Duration::from_millis(100), ..ConnOptions::default() };
        let started = Instant::now();
        let err = dial(addr, Some(&tls), &options).await.err().expect("no TLS answer");
        assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let keepalive = crate::snapshot::Keepalive { probes: Some(3), time_s: Some(7), interval_s: Some(2) };
        let options = ConnOptions { keepalive: Some(keepalive), ..ConnOptions::default() };
        let Ok(crate::proxy::stream::Stream::Plain(s)) = dial(addr, None, &options).await else { panic!("plain") };
        use nix::sys::socket::{getsockopt, sockopt};
        assert!(getsockopt(&s, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&s, sockopt::TcpKeepIdle).unwrap(), 7);
        assert_eq!(getsockopt(&s, sockopt::TcpKeepInterval).unwrap(), 2);
        assert_eq!(getsockopt(&s, sockopt::TcpKeepCount).unwrap(), 3);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_failure() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = Arc::new(Pool::default());
        let err = pool
            .send(addr, None, (&crate::proxy::breakers::unlimited(), &ConnOptions::default(), 0), get(addr))
            .await
            .unwrap_err();
        assert!(err.is_connect_failure(), "{err}");
    }

    #[tokio::test]
    async fn an_upstream_that_closes_without_answering_resets_before_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                drop(s);
            }
        });
        let pool = Arc::new(Pool::default());
        let err = pool
            .send(addr, None, (&crate::proxy::breakers::unlimited(), &ConnOptions::default(), 0), get(addr))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ResetBeforeHeaders { .. }), "{err}");
    }
}
