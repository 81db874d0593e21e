//! Writes an access-log entry with a parsed Envoy format (`crate::access_format`): empty values
//! as Envoy's `-`.

pub use crate::access_format::{header_names, parse, Operator, Piece};
use crate::proxy::access_log::{self, Entry};

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
