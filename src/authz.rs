//! AuthorizationPolicy as the proxy evaluates it (pure): Istio's value syntax (exact, `prefix*`,
//! `*suffix`, `*` for present), path templates (`{*}`, `{**}`), CIDR blocks, and the decision
//! order: a matching DENY denies; with no ALLOW policy everything is allowed; otherwise a
//! matching ALLOW allows and nothing else does. AUDIT never changes the outcome. On TCP, the
//! HTTP-only attributes make an ALLOW rule never match and are ignored by a DENY rule.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One value in Istio's string syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty value.
    Present,
}

impl Value {
    pub fn parse(s: &str) -> Value {
        if s == "*" {
            Value::Present
        } else if let Some(rest) = s.strip_prefix('*') {
            Value::Suffix(rest.to_string())
        } else if let Some(rest) = s.strip_suffix('*') {
            Value::Prefix(rest.to_string())
        } else {
            Value::Exact(s.to_string())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Value::Exact(e) => v == e,
            Value::Prefix(p) => v.starts_with(p.as_str()),
            Value::Suffix(s) => v.ends_with(s.as_str()),
            Value::Present => !v.is_empty(),
        }
    }

    fn lowercase(self) -> Value {
        match self {
            Value::Exact(s) => Value::Exact(s.to_ascii_lowercase()),
            Value::Prefix(s) => Value::Prefix(s.to_ascii_lowercase()),
            Value::Suffix(s) => Value::Suffix(s.to_ascii_lowercase()),
            Value::Present => Value::Present,
        }
    }
}

/// An IP address or a CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr: ip, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A `paths` value: Istio's string syntax, or a template with `{*}` (one segment) and `{**}`
/// (any number of segments, last only).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathPattern {
    Value(Value),
    Template(Vec<Segment>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Literal(String),
    One,
    Any,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if !s.contains("{*}") && !s.contains("{**}") {
            if s.contains('{') || s.contains('}') {
                return Err("contains '{' or '}' beyond a supported path template ({*} or {**})".into());
            }
            return Ok(PathPattern::Value(Value::parse(s)));
        }
        if !s.starts_with('/') {
            return Err("a path template must start with /".into());
        }
        let parts: Vec<&str> = s[1..].split('/').collect();
        let mut segs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            segs.push(match *p {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Any,
                "{**}" => return Err("{**} must be the last segment".into()),
                lit if lit.contains(['{', '}', '*']) => {
                    return Err(format!("segment `{lit}` mixes a template with other characters"))
                }
                lit => Segment::Literal(lit.to_string()),
            });
        }
        Ok(PathPattern::Template(segs))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Value(v) => v.matches(path),
            PathPattern::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else { return false };
                let parts: Vec<&str> = rest.split('/').collect();
                let mut i = 0;
                for seg in segs {
                    match seg {
                        Segment::Any => return true,
                        Segment::One if i < parts.len() && !parts[i].is_empty() => i += 1,
                        Segment::Literal(l) if i < parts.len() && parts[i] == l => i += 1,
                        _ => return false,
                    }
                }
                i == parts.len()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

/// One AuthorizationPolicy that applies to this proxy, compiled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    pub action: Action,
    /// ORed; none matches nothing (an ALLOW policy without rules allows nothing).
    pub rules: Vec<Rule>,
}

