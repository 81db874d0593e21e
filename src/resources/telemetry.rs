//! `telemetry.istio.io/Telemetry`, as written, and its checks: per mesh (the root namespace,
//! `istio-system`), namespace or workload (selector), the tracing sampling, the access log and
//! the metric overrides a proxy gets (`translate::telemetry` resolves them for one proxy).
//! Filters and tag values are CEL expressions (`crate::cel`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::meta::ObjectMeta;
use crate::resources::networking::WorkloadSelector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverride {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio's standard metrics, as the Telemetry API's `match.metric` names them (besides
/// `ALL_METRICS`).
pub const METRICS: [&str; 10] = [
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
];

/// `match.mode`: which sides of a proxy's traffic an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// `CLIENT`: sidecar outbound, gateways.
    Client,
    /// `SERVER`: sidecar inbound.
    Server,
    /// `CLIENT_AND_SERVER`, the default.
    ClientAndServer,
}

/// Parses `match.mode` (unset: `CLIENT_AND_SERVER`).
pub fn match_mode(mode: Option<&str>) -> Result<MatchMode, String> {
    match mode {
        None | Some("CLIENT_AND_SERVER") => Ok(MatchMode::ClientAndServer),
        Some("CLIENT") => Ok(MatchMode::Client),
        Some("SERVER") => Ok(MatchMode::Server),
        Some(other) => Err(format!("{other:?} is not a mode; use CLIENT, SERVER or CLIENT_AND_SERVER")),
    }
}

/// `tracing[].match` and `accessLogging[].match`: which side of the proxy's traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Istio's built-in metrics provider (mesh config `defaultProviders.metrics`).
pub const PROMETHEUS_PROVIDER: &str = "prometheus";

impl TagOverride {
    /// `None` removes the label; `Some` sets it from the expression.
    pub fn parsed(&self) -> Result<Option<crate::cel::Expr>, String> {
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedTag>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedTag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    pub expression: String,
}

/// The built-in access-log provider (Istio's `envoy`: text to `/dev/stdout`).
pub const ENVOY_PROVIDER: &str = "envoy";

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
                if metric != "ALL_METRICS" && !METRICS.contains(&metric.as_str()) {
                    errors.push(format!(
                        "{p}.match.metric: {metric:?} is not one of ALL_METRICS, {}",
                        METRICS.join(", ")
                    ));
                }
            }
            if selector.custom_metric.is_some() {
                warnings.push(not_yet(&format!("{p}.match.customMetric (meshrig has Istio's standard metrics only)")));
            }
            if let Err(why) = match_mode(selector.mode.as_deref()) {
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
        if let Some(Err(why)) = tr.match_.as_ref().map(|m| match_mode(m.mode.as_deref())) {
            errors.push(format!("{p}.match.mode: {why}"));
        }
        for (name, tag) in tr.custom_tags.iter().flatten() {
            if [tag.literal.is_some(), tag.environment.is_some(), tag.header.is_some()].iter().filter(|s| **s).count()
                != 1
            {
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
        if let Some(Err(why)) = al.match_.as_ref().map(|m| match_mode(m.mode.as_deref())) {
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
pub(crate) mod tests {
    use super::*;

    /// A Telemetry in namespace `ns` with `yaml_spec` (indented two spaces) as its spec.
    pub(crate) fn telemetry(ns: &str, yaml_spec: &str) -> Telemetry {
        serde_yaml::from_str(&format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: {ns}}}\nspec:\n{yaml_spec}"
        ))
        .unwrap()
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
