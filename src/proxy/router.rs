//! The act step of a routed request: the fault filter, then the router — the route timeout
//! bounds every try, retries follow Envoy's `retry_on` conditions with jittered back-off and
//! avoid endpoints already tried, and a per-try timeout bounds each try.
//!
//! The router only decides from typed results (`upstream::Error`, a status, a timeout); what
//! the client sees when the proxy answers itself comes from `outcome::Reply`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use crate::net::{self, Body};
use crate::proxy::clusters::{ActiveGuard, EndpointState};
use crate::proxy::decide::Forward;
use crate::proxy::outcome::{set_header, Flags, Reply};
use crate::proxy::stats::Peer;
use crate::proxy::upstream;
use crate::snapshot::RetryPolicy;

/// Request bodies up to this size are kept for retries (Envoy's default buffer limit); a larger
/// or unsized body is streamed and not retried.
const REPLAY_LIMIT: u64 = 1 << 20;

/// What the router produced for one request.
pub struct Routed {
    pub response: Response<Body>,
    pub flags: Flags,
    /// The endpoint of the last try, when one was picked.
    pub destination: Option<Arc<Peer>>,
    /// Keeps the endpoint counted as busy until the response ends.
    pub active: Option<ActiveGuard>,
    /// A traced or logged request's span name and upstream cluster (set by the caller that
    /// knows them).
    pub upstream: Option<(String, String)>,
    /// The endpoint that answered.
    pub upstream_host: Option<SocketAddr>,
}

impl Routed {
    /// The proxy answers itself.
    pub fn reply(reply: Reply) -> Routed {
        Routed::failed(reply, Flags::default(), None)
    }

    /// A response that passes through untouched (inbound, passthrough, direct responses).
    pub fn plain(response: Response<Body>) -> Routed {
        Routed {
            response,
            flags: Flags::default(),
            destination: None,
            active: None,
            upstream: None,
            upstream_host: None,
        }
    }

    fn failed(reply: Reply, mut flags: Flags, destination: Option<Arc<Peer>>) -> Routed {
        let (response, f) = reply.response();
        flags.set(f);
        Routed { response, flags, destination, active: None, upstream: None, upstream_host: None }
    }

    /// True when the response came from an upstream (not from the proxy itself).
    pub fn from_upstream(&self) -> bool {
        self.active.is_some()
    }
}

/// The parts of a request each try rebuilds from.
pub struct Upstream {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    body: ReqBody,
    /// Set when the client's body turned out malformed (a bad chunk): the answer is then Envoy's
    /// 400, not the upstream failure that the cut-off body caused.
    client_failed: Arc<std::sync::atomic::AtomicBool>,
    /// The proxy worker of the downstream connection (its upstream connections are that
    /// worker's, as Envoy's pools are per worker).
    pub worker: usize,
}

enum ReqBody {
    Replayable(Bytes),
    /// Streamed once; taken by the first try.
    Stream(Option<Incoming>),
}

impl Upstream {
    /// Prepares a downstream request for the upstream: hop-by-hop headers removed, the Host
    /// kept, and the body buffered when it may be sent again (retries, mirrors).
    pub async fn new(req: Request<Incoming>, keep_body: bool) -> Upstream {
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        if !headers.contains_key(header::HOST) {
            if let Some(h) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                headers.insert(header::HOST, h);
            }
        }
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let small = body.size_hint().upper().is_some_and(|n| n <= REPLAY_LIMIT);
        let client_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = if body.is_end_stream() {
            ReqBody::Replayable(Bytes::new())
        } else if keep_body && small {
            match body.collect().await {
                Ok(c) => ReqBody::Replayable(c.to_bytes()),
                // The body broke off (malformed, or the client went away): nothing to send.
                Err(_) => {
                    client_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    ReqBody::Replayable(Bytes::new())
                }
            }
        } else {
            ReqBody::Stream(Some(body))
        };
        Upstream { method: parts.method, path_and_query, headers, body, client_failed, worker: 0 }
    }

    /// Did the client's body break off (so the request, not the upstream, failed)?
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn replayable(&self) -> bool {
        matches!(self.body, ReqBody::Replayable(_))
    }

    /// A copy of the request for a mirror, when its body was kept (a streamed body is not mirrored).
    pub fn copy(&self) -> Option<Request<Body>> {
        let ReqBody::Replayable(b) = &self.body else { return None };
        let mut req = Request::new(if b.is_empty() { net::empty() } else { net::full(b.clone()) });
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path_and_query.parse().ok()?;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }

    /// The request for one try.
    fn request(&mut self, attempt: Option<u32>) -> Request<Body> {
        let body = match &mut self.body {
            ReqBody::Replayable(b) if b.is_empty() => net::empty(),
            ReqBody::Replayable(b) => net::full(b.clone()),
            ReqBody::Stream(s) => match s.take() {
                Some(b) => {
                    let failed = self.client_failed.clone();
                    b.map_err(move |e| {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        e
                    })
                    .boxed()
                }
                None => net::empty(),
            },
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        *req.headers_mut() = self.headers.clone();
        if let Some(n) = attempt {
            set_header(req.headers_mut(), "x-envoy-attempt-count", &n.to_string());
        }
        req
    }
}

