//! Route selection, compiled once per snapshot: virtual host by domain, then first matching route.
//!
//! Pure functions over a [`RequestView`], so the rules Istio users rely on (first match wins,
//! Envoy's domain precedence, ports ignored in Host) are unit-tested without sockets.

use std::borrow::Cow;
use std::collections::HashMap;

use http::HeaderMap;
use regex::Regex;

use crate::snapshot::{self, PathMatch, RouteAction, RoutePolicy, ValueMatch};

/// What route matching looks at in a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Host or `:authority`, possibly with a port.
    pub authority: &'a str,
    pub scheme: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug)]
pub struct Table {
    vhosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    domains: Vec<String>,
    pub routes: Vec<Route>,
    /// The Gateway server's `httpsRedirect` (Envoy's `require_tls: ALL`).
    pub https_redirect: bool,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    path: Path,
    ignore_case: bool,
    headers: Vec<(String, Value, bool)>,
    query: Vec<(String, Value)>,
    pub action: RouteAction,
    pub policy: RoutePolicy,
    /// `uriRegexRewrite`, compiled, with its substitution in the regex crate's syntax.
    regex_rewrite: Option<(Regex, String)>,
    cors_origins: Vec<Value>,
}

#[derive(Debug)]
enum Path {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum Value {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present,
}

/// A regex that must match the whole string, as Envoy's `safe_regex` does.
fn full_regex(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

fn compile_value(v: &ValueMatch) -> Result<Value, regex::Error> {
    Ok(match v {
        ValueMatch::Exact(s) => Value::Exact(s.clone()),
        ValueMatch::Prefix(s) => Value::Prefix(s.clone()),
        ValueMatch::Regex(r) => Value::Regex(full_regex(r)?),
        ValueMatch::Present => Value::Present,
    })
}

impl Table {
    /// Compiles virtual hosts; a route whose regex does not compile is dropped and logged (the
    /// control plane validated it, so this only guards against a mismatched regex dialect).
    pub fn new(vhosts: &[snapshot::VirtualHost]) -> Table {
        let mut out = Vec::with_capacity(vhosts.len());
        let mut exact = HashMap::new();
        for (i, vh) in vhosts.iter().enumerate() {
            let domains: Vec<String> = vh.domains.iter().map(|d| strip_port(d).to_ascii_lowercase()).collect();
            for d in &domains {
                if !d.contains('*') {
                    exact.entry(d.clone()).or_insert(i);
                }
            }
            let routes = vh
                .routes
                .iter()
                .filter_map(|r| {
                    compile_route(r)
                        .map_err(|e| {
                            crate::net::log(&format!("route {}: dropped, its regex does not compile: {e}", r.name))
                        })
                        .ok()
                })
                .collect();
            out.push(VirtualHost { name: vh.name.clone(), domains, routes, https_redirect: vh.https_redirect });
        }
        Table { vhosts: out, exact }
    }

    /// Every domain the table routes, in order (for explanations, not the request path).
    pub fn hosts(&self) -> Vec<String> {
        self.vhosts.iter().flat_map(|v| v.domains.iter().cloned()).collect()
    }

    /// Envoy's virtual host selection: exact domain, then the longest `*.suffix` wildcard, then
    /// the longest `prefix.*` wildcard, then `*`. The port in Host is ignored.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority).to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&host) {
            return Some(&self.vhosts[i]);
        }
        let mut best: Option<(u8, usize, usize)> = None; // (class, length, index); lower class wins
        for (i, vh) in self.vhosts.iter().enumerate() {
            for d in &vh.domains {
                let candidate = if d == "*" {
                    Some((2, 0))
                } else if let Some(suffix) = d.strip_prefix('*') {
                    (host.len() > suffix.len() && host.ends_with(suffix)).then_some((0, suffix.len()))
                } else if let Some(prefix) = d.strip_suffix('*') {
                    (host.len() > prefix.len() && host.starts_with(prefix)).then_some((1, prefix.len()))
                } else {
                    None
                };
                if let Some((class, len)) = candidate {
                    let better = match best {
                        None => true,
                        Some((bc, bl, _)) => class < bc || (class == bc && len > bl),
                    };
                    if better {
                        best = Some((class, len, i));
                    }
                }
            }
        }
        best.map(|(_, _, i)| &self.vhosts[i])
    }
}

