//! How a lab check reaches the mesh: a request to the gateway (HTTP, or HTTPS with the check's
//! Secrets) or from a workload (through its sidecar, in proxy form, as the app's `HTTP_PROXY`
//! sends it), and reads of the proxies' admins and the addons' APIs. Over reqwest; an answer is
//! read to the end (its first 64 KiB kept) within the check's deadline.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderMap, Method};

use crate::labs::check::Seen;
use crate::net;

/// Bodies are kept up to this size for judging (the check only looks for a phrase).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Where one attempt's requests go.
pub enum Dest {
    /// The gateway's HTTP port.
    Gateway(SocketAddr),
    /// A workload's outbound listener, as its HTTP proxy.
    Proxy(SocketAddr),
    /// The gateway's HTTPS port, with this client config; the SNI is the request's host.
    Tls(SocketAddr, Box<rustls::ClientConfig>),
}

/// A destination and the client that reaches it, made once per attempt.
pub struct Route {
    pub dest: Dest,
    client: reqwest::Client,
}

/// One request: the method, the `Host` header's value (`host[:port]`), the path and query, more
/// headers, and a body.
pub struct Outgoing<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: HeaderMap,
    pub body: Option<String>,
}

impl Route {
    /// The route to `dest` for requests to `host`; `shared` serves the gateway's HTTP port (its
    /// connections are pooled for the check); a workload or the HTTPS port gets a connection
    /// per request, as a learner's `curl` does.
    pub fn new(dest: Dest, host: &str, shared: &net::HttpClient) -> Result<Route, String> {
        let fail = |e: reqwest::Error| crate::net::error_chain(&e);
        let client = match &dest {
            Dest::Gateway(_) => shared.clone(),
            Dest::Proxy(outbound) => net::per_request()
                .proxy(reqwest::Proxy::http(format!("http://{outbound}")).map_err(fail)?)
                .build()
                .map_err(fail)?,
            // The gateway's HTTPS port answers for the SNI the URL names: resolve it there.
            Dest::Tls(addr, config) => net::per_request()
                .no_proxy()
                .tls_backend_preconfigured((**config).clone())
                .resolve(crate::uri::strip_port(host), *addr)
                .build()
                .map_err(fail)?,
        };
        Ok(Route { dest, client })
    }

    /// The URL a request for `host` and `path` is sent to.
    pub fn url(&self, host: &str, path: &str) -> String {
        match &self.dest {
            Dest::Gateway(gateway) => format!("http://{gateway}{path}"),
            Dest::Proxy(_) => format!("http://{host}{path}"),
            Dest::Tls(addr, _) => format!("https://{}:{}{path}", crate::uri::strip_port(host), addr.port()),
        }
    }

    /// Sends `out` and reads the answer, all within `timeout`: what was seen.
    pub async fn send(&self, out: Outgoing<'_>, timeout: Duration) -> Seen {
        let method = match Method::from_bytes(out.method.as_bytes()) {
            Ok(m) => m,
            Err(e) => return Seen::Invalid(format!("method {}: {e}", out.method)),
        };
        let mut req = self.client.request(method, self.url(out.host, out.path)).headers(out.headers);
        req = req.header(header::HOST, out.host);
        if let Some(body) = out.body {
            req = req.body(body);
        }
        answer(req.send(), timeout).await
    }
}

/// The answer to a request under way, read to the end within `timeout`: a refused connection,
/// a reset and a timeout are told apart, as a learner's `curl` does.
async fn answer(
    resp: impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    timeout: Duration,
) -> Seen {
    let answer = async {
        let mut resp = resp.await.map_err(|e| crate::net::error_chain(&e))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| format!("the body broke off: {}", crate::net::error_chain(&e)))?
        {
            body.extend_from_slice(&chunk[..chunk.len().min(BODY_LIMIT.saturating_sub(body.len()))]);
        }
        Ok::<_, String>(Seen::Answer { status, body: String::from_utf8_lossy(&body).into() })
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(seen)) => seen,
        Ok(Err(chain)) if chain.contains("refused") => Seen::Refused,
        Ok(Err(chain)) => Seen::Reset(chain),
        Err(_) => Seen::Timeout,
    }
}

/// `GET uri` on the mesh's own endpoints (an addon's API, a proxy's admin): its JSON, if it
/// answered 2xx with JSON within `within`.
pub async fn get_json(client: &net::HttpClient, uri: &str, within: Duration) -> Option<serde_json::Value> {
    match net::get(client, uri, within).await {
        Ok((status, body)) if status.is_success() => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}
