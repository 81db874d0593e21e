//! Envoy's access-log format strings (mesh config `accessLogFormat`), for the command
//! operators a meshrig access-log entry knows: parsed once when the config arrives (pure), an
//! unknown operator refused with the list of known ones; `%OP%` or `%OP%:N` (at most N
//! characters), `%%` for a percent sign, everything else literal.

use serde::{Deserialize, Serialize};

use crate::proxy::access_log::{self, Entry};

/// One piece of a format: text, or an operator with an optional length limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Piece {
    Text(String),
    Op(Operator, Option<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    StartTime,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    ForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    UpstreamHost,
    UpstreamCluster,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    /// Operators with nothing to say in meshrig (always `-`).
    Empty,
}

/// The operators meshrig knows, as they are written.
const OPERATORS: &[(&str, Operator)] = &[
    ("START_TIME", Operator::StartTime),
    ("REQ(:METHOD)", Operator::Method),
    ("REQ(X-ENVOY-ORIGINAL-PATH?:PATH)", Operator::Path),
    ("REQ(:PATH)", Operator::Path),
    ("PROTOCOL", Operator::Protocol),
    ("RESPONSE_CODE", Operator::ResponseCode),
    ("RESPONSE_FLAGS", Operator::ResponseFlags),
    ("RESPONSE_CODE_DETAILS", Operator::ResponseCodeDetails),
    ("CONNECTION_TERMINATION_DETAILS", Operator::Empty),
    ("UPSTREAM_TRANSPORT_FAILURE_REASON", Operator::Empty),
    ("UPSTREAM_LOCAL_ADDRESS", Operator::Empty),
    ("BYTES_RECEIVED", Operator::BytesReceived),
    ("BYTES_SENT", Operator::BytesSent),
    ("DURATION", Operator::Duration),
    ("RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)", Operator::UpstreamServiceTime),
    ("REQ(X-FORWARDED-FOR)", Operator::ForwardedFor),
    ("REQ(USER-AGENT)", Operator::UserAgent),
    ("REQ(X-REQUEST-ID)", Operator::RequestId),
    ("REQ(:AUTHORITY)", Operator::Authority),
    ("UPSTREAM_HOST", Operator::UpstreamHost),
    ("UPSTREAM_CLUSTER", Operator::UpstreamCluster),
    ("UPSTREAM_CLUSTER_RAW", Operator::UpstreamCluster),
    ("DOWNSTREAM_LOCAL_ADDRESS", Operator::DownstreamLocalAddress),
    ("DOWNSTREAM_REMOTE_ADDRESS", Operator::DownstreamRemoteAddress),
    ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Operator::DownstreamRemoteAddressWithoutPort),
    ("REQUESTED_SERVER_NAME", Operator::RequestedServerName),
    ("ROUTE_NAME", Operator::RouteName),
];

/// Parses a format; the message names the operator meshrig does not know and lists those it does.
pub fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            text.push('%');
            rest = after;
            continue;
        }
        let end = rest
            .find('%')
            .ok_or_else(|| format!("a `%` is not closed: {:?}", &format[format.len() - rest.len() - 1..]))?;
        let name = &rest[..end];
        rest = &rest[end + 1..];
        // Envoy's header operators take their name in any case.
        let upper = name.to_ascii_uppercase();
        let op = OPERATORS.iter().find(|(n, _)| *n == upper).map(|(_, op)| *op).ok_or_else(|| {
            let known: Vec<&str> = OPERATORS.iter().map(|(n, _)| *n).collect();
            format!("meshrig's access log does not know %{name}%; it knows %{}%", known.join("%, %"))
        })?;
        let limit = match rest.strip_prefix(':') {
            Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => {
                let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let n = after[..digits].parse().map_err(|_| format!("length {} is too large", &after[..digits]))?;
                rest = &after[digits..];
                Some(n)
            }
            _ => None,
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Op(op, limit));
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// One entry written with a parsed format (empty values are `-`, as Envoy writes them).
pub fn render(format: &[Piece], e: &Entry) -> String {
    let dash = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let mut out = String::with_capacity(256);
    for piece in format {
        let (op, limit) = match piece {
            Piece::Text(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Op(op, limit) => (*op, *limit),
        };
        let value = match op {
            Operator::StartTime => dash(e.start.map(crate::env::rfc3339_millis)),
            Operator::Method => dash(Some(e.method.clone())),
            Operator::Path => dash(Some(e.path.clone())),
            Operator::Protocol => dash(Some(e.protocol.clone())),
            Operator::ResponseCode => e.code.to_string(),
            Operator::ResponseFlags => e.flags.to_string(),
            Operator::ResponseCodeDetails => access_log::code_details(e.flags, e.from_upstream, e.code).to_string(),
            Operator::BytesReceived => e.bytes_received.to_string(),
            Operator::BytesSent => e.bytes_sent.to_string(),
            Operator::Duration => e.duration_ms.to_string(),
            Operator::UpstreamServiceTime => dash(e.upstream_service_time.clone()),
            Operator::ForwardedFor => dash(e.forwarded_for.clone()),
            Operator::UserAgent => dash(e.user_agent.clone()),
            Operator::RequestId => dash(e.request_id.clone()),
            Operator::Authority => dash(Some(e.authority.clone())),
            Operator::UpstreamHost => dash(e.upstream_host.map(|a| a.to_string())),
            Operator::UpstreamCluster => dash(e.upstream_cluster.clone()),
            Operator::DownstreamLocalAddress => dash(e.downstream_local.map(|a| a.to_string())),
            Operator::DownstreamRemoteAddress => dash(e.downstream_remote.map(|a| a.to_string())),
            Operator::DownstreamRemoteAddressWithoutPort => dash(e.downstream_remote.map(|a| a.ip().to_string())),
            Operator::RequestedServerName => dash(e.server_name.clone()),
            Operator::RouteName => dash(e.route_name.clone()),
            Operator::Empty => "-".into(),
        };
        match limit {
            Some(n) => out.extend(value.chars().take(n)),
            None => out.push_str(&value),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_is_written_with_the_entrys_values_and_envoys_dashes() {
        let f = parse(
            "[%START_TIME%] %REQ(:METHOD)% %req(:path)%:5 %RESPONSE_CODE% 100%% %UPSTREAM_HOST% %REQ(X-REQUEST-ID)%\n",
        )
        .unwrap();
        let e = Entry {
            start: Some(std::time::SystemTime::UNIX_EPOCH),
            method: "GET".into(),
            path: "/status/418".into(),
            code: 418,
            request_id: Some("abc".into()),
            ..Entry::default()
        };
        assert_eq!(render(&f, &e), "[1970-01-01T00:00:00.000Z] GET /stat 418 100% - abc\n");
        let err = parse("%START_TIME% %DYNAMIC_METADATA(istio.mixer:status)%").unwrap_err();
        assert!(
            err.contains("does not know %DYNAMIC_METADATA(istio.mixer:status)%") && err.contains("%DURATION%"),
            "{err}"
        );
        assert!(parse("%START_TIME").unwrap_err().contains("not closed"));
    }
}