impl VirtualHost {
    /// The first route whose match holds (Istio: first match wins).
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        // Lower-cased once per request, and only when an `ignoreUriCase` route needs it.
        let lower = self.routes.iter().any(|r| r.ignore_case).then(|| req.path.to_lowercase());
        self.routes.iter().find(|r| r.matches(req, lower.as_deref().unwrap_or(req.path)))
    }
}

fn compile_route(r: &snapshot::Route) -> Result<Route, regex::Error> {
    let m = &r.matcher;
    let path = match &m.path {
        PathMatch::Prefix(p) => Path::Prefix(if m.ignore_case { p.to_lowercase() } else { p.clone() }),
        PathMatch::Exact(p) => Path::Exact(if m.ignore_case { p.to_lowercase() } else { p.clone() }),
        PathMatch::Regex(re) => Path::Regex(full_regex(re)?),
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push((h.name.to_ascii_lowercase(), compile_value(&h.value)?, h.invert));
    }
    let mut query = Vec::new();
    for q in &m.query {
        query.push((q.name.clone(), compile_value(&q.value)?));
    }
    let regex_rewrite = match r.policy.rewrite.as_ref().and_then(|rw| rw.uri_regex.as_ref()) {
        Some((re, with)) => Some((Regex::new(re)?, substitution(with))),
        None => None,
    };
    let mut cors_origins = Vec::new();
    for o in r.policy.cors.iter().flat_map(|c| &c.allow_origins) {
        cors_origins.push(compile_value(o)?);
    }
    Ok(Route {
        name: r.name.clone(),
        path,
        ignore_case: m.ignore_case,
        headers,
        query,
        action: r.action.clone(),
        policy: r.policy.clone(),
        regex_rewrite,
        cors_origins,
    })
}

