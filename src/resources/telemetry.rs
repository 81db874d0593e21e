//! `telemetry.istio.io/Telemetry`: per mesh (the root namespace, `istio-system`), namespace or
//! workload (selector), the tracing sampling, the access log and the metric overrides a proxy
//! gets; the most specific one that sets a field wins (workload > namespace > root), and metric
//! overrides merge per metric and mode, later over earlier, as in Istio's `mergeMetrics`.
//! Filters and tag values are CEL expressions (`crate::cel`).

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
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverride {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio's standard metrics, as the Telemetry API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::RequestCount,
        Metric::RequestDuration,
        Metric::RequestSize,
        Metric::ResponseSize,
        Metric::TcpOpenedConnections,
        Metric::TcpClosedConnections,
        Metric::TcpSentBytes,
        Metric::TcpReceivedBytes,
        Metric::GrpcRequestMessages,
        Metric::GrpcResponseMessages,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RequestCount => "REQUEST_COUNT",
            Metric::RequestDuration => "REQUEST_DURATION",
            Metric::RequestSize => "REQUEST_SIZE",
            Metric::ResponseSize => "RESPONSE_SIZE",
            Metric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
            Metric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
            Metric::TcpSentBytes => "TCP_SENT_BYTES",
            Metric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
            Metric::GrpcRequestMessages => "GRPC_REQUEST_MESSAGES",
            Metric::GrpcResponseMessages => "GRPC_RESPONSE_MESSAGES",
        }
    }

    fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Which side of a proxy's traffic: the client side (sidecar outbound, gateways; reporter
/// `source`) or the server side (sidecar inbound; reporter `destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    Client,
    Server,
}

/// `match.mode`: CLIENT, SERVER or (unset, `CLIENT_AND_SERVER`) both.
fn modes(mode: Option<&str>) -> Result<&'static [Mode], String> {
    match mode {
        None | Some("CLIENT_AND_SERVER") => Ok(&[Mode::Client, Mode::Server]),
        Some("CLIENT") => Ok(&[Mode::Client]),
        Some("SERVER") => Ok(&[Mode::Server]),
        Some(other) => Err(format!("{other:?} is not a mode; use CLIENT, SERVER or CLIENT_AND_SERVER")),
    }
}

/// One metric's overrides on one side of a proxy, after the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetricRule {
    pub metric: Metric,
    pub mode: Mode,
    pub disabled: bool,
    /// By label name: `None` removes the label, `Some(expr)` sets it (adding a new one).
    pub tags: Vec<(String, Option<crate::cel::Expr>)>,
}

/// What a proxy's metrics are told: nothing at all (`off`), or per metric and side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MetricRules {
    /// No metric is reported: `ALL_METRICS` disabled, or a provider other than `prometheus`.
    pub off: bool,
    pub rules: Vec<MetricRule>,
}

/// `tracing[].match` and `accessLogging[].match`: which side of the proxy's traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl ModeSelector {
    fn covers(&self, mode: Mode) -> bool {
        modes(self.mode.as_deref()).is_ok_and(|m| m.contains(&mode))
    }
}

/// Istio's built-in metrics provider (mesh config `defaultProviders.metrics`).
pub const PROMETHEUS_PROVIDER: &str = "prometheus";

