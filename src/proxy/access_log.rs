//! Envoy's access log as Istio configures it (mesh config `accessLogFile`,
//! `accessLogEncoding`): one line per request in Istio's default text format, or JSON with the
//! same fields, formatted when the response ends and written by a task of its own, so a slow
//! disk never holds a request (a full queue drops lines and counts them).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::net::log;
use crate::proxy::outcome::Flags;

/// Lines waiting to be written; beyond this they are dropped.
const QUEUE: usize = 4096;

/// What one request's line says, in Istio's default format's order.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub code: u16,
    pub flags: Flags,
    pub from_upstream: bool,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time: Option<String>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: String,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub server_name: Option<String>,
    pub route_name: Option<String>,
    /// The headers a custom format names (`%REQ(x)%`, `%RESP(x)%`) beyond the fields above,
    /// as `(lower-case name, value)`.
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for what meshrig's flags and answers say.
pub fn code_details(flags: Flags, from_upstream: bool, code: u16) -> &'static str {
    let named = [
        (Flags::NO_ROUTE, "route_not_found"),
        (Flags::NO_CLUSTER, "cluster_not_found"),
        (Flags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
        (Flags::UPSTREAM_OVERFLOW, "upstream_reset_before_response_started{overflow}"),
        (Flags::UPSTREAM_CONNECT_FAILURE, "upstream_reset_before_response_started{connection_failure}"),
        (Flags::UPSTREAM_TERMINATION, "upstream_reset_before_response_started{connection_termination}"),
        (Flags::UPSTREAM_PROTOCOL_ERROR, "upstream_reset_before_response_started{protocol_error}"),
        (Flags::UPSTREAM_TIMEOUT, "upstream_response_timeout"),
        (Flags::FAULT_INJECTED, "fault_filter_abort"),
        (Flags::RBAC_ACCESS_DENIED, "rbac_access_denied_matched_policy[none]"),
    ];
    if let Some((_, d)) = named.iter().find(|(f, _)| flags.contains(*f)) {
        return d;
    }
    match (from_upstream, code) {
        (true, _) => "via_upstream",
        (false, 401) => "jwt_authn_access_denied",
        (false, _) => "direct_response",
    }
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn start_time(e: &Entry) -> String {
    e.start.map_or_else(|| "-".into(), crate::env::rfc3339_millis)
}

/// Istio's default text format (`pilot/pkg/model/telemetry_logging.go`); empty fields are `-`.
pub fn text(e: &Entry) -> String {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}",
        start_time(e),
        e.method,
        e.path,
        e.protocol,
        e.code,
        e.flags,
        code_details(e.flags, e.from_upstream, e.code),
        e.bytes_received,
        e.bytes_sent,
        e.duration_ms,
        or_dash(&e.upstream_service_time),
        or_dash(&e.forwarded_for),
        or_dash(&e.user_agent),
        or_dash(&e.request_id),
        e.authority,
        or_dash(&e.upstream_host),
        or_dash(&e.upstream_cluster),
        or_dash(&e.downstream_local),
        or_dash(&e.downstream_remote),
        or_dash(&e.server_name),
        or_dash(&e.route_name),
    );
    out
}

/// The same fields as JSON (Istio's `accessLogEncoding: JSON` keys).
pub fn json(e: &Entry) -> String {
    let opt = |v: &Option<String>| v.clone().map_or(serde_json::Value::Null, serde_json::Value::String);
    let addr = |v: &Option<SocketAddr>| v.map_or(serde_json::Value::Null, |a| serde_json::Value::String(a.to_string()));
    serde_json::json!({
        "start_time": start_time(e),
        "method": e.method,
        "path": e.path,
        "protocol": e.protocol,
        "response_code": e.code,
        "response_flags": e.flags.to_string(),
        "response_code_details": code_details(e.flags, e.from_upstream, e.code),
        "connection_termination_details": null,
        "upstream_transport_failure_reason": null,
        "bytes_received": e.bytes_received,
        "bytes_sent": e.bytes_sent,
        "duration": e.duration_ms,
        "upstream_service_time": opt(&e.upstream_service_time),
        "x_forwarded_for": opt(&e.forwarded_for),
        "user_agent": opt(&e.user_agent),
        "request_id": opt(&e.request_id),
        "authority": e.authority,
        "upstream_host": addr(&e.upstream_host),
        "upstream_cluster": opt(&e.upstream_cluster),
        "upstream_local_address": null,
        "downstream_local_address": addr(&e.downstream_local),
        "downstream_remote_address": addr(&e.downstream_remote),
        "requested_server_name": opt(&e.server_name),
        "route_name": opt(&e.route_name),
    })
    .to_string()
}