/// `from` (any), `to` (any) and `when` (all); an empty list is no constraint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A field and whether it is negated (`notPrincipals`...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field<T> {
    pub values: Vec<T>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<Field<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<Field<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Field<Value>>,
    /// `ns/sa`, matched exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<Field<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<Field<Cidr>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<Field<Cidr>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// Lowercase: hosts compare case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Field<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Field<u16>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Field<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Field<PathPattern>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
    DestinationIp,
    DestinationPort,
    Sni,
    /// `experimental.envoy.filters.*`: not evaluated (always holds).
    Experimental,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Condition {
    pub key: Key,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Key {
    pub fn parse(key: &str) -> Option<Key> {
        let named = |prefix: &str| key.strip_prefix(prefix)?.strip_suffix(']').map(str::to_string);
        Some(match key {
            "source.ip" => Key::SourceIp,
            "remote.ip" => Key::RemoteIp,
            "source.namespace" => Key::SourceNamespace,
            "source.principal" => Key::SourcePrincipal,
            "source.serviceAccount" => Key::SourceServiceAccount,
            "request.auth.principal" => Key::AuthPrincipal,
            "request.auth.audiences" => Key::AuthAudiences,
            "request.auth.presenter" => Key::AuthPresenter,
            "destination.ip" => Key::DestinationIp,
            "destination.port" => Key::DestinationPort,
            "connection.sni" => Key::Sni,
            k if k.starts_with("experimental.envoy.filters.") => Key::Experimental,
            _ => {
                if let Some(h) = named("request.headers[") {
                    Key::Header(h.to_ascii_lowercase())
                } else {
                    // `request.auth.claims[a][b]`: a nested claim.
                    let claims = key.strip_prefix("request.auth.claims[")?.strip_suffix(']')?;
                    Key::AuthClaim(claims.split("][").map(str::to_string).collect())
                }
            }
        })
    }

    /// Keys only an HTTP request has.
    fn http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_) | Key::AuthPrincipal | Key::AuthAudiences | Key::AuthPresenter | Key::AuthClaim(_)
        )
    }
}

/// What a request (or a TCP connection) is judged on.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    /// The peer's principal from its mTLS certificate, without `spiffe://`
    /// (`cluster.local/ns/foo/sa/curl`).
    pub principal: Option<&'a str>,
    pub source_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub sni: Option<&'a str>,
    /// `None` for a TCP connection.
    pub http: Option<Http<'a>>,
}

#[derive(Clone, Debug)]
pub struct Http<'a> {
    pub host: &'a str,
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `iss/sub` of a validated JWT.
    pub request_principal: Option<&'a str>,
    /// The JWT's claims.
    pub claims: Option<&'a serde_json::Value>,
}

impl Attrs<'_> {
    /// `ns` and `sa` of the principal `td/ns/NS/sa/SA`.
    fn namespace_and_account(&self) -> Option<(&str, &str)> {
        let p = self.principal?;
        let rest = p.split_once("/ns/")?.1;
        rest.split_once("/sa/")
    }
}

/// The decision for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied, by the named policy (a DENY that matched) or, for `None`, because ALLOW policies
    /// exist and none matched.
    Deny(Option<String>),
}

/// Judges a request by the policies that apply to the workload, in Istio's order.
pub fn decide(policies: &[Policy], a: &Attrs<'_>) -> Verdict {
    for p in policies.iter().filter(|p| p.action == Action::Deny) {
        if p.rules.iter().any(|r| rule_matches(r, a, true)) {
            return Verdict::Deny(Some(p.name.clone()));
        }
    }
    let mut allows = policies.iter().filter(|p| p.action == Action::Allow).peekable();
    if allows.peek().is_none() {
        return Verdict::Allow;
    }
    if allows.any(|p| p.rules.iter().any(|r| rule_matches(r, a, false))) {
        Verdict::Allow
    } else {
        Verdict::Deny(None)
    }
}

/// A field holds when any value matches (or, negated, none does). `value` is `None` when the
/// request lacks the attribute: a positive field fails, a negated one holds.
fn field<T>(f: &Field<T>, value: Option<impl Fn(&T) -> bool>) -> bool {
    let hit = value.is_some_and(|m| f.values.iter().any(m));
    hit != f.not
}

/// For HTTP-only attributes on a TCP connection: a DENY rule ignores them, an ALLOW rule fails.
fn http_field<T>(fields: &[Field<T>], a: &Attrs<'_>, deny: bool, m: impl Fn(&Http<'_>, &T) -> bool) -> bool {
    match &a.http {
        None => fields.is_empty() || deny,
        Some(h) => fields.iter().all(|f| field(f, Some(|v: &T| m(h, v)))),
    }
}