/// The metric overrides of the applicable Telemetries merged as Istio's `mergeMetrics` does
/// (pure): providers from the most specific entry that names some; overrides applied in order
/// (root, namespace, workload), each setting `disabled` and its tags per metric and mode on top
/// of the earlier ones; `ALL_METRICS` disabled turns the metrics off until a later override
/// turns them on again.
pub fn metric_rules(applicable: &[&Telemetry]) -> MetricRules {
    let entries: Vec<&Metrics> = applicable.iter().flat_map(|t| &t.spec.metrics).collect();
    let names = |m: &Metrics| m.providers.iter().map(|p| p.name.to_ascii_lowercase()).collect::<Vec<_>>();
    let in_scope = entries.iter().rev().map(|m| names(m)).find(|n| !n.is_empty());
    if in_scope.is_some_and(|n| !n.iter().any(|p| p == PROMETHEUS_PROVIDER)) {
        return MetricRules { off: true, rules: Vec::new() };
    }
    type Merged = (Option<bool>, BTreeMap<String, Option<crate::cel::Expr>>);
    let mut merged: BTreeMap<(Metric, Mode), Merged> = BTreeMap::new();
    let mut off = false;
    let mut parent = vec![PROMETHEUS_PROVIDER.to_string()];
    for m in entries {
        let providers = Some(names(m)).filter(|n| !n.is_empty()).unwrap_or_else(|| parent.clone());
        parent = providers.clone();
        if !providers.iter().any(|p| p == PROMETHEUS_PROVIDER) {
            continue;
        }
        for o in &m.overrides {
            let selector = o.match_.clone().unwrap_or_default();
            if selector.custom_metric.is_some() {
                continue;
            }
            let all = selector.metric.as_deref().is_none_or(|m| m == "ALL_METRICS");
            if selector.metric.as_deref() == Some("ALL_METRICS") && o.disabled == Some(true) {
                off = true;
                continue;
            }
            off = false;
            let metrics: Vec<Metric> = if all {
                Metric::ALL.to_vec()
            } else {
                selector.metric.as_deref().and_then(Metric::parse).into_iter().collect()
            };
            for mode in modes(selector.mode.as_deref()).unwrap_or(&[]) {
                for metric in &metrics {
                    let entry = merged.entry((*metric, *mode)).or_default();
                    if o.disabled.is_some() {
                        entry.0 = o.disabled;
                    }
                    for (name, tag) in &o.tag_overrides {
                        if let Ok(value) = tag.parsed() {
                            entry.1.insert(name.clone(), value);
                        }
                    }
                }
            }
        }
    }
    if off {
        return MetricRules { off, rules: Vec::new() };
    }
    let rules = merged
        .into_iter()
        .map(|((metric, mode), (disabled, tags))| MetricRule {
            metric,
            mode,
            disabled: disabled == Some(true),
            tags: tags.into_iter().collect(),
        })
        .filter(|r| r.disabled || !r.tags.is_empty())
        .collect();
    MetricRules { off, rules }
}

impl TagOverride {
    /// `None` removes the label; `Some` sets it from the expression.
    fn parsed(&self) -> Result<Option<crate::cel::Expr>, String> {
        match (self.operation.as_deref().unwrap_or("UPSERT"), &self.value) {
            ("REMOVE", None) => Ok(None),
            ("REMOVE", Some(_)) => Err("value may only be set when the operation is UPSERT".into()),
            ("UPSERT", None) => {
                Err("value must be set when the operation is UPSERT (a CEL expression such as request.host)".into())
            }
            ("UPSERT", Some(v)) => crate::cel::Expr::parse(v).map(Some).map_err(|e| format!("value: {e}")),
            (other, _) => Err(format!("operation: {other:?} is not one; use UPSERT or REMOVE")),
        }
    }
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
    pub match_: Option<ModeSelector>,
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
    pub match_: Option<ModeSelector>,
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
    pub filter: Option<crate::cel::Expr>,
    /// Custom span tags (the most specific Telemetry's set replaces the others entirely).
    pub span_tags: Vec<(String, SpanTag)>,
}

/// The Telemetries that apply to a workload, most specific last, as Istio picks them from
/// `all` (oldest first): the root namespace's first selector-less one, its namespace's first
/// selector-less one, then the first whose selector matches it. (Two at one level are what
/// `analyze` reports as IST0160 and IST0159.)
pub fn applicable<'a>(all: &'a [Telemetry], namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&'a Telemetry> {
    let ns_of = |t: &Telemetry| t.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    fn selector(t: &Telemetry) -> Option<&BTreeMap<String, String>> {
        t.spec.selector.as_ref().map(|s| &s.match_labels).filter(|l| !l.is_empty())
    }
    let root = crate::resources::mesh_config::NAMESPACE;
    let mut out: Vec<&Telemetry> = all.iter().find(|t| ns_of(t) == root && selector(t).is_none()).into_iter().collect();
    if namespace != root {
        out.extend(all.iter().find(|t| ns_of(t) == namespace && selector(t).is_none()));
    }
    out.extend(all.iter().find(|t| {
        ns_of(t) == namespace && selector(t).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }));
    out
}

