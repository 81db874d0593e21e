//! The small pieces of HTTP every layer reads (pure, below the proxy and the policy engines):
//! an authority's host, a query parameter, percent-decoding.

/// The first value of query parameter `name` (`?key` alone counts as the empty string), as sent
/// (not decoded).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `host:port` → `host`; IPv6 literals in brackets keep their brackets.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set), strictly as Go's `unescape`
/// does: a `%` without two hex digits is an error, which carries the bad escape (`%zz`).
pub fn percent_decode(s: &str, plus: bool) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        return Err(String::from_utf8_lossy(&b[i..end]).into_owned());
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `percent_decode`, with what does not decode kept as sent.
pub fn percent_decode_lossy(s: &str, plus: bool) -> Vec<u8> {
    percent_decode(s, plus).unwrap_or_else(|_| s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_ipv6_and_plain_hosts() {
        assert_eq!(strip_port("httpbin:8000"), "httpbin");
        assert_eq!(strip_port("httpbin"), "httpbin");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("host:"), "host:");
    }

    #[test]
    fn query_params_and_decoding() {
        assert_eq!(query_param(Some("a=1&b=&c"), "b"), Some(""));
        assert_eq!(query_param(Some("a=1&b=&c"), "c"), Some(""));
        assert_eq!(query_param(Some("a=1"), "z"), None);
        assert_eq!(query_param(None, "a"), None);
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), b"a b c");
        assert_eq!(percent_decode("a+c", false).unwrap(), b"a+c");
        assert_eq!(percent_decode("bad%zz", false).unwrap_err(), "%zz");
        assert_eq!(percent_decode("end%4", false).unwrap_err(), "%4");
        assert_eq!(percent_decode_lossy("bad%zz", false), b"bad%zz");
    }
}
