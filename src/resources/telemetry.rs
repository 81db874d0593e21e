//! `telemetry.istio.io/Telemetry`: per mesh (the root namespace, `istio-system`), namespace or
//! workload (selector), the tracing sampling and the access log a proxy gets; the most specific
//! one that sets a field wins (workload > namespace > root), as in Istio. Access-log filters
//! are a small part of CEL: `response.code`, `request.method`/`request.host`/`request.url_path`
//! compared with `==`, `!=`, `<`, `<=`, `>`, `>=`, joined by `&&`, `||`, `!` and parentheses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::meta::ObjectMeta;
use crate::resources::networking::WorkloadSelector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TelemetrySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_tags: Option<BTreeMap<String, CustomTag>>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// A span tag a Telemetry adds: a literal, or from the proxy's environment or a request header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedTag>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedTag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// Where a custom tag's value comes from, as the proxy is told.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpanTag {
    Literal(String),
    Environment { name: String, default: Option<String> },
    Header { name: String, default: Option<String> },
}

impl CustomTag {
    fn source(&self) -> Option<SpanTag> {
        match (&self.literal, &self.environment, &self.header) {
            (Some(l), None, None) => Some(SpanTag::Literal(l.value.clone())),
            (None, Some(e), None) => {
                Some(SpanTag::Environment { name: e.name.clone(), default: e.default_value.clone() })
            }
            (None, None, Some(h)) => {
                Some(SpanTag::Header { name: h.name.to_ascii_lowercase(), default: h.default_value.clone() })
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    pub expression: String,
}

/// The built-in access-log provider (Istio's `envoy`: text to `/dev/stdout`).
pub const ENVOY_PROVIDER: &str = "envoy";

/// What a proxy's Telemetry says, after the hierarchy: unset fields are left to the mesh config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effective {
    /// Sampling in hundredths of a percent (as the snapshot carries it).
    pub sampling: Option<u32>,
    /// `Some(true)`: log (with the filter, if any); `Some(false)`: do not; `None`: mesh config.
    pub access_log: Option<bool>,
    pub filter: Option<Filter>,
    /// Custom span tags (the most specific Telemetry's set replaces the others entirely).
    pub span_tags: Vec<(String, SpanTag)>,
}

/// The Telemetries that apply to a workload, most specific last: the root namespace's
/// (selector-less), its namespace's (selector-less), then those whose selector matches it.
pub fn applicable<'a>(all: &'a [Telemetry], namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&'a Telemetry> {
    let ns_of = |t: &Telemetry| t.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    fn selector(t: &Telemetry) -> Option<&BTreeMap<String, String>> {
        t.spec.selector.as_ref().map(|s| &s.match_labels).filter(|l| !l.is_empty())
    }
    let mut out: Vec<&Telemetry> =
        all.iter().filter(|t| ns_of(t) == crate::resources::mesh_config::NAMESPACE && selector(t).is_none()).collect();
    if namespace != crate::resources::mesh_config::NAMESPACE {
        out.extend(all.iter().filter(|t| ns_of(t) == namespace && selector(t).is_none()));
    }
    out.extend(all.iter().filter(|t| {
        ns_of(t) == namespace && selector(t).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }));
    out
}

/// The hierarchy applied (pure): each field from the most specific Telemetry that sets it.
pub fn effective(applicable: &[&Telemetry]) -> Effective {
    let mut e = Effective::default();
    for t in applicable {
        if let Some(tr) = t.spec.tracing.first() {
            if let Some(p) = tr.random_sampling_percentage {
                e.sampling = Some((p.clamp(0.0, 100.0) * 100.0).round() as u32);
            }
            if tr.disable_span_reporting == Some(true) {
                e.sampling = Some(0);
            }
            if let Some(tags) = tr.custom_tags.as_ref().filter(|t| !t.is_empty()) {
                e.span_tags = tags.iter().filter_map(|(k, t)| Some((k.clone(), t.source()?))).collect();
            }
        }
        if let Some(al) = t.spec.access_logging.first() {
            let on = al.disabled != Some(true) && al.providers.iter().any(|p| p.name == ENVOY_PROVIDER);
            let off = al.disabled == Some(true);
            if on || off {
                e.access_log = Some(on);
                e.filter = if on { al.filter.as_ref().and_then(|f| Filter::parse(&f.expression).ok()) } else { None };
            }
        }
    }
    e
}

/// What is wrong with a Telemetry (errors), and what meshrig accepts without acting on it
/// (warnings), each with the field's path.
pub fn check(t: &Telemetry) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let not_yet = |p: &str| format!("{p}: accepted but not enforced yet by meshrig");
    if t.spec.target_ref.is_some() || !t.spec.target_refs.is_empty() {
        warnings.push(not_yet("spec.targetRef(s)"));
    }
    if !t.spec.metrics.is_empty() {
        warnings.push(not_yet("spec.metrics (every proxy reports Istio's standard metrics)"));
    }
    if t.spec.tracing.len() > 1 {
        warnings.push(not_yet("spec.tracing[1..] (the first entry is used)"));
    }
    for (i, tr) in t.spec.tracing.iter().enumerate() {
        let p = format!("spec.tracing[{i}]");
        if let Some(s) = tr.random_sampling_percentage {
            if !(0.0..=100.0).contains(&s) {
                errors.push(format!("{p}.randomSamplingPercentage: {s} is not between 0 and 100"));
            }
        }
        for (name, tag) in tr.custom_tags.iter().flatten() {
            if tag.source().is_none() {
                errors.push(format!("{p}.customTags.{name}: give exactly one of literal, environment or header"));
            }
        }
        for (field, set) in [
            ("match", tr.match_.is_some()),
            ("useRequestIdForTraceSampling", tr.use_request_id_for_trace_sampling.is_some()),
            ("enableIstioTags", tr.enable_istio_tags.is_some()),
        ] {
            if set {
                warnings.push(not_yet(&format!("{p}.{field}")));
            }
        }
    }
    if t.spec.access_logging.len() > 1 {
        warnings.push(not_yet("spec.accessLogging[1..] (the first entry is used)"));
    }
    for (i, al) in t.spec.access_logging.iter().enumerate() {
        let p = format!("spec.accessLogging[{i}]");
        for (j, provider) in al.providers.iter().enumerate() {
            if provider.name != ENVOY_PROVIDER {
                warnings.push(format!(
                    "{p}.providers[{j}].name: {:?} is not a provider meshrig has; it logs with the built-in `envoy` provider (the proxy's stdout)",
                    provider.name
                ));
            }
        }
        if al.match_.is_some() {
            warnings.push(not_yet(&format!("{p}.match")));
        }
        if let Some(f) = &al.filter {
            if let Err(why) = Filter::parse(&f.expression) {
                errors.push(format!("{p}.filter.expression: {why}"));
            }
        }
    }
    (errors, warnings)
}