/// A proxy's access log once its config is in: where lines go, how they are written (JSON, a
/// format, or Istio's default text), and which requests (a Telemetry's filter).
#[derive(Clone)]
pub struct AccessConfig {
    pub writer: Arc<Writer>,
    pub json: bool,
    pub filter: Option<Arc<crate::cel::Expr>>,
    pub format: Option<Arc<Vec<crate::proxy::access_format::Piece>>>,
}

impl AccessConfig {
    /// The line for one finished request.
    pub fn line(&self, e: &Entry) -> String {
        match (&self.format, self.json) {
            (_, true) => json(e),
            (Some(f), false) => {
                let mut line = crate::proxy::access_format::render(f, e);
                // Envoy's formats end with their own newline; the writer adds one per line.
                if line.ends_with('\n') {
                    line.pop();
                }
                line
            }
            (None, false) => text(e),
        }
    }
}

/// Where lines go: a task appends them to the configured file (`/dev/stdout`, the proxy's
/// log, by default) in the order they were queued.
pub struct Writer {
    tx: mpsc::Sender<String>,
    pub dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writing task for `file` (`/dev/stdout`, `/dev/stderr` or a path).
    pub fn start(file: &str) -> Writer {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let file = file.to_string();
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        tokio::spawn(async move {
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match file.as_str() {
                "/dev/stdout" => Box::new(tokio::io::stdout()),
                "/dev/stderr" => Box::new(tokio::io::stderr()),
                path => match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        log(&format!("access log: cannot open {path}: {e}; lines go to the proxy's log instead"));
                        Box::new(tokio::io::stdout())
                    }
                },
            };
            while let Some(line) = rx.recv().await {
                let mut batch = line;
                batch.push('\n');
                // Whatever else is queued goes out in the same write.
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                    batch.push('\n');
                }
                if out.write_all(batch.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    break;
                }
                let n = lost.swap(0, Ordering::Relaxed);
                if n > 0 {
                    log(&format!("access log: {n} lines dropped, the writer could not keep up with {file}"));
                }
            }
        });
        Writer { tx, dropped }
    }

    pub fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            start: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123)),
            method: "GET".into(),
            path: "/status/418".into(),
            protocol: "HTTP/1.1".into(),
            code: 418,
            from_upstream: true,
            bytes_received: 0,
            bytes_sent: 135,
            duration_ms: 4,
            upstream_service_time: Some("3".into()),
            user_agent: Some("curl/8.5.0".into()),
            request_id: Some("d7b8c1b4-4f4a-4c55-9a43-0a8e4a6f8a3e".into()),
            authority: "httpbin:8000".into(),
            upstream_host: Some("127.0.0.1:41000".parse().unwrap()),
            upstream_cluster: Some("outbound|8000||httpbin.default.svc.cluster.local".into()),
            downstream_local: Some("127.0.0.1:40000".parse().unwrap()),
            downstream_remote: Some("127.0.0.1:50000".parse().unwrap()),
            route_name: Some("default".into()),
            ..Entry::default()
        }
    }

    #[test]
    fn a_line_in_istios_default_format_and_in_json() {
        assert_eq!(
            text(&entry()),
            "[2023-11-14T22:13:20.123Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 3 \"-\" \"curl/8.5.0\" \"d7b8c1b4-4f4a-4c55-9a43-0a8e4a6f8a3e\" \"httpbin:8000\" \"127.0.0.1:41000\" outbound|8000||httpbin.default.svc.cluster.local - 127.0.0.1:40000 127.0.0.1:50000 - default"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(
            (v["response_code"].as_u64(), v["response_code_details"].as_str()),
            (Some(418), Some("via_upstream"))
        );
        assert_eq!(v["x_forwarded_for"], serde_json::Value::Null);
    }

    #[test]
    fn local_replies_say_why() {
        let mut f = Flags::default();
        f.set(Flags::NO_ROUTE);
        assert_eq!(code_details(f, false, 404), "route_not_found");
        let mut f = Flags::default();
        f.set(Flags::UPSTREAM_CONNECT_FAILURE);
        f.set(Flags::RETRY_LIMIT_EXCEEDED);
        assert_eq!(code_details(f, false, 503), "upstream_reset_before_response_started{connection_failure}");
        assert_eq!(code_details(Flags::default(), false, 401), "jwt_authn_access_denied");
    }
}