/// The hierarchy applied for one side of a proxy (pure): each field from the most specific
/// entry that sets it, among those whose `match.mode` covers the side.
pub fn effective(applicable: &[&Telemetry], mode: Mode) -> Effective {
    let mut e = Effective::default();
    let applies = |m: &Option<ModeSelector>| m.as_ref().is_none_or(|m| m.covers(mode));
    for tr in applicable.iter().flat_map(|t| &t.spec.tracing).filter(|tr| applies(&tr.match_)) {
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
    // Access logging, as Istio's mergeLogs: an entry without providers inherits the previous
    // entry's; the `envoy` provider is on from the last entry that names it for this side.
    let mut parent: Vec<String> = Vec::new();
    for al in applicable.iter().flat_map(|t| &t.spec.access_logging) {
        let named: Vec<String> = al.providers.iter().map(|p| p.name.to_ascii_lowercase()).collect();
        let providers = if named.is_empty() { parent.clone() } else { named };
        parent = providers.clone();
        if !applies(&al.match_) {
            continue;
        }
        if al.disabled == Some(true) {
            e.access_log = Some(false);
            e.filter = None;
        } else if providers.iter().any(|p| p == ENVOY_PROVIDER) {
            e.access_log = Some(true);
            e.filter = al.filter.as_ref().and_then(|f| crate::cel::Expr::parse_filter(&f.expression).ok());
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
    for (i, m) in t.spec.metrics.iter().enumerate() {
        let p = format!("spec.metrics[{i}]");
        if !m.providers.is_empty() && !m.providers.iter().any(|p| p.name.eq_ignore_ascii_case(PROMETHEUS_PROVIDER)) {
            warnings.push(format!(
                "{p}.providers: meshrig's metrics provider is `prometheus`; as in Istio, a list without it replaces the default, so the proxies this Telemetry applies to report no Istio metrics"
            ));
        }
        if m.reporting_interval.is_some() {
            warnings.push(not_yet(&format!(
                "{p}.reportingInterval (TCP metrics are reported when a connection opens and closes)"
            )));
        }
        for (j, o) in m.overrides.iter().enumerate() {
            let p = format!("{p}.overrides[{j}]");
            let selector = o.match_.clone().unwrap_or_default();
            if let Some(metric) = &selector.metric {
                if metric != "ALL_METRICS" && Metric::parse(metric).is_none() {
                    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                    errors
                        .push(format!("{p}.match.metric: {metric:?} is not one of ALL_METRICS, {}", names.join(", ")));
                }
            }
            if selector.custom_metric.is_some() {
                warnings.push(not_yet(&format!("{p}.match.customMetric (meshrig has Istio's standard metrics only)")));
            }
            if let Err(why) = modes(selector.mode.as_deref()) {
                errors.push(format!("{p}.match.mode: {why}"));
            }
            for (name, tag) in &o.tag_overrides {
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(format!(
                        "{p}.tagOverrides.{name}: not a Prometheus label name (letters, digits and `_`, not starting with a digit)"
                    ));
                }
                if let Err(why) = tag.parsed() {
                    errors.push(format!("{p}.tagOverrides.{name}.{why}"));
                }
            }
        }
    }
    for (i, tr) in t.spec.tracing.iter().enumerate() {
        let p = format!("spec.tracing[{i}]");
        if let Some(s) = tr.random_sampling_percentage {
            if !(0.0..=100.0).contains(&s) {
                errors.push(format!("{p}.randomSamplingPercentage: {s} is not between 0 and 100"));
            }
        }
        if let Some(Err(why)) = tr.match_.as_ref().map(|m| modes(m.mode.as_deref())) {
            errors.push(format!("{p}.match.mode: {why}"));
        }
        for (name, tag) in tr.custom_tags.iter().flatten() {
            if tag.source().is_none() {
                errors.push(format!("{p}.customTags.{name}: give exactly one of literal, environment or header"));
            }
        }
        for (field, set) in [
            ("useRequestIdForTraceSampling", tr.use_request_id_for_trace_sampling.is_some()),
            ("enableIstioTags", tr.enable_istio_tags.is_some()),
        ] {
            if set {
                warnings.push(not_yet(&format!("{p}.{field}")));
            }
        }
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
        if let Some(Err(why)) = al.match_.as_ref().map(|m| modes(m.mode.as_deref())) {
            errors.push(format!("{p}.match.mode: {why}"));
        }
        if let Some(f) = &al.filter {
            if let Err(why) = crate::cel::Expr::parse_filter(&f.expression) {
                errors.push(format!("{p}.filter.expression: {why}"));
            }
        }
    }
    (errors, warnings)
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

    #[test]
    fn the_most_specific_telemetry_that_sets_a_field_wins() {
        let all = vec![
            telemetry("istio-system", "  tracing: [{randomSamplingPercentage: 10, customTags: {team: {literal: {value: mesh}}}}]\n  accessLogging: [{providers: [{name: envoy}]}]\n"),
            telemetry("default", "  tracing: [{randomSamplingPercentage: 50}]\n"),
            telemetry("default", "  selector: {matchLabels: {app: httpbin}}\n  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]\n"),
            telemetry("other", "  accessLogging: [{disabled: true}]\n"),
        ];
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let httpbin = effective(&applicable(&all, "default", &labels("httpbin")), Mode::Server);
        assert_eq!(httpbin.sampling, Some(5000), "the namespace's 50% over the mesh's 10%");
        assert_eq!(httpbin.access_log, Some(true));
        assert_eq!(httpbin.filter, Some(crate::cel::Expr::parse_filter("response.code >= 400").unwrap()));
        let curl = effective(&applicable(&all, "default", &labels("curl")), Mode::Client);
        assert_eq!((curl.access_log, curl.filter), (Some(true), None), "the mesh-wide log, unfiltered");
        let other = effective(&applicable(&all, "other", &labels("x")), Mode::Client);
        assert_eq!((other.sampling, other.access_log), (Some(1000), Some(false)));
        assert_eq!(other.span_tags, vec![("team".to_string(), SpanTag::Literal("mesh".into()))]);
        let both = telemetry("default", "  tracing: [{customTags: {x: {literal: {value: a}, header: {name: b}}}}]\n");
        assert!(check(&both).0[0].contains("exactly one of literal, environment or header"));
        assert_eq!(effective(&[], Mode::Client), Effective::default());
        let two = [
            telemetry("default", "  tracing: [{randomSamplingPercentage: 20}]\n"),
            telemetry("default", "  tracing: [{randomSamplingPercentage: 70}]\n"),
        ];
        let first = effective(&applicable(&two, "default", &labels("x")), Mode::Client);
        assert_eq!(first.sampling, Some(2000), "the first (oldest) at one level, as in Istio");

        // `match.mode` sets the sides apart; an entry without providers inherits the previous
        // entry's (here the mesh's `envoy`).
        let sides = telemetry(
            "default",
            "  tracing:\n  - {randomSamplingPercentage: 100}\n  - {match: {mode: SERVER}, disableSpanReporting: true}\n  accessLogging:\n  - match: {mode: CLIENT}\n    filter: {expression: 'response.code >= 500'}\n  - match: {mode: SERVER}\n    disabled: true\n",
        );
        let on = [&all[0], &sides];
        let client = effective(&on, Mode::Client);
        let server = effective(&on, Mode::Server);
        assert_eq!((client.sampling, server.sampling), (Some(10000), Some(0)));
        assert_eq!(client.access_log, Some(true));
        assert_eq!(client.filter, Some(crate::cel::Expr::parse_filter("response.code >= 500").unwrap()));
        assert_eq!((server.access_log, server.filter), (Some(false), None));
        let bad = telemetry("default", "  accessLogging: [{match: {mode: INBOUND}}]\n");
        assert!(check(&bad).0[0].contains("spec.accessLogging[0].match.mode: \"INBOUND\" is not a mode"));
    }

    #[test]
    fn metric_overrides_merge_per_metric_and_mode_later_over_earlier() {
        let root = telemetry(
            "istio-system",
            "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides: {request_host: {value: request.host}, source_principal: {operation: REMOVE}}\n",
        );
        let ns = telemetry(
            "default",
            "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      tagOverrides: {request_host: {operation: REMOVE}}\n    - match: {mode: CLIENT}\n      disabled: true\n",
        );
        let rules = metric_rules(&[&root, &ns]);
        assert!(!rules.off);
        let rule = |metric, mode| rules.rules.iter().find(|r| r.metric == metric && r.mode == mode).cloned();
        let client = rule(Metric::RequestCount, Mode::Client).unwrap();
        assert!(client.disabled, "the namespace disables every client metric");
        let host = crate::cel::Expr::parse("request.host").unwrap();
        assert_eq!(client.tags, vec![("request_host".into(), Some(host)), ("source_principal".into(), None)]);
        let server = rule(Metric::RequestCount, Mode::Server).unwrap();
        assert!(!server.disabled);
        assert_eq!(server.tags, vec![("request_host".into(), None), ("source_principal".into(), None)]);
        assert!(rule(Metric::TcpSentBytes, Mode::Client).unwrap().disabled);
        assert_eq!(rule(Metric::TcpSentBytes, Mode::Server), None, "nothing said, nothing kept");

        // ALL_METRICS disabled at the root turns metrics off, until a later override (here the
        // namespace's) turns them back on, as Istio's mergeMetrics does.
        let all_off =
            telemetry("istio-system", "  metrics:\n  - overrides: [{match: {metric: ALL_METRICS}, disabled: true}]\n");
        assert!(metric_rules(&[&all_off]).off);
        assert!(!metric_rules(&[&all_off, &ns]).off);
        // A provider list without prometheus replaces the default: no Istio metrics.
        let other = telemetry("default", "  metrics:\n  - providers: [{name: stackdriver}]\n");
        assert!(metric_rules(&[&root, &other]).off);
        assert!(check(&other).1[0].contains("report no Istio metrics"), "{:?}", check(&other));
        assert_eq!(metric_rules(&[]), MetricRules::default());
    }

    #[test]
    fn metric_overrides_are_checked_field_by_field() {
        let t = telemetry(
            "default",
            "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNTS, mode: BOTH}\n      tagOverrides:\n        ok: {value: request.method}\n        no_value: {operation: UPSERT}\n        removed: {operation: REMOVE, value: x}\n        bad-name: {value: request.host}\n        wrong: {value: 'response.code >= \"500\"'}\n",
        );
        let (errors, _) = check(&t);
        let has = |want: &str| errors.iter().any(|e| e.contains(want));
        assert!(has("spec.metrics[0].overrides[0].match.metric: \"REQUEST_COUNTS\" is not one of ALL_METRICS, REQUEST_COUNT"), "{errors:#?}");
        assert!(has("match.mode: \"BOTH\" is not a mode"), "{errors:#?}");
        assert!(has("tagOverrides.no_value.value must be set when the operation is UPSERT"), "{errors:#?}");
        assert!(has("tagOverrides.removed.value may only be set when the operation is UPSERT"), "{errors:#?}");
        assert!(has("tagOverrides.bad-name: not a Prometheus label name"), "{errors:#?}");
        assert!(has("tagOverrides.wrong.value: cannot compare a number with a string"), "{errors:#?}");
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }
}