/// RE2's `\1` group references as the regex crate writes them (`${1}`).
fn substitution(with: &str) -> String {
    let mut out = String::with_capacity(with.len());
    let mut chars = with.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

impl Route {
    /// The length of the matched prefix, for a prefix match (what a `uri` rewrite replaces).
    pub fn prefix_len(&self) -> Option<usize> {
        match &self.path {
            Path::Prefix(p) => Some(p.len()),
            _ => None,
        }
    }

    pub fn regex_rewrite(&self) -> Option<(&Regex, &String)> {
        self.regex_rewrite.as_ref().map(|(re, with)| (re, with))
    }

    /// Does the route's CORS policy allow `origin`?
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|v| v.matches(origin))
    }

    /// `lower_path` is the request path lower-cased (used by `ignoreUriCase` routes).
    fn matches(&self, req: &RequestView<'_>, lower_path: &str) -> bool {
        let path_ok = match &self.path {
            Path::Prefix(p) if self.ignore_case => lower_path.starts_with(p.as_str()),
            Path::Prefix(p) => req.path.starts_with(p.as_str()),
            Path::Exact(p) if self.ignore_case => lower_path == p,
            Path::Exact(p) => req.path == p,
            Path::Regex(re) => re.is_match(req.path),
        };
        if !path_ok {
            return false;
        }
        for (name, value, invert) in &self.headers {
            let actual = header_value(req, name);
            let hit = match (value, actual) {
                (Value::Present, Some(_)) => true,
                (Value::Present, None) => false,
                // withoutHeaders treats a missing header as the empty string.
                (v, None) if *invert => v.matches(""),
                (_, None) => false,
                (v, Some(a)) => v.matches(a.as_ref()),
            };
            if hit == *invert {
                return false;
            }
        }
        for (name, value) in &self.query {
            match query_param(req.query, name) {
                Some(actual) => {
                    if !value.matches(actual) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

impl Value {
    fn matches(&self, actual: &str) -> bool {
        match self {
            Value::Exact(s) => actual == s,
            Value::Prefix(s) => actual.starts_with(s.as_str()),
            Value::Regex(re) => re.is_match(actual),
            Value::Present => true,
        }
    }
}

/// A header's value as Envoy matches it: several values are joined with `,`; borrowed unless
/// they have to be joined.
fn header_value<'a>(req: &RequestView<'a>, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":method" => Some(Cow::Borrowed(req.method)),
        ":authority" | "host" => Some(Cow::Borrowed(req.authority)),
        ":scheme" => Some(Cow::Borrowed(req.scheme)),
        ":path" => Some(Cow::Borrowed(req.path)),
        _ => {
            let mut values = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(first)),
                Some(second) => {
                    let mut joined = format!("{first},{second}");
                    for v in values {
                        joined.push(',');
                        joined.push_str(v);
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

pub use crate::uri::{query_param, strip_port};

/// Picks a cluster by relative weight; `roll` is a uniform number in `0..total`.
pub fn pick_weighted(clusters: &[snapshot::WeightedCluster], roll: u64) -> Option<&snapshot::WeightedCluster> {
    let mut left = roll;
    for c in clusters {
        if left < u64::from(c.weight) {
            return Some(c);
        }
        left -= u64::from(c.weight);
    }
    clusters.last()
}

pub fn total_weight(clusters: &[snapshot::WeightedCluster]) -> u64 {
    clusters.iter().map(|c| u64::from(c.weight)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HeaderMatch, QueryMatch, RouteMatch, WeightedCluster};

    fn route(name: &str, path: PathMatch) -> snapshot::Route {
        snapshot::Route {
            name: name.into(),
            matcher: RouteMatch { path, ignore_case: false, headers: vec![], query: vec![] },
            action: RouteAction::Direct { status: 200, body: name.into() },
            policy: Default::default(),
        }
    }

    fn vhost(name: &str, domains: &[&str], routes: Vec<snapshot::Route>) -> snapshot::VirtualHost {
        snapshot::VirtualHost {
            name: name.into(),
            https_redirect: false,
            domains: domains.iter().map(|s| s.to_string()).collect(),
            routes,
        }
    }

    fn req<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        RequestView { method: "GET", authority, scheme: "http", path, query, headers }
    }

    #[test]
    fn domain_precedence_is_exact_then_suffix_then_prefix_then_any() {
        let t = Table::new(&[
            vhost("any", &["*"], vec![]),
            vhost("prefix", &["api.*"], vec![]),
            vhost("suffix", &["*.example.com"], vec![]),
            vhost("longer-suffix", &["*.svc.example.com"], vec![]),
            vhost("exact", &["httpbin.example.com"], vec![]),
        ]);
        let name = |h: &str| t.virtual_host(h).map(|v| v.name.clone());
        assert_eq!(name("httpbin.example.com").as_deref(), Some("exact"));
        assert_eq!(name("HTTPBIN.example.com:8080").as_deref(), Some("exact"));
        assert_eq!(name("a.svc.example.com").as_deref(), Some("longer-suffix"));
        assert_eq!(name("other.example.com").as_deref(), Some("suffix"));
        assert_eq!(name("api.other.org").as_deref(), Some("prefix"));
        assert_eq!(name("example.com").as_deref(), Some("any"));
    }

    #[test]
    fn suffix_wildcard_does_not_match_the_bare_domain() {
        let t = Table::new(&[vhost("suffix", &["*.example.com"], vec![])]);
        assert!(t.virtual_host("example.com").is_none());
        assert!(t.virtual_host("a.b.example.com").is_some());
    }

    #[test]
    fn first_matching_route_wins_and_prefix_is_a_plain_string_prefix() {
        let t = Table::new(&[vhost(
            "h",
            &["h"],
            vec![
                route("status", PathMatch::Prefix("/status".into())),
                route("exact", PathMatch::Exact("/headers".into())),
                route("regex", PathMatch::Regex("/delay/[0-9]+".into())),
            ],
        )]);
        let vh = t.virtual_host("h").unwrap();
        let headers = HeaderMap::new();
        let pick = |p: &str| vh.route(&req("h", p, &headers)).map(|r| r.name.clone());
        assert_eq!(pick("/status/200").as_deref(), Some("status"));
        assert_eq!(pick("/statusX").as_deref(), Some("status"));
        assert_eq!(pick("/headers").as_deref(), Some("exact"));
        assert_eq!(pick("/headers?x=1").as_deref(), Some("exact"), "the query is not part of the path");
        assert_eq!(pick("/headers/").as_deref(), None);
        assert_eq!(pick("/delay/3").as_deref(), Some("regex"));
        assert_eq!(pick("/delay/3s").as_deref(), None, "regex must match the whole path");
        assert_eq!(pick("/get").as_deref(), None);
    }

    #[test]
    fn header_matches_are_anded_and_without_headers_treats_missing_as_empty() {
        let mut r = route("jason", PathMatch::Prefix("/".into()));
        r.matcher.headers =
            vec![HeaderMatch { name: "end-user".into(), value: ValueMatch::Exact("jason".into()), invert: false }];
        let mut not_foo = route("not-foo", PathMatch::Prefix("/".into()));
        not_foo.matcher.headers =
            vec![HeaderMatch { name: "x".into(), value: ValueMatch::Exact("foo".into()), invert: true }];
        let t = Table::new(&[vhost("h", &["*"], vec![r, not_foo])]);
        let vh = t.virtual_host("any").unwrap();
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        assert_eq!(vh.route(&req("a", "/", &h)).unwrap().name, "jason");
        let none = HeaderMap::new();
        assert_eq!(vh.route(&req("a", "/", &none)).unwrap().name, "not-foo");
        let mut foo = HeaderMap::new();
        foo.insert("x", "foo".parse().unwrap());
        assert!(vh.route(&req("a", "/", &foo)).is_none());
    }

    #[test]
    fn presence_method_and_query_matches() {
        let mut r = route("q", PathMatch::Prefix("/".into()));
        r.matcher.query = vec![QueryMatch { name: "debug".into(), value: ValueMatch::Exact("".into()) }];
        r.matcher.headers = vec![
            HeaderMatch { name: ":method".into(), value: ValueMatch::Exact("GET".into()), invert: false },
            HeaderMatch { name: "x-canary".into(), value: ValueMatch::Present, invert: false },
        ];
        let t = Table::new(&[vhost("h", &["*"], vec![r])]);
        let vh = t.virtual_host("x").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-canary", "".parse().unwrap());
        assert!(vh.route(&req("x", "/p?debug", &h)).is_some());
        assert!(vh.route(&req("x", "/p?other=1", &h)).is_none());
        assert!(vh.route(&req("x", "/p?debug", &HeaderMap::new())).is_none());
    }

    #[test]
    fn ignore_uri_case_applies_to_prefix_and_exact() {
        let mut r = route("ci", PathMatch::Prefix("/Status".into()));
        r.matcher.ignore_case = true;
        let t = Table::new(&[vhost("h", &["*"], vec![r])]);
        let h = HeaderMap::new();
        assert!(t.virtual_host("x").unwrap().route(&req("x", "/STATUS/200", &h)).is_some());
    }

    #[test]
    fn weights_are_relative() {
        let cs = vec![
            WeightedCluster { cluster: "a".into(), weight: 1, headers: Default::default() },
            WeightedCluster { cluster: "b".into(), weight: 3, headers: Default::default() },
        ];
        let pick = |roll| pick_weighted(&cs, roll).map(|c| c.cluster.as_str());
        assert_eq!(total_weight(&cs), 4);
        assert_eq!(pick(0), Some("a"));
        assert_eq!(pick(1), Some("b"));
        assert_eq!(pick(3), Some("b"));
    }
}