/// Sends one request straight to `addr` (inbound to the app, passthrough): no retries.
pub async fn send_once(
    state: &Arc<EndpointState>,
    addr: SocketAddr,
    mut up: Upstream,
) -> Result<Response<Body>, Reply> {
    if up.client_failed() {
        return Err(Reply::BadRequest);
    }
    let sent = state
        .pool
        .send(
            addr,
            None,
            (&crate::proxy::breakers::unlimited(), &upstream::ConnOptions::default(), up.worker),
            up.request(None),
        )
        .await;
    match sent {
        Ok(resp) => Ok(strip_response(resp)),
        Err(_) if up.client_failed() => Err(Reply::BadRequest),
        Err(e) => Err(Reply::Upstream(e)),
    }
}

fn strip_response(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

/// How a try ended, when it did not bring a response to return.
enum TryError {
    Upstream(upstream::Error),
    PerTryTimeout,
}

/// The router: the route's retry policy and timeouts over `fwd.cluster`. `timeout` is the
/// route timeout in force (the route's, or the request's `x-envoy-upstream-rq-timeout-ms`).
pub async fn route(fwd: &Forward<'_>, mut up: Upstream, timeout: Option<Duration>, rng: &mut fastrand::Rng) -> Routed {
    let policy = &fwd.route.policy;
    let mut flags = Flags::default();
    if let Some(delay) = fwd.fault.delay {
        // The injected delay is the feature: the request is held, then forwarded.
        tokio::time::sleep(delay).await;
        flags.set(Flags::DELAY_INJECTED);
    }
    if let Some(status) = fwd.fault.abort {
        return Routed::failed(Reply::FaultAbort(status), flags, None);
    }
    if up.client_failed() {
        return Routed::failed(Reply::BadRequest, flags, None);
    }
    let retry = if up.replayable() { &policy.retry } else { &NO_RETRY };
    let tries = 1 + retry.attempts;
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let per_try = retry.per_try_timeout_ms.map(Duration::from_millis);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_peer = None;
    // The retry in flight holds a place under the cluster's `maxRetries`.
    let mut retrying = None;
    for attempt in 1..=tries {
        let Some(host) = fwd.cluster.pick(fwd.hash, &tried, rng) else {
            return Routed::failed(Reply::NoHealthyUpstream, flags, last_peer);
        };
        let addr = host.endpoint.address;
        tried.push(addr);
        last_peer = Some(host.peer.clone());
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let limit = match (remaining, per_try) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        };
        let active = host.state.start();
        let cluster = (&fwd.cluster.breakers, &fwd.cluster.options, up.worker);
        let send = host.state.pool.send(addr, host.tls.as_deref(), cluster, up.request(Some(attempt)));
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(r) => r.map_err(TryError::Upstream),
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Routed::failed(Reply::Timeout, flags, last_peer);
                }
                Err(_) => Err(TryError::PerTryTimeout),
            },
            None => send.await.map_err(TryError::Upstream),
        };
        let last = attempt == tries;
        let seen = match &result {
            Ok(resp) => Some(crate::proxy::outlier::Outcome::Status(resp.status().as_u16())),
            // An overflow, or a client's broken body, says nothing about the endpoint.
            Err(TryError::Upstream(upstream::Error::Overflow)) => None,
            Err(TryError::Upstream(_)) if up.client_failed() => None,
            Err(_) => Some(crate::proxy::outlier::Outcome::LocalFailure),
        };
        if let Some(seen) = seen {
            fwd.cluster.breakers.record(addr, seen, fwd.cluster.hosts.len());
        }
        let mut retriable = match &result {
            Ok(resp) => retry_on_response(retry, resp.status().as_u16(), resp.headers()),
            Err(TryError::Upstream(e)) => retry_on_error(retry, e),
            Err(TryError::PerTryTimeout) => retry_on_timeout(retry),
        };
        let counters = &fwd.cluster.breakers.counters;
        if retrying.is_some() && !retriable {
            counters.rq_retry_success.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if retriable && !last {
            retrying = fwd.cluster.breakers.try_acquire(crate::proxy::breakers::Resource::Retry);
            let counter = if retrying.is_some() { &counters.rq_retry } else { &counters.rq_retry_overflow };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // With `maxRetries` reached, the answer so far is the answer.
            retriable = retrying.is_some();
        }
        if retriable && !last {
            drop(result);
            drop(active);
            if !back_off(retry, attempt, deadline, rng).await {
                return Routed::failed(Reply::Timeout, flags, last_peer);
            }
            continue;
        }
        if retriable && tries > 1 {
            flags.set(Flags::RETRY_LIMIT_EXCEEDED);
        }
        return match result {
            Ok(resp) => Routed {
                response: strip_response(resp),
                flags,
                destination: last_peer,
                active: Some(active),
                upstream: None,
                upstream_host: Some(addr),
            },
            Err(TryError::Upstream(_)) if up.client_failed() => Routed::failed(Reply::BadRequest, flags, last_peer),
            Err(TryError::Upstream(e)) => Routed::failed(Reply::Upstream(e), flags, last_peer),
            Err(TryError::PerTryTimeout) => Routed::failed(Reply::Timeout, flags, last_peer),
        };
    }
    unreachable!("the last try always returns")
}

