//! Envoy's access-log format strings (mesh config `accessLogFormat`), for the command
//! operators a meshrig access-log entry knows: parsed once when the config arrives (pure; the
//! proxy's `access_format` writes an entry with one), an
//! unknown operator refused with the list of known ones. As Envoy writes them: `%OP%`,
//! `%OP(ARG)%`, either with `:N` before the closing `%` (at most N characters);
//! `%REQ(X?Y)%` and `%RESP(X?Y)%` for any request or response header (Y when X is absent);
//! `%%` for a percent sign; everything else literal.

use serde::{Deserialize, Serialize};

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
