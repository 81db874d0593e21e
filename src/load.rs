//! The load generator behind `meshrig load` and the fortio pod's `fortio load`: `connections`
//! keep-alive HTTP/1.1 connections share one schedule of calls. At a fixed rate (open loop)
//! call *i* is due at `start + i/qps`; a call that goes out late because every connection was
//! busy is timed from when it was due, so a stalled server shows in the percentiles instead of
//! slowing the load down (wrk2's coordinated-omission fix); at `qps = 0` each connection sends
//! as fast as answers come back.

pub mod fortio;
pub mod histogram;
pub mod summary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub use histogram::Histogram;

/// Where the calls go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given (`http://httpbin:8000/get`).
    pub url: Uri,
    /// Where connections are opened: the URL's host, or the proxy in front of it.
    pub connect: SocketAddr,
    /// Through an HTTP proxy (a pod's sidecar): requests carry the absolute URL.
    pub via_proxy: bool,
}

impl Target {
    /// Straight to the URL's host and port (which must resolve here).
    pub async fn direct(url: &str) -> Result<Target, String> {
        let uri = parse_url(url)?;
        let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let connect = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| format!("{}: {e}", authority.host()))?
            .next()
            .ok_or_else(|| format!("{}: no address", authority.host()))?;
        Ok(Target { url: uri, connect, via_proxy: false })
    }

    /// Through the HTTP proxy at `proxy` (a pod's outbound listener).
    pub fn via(url: &str, proxy: SocketAddr) -> Result<Target, String> {
        Ok(Target { url: parse_url(url)?, connect: proxy, via_proxy: true })
    }
}

fn parse_url(url: &str) -> Result<Uri, String> {
    let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let uri: Uri = with_scheme.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => return Err(format!("{url}: only http:// URLs are loaded here, not {s}://")),
        None => return Err(format!("{url}: not a URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url}: no host"));
    }
    Ok(uri)
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Connections, each with at most one call in flight.
    pub connections: usize,
    /// Calls per second over all connections; 0 means as fast as answers come.
    pub qps: f64,
    /// Stop after this many calls…
    pub calls: Option<u64>,
    /// …or after this long (the first reached; neither: until interrupted).
    pub duration: Option<Duration>,
    pub method: Method,
    pub headers: HeaderMap,
    /// One call's deadline, connect to last byte.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 4,
            qps: 0.0,
            calls: None,
            duration: Some(Duration::from_secs(5)),
            method: Method::GET,
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub options_connections: usize,
    pub options_qps: f64,
    pub elapsed: Duration,
    /// Answers by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Calls with no HTTP answer (refused, reset, timed out), by reason.
    pub errors: BTreeMap<String, u64>,
    /// Answers carrying `x-envoy-overloaded: true` (a circuit breaker's 503).
    pub overloaded: u64,
    /// Every call's latency, answered or not.
    pub latency: Histogram,
    /// Latency of the calls that were not 2xx.
    pub error_latency: Histogram,
    /// Connections opened.
    pub sockets: u64,
    /// Size of each answer's headers, and of the whole answer (headers and body), in bytes.
    pub header_bytes: Histogram,
    pub sizes: Histogram,
    /// Calls that started late because every connection was busy (open loop only).
    pub late: u64,
}

impl Report {
    pub fn calls(&self) -> u64 {
        self.latency.count
    }

    pub fn qps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.calls() as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: Report) {
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.overloaded += other.overloaded;
        self.latency.merge(&other.latency);
        self.error_latency.merge(&other.error_latency);
        self.sockets += other.sockets;
        self.header_bytes.merge(&other.header_bytes);
        self.sizes.merge(&other.sizes);
        self.late += other.late;
    }
}

/// Live counts for a progress line, updated as calls end.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub ok: AtomicU64,
}

/// Runs the load to its end (or until `stop` resolves) and reports.
pub async fn run(
    target: Target,
    options: Options,
    progress: Arc<Progress>,
    stop: impl std::future::Future<Output = ()>,
) -> Report {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(tokio::sync::Notify::new());
    let stopped = AtomicBool::new(false);
    let shared =
        Arc::new(Shared { target, options: options.clone(), start, next, stopped, halt: halt.clone(), progress });
    let workers: Vec<_> = (0..options.connections.max(1)).map(|_| tokio::spawn(worker(shared.clone()))).collect();
    let all = futures_join(workers);
    tokio::pin!(all);
    tokio::pin!(stop);
    let reports = tokio::select! {
        r = &mut all => r,
        _ = stop => {
            shared.stopped.store(true, Ordering::SeqCst);
            halt.notify_waiters();
            all.await
        }
    };
    let mut report = Report {
        options_connections: options.connections.max(1),
        options_qps: options.qps,
        elapsed: start.elapsed(),
        ..Report::default()
    };
    for r in reports {
        report.merge(r);
    }
    report
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<Report>>) -> Vec<Report> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or_default());
    }
    out
}