/// An access-log filter: the CEL subset meshrig evaluates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare(Attribute, Op, Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Attribute {
    ResponseCode,
    RequestMethod,
    RequestHost,
    RequestPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    Int(i64),
    Str(String),
}

/// What a filter is judged against.
pub struct Facts<'a> {
    pub code: u16,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
}

impl Filter {
    pub fn matches(&self, f: &Facts) -> bool {
        match self {
            Filter::And(a, b) => a.matches(f) && b.matches(f),
            Filter::Or(a, b) => a.matches(f) || b.matches(f),
            Filter::Not(a) => !a.matches(f),
            Filter::Compare(attr, op, value) => {
                let ord = match (attr, value) {
                    (Attribute::ResponseCode, Value::Int(n)) => i64::from(f.code).cmp(n),
                    (Attribute::RequestMethod, Value::Str(s)) => f.method.cmp(s.as_str()),
                    (Attribute::RequestHost, Value::Str(s)) => f.host.cmp(s.as_str()),
                    (Attribute::RequestPath, Value::Str(s)) => f.path.cmp(s.as_str()),
                    _ => return false,
                };
                use std::cmp::Ordering::*;
                match op {
                    Op::Eq => ord == Equal,
                    Op::Ne => ord != Equal,
                    Op::Lt => ord == Less,
                    Op::Le => ord != Greater,
                    Op::Gt => ord == Greater,
                    Op::Ge => ord != Less,
                }
            }
        }
    }

