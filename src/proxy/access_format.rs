//! Envoy's access-log format strings (mesh config `accessLogFormat`), for the command
//! operators a meshrig access-log entry knows: parsed once when the config arrives (pure), an
//! unknown operator refused with the list of known ones. As Envoy writes them: `%OP%`,
//! `%OP(ARG)%`, either with `:N` before the closing `%` (at most N characters);
//! `%REQ(X?Y)%` and `%RESP(X?Y)%` for any request or response header (Y when X is absent);
//! `%%` for a percent sign; everything else literal.

use serde::{Deserialize, Serialize};

use crate::proxy::access_log::{self, Entry};

/// One piece of a format: text, or an operator with an optional length limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Piece {
    Text(String),
    Op(Operator, Option<usize>),
    /// `%REQ(name?alternative)%` (or `%RESP(..)%` when `response`) for a header the entry's
    /// own fields do not hold; names lower-cased.
    Header {
        response: bool,
        name: String,
        alternative: Option<String>,
        limit: Option<usize>,
    },
}

/// The header names a format's `Header` pieces read, of the request or the response.
pub fn header_names(format: &[Piece], of_response: bool) -> impl Iterator<Item = &str> {
    format
        .iter()
        .flat_map(move |p| match p {
            Piece::Header { response, name, alternative, .. } if *response == of_response => {
                std::iter::once(name.as_str()).chain(alternative.as_deref())
            }
            _ => std::iter::once("").chain(None),
        })
        .filter(|n| !n.is_empty())
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
        let unclosed = || format!("a `%` is not closed: {:?}", &format[format.len() - rest.len() - 1..]);
        // The command, its `(argument)` (which may hold `:` and `?`), then `:N`, then `%`.
        let command = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len();
        let mut end = command;
        if rest[end..].starts_with('(') {
            end += rest[end..].find(')').ok_or_else(unclosed)? + 1;
        }
        let spec_end = end + rest[end..].find('%').ok_or_else(unclosed)?;
        let (operator, limit) = (&rest[..end], &rest[end..spec_end]);
        let name = &rest[..spec_end];
        rest = &rest[spec_end + 1..];
        let limit = match limit {
            "" => None,
            l => match l.strip_prefix(':').filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())) {
                Some(d) => Some(d.parse().map_err(|_| format!("length {d} is too large in %{name}%"))?),
                None => return Err(format!("%{name}%: after the operator only `:N` (a length) may come")),
            },
        };
        // Envoy's header operators take their name in any case.
        let upper = operator.to_ascii_uppercase();
        let piece = match OPERATORS.iter().find(|(n, _)| *n == upper) {
            Some((_, op)) => Piece::Op(*op, limit),
            None => header(&upper, limit).ok_or_else(|| {
                let known: Vec<&str> = OPERATORS.iter().map(|(n, _)| *n).collect();
                format!(
                    "meshrig's access log does not know %{name}%; it knows %{}%, and %REQ(header)% and %RESP(header)% for any other header",
                    known.join("%, %")
                )
            })?,
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(piece);
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// `REQ(X?Y)` or `RESP(X?Y)` of a header that is not one of the entry's fields.
fn header(operator: &str, limit: Option<usize>) -> Option<Piece> {
    let (response, args) = match operator.strip_prefix("REQ(") {
        Some(args) => (false, args),
        None => (true, operator.strip_prefix("RESP(")?),
    };
    let args = args.strip_suffix(')')?.to_ascii_lowercase();
    let (name, alternative) = match args.split_once('?') {
        Some((x, y)) => (x.to_string(), Some(y.to_string())),
        None => (args, None),
    };
    let valid = |h: &str| !h.is_empty() && http::HeaderName::from_bytes(h.as_bytes()).is_ok();
    (valid(&name) && alternative.as_deref().is_none_or(valid)).then_some(Piece::Header {
        response,
        name,
        alternative,
        limit,
    })
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
            Piece::Header { response, name, alternative, limit } => {
                let headers = if *response { &e.response_headers } else { &e.request_headers };
                let get = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
                let value = dash(get(name).or_else(|| alternative.as_deref().and_then(get)));
                match limit {
                    Some(n) => out.extend(value.chars().take(*n)),
                    None => out.push_str(&value),
                }
                continue;
            }
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
            "[%START_TIME%] %REQ(:METHOD)% %req(:path):5% %RESPONSE_CODE%:5 100%% %UPSTREAM_HOST% %REQ(X-REQUEST-ID)%\n",
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
        assert_eq!(render(&f, &e), "[1970-01-01T00:00:00.000Z] GET /stat 418:5 100% - abc\n");
        let err = parse("%START_TIME% %DYNAMIC_METADATA(istio.mixer:status)%").unwrap_err();
        assert!(
            err.contains("does not know %DYNAMIC_METADATA(istio.mixer:status)%") && err.contains("%DURATION%"),
            "{err}"
        );
        assert!(parse("%START_TIME").unwrap_err().contains("not closed"));
        assert!(parse("%REQ(X-USER%").unwrap_err().contains("not closed"));
        assert!(parse("%DURATION:x%").unwrap_err().contains("only `:N`"));
        assert!(parse("%REQ(bad header)%").unwrap_err().contains("%REQ(header)%"));
    }

    #[test]
    fn any_request_or_response_header_with_an_alternative_and_a_limit() {
        let f = parse("%REQ(X-User?X-Fallback)% %REQ(x-absent)% %RESP(Content-Type):4% %REQ(x-fallback)%").unwrap();
        assert_eq!(header_names(&f, false).collect::<Vec<_>>(), ["x-user", "x-fallback", "x-absent", "x-fallback"]);
        assert_eq!(header_names(&f, true).collect::<Vec<_>>(), ["content-type"]);
        let e = Entry {
            request_headers: vec![("x-fallback".into(), "bob".into())],
            response_headers: vec![("content-type".into(), "text/plain".into())],
            ..Entry::default()
        };
        assert_eq!(render(&f, &e), "bob - text bob");
    }
}