struct Shared {
    target: Target,
    options: Options,
    start: Instant,
    /// The next call's number.
    next: Arc<AtomicU64>,
    /// Interrupted: no more calls start.
    stopped: AtomicBool,
    halt: Arc<tokio::sync::Notify>,
    progress: Arc<Progress>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn worker(s: Arc<Shared>) -> Report {
    let mut report = Report::default();
    let mut conn: Option<Sender> = None;
    let o = &s.options;
    let deadline = o.duration.map(|d| s.start + d);
    let host = s.target.url.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    let host = HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("localhost"));
    let uri = if s.target.via_proxy {
        s.target.url.clone()
    } else {
        s.target
            .url
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"))
    };
    loop {
        if s.stopped.load(Ordering::SeqCst) {
            break;
        }
        let i = s.next.fetch_add(1, Ordering::SeqCst);
        if o.calls.is_some_and(|n| i >= n) {
            break;
        }
        // When the call is due: on the fixed schedule, or now.
        let due = if o.qps > 0.0 { s.start + Duration::from_secs_f64(i as f64 / o.qps) } else { Instant::now() };
        if deadline.is_some_and(|d| due >= d) {
            break;
        }
        // A call that is due later waits for its time and is timed from when it goes out (the
        // timer's own slack, up to a millisecond, is the generator's, not the server's). A call
        // whose time passed while this connection was still busy is timed from when it was
        // due: the wait the server caused counts (coordinated omission).
        let free = Instant::now();
        let sent = if due > free {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = s.halt.notified() => break,
            }
            Instant::now()
        } else {
            if o.qps > 0.0 && free - due > Duration::from_millis(1) {
                report.late += 1;
            }
            due
        };
        let mut req = Request::builder().method(o.method.clone()).uri(uri.clone());
        if let Some(h) = req.headers_mut() {
            *h = o.headers.clone();
            h.entry(header::HOST).or_insert(host.clone());
            h.entry(header::USER_AGENT).or_insert(HeaderValue::from_static("meshrig-load"));
        }
        let Ok(req) = req.body(Full::new(Bytes::new())) else { break };
        let outcome = tokio::time::timeout(o.timeout, call(&s.target, &mut conn, &mut report.sockets, req)).await;
        let micros = sent.elapsed().as_micros() as u64;
        report.latency.record(micros);
        s.progress.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(answer)) => {
                *report.codes.entry(answer.status).or_default() += 1;
                report.header_bytes.record(answer.header_bytes);
                report.sizes.record(answer.header_bytes + answer.body_bytes);
                if answer.overloaded {
                    report.overloaded += 1;
                }
                if (200..300).contains(&answer.status) {
                    s.progress.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    report.error_latency.record(micros);
                }
            }
            Ok(Err(why)) => {
                conn = None;
                report.error_latency.record(micros);
                *report.errors.entry(why).or_default() += 1;
            }
            Err(_) => {
                conn = None;
                report.error_latency.record(micros);
                *report.errors.entry(format!("timed out after {:?}", o.timeout)).or_default() += 1;
            }
        }
    }
    report
}

struct Answer {
    status: u16,
    overloaded: bool,
    header_bytes: u64,
    body_bytes: u64,
}

/// One call on the worker's connection, opening one if there is none (or it closed).
async fn call(
    target: &Target,
    conn: &mut Option<Sender>,
    sockets: &mut u64,
    req: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(target.connect).await.map_err(|e| describe_io(&e))?;
        let _ = stream.set_nodelay(true);
        *sockets += 1;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(driver);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().expect("opened above");
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| {
        *conn = None;
        if e.is_incomplete_message() {
            "connection closed before an answer".to_string()
        } else {
            e.to_string()
        }
    })?;
    let status = resp.status().as_u16();
    let overloaded = resp.headers().get("x-envoy-overloaded").is_some_and(|v| v.as_bytes() == b"true");
    let header_bytes = resp.headers().iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum::<u64>() + 17;
    let close = resp.headers().get(header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    if close {
        *conn = None;
    }
    Ok(Answer { status, overloaded, header_bytes, body_bytes: body.len() as u64 })
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_host() {
        assert_eq!(parse_url("httpbin:8000/get").unwrap().to_string(), "http://httpbin:8000/get");
        assert!(parse_url("https://x/").unwrap_err().contains("only http://"));
        assert!(parse_url("http:///x").is_err());
    }
}
