//! How the built-in apps call other services: through the pod's sidecar (the `HTTP_PROXY` the
//! runner sets), one new connection per request as Bookinfo's clients do, with a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// What a call got back: the status and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a call got no answer (the apps treat every one alike, as their real clients do).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no HTTP_PROXY: the pod has no proxy to send through")]
    NoProxy,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

/// Largest answer an app reads (Bookinfo's are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

/// `GET url` with `headers`, through the sidecar, within `timeout` (connect to last byte).
pub async fn get(url: &str, headers: &HeaderMap, timeout: Duration) -> Result<Reply, Error> {
    let proxy = std::env::var("http_proxy").or_else(|_| std::env::var("HTTP_PROXY")).map_err(|_| Error::NoProxy)?;
    let proxy = proxy.trim_start_matches("http://").trim_end_matches('/').to_string();
    match tokio::time::timeout(timeout, exchange(&proxy, url, headers)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

async fn exchange(proxy: &str, url: &str, headers: &HeaderMap) -> Result<Reply, Error> {
    let io = |e: &dyn std::fmt::Display| Error::Io(e.to_string());
    let uri: http::Uri = url.parse().map_err(|e| io(&e))?;
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let stream = tokio::net::TcpStream::connect(proxy).await.map_err(|e| io(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io(&e))?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(Method::GET).uri(uri).body(Full::new(Bytes::new())).map_err(|e| io(&e))?;
    *req.headers_mut() = headers.clone();
    req.headers_mut().insert(header::HOST, host.parse().map_err(|e| io(&e))?);
    let resp = sender.send_request(req).await.map_err(|e| io(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| io(&e))?.to_bytes();
    Ok(Reply { status, body })
}

/// The headers of `incoming` named in `names`, to send on (trace context and the like).
pub fn forward(incoming: &HeaderMap, names: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        for v in incoming.get_all(*name) {
            if let Ok(n) = header::HeaderName::from_bytes(name.as_bytes()) {
                out.append(n, v.clone());
            }
        }
    }
    out
}

/// Trace context every built-in app passes on (Istio's list: `x-request-id`, B3, W3C, and the
/// other tracers' headers).
pub const TRACE_HEADERS: [&str; 16] = [
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
];
