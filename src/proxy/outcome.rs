//! One outcome per request: Envoy's response flags, the one table from "why the proxy answered
//! itself" to the status and body a client sees, and a response body that completes the outcome
//! when the body ends (or is dropped), for metrics, traces and the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};

use crate::net::{self, Body};
use crate::proxy::clusters::ActiveGuard;
use crate::proxy::stats::{RequestRecord, Sides, Stats};
use crate::proxy::upstream;

/// Envoy's response flags that meshrig sets, printed in Envoy's order (`UT,URX`...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    pub const NO_HEALTHY_UPSTREAM: Flags = Flags(1 << 0); // UH
    pub const UPSTREAM_TIMEOUT: Flags = Flags(1 << 1); // UT
    pub const UPSTREAM_CONNECT_FAILURE: Flags = Flags(1 << 2); // UF
    pub const UPSTREAM_TERMINATION: Flags = Flags(1 << 3); // UC
    pub const NO_ROUTE: Flags = Flags(1 << 4); // NR
    pub const DELAY_INJECTED: Flags = Flags(1 << 5); // DI
    pub const FAULT_INJECTED: Flags = Flags(1 << 6); // FI
    pub const RETRY_LIMIT_EXCEEDED: Flags = Flags(1 << 7); // URX
    pub const UPSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 8); // UPE
    pub const NO_CLUSTER: Flags = Flags(1 << 9); // NC
    pub const RBAC_ACCESS_DENIED: Flags = Flags(1 << 10); // RBAC
    pub const UPSTREAM_OVERFLOW: Flags = Flags(1 << 11); // UO
    pub const DOWNSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 12); // DPE

    const NAMES: [(Flags, &'static str); 13] = [
        (Flags::NO_HEALTHY_UPSTREAM, "UH"),
        (Flags::UPSTREAM_TIMEOUT, "UT"),
        (Flags::UPSTREAM_CONNECT_FAILURE, "UF"),
        (Flags::UPSTREAM_TERMINATION, "UC"),
        (Flags::NO_ROUTE, "NR"),
        (Flags::DELAY_INJECTED, "DI"),
        (Flags::FAULT_INJECTED, "FI"),
        (Flags::RETRY_LIMIT_EXCEEDED, "URX"),
        (Flags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Flags::NO_CLUSTER, "NC"),
        (Flags::RBAC_ACCESS_DENIED, "RBAC"),
        (Flags::UPSTREAM_OVERFLOW, "UO"),
        (Flags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
    ];

    pub fn set(&mut self, f: Flags) {
        self.0 |= f.0;
    }

    pub fn contains(&self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }
}

impl std::fmt::Display for Flags {
    /// `-` when none is set, as in Istio's `response_flags` label.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why the proxy answers a request itself. `reply` is the one table of what the client sees.
#[derive(Debug)]
pub enum Reply {
    /// An AuthorizationPolicy denied the request.
    AccessDenied,
    NoRoute,
    NoCluster,
    NoHealthyUpstream,
    Upstream(upstream::Error),
    Timeout,
    FaultAbort(u16),
    /// What the client sent is not HTTP Envoy's codec accepts (a method that is not upper case,
    /// a malformed chunked body): 400, and the connection is closed.
    BadRequest,
    /// A path normalisation refuses (`%00`).
    BadPath,
}

const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. reset reason: ";

impl Reply {
    /// Status, body and response flag, as Envoy answers.
    pub fn parts(&self) -> (StatusCode, String, Flags) {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        match self {
            Reply::AccessDenied => (StatusCode::FORBIDDEN, "RBAC: access denied".into(), Flags::RBAC_ACCESS_DENIED),
            Reply::NoRoute => (StatusCode::NOT_FOUND, String::new(), Flags::NO_ROUTE),
            Reply::NoCluster => (unavailable, String::new(), Flags::NO_CLUSTER),
            Reply::NoHealthyUpstream => (unavailable, "no healthy upstream".into(), Flags::NO_HEALTHY_UPSTREAM),
            Reply::Upstream(e) => {
                let (reason, flag) = match e {
                    upstream::Error::ConnectFailure { .. } | upstream::Error::ConnectTimeout { .. } => {
                        ("connection failure".into(), Flags::UPSTREAM_CONNECT_FAILURE)
                    }
                    upstream::Error::Tls { reason, .. } => (
                        format!("connection failure, transport failure reason: TLS error: {reason}"),
                        Flags::UPSTREAM_CONNECT_FAILURE,
                    ),
                    upstream::Error::ResetBeforeHeaders { .. } => {
                        ("connection termination".into(), Flags::UPSTREAM_TERMINATION)
                    }
                    upstream::Error::Protocol { .. } => ("protocol error".into(), Flags::UPSTREAM_PROTOCOL_ERROR),
                    upstream::Error::Overflow => ("overflow".into(), Flags::UPSTREAM_OVERFLOW),
                };
                (unavailable, format!("{RESET_BEFORE_HEADERS}{reason}"), flag)
            }
            Reply::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout".into(), Flags::UPSTREAM_TIMEOUT),
            Reply::FaultAbort(code) => (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "fault filter abort".into(),
                Flags::FAULT_INJECTED,
            ),
            Reply::BadRequest => (StatusCode::BAD_REQUEST, "Bad Request".into(), Flags::DOWNSTREAM_PROTOCOL_ERROR),
            Reply::BadPath => (StatusCode::BAD_REQUEST, String::new(), Flags::default()),
        }
    }

    pub fn response(&self) -> (Response<Body>, Flags) {
        let (status, body, flags) = self.parts();
        let mut resp = net::text(status, &body);
        if flags.contains(Flags::UPSTREAM_OVERFLOW) {
            // Envoy marks a circuit breaker's answer so clients (and retries) can tell.
            resp.headers_mut().insert("x-envoy-overloaded", http::HeaderValue::from_static("true"));
        }
        if matches!(self, Reply::BadRequest) {
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        (resp, flags)
    }
}

/// A traced request's span, finished with the outcome.
pub struct SpanEnd {
    pub open: crate::proxy::spans::Open,
    /// Istio's decorator (`reviews.default.svc.cluster.local:9080/*`) and the upstream cluster.
    pub operation: String,
    pub cluster: String,
    pub exporter: Arc<crate::proxy::spans::Exporter>,
}

/// A request's access-log line, completed with the outcome.
pub struct AccessEnd {
    pub config: crate::proxy::access_log::AccessConfig,
    pub entry: crate::proxy::access_log::Entry,
}

/// What metrics, traces and the access log learn about one request.
pub struct Outcome {
    pub span: Option<SpanEnd>,
    pub access: Option<AccessEnd>,
    pub stats: Arc<Stats>,
    /// Reporter, peers, service and principals: the series' labels.
    pub sides: Sides,
    /// The request as a Telemetry expression reads it, when one does (`Runtime::capture`).
    pub request: Option<Box<crate::cel::Request>>,
    /// The port the request was addressed to (`destination.port`).
    pub destination_port: u16,
    /// The downstream connection was mutual TLS (`connection.mtls`).
    pub mtls: bool,
    pub code: u16,
    pub flags: Flags,
    pub started: Instant,
    /// Keeps the upstream endpoint counted as busy (least-request) until the response ends.
    pub active: Option<ActiveGuard>,
    /// The request's size (headers and body); the response's headers (its body is counted as
    /// it passes).
    pub request_bytes: u64,
    pub response_header_bytes: u64,
}

impl Outcome {
    fn complete(mut self, body_bytes: u64) {
        let response_bytes = self.response_header_bytes + body_bytes;
        let facts = crate::cel::Facts {
            request: self.request.as_deref(),
            code: Some(self.code),
            destination_port: Some(self.destination_port),
            mtls: self.mtls,
        };
        self.stats.record(&RequestRecord {
            values: self.sides.overrides.values(self.sides.reporter, &facts),
            sides: &self.sides,
            code: self.code,
            flags: self.flags,
            millis: self.started.elapsed().as_secs_f64() * 1000.0,
            request_bytes: self.request_bytes,
            response_bytes,
        });
        if let Some(end) = self.span.take() {
            let mut tags = vec![
                ("http.status_code", self.code.to_string()),
                ("response_flags", self.flags.to_string()),
                ("upstream_cluster", end.cluster.clone()),
                ("upstream_cluster.name", end.cluster),
                ("request_size", self.request_bytes.to_string()),
                ("response_size", response_bytes.to_string()),
            ];
            if self.code >= 500 || self.code == 0 {
                tags.push(("error", "true".into()));
            }
            end.exporter.push(end.open.finish(end.operation, tags));
        }
        if let Some(mut a) = self.access.take() {
            let e = &mut a.entry;
            (e.code, e.flags, e.bytes_sent) = (self.code, self.flags, body_bytes);
            e.duration_ms = self.started.elapsed().as_millis() as u64;
            if a.config.filter.as_ref().is_some_and(|f| !f.matches(&facts)) {
                return;
            }
            a.config.writer.write(a.config.line(e));
        }
    }
}

/// A request's size as Envoy's `request.total_size` counts it: headers with the `:method` and
/// `:path` pseudo-headers, and the body its `content-length` announces.
pub fn request_bytes<B>(req: &http::Request<B>) -> u64 {
    let pseudo =
        ":method:path".len() + req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let body: u64 =
        req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    header_bytes(req.headers()) + pseudo as u64 + body
}

/// Header bytes as Envoy's `HeaderMap::byteSize` counts them: names and values.
pub fn header_bytes(headers: &http::HeaderMap) -> u64 {
    headers.iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum()
}

/// Wraps the response body so the outcome is recorded exactly once, when the body ends or is
/// dropped (a client that hangs up still counts).
pub fn finish(resp: Response<Body>, mut outcome: Outcome) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    // `:status` and its three digits, as Envoy counts the pseudo-header.
    outcome.response_header_bytes = header_bytes(&parts.headers) + 10;
    if let Some(a) = &mut outcome.access {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        a.entry.upstream_service_time = header("x-envoy-upstream-service-time");
        if let Some(format) = &a.config.format {
            a.entry.response_headers = crate::proxy::access_format::header_names(format, true)
                .filter_map(|name| Some((name.to_string(), header(name)?)))
                .collect();
        }
    }
    let done = body.is_end_stream();
    let mut recorded = Recorded { inner: body, outcome: Some(outcome), bytes: 0 };
    if done {
        recorded.complete();
    }
    Response::from_parts(parts, recorded.boxed())
}

struct Recorded {
    inner: Body,
    outcome: Option<Outcome>,
    /// Body bytes passed so far.
    bytes: u64,
}

impl Recorded {
    fn complete(&mut self) {
        if let Some(o) = self.outcome.take() {
            o.complete(self.bytes);
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.complete();
    }
}

impl hyper::body::Body for Recorded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.inner.is_end_stream() {
            self.complete();
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

/// Sets a header from a string, skipping values that are not valid header text.
pub fn set_header(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_in_envoys_order() {
        let mut f = Flags::default();
        assert_eq!(f.to_string(), "-");
        f.set(Flags::RETRY_LIMIT_EXCEEDED);
        f.set(Flags::UPSTREAM_CONNECT_FAILURE);
        assert_eq!(f.to_string(), "UF,URX");
    }

    #[test]
    fn the_reply_table_matches_envoys_local_replies() {
        let (s, b, f) = Reply::NoRoute.parts();
        assert_eq!((s.as_u16(), b.as_str(), f.to_string().as_str()), (404, "", "NR"));
        let (s, b, f) = Reply::NoHealthyUpstream.parts();
        assert_eq!((s.as_u16(), b.as_str(), f.to_string().as_str()), (503, "no healthy upstream", "UH"));
        let (s, b, f) = Reply::Timeout.parts();
        assert_eq!((s.as_u16(), b.as_str(), f.to_string().as_str()), (504, "upstream request timeout", "UT"));
        let (s, b, f) = Reply::FaultAbort(418).parts();
        assert_eq!((s.as_u16(), b.as_str(), f.to_string().as_str()), (418, "fault filter abort", "FI"));
        let addr = "127.0.0.1:1".parse().unwrap();
        let e = upstream::Error::ConnectFailure { addr, source: std::io::ErrorKind::ConnectionRefused.into() };
        let (s, b, f) = Reply::Upstream(e).parts();
        assert_eq!(s.as_u16(), 503);
        assert_eq!(b, "upstream connect error or disconnect/reset before headers. reset reason: connection failure");
        assert_eq!(f.to_string(), "UF");
    }
}
