//! Request and response edits a route asks for, as Envoy applies them: header operations
//! (remove, then set and add), path and authority rewrites, redirect locations, CORS headers,
//! and the `-shadow` host of mirrored requests. Pure functions over headers and strings.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::route::Route;
use crate::snapshot::{Cors, HeaderOps, Redirect, Rewrite};

/// Envoy evaluates removals first, then `set` (overwrite) and `add` (append).
pub fn apply(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
}

/// The path (with its query) after `rewrite`: `uri` replaces the matched prefix (the whole path
/// for exact and regex matches); `uriRegexRewrite` replaces every match in the path.
pub fn rewrite_path(route: &Route, path_and_query: &str, rw: &Rewrite) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut new_path = match (&rw.uri, route.regex_rewrite()) {
        (Some(uri), _) => match route.prefix_len() {
            Some(n) if path.len() >= n => format!("{uri}{}", &path[n..]),
            _ => uri.clone(),
        },
        (None, Some((re, with))) => re.replace_all(path, with.as_str()).into_owned(),
        (None, None) => path.to_string(),
    };
    if new_path.is_empty() {
        new_path.push('/');
    }
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}

/// Where a redirect sends the client: Envoy keeps what the redirect does not replace (the
/// query is kept when only the path changes).
pub fn redirect_location(r: &Redirect, scheme: &str, authority: &str, path_and_query: &str) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (req_host, req_port) = split_host_port(authority);
    let host = r.authority.as_deref().map(|a| split_host_port(a).0).unwrap_or(req_host);
    let port = match (r.port, &r.authority) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(_)) if !r.keep_request_port => None,
        (None, _) => req_port.map(str::to_string),
    };
    let default_port = if scheme == "https" { "443" } else { "80" };
    let host_port = match port.filter(|p| p != default_port) {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = match &r.uri {
        Some(uri) => match path_and_query.split_once('?') {
            Some((_, q)) if !uri.contains('?') => format!("{uri}?{q}"),
            _ => uri.clone(),
        },
        None => path_and_query.to_string(),
    };
    format!("{scheme}://{host_port}{path}")
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let host = crate::uri::strip_port(authority);
    (host, authority.get(host.len() + 1..).filter(|p| !p.is_empty()))
}

/// A mirrored request's Host: `-shadow` appended to the host, before the port.
pub fn shadow_host(authority: &str) -> String {
    let (host, port) = split_host_port(authority);
    match port {
        Some(p) => format!("{host}-shadow:{p}"),
        None => format!("{host}-shadow"),
    }
}

/// Is this a CORS preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`)?
pub fn is_preflight(method: &str, headers: &HeaderMap) -> bool {
    method == "OPTIONS" && headers.contains_key("origin") && headers.contains_key("access-control-request-method")
}

/// The headers of Envoy's local answer to an allowed preflight.
pub fn preflight_headers(c: &Cors, origin: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("access-control-allow-origin", origin.to_string())];
    let optional = [
        ("access-control-allow-methods", &c.allow_methods),
        ("access-control-allow-headers", &c.allow_headers),
        ("access-control-max-age", &c.max_age),
    ];
    out.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
    if c.allow_credentials {
        out.push(("access-control-allow-credentials", "true".into()));
    }
    out
}

