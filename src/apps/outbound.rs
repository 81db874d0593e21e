//! How the built-in apps call other services: through the pod's sidecar when `HTTP_PROXY` is
//! set (the local runner sets it), directly otherwise (a Kubernetes pod, whose traffic the
//! sidecar captures); one new connection per request as Bookinfo's clients do, with a deadline.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};

/// What a call got back: the status and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a call got no answer (the apps treat every one alike, as their real clients do).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

/// Largest answer an app reads (Bookinfo's are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

/// The apps' client: `HTTP_PROXY`/`http_proxy` from the environment when set, no pooled
/// connection (Bookinfo's clients open one per call), plain HTTP/1.1.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::net::per_request().build().expect("a client with no TLS settings builds"))
}

/// `GET url` with `headers` (the `Host` is the URL's), within `timeout` (connect to last byte).
pub async fn get(url: &str, headers: &HeaderMap, timeout: Duration) -> Result<Reply, Error> {
    match tokio::time::timeout(timeout, exchange(url, headers)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

async fn exchange(url: &str, headers: &HeaderMap) -> Result<Reply, Error> {
    let io = |e: reqwest::Error| Error::Io(crate::net::error_chain(&e));
    let mut resp = client().get(url).headers(headers.clone()).send().await.map_err(io)?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(io)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::Io(format!("the answer is larger than {MAX_BODY} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply { status, body: body.into() })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `HTTP_PROXY` (a Kubernetes pod, whose traffic the sidecar captures) an app calls
    /// the service directly, with the URL's host as `Host`.
    #[tokio::test]
    async fn without_a_proxy_an_app_calls_directly() {
        assert!(std::env::var_os("HTTP_PROXY").is_none() && std::env::var_os("http_proxy").is_none());
        let listener = crate::net::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::net::serve(listener, |req, _| async move {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
            crate::net::text(StatusCode::OK, &format!("host={host}"))
        }));
        let reply = get(&format!("http://{addr}/details/0"), &HeaderMap::new(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, format!("host={addr}").into_bytes());
    }
}