fn source_matches(s: &Source, a: &Attrs<'_>, deny: bool) -> bool {
    let principal = a.principal;
    let ns_sa = a.namespace_and_account();
    s.principals.iter().all(|f| field(f, principal.map(|p| move |v: &Value| v.matches(p))))
        && s.namespaces.iter().all(|f| field(f, ns_sa.map(|(ns, _)| move |v: &Value| v.matches(ns))))
        && s.service_accounts
            .iter()
            .all(|f| field(f, ns_sa.map(|(ns, sa)| move |v: &String| v.split_once('/') == Some((ns, sa)))))
        && s.ip_blocks.iter().all(|f| field(f, Some(|c: &Cidr| c.contains(a.source_ip))))
        && s.remote_ip_blocks.iter().all(|f| field(f, Some(|c: &Cidr| c.contains(a.remote_ip))))
        && http_field(&s.request_principals, a, deny, |h, v: &Value| h.request_principal.is_some_and(|p| v.matches(p)))
}

fn operation_matches(o: &Operation, a: &Attrs<'_>, deny: bool) -> bool {
    o.ports.iter().all(|f| field(f, Some(|p: &u16| *p == a.destination_port)))
        && http_field(&o.hosts, a, deny, |h, v: &Value| {
            let host = h.host.to_ascii_lowercase();
            let bare = crate::uri::strip_port(&host);
            v.matches(&host) || v.matches(bare)
        })
        && http_field(&o.methods, a, deny, |h, v: &Value| v.matches(h.method))
        && http_field(&o.paths, a, deny, |h, p: &PathPattern| p.matches(h.path))
}

/// The attribute's values for a condition; `None` when the request lacks it.
fn attribute(key: &Key, a: &Attrs<'_>) -> Option<Vec<String>> {
    let ns_sa = a.namespace_and_account();
    let http = a.http.as_ref();
    Some(match key {
        // A header sent several times is one value, joined with commas, as Istio compares it
        // (so `x: a` and `x: b` do not match a rule on `a` alone).
        Key::Header(name) => {
            let values: Vec<&str> =
                http?.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
            if values.is_empty() {
                return None;
            }
            vec![values.join(",")]
        }
        Key::SourceIp => vec![a.source_ip.to_string()],
        Key::RemoteIp => vec![a.remote_ip.to_string()],
        Key::DestinationIp => vec![a.destination_ip.to_string()],
        Key::DestinationPort => vec![a.destination_port.to_string()],
        Key::SourceNamespace => vec![ns_sa?.0.to_string()],
        Key::SourceServiceAccount => vec![format!("{}/{}", ns_sa?.0, ns_sa?.1)],
        Key::SourcePrincipal => vec![a.principal?.to_string()],
        Key::Sni => vec![a.sni?.to_string()],
        Key::AuthPrincipal => vec![http?.request_principal?.to_string()],
        Key::AuthAudiences | Key::AuthPresenter | Key::AuthClaim(_) => {
            let claims = http?.claims?;
            let claim = match key {
                Key::AuthAudiences => claims.get("aud")?,
                Key::AuthPresenter => claims.get("azp")?,
                Key::AuthClaim(path) => path.iter().try_fold(claims, |v, k| v.get(k))?,
                _ => unreachable!(),
            };
            match claim {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
                }
                serde_json::Value::Bool(b) => vec![b.to_string()],
                serde_json::Value::Number(n) => vec![n.to_string()],
                _ => return None,
            }
        }
        Key::Experimental => return Some(vec![]),
    })
}

fn condition_matches(c: &Condition, a: &Attrs<'_>, deny: bool) -> bool {
    if c.key == Key::Experimental {
        return true;
    }
    if a.http.is_none() && c.key.http_only() {
        return deny;
    }
    let ip_key = matches!(c.key, Key::SourceIp | Key::RemoteIp | Key::DestinationIp);
    let hit = |wanted: &str, got: &[String]| {
        if ip_key {
            Cidr::parse(wanted)
                .is_some_and(|cidr| got.iter().filter_map(|g| g.parse().ok()).any(|ip| cidr.contains(ip)))
        } else {
            let v = Value::parse(wanted);
            got.iter().any(|g| v.matches(g))
        }
    };
    let got = attribute(&c.key, a);
    let values_ok = c.values.is_empty() || got.as_deref().is_some_and(|g| c.values.iter().any(|w| hit(w, g)));
    let not_ok = got.as_deref().is_none_or(|g| !c.not_values.iter().any(|w| hit(w, g)));
    values_ok && not_ok
}