/// Headers added to the upstream's response to an allowed cross-origin request.
pub fn response_headers(c: &Cors, origin: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("access-control-allow-origin", origin.to_string())];
    if let Some(e) = &c.expose_headers {
        out.push(("access-control-expose-headers", e.clone()));
    }
    if c.allow_credentials {
        out.push(("access-control-allow-credentials", "true".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::Table;
    use crate::snapshot::{self, PathMatch, RouteAction, RouteMatch};

    fn route(path: PathMatch, rewrite: Rewrite) -> Table {
        let r = snapshot::Route {
            name: "r".into(),
            matcher: RouteMatch { path, ignore_case: false, headers: vec![], query: vec![] },
            action: RouteAction::Direct { status: 200, body: String::new() },
            policy: snapshot::RoutePolicy { rewrite: Some(rewrite), ..Default::default() },
        };
        Table::new(&[snapshot::VirtualHost {
            name: "v".into(),
            https_redirect: false,
            domains: vec!["*".into()],
            routes: vec![r],
        }])
    }

    fn rewritten(path: PathMatch, rw: Rewrite, request: &str) -> String {
        let t = route(path, rw.clone());
        let r = &t.virtual_host("x").unwrap().routes[0];
        rewrite_path(r, request, &rw)
    }

    #[test]
    fn uri_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let rw = Rewrite { uri: Some("/v2/".into()), ..Default::default() };
        assert_eq!(rewritten(PathMatch::Prefix("/v1/".into()), rw.clone(), "/v1/items?id=3"), "/v2/items?id=3");
        assert_eq!(rewritten(PathMatch::Exact("/old".into()), rw.clone(), "/old"), "/v2/");
        let rw = Rewrite { uri: Some("/".into()), ..Default::default() };
        assert_eq!(rewritten(PathMatch::Prefix("/ratings".into()), rw, "/ratings/0"), "//0");
    }

    #[test]
    fn regex_rewrite_replaces_every_match_with_groups() {
        let rw = Rewrite {
            uri_regex: Some(("^/service/([^/]+)(/.*)$".into(), "\\2/instance/\\1".into())),
            ..Default::default()
        };
        assert_eq!(rewritten(PathMatch::Prefix("/".into()), rw, "/service/foo/v1/api?q=1"), "/v1/api/instance/foo?q=1");
    }

    #[test]
    fn redirect_locations_follow_envoy() {
        let r = Redirect {
            uri: Some("/v1/bookRatings".into()),
            authority: Some("newratings.default.svc.cluster.local".into()),
            port: None,
            keep_request_port: false,
            scheme: None,
            code: 301,
        };
        assert_eq!(
            redirect_location(&r, "http", "ratings:9080", "/v1/getProductRatings?x=1"),
            "http://newratings.default.svc.cluster.local/v1/bookRatings?x=1"
        );
        let r = Redirect {
            uri: None,
            authority: None,
            port: Some(8443),
            keep_request_port: false,
            scheme: Some("https".into()),
            code: 302,
        };
        assert_eq!(redirect_location(&r, "http", "a.example:8080", "/p"), "https://a.example:8443/p");
        let r = Redirect {
            uri: None,
            authority: None,
            port: None,
            keep_request_port: false,
            scheme: Some("https".into()),
            code: 301,
        };
        assert_eq!(redirect_location(&r, "http", "a.example:8080", "/p"), "https://a.example:8080/p");
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        h.insert("x-b", "1".parse().unwrap());
        let ops = HeaderOps {
            set: vec![("x-a".into(), "2".into())],
            add: vec![("x-b".into(), "2".into()), ("x-b".into(), "3".into())],
            remove: vec!["x-b".into()],
        };
        apply(&mut h, &ops);
        assert_eq!(h["x-a"], "2");
        let b: Vec<_> = h.get_all("x-b").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(b, ["2", "3"]);
    }

    #[test]
    fn shadow_hosts_keep_the_port() {
        assert_eq!(shadow_host("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_host("httpbin.default.svc.cluster.local"), "httpbin.default.svc.cluster.local-shadow");
    }

    #[test]
    fn preflight_answers_carry_the_policy() {
        let c = Cors {
            allow_origins: vec![],
            allow_methods: Some("POST,GET".into()),
            allow_headers: None,
            expose_headers: Some("x-a".into()),
            max_age: Some("86400".into()),
            allow_credentials: true,
            forward_unmatched_preflights: true,
        };
        let h = preflight_headers(&c, "https://example.com");
        assert!(h.contains(&("access-control-allow-methods", "POST,GET".into())));
        assert!(h.contains(&("access-control-max-age", "86400".into())));
        assert!(h.contains(&("access-control-allow-credentials", "true".into())));
        assert!(response_headers(&c, "https://example.com").contains(&("access-control-expose-headers", "x-a".into())));
    }
}
