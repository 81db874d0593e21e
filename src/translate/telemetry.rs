//! Telemetry resolved for one proxy (pure): which Telemetries apply to a workload (workload >
//! namespace > root namespace), each side's sampling, access log and span tags over the mesh
//! config, and the metric overrides merged as Istio's `mergeMetrics`. What comes out is the
//! snapshot's own types (`snapshot::telemetry`).

use std::collections::BTreeMap;

use crate::resources::mesh_config;
use crate::resources::telemetry::{
    match_mode, CustomTag, MatchMode, Metrics, ModeSelector, Telemetry, ENVOY_PROVIDER, PROMETHEUS_PROVIDER,
};
use crate::snapshot::telemetry::{AccessLog, Metric, MetricRule, MetricRules, Mode, SpanTag};
use crate::snapshot::SideTelemetry;

/// The metric named `name` in a Telemetry's `match.metric`.
fn metric(name: &str) -> Option<Metric> {
    Metric::ALL.into_iter().find(|m| m.name() == name)
}

/// The sides a `match.mode` covers.
fn modes(m: MatchMode) -> &'static [Mode] {
    match m {
        MatchMode::Client => &[Mode::Client],
        MatchMode::Server => &[Mode::Server],
        MatchMode::ClientAndServer => &[Mode::Client, Mode::Server],
    }
}

/// Where a custom tag's value comes from; `None` unless exactly one source is given.
fn span_tag(t: &CustomTag) -> Option<SpanTag> {
    match (&t.literal, &t.environment, &t.header) {
        (Some(l), None, None) => Some(SpanTag::Literal(l.value.clone())),
        (None, Some(e), None) => Some(SpanTag::Environment { name: e.name.clone(), default: e.default_value.clone() }),
        (None, None, Some(h)) => {
            Some(SpanTag::Header { name: h.name.to_ascii_lowercase(), default: h.default_value.clone() })
        }
        _ => None,
    }
}

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
                selector.metric.as_deref().and_then(metric).into_iter().collect()
            };
            for mode in match_mode(selector.mode.as_deref()).map_or(&[][..], modes) {
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
    let root = mesh_config::NAMESPACE;
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
    let applies = |m: &Option<ModeSelector>| {
        m.as_ref().is_none_or(|m| match_mode(m.mode.as_deref()).is_ok_and(|m| modes(m).contains(&mode)))
    };
    for tr in applicable.iter().flat_map(|t| &t.spec.tracing).filter(|tr| applies(&tr.match_)) {
        if let Some(p) = tr.random_sampling_percentage {
            e.sampling = Some((p.clamp(0.0, 100.0) * 100.0).round() as u32);
        }
        if tr.disable_span_reporting == Some(true) {
            e.sampling = Some(0);
        }
        if let Some(tags) = tr.custom_tags.as_ref().filter(|t| !t.is_empty()) {
            e.span_tags = tags.iter().filter_map(|(k, t)| Some((k.clone(), span_tag(t)?))).collect();
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

/// The sampling, span tags and access log of one side of a proxy: the Telemetries that apply
/// to it over the mesh config. The `envoy` provider logs where and as the mesh config says,
/// else text to the proxy's stdout.
pub fn side(mesh: &mesh_config::MeshConfig, applicable: &[&Telemetry], mode: Mode) -> SideTelemetry {
    let t = effective(applicable, mode);
    let mesh_log = |file: &str, filter| AccessLog {
        file: file.to_string(),
        json: mesh.access_log_json,
        filter,
        format: mesh.access_log_format.clone(),
    };
    let access_log = match t.access_log {
        Some(true) => Some(mesh_log(mesh.access_log_file.as_deref().unwrap_or("/dev/stdout"), t.filter)),
        Some(false) => None,
        None => mesh.access_log_file.as_deref().map(|f| mesh_log(f, None)),
    };
    SideTelemetry { sampling: t.sampling.or(mesh.sampling), access_log, span_tags: t.span_tags }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::telemetry;
    use crate::resources::telemetry::tests::telemetry;

    #[test]
    fn every_metric_the_api_names_is_one_the_proxy_reports() {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, telemetry::METRICS);
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
        assert!(telemetry::check(&both).0[0].contains("exactly one of literal, environment or header"));
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
        assert!(telemetry::check(&bad).0[0].contains("spec.accessLogging[0].match.mode: \"INBOUND\" is not a mode"));
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
        assert!(telemetry::check(&other).1[0].contains("report no Istio metrics"), "{:?}", telemetry::check(&other));
        assert_eq!(metric_rules(&[]), MetricRules::default());
    }
}