fn rule_matches(r: &Rule, a: &Attrs<'_>, deny: bool) -> bool {
    (r.from.is_empty() || r.from.iter().any(|s| source_matches(s, a, deny)))
        && (r.to.is_empty() || r.to.iter().any(|o| operation_matches(o, a, deny)))
        && r.when.iter().all(|c| condition_matches(c, a, deny))
}

/// Compiles an AuthorizationPolicy (already validated) for the proxy; `None` for AUDIT-free
/// CUSTOM ones (refused at apply).
pub fn compile(ap: &crate::resources::security::AuthorizationPolicy) -> Option<Policy> {
    use crate::resources::security::AuthzAction;
    let action = match ap.spec.action {
        AuthzAction::Allow => Action::Allow,
        AuthzAction::Deny => Action::Deny,
        AuthzAction::Audit => Action::Audit,
        AuthzAction::Custom => return None,
    };
    let values = |v: &[String], not: bool| -> Vec<Field<Value>> {
        if v.is_empty() {
            vec![]
        } else {
            vec![Field { values: v.iter().map(|s| Value::parse(s)).collect(), not }]
        }
    };
    let pair = |pos: &[String], neg: &[String]| [values(pos, false), values(neg, true)].concat();
    let rules = ap
        .spec
        .rules
        .iter()
        .flatten()
        .map(|r| Rule {
            from: r
                .from
                .iter()
                .flatten()
                .filter_map(|f| f.source.as_ref())
                .map(|s| Source {
                    principals: pair(&s.principals, &s.not_principals),
                    request_principals: pair(&s.request_principals, &s.not_request_principals),
                    namespaces: pair(&s.namespaces, &s.not_namespaces),
                    service_accounts: typed(&s.service_accounts, &s.not_service_accounts, |v| Some(v.to_string())),
                    ip_blocks: typed(&s.ip_blocks, &s.not_ip_blocks, Cidr::parse),
                    remote_ip_blocks: typed(&s.remote_ip_blocks, &s.not_remote_ip_blocks, Cidr::parse),
                })
                .collect(),
            to: r
                .to
                .iter()
                .flatten()
                .filter_map(|t| t.operation.as_ref())
                .map(|o| Operation {
                    hosts: pair(&o.hosts, &o.not_hosts)
                        .into_iter()
                        .map(|f| Field { values: f.values.into_iter().map(Value::lowercase).collect(), not: f.not })
                        .collect(),
                    ports: typed(&o.ports, &o.not_ports, |v| v.parse().ok()),
                    methods: pair(&o.methods, &o.not_methods),
                    paths: typed(&o.paths, &o.not_paths, |v| PathPattern::parse(v).ok()),
                })
                .collect(),
            when: r
                .when
                .iter()
                .flatten()
                .filter_map(|c| {
                    Some(Condition {
                        key: Key::parse(&c.key)?,
                        values: c.values.clone(),
                        not_values: c.not_values.clone(),
                    })
                })
                .collect(),
        })
        .collect();
    let ns = ap.metadata.namespace.as_deref().unwrap_or("default");
    Some(Policy { name: format!("{ns}/{}", ap.metadata.name), action, rules })
}

/// A positive and a negated field from `values` and `notValues`, each parsed by `f`.
fn typed<T>(pos: &[String], neg: &[String], f: impl Fn(&str) -> Option<T>) -> Vec<Field<T>> {
    [(pos, false), (neg, true)]
        .into_iter()
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, not)| Field { values: v.iter().filter_map(|s| f(s)).collect(), not })
        .collect()
}

#[cfg(test)]
mod tests;