const NO_RETRY: RetryPolicy = RetryPolicy {
    attempts: 0,
    per_try_timeout_ms: None,
    retry_on: Vec::new(),
    retriable_codes: Vec::new(),
    backoff_ms: 25,
};

/// Envoy's fully jittered exponential back-off before retry `n` (1-based): a random wait in
/// [0, (2^n - 1) × base], at most 10 × base. False when the route deadline comes first.
async fn back_off(p: &RetryPolicy, n: u32, deadline: Option<Instant>, rng: &mut fastrand::Rng) -> bool {
    let base = p.backoff_ms.max(1);
    let upper = ((1u64 << n.min(16)) - 1).saturating_mul(base).min(10 * base);
    let mut wait = Duration::from_millis(rng.u64(0..=upper));
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left <= wait {
            tokio::time::sleep(left).await;
            return false;
        }
        wait = wait.min(left);
    }
    // A real back-off between tries, as Envoy waits.
    tokio::time::sleep(wait).await;
    true
}

fn has(p: &RetryPolicy, condition: &str) -> bool {
    p.retry_on.iter().any(|c| c == condition)
}

/// gRPC status names `retryOn` accepts, with their codes.
const GRPC: [(&str, &str); 5] = [
    ("cancelled", "1"),
    ("deadline-exceeded", "4"),
    ("resource-exhausted", "8"),
    ("internal", "13"),
    ("unavailable", "14"),
];

/// Would Envoy retry this upstream response?
pub fn retry_on_response(p: &RetryPolicy, status: u16, headers: &HeaderMap) -> bool {
    if p.attempts == 0 {
        return false;
    }
    let grpc = headers.get("grpc-status").and_then(|v| v.to_str().ok());
    (has(p, "5xx") && status >= 500)
        || (has(p, "gateway-error") && matches!(status, 502..=504))
        || (has(p, "retriable-4xx") && status == 409)
        || (has(p, "retriable-status-codes") && p.retriable_codes.contains(&status))
        || (has(p, "envoy-ratelimited") && headers.contains_key("x-envoy-ratelimited"))
        || GRPC.iter().any(|(name, code)| has(p, name) && grpc == Some(code))
}

/// Would Envoy retry after this failure? Every failure here is a reset to Envoy; a connect
/// failure (nothing sent) is also `connect-failure` and `reset-before-request`.
pub fn retry_on_error(p: &RetryPolicy, e: &upstream::Error) -> bool {
    // A circuit breaker's answer is final: Envoy does not retry an overflow.
    if p.attempts == 0 || matches!(e, upstream::Error::Overflow) {
        return false;
    }
    has(p, "5xx")
        || has(p, "gateway-error")
        || has(p, "reset")
        || (e.is_connect_failure() && (has(p, "connect-failure") || has(p, "reset-before-request")))
}

/// A per-try timeout is retried like a reset under `5xx`, `gateway-error` and `reset`.
pub fn retry_on_timeout(p: &RetryPolicy) -> bool {
    p.attempts > 0 && (has(p, "5xx") || has(p, "gateway-error") || has(p, "reset"))
}

/// Headers that belong to one hop and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .filter_map(|s| HeaderName::from_bytes(s.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::policy::default_retry;

    fn policy(on: &str, codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            retry_on: on.split(',').map(str::to_string).collect(),
            retriable_codes: codes.to_vec(),
            ..Default::default()
        }
    }

    fn refused() -> upstream::Error {
        upstream::Error::ConnectFailure {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }
    }

    #[test]
    fn istios_default_policy_retries_connect_failures_but_not_503() {
        let p = default_retry();
        let h = HeaderMap::new();
        assert!(retry_on_error(&p, &refused()));
        assert!(!retry_on_response(&p, 503, &h));
        assert!(!retry_on_timeout(&p));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(retry_on_response(&p, 200, &grpc), "unavailable");
    }

    #[test]
    fn retry_conditions_follow_envoy() {
        let h = HeaderMap::new();
        assert!(retry_on_response(&policy("5xx", &[]), 500, &h));
        assert!(!retry_on_response(&policy("5xx", &[]), 404, &h));
        assert!(retry_on_response(&policy("gateway-error", &[]), 504, &h));
        assert!(!retry_on_response(&policy("gateway-error", &[]), 500, &h));
        assert!(retry_on_response(&policy("retriable-4xx", &[]), 409, &h));
        assert!(retry_on_response(&policy("retriable-status-codes", &[418]), 418, &h));
        assert!(!retry_on_response(&policy("reset", &[]), 503, &h), "a real 503 is not a reset");
        assert!(retry_on_error(&policy("reset", &[]), &refused()));
        assert!(retry_on_timeout(&policy("gateway-error", &[])));
        assert!(!retry_on_timeout(&policy("connect-failure", &[])));
        let none = RetryPolicy { attempts: 0, ..policy("5xx", &[]) };
        assert!(!retry_on_response(&none, 500, &h));
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }
}