    /// Parses the expression; the message says where it stopped and what meshrig understands.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0 };
        let f = p.or()?;
        match p.tokens.get(p.at) {
            None => Ok(f),
            Some(t) => Err(format!("unexpected {t:?} in {text:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Op(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Int(s.parse().map_err(|_| format!("number {s} is too large"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..].iter().position(|d| *d == c).ok_or("a string is not closed")?;
            out.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["&&", "||", "==", "!=", "<=", ">="].into_iter().find(|o| two == *o);
            match op {
                Some(o) => {
                    out.push(Token::Op(o));
                    i += 2;
                }
                None => {
                    let o = ["<", ">", "!", "(", ")"].into_iter().find(|o| o.starts_with(c));
                    out.push(Token::Op(o.ok_or_else(|| format!("unexpected {c:?}"))?));
                    i += 1;
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn eat(&mut self, op: &'static str) -> bool {
        let found = self.tokens.get(self.at) == Some(&Token::Op(op));
        if found {
            self.at += 1;
        }
        found
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.eat("!") {
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err("a `(` is not closed".into());
            }
            return Ok(inner);
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Filter, String> {
        let attr = match self.tokens.get(self.at) {
            Some(Token::Ident(name)) => match name.as_str() {
                "response.code" => Attribute::ResponseCode,
                "request.method" => Attribute::RequestMethod,
                "request.host" => Attribute::RequestHost,
                "request.url_path" | "request.path" => Attribute::RequestPath,
                other => {
                    return Err(format!(
                        "meshrig does not know the attribute {other:?}; it filters on response.code, request.method, request.host and request.url_path"
                    ))
                }
            },
            other => return Err(format!("expected an attribute such as response.code, found {other:?}")),
        };
        self.at += 1;
        let op = match self.tokens.get(self.at) {
            Some(Token::Op("==")) => Op::Eq,
            Some(Token::Op("!=")) => Op::Ne,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            other => return Err(format!("expected a comparison (==, !=, <, <=, >, >=), found {other:?}")),
        };
        self.at += 1;
        let value = match (attr, self.tokens.get(self.at)) {
            (Attribute::ResponseCode, Some(Token::Int(n))) => Value::Int(*n),
            (Attribute::ResponseCode, other) => {
                return Err(format!("response.code compares with a number, not {other:?}"))
            }
            (_, Some(Token::Str(s))) => Value::Str(s.clone()),
            (_, other) => return Err(format!("request attributes compare with a quoted string, not {other:?}")),
        };
        self.at += 1;
        Ok(Filter::Compare(attr, op, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(ns: &str, yaml_spec: &str) -> Telemetry {
        serde_yaml::from_str(&format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: {ns}}}\nspec:\n{yaml_spec}"
        ))
        .unwrap()
    }

    fn facts(code: u16) -> Facts<'static> {
        Facts { code, method: "GET", host: "httpbin:8000", path: "/status/418" }
    }

    #[test]
    fn filters_are_the_cel_istios_access_log_task_uses() {
        let f = Filter::parse("response.code >= 400").unwrap();
        assert!(f.matches(&facts(418)) && !f.matches(&facts(200)));
        let f = Filter::parse("response.code >= 500 || (request.method == 'POST' && !(response.code == 201))").unwrap();
        assert!(f.matches(&facts(503)) && !f.matches(&facts(404)));
        assert!(Filter::parse("request.url_path != \"/health\"").unwrap().matches(&facts(200)));
        assert!(Filter::parse("response.duration > 10").unwrap_err().contains("response.code, request.method"));
        assert!(Filter::parse("response.code >= '400'").unwrap_err().contains("compares with a number"));
        assert!(Filter::parse("(response.code == 200").unwrap_err().contains("not closed"));
        assert!(Filter::parse("response.code == 200 200").unwrap_err().contains("unexpected"));
    }

    #[test]
    fn the_most_specific_telemetry_that_sets_a_field_wins() {
        let all = vec![
            telemetry("istio-system", "  tracing: [{randomSamplingPercentage: 10, customTags: {team: {literal: {value: mesh}}}}]\n  accessLogging: [{providers: [{name: envoy}]}]\n"),
            telemetry("default", "  tracing: [{randomSamplingPercentage: 50}]\n"),
            telemetry("default", "  selector: {matchLabels: {app: httpbin}}\n  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]\n"),
            telemetry("other", "  accessLogging: [{disabled: true}]\n"),
        ];
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let httpbin = effective(&applicable(&all, "default", &labels("httpbin")));
        assert_eq!(httpbin.sampling, Some(5000), "the namespace's 50% over the mesh's 10%");
        assert_eq!(httpbin.access_log, Some(true));
        assert_eq!(httpbin.filter, Some(Filter::parse("response.code >= 400").unwrap()));
        let curl = effective(&applicable(&all, "default", &labels("curl")));
        assert_eq!((curl.access_log, curl.filter), (Some(true), None), "the mesh-wide log, unfiltered");
        let other = effective(&applicable(&all, "other", &labels("x")));
        assert_eq!((other.sampling, other.access_log), (Some(1000), Some(false)));
        assert_eq!(other.span_tags, vec![("team".to_string(), SpanTag::Literal("mesh".into()))]);
        let both = telemetry("default", "  tracing: [{customTags: {x: {literal: {value: a}, header: {name: b}}}}]\n");
        assert!(check(&both).0[0].contains("exactly one of literal, environment or header"));
        assert_eq!(effective(&[]), Effective::default());
    }
}
