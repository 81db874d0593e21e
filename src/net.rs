//! Loopback HTTP plumbing shared by every process: body types, serving a listener, a client.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body type every handler returns and every client sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never: Infallible| match never {}).boxed()
}

/// A local reply with a plain-text body (what Envoy sends for 404/503/504 and friends).
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(if body.is_empty() { empty() } else { full(body.to_string()) });
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// A JSON reply, compact (the API is read by programs; the CLI formats for people).
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON reply indented for people (`/config_dump`, as Envoy's admin does).
pub fn json_pretty<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Serves HTTP/1.1 with keep-alive on `listener` until the task is dropped. Each connection
/// runs on its own task; `handler` gets the request and the peer address.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, peer) = accept(&listener).await;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The next connection, with `TCP_NODELAY` set. Accept errors (out of file descriptors and
/// the like) are logged and retried after a short back-off instead of spinning.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                log(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `HOST:PORT` (a socket address, or a name DNS answers for, as a Service's in a cluster) as
/// the first address it resolves to, retried until `within` passes (a pod may start before
/// its DNS answers).
pub async fn resolve(host_port: &str, within: Duration) -> Result<SocketAddr, String> {
    if let Ok(addr) = host_port.parse() {
        return Ok(addr);
    }
    if !host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
        return Err(format!("{host_port:?} is not HOST:PORT"));
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reason = match tokio::net::lookup_host(host_port).await {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => return Ok(a),
                None => "no address".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("cannot resolve {host_port}: {reason}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Binds a loopback listener; `addr` may use port 0.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub type HttpClient = reqwest::Client;

/// A pooled HTTP/1.1 client for the mesh's own endpoints (the control plane's API, the proxies'
/// admins, the addons): never through a proxy the user's shell names in `HTTP_PROXY`.
pub fn client() -> HttpClient {
    builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("a client with no TLS settings builds")
}

/// What every client of meshrig's starts from, as `curl` behaves: HTTP/1.1, redirects
/// answered rather than followed, `TCP_NODELAY`.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tcp_nodelay(true).redirect(reqwest::redirect::Policy::none()).http1_only()
}

/// `builder()` with a new connection for every request, as a learner's `curl` and Bookinfo's
/// clients open one per call.
pub fn per_request() -> reqwest::ClientBuilder {
    builder().pool_max_idle_per_host(0)
}

/// `GET url`: the status and the body (up to 64 MiB), all within `within`.
pub async fn get(client: &HttpClient, url: &str, within: Duration) -> Result<(StatusCode, Bytes), String> {
    let answer = async {
        let resp = client.get(url).send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        Ok((status, read_all(resp, 64 << 20).await?))
    };
    tokio::time::timeout(within, answer).await.map_err(|_| format!("no answer within {within:?}"))?
}

/// A client's answer read to the end, up to `limit` bytes.
pub async fn read_all(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// Collects a response body, up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, String> {
    let collected = http_body_util::Limited::new(body, limit).collect().await.map_err(|e| e.to_string())?;
    Ok(collected.to_bytes())
}

/// `text` as one value of a URL's query string (`application/x-www-form-urlencoded`).
pub fn percent_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Log lines go to stderr (the process's log file); stdout is reserved for the readiness line.
pub fn log(msg: &str) {
    eprintln!("{} {msg}", crate::env::timestamp());
}

/// An error and its causes on one line (hyper's errors hide the useful part in `source`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
