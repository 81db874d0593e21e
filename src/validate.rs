//! Semantic validation after parsing (Istio's webhook rules and the Kubernetes API
//! server's basic checks), and the list of fields meshrig parses but does not enforce.
//!
//! Pure functions: every message starts with the field path it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::resources::core::{Deployment, Service};
use crate::resources::meta::{IntOrString, ObjectMeta};
use crate::resources::networking::{
    ClientTlsSettings, Destination, DestinationRule, Gateway, Headers, HttpRoute, Percent, RouteDestination,
    StringMatch, TrafficPolicy, VirtualService,
};
use crate::resources::Resource;

/// Gateway server protocols Istio accepts (compared case-insensitively).
pub const GATEWAY_PROTOCOLS: &[&str] =
    &["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL"];

/// Valid `retryOn` policy names (numeric status codes are accepted too).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const MAX_REGEX_LEN: usize = 1024;

/// Collected findings for one resource.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Report {
    fn err(&mut self, path: impl AsRef<str>, msg: impl AsRef<str>) {
        self.errors.push(format!("{}: {}", path.as_ref(), msg.as_ref()));
    }
    fn warn(&mut self, path: impl AsRef<str>, msg: impl AsRef<str>) {
        self.warnings.push(format!("{}: {}", path.as_ref(), msg.as_ref()));
    }
}

/// Validate one resource. `Ok(warnings)` when it may be applied, `Err(errors)` otherwise.
/// The largest object Kubernetes stores (etcd's request limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;
/// The most a ConfigMap's or Secret's data may hold (Kubernetes' `MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

pub fn validate(r: &Resource) -> Result<Vec<String>, Vec<String>> {
    let mut rep = Report::default();
    let size = serde_json::to_vec(r).map_or(0, |v| v.len());
    if size > MAX_OBJECT_BYTES {
        rep.errors.push(format!(
            "the object is {:.1} MiB; Kubernetes stores at most 1.5 MiB per object (etcd answers \"request is too \
             large\"); split it, or keep large data out of the cluster",
            size as f64 / (1024.0 * 1024.0)
        ));
        return Err(rep.errors);
    }
    let kind = r.kind();
    validate_meta(r.meta(), kind.namespaced(), matches!(r, Resource::Service(_) | Resource::Namespace(_)), &mut rep);
    match r {
        Resource::Namespace(_) | Resource::ServiceAccount(_) => {}
        Resource::ConfigMap(cm) => validate_config_map(cm, &mut rep),
        Resource::Secret(s) => validate_secret(s, &mut rep),
        Resource::Issuer(i) | Resource::ClusterIssuer(i) => validate_issuer(i, &mut rep),
        Resource::Certificate(c) => validate_certificate(c, &mut rep),
        Resource::Service(s) => validate_service(s, &mut rep),
        Resource::Deployment(d) => validate_deployment(d, &mut rep),
        Resource::Gateway(g) => validate_gateway(g, &mut rep),
        Resource::VirtualService(vs) => validate_virtual_service(vs, &mut rep),
        Resource::DestinationRule(dr) => validate_destination_rule(dr, &mut rep),
        Resource::ServiceEntry(se) => validate_service_entry(se, &mut rep),
        Resource::PeerAuthentication(pa) => validate_peer_authentication(pa, &mut rep),
        Resource::AuthorizationPolicy(ap) => validate_authorization_policy(ap, &mut rep),
        Resource::RequestAuthentication(ra) => validate_request_authentication(ra, &mut rep),
        Resource::Telemetry(t) => {
            let (errors, _) = crate::resources::telemetry::check(t);
            rep.errors.extend(errors);
        }
    }
    if rep.errors.is_empty() {
        Ok(rep.warnings)
    } else {
        Err(rep.errors)
    }
}

/// The `istio` ConfigMap in `istio-system` carries the mesh config: it must parse.
/// Kubernetes' message for data past [`MAX_DATA_BYTES`].
fn data_size(bytes: usize, rep: &mut Report) {
    if bytes > MAX_DATA_BYTES {
        rep.err("data", format!("Too long: must have at most {MAX_DATA_BYTES} bytes (it has {bytes})"));
    }
}

fn validate_config_map(cm: &crate::resources::core::ConfigMap, rep: &mut Report) {
    use crate::resources::mesh_config;
    let binary = cm
        .binary_data
        .as_ref()
        .and_then(|b| b.as_object())
        .map_or(0, |m| m.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, |s| s.len() / 4 * 3)).sum::<usize>());
    data_size(cm.data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + binary, rep);
    if !mesh_config::is_mesh_config(cm) {
        return;
    }
    match cm.data.get(mesh_config::KEY).map(|m| mesh_config::parse(m)) {
        None => {}
        Some(Err(e)) => rep.err(format!("data.{}", mesh_config::KEY), e),
        Some(Ok((_, unapplied))) => {
            for field in unapplied {
                rep.warn(
                    format!("data.{}.{field}", mesh_config::KEY),
                    "meshrig does not apply this mesh config field yet",
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Names and durations
// ---------------------------------------------------------------------------

/// RFC 1123 label: 1–63 chars of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 chars.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A host name with an optional `*.` prefix, or `*` (case-insensitive, like Istio).
fn is_wildcard_domain(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && rest.len() <= 255
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Parse a protobuf/Go-style duration: `10s`, `1.5s`, `100ms`, `1m30s`, `1h`, `250us`, `5ns`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("duration `{s}` must not be negative"));
    }
    match crate::duration::parse(t) {
        Ok(ns) => Ok(Duration::from_nanos(ns.unsigned_abs())),
        Err(e) if e.contains("missing unit") => {
            Err(format!("duration `{s}` has no unit (use e.g. `10s`, `100ms`, `1m`, `1h`)"))
        }
        Err(e) if e.contains("unknown unit") => {
            Err(format!("{} (use h, m, s, ms, us or ns)", e.trim_start_matches("time: ")))
        }
        Err(_) if t.is_empty() => Err("empty duration".into()),
        Err(_) => Err(format!("invalid duration `{s}` (Go's syntax: `10s`, `1.5s`, `1m30s`)")),
    }
}

/// A duration that must be ≥ 1ms.
fn check_duration(path: &str, s: &str, rep: &mut Report) {
    match parse_duration(s) {
        Err(e) => rep.err(path, e),
        Ok(d) if d < Duration::from_millis(1) => rep.err(path, format!("duration `{s}` must be at least 1ms")),
        Ok(_) => {}
    }
}

fn check_percent(path: &str, p: &Percent, rep: &mut Report) {
    if !(0.0..=100.0).contains(&p.value) || p.value.is_nan() {
        rep.err(path, format!("percentage {} must be in [0.0, 100.0]", p.value));
    }
}

fn check_regex(path: &str, re: &str, rep: &mut Report) {
    if re.len() > MAX_REGEX_LEN {
        rep.err(path, format!("regex is {} characters; the limit is {MAX_REGEX_LEN}", re.len()));
        return;
    }
    if let Err(e) = regex::Regex::new(re) {
        let first = e.to_string().lines().last().unwrap_or("").trim().to_string();
        rep.err(path, format!("invalid regex `{re}`: {first}"));
    }
}

fn check_labels(path: &str, labels: &BTreeMap<String, String>, rep: &mut Report) {
    for (k, v) in labels {
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !name_ok || prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
            rep.err(format!("{path}.{k}"), "invalid label key");
        }
        let value_ok = v.is_empty()
            || (v.len() <= 63
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()));
        if !value_ok {
            rep.err(format!("{path}.{k}"), format!("invalid label value `{v}`"));
        }
    }
}

fn validate_meta(m: &ObjectMeta, namespaced: bool, label_name: bool, rep: &mut Report) {
    if m.name.is_empty() {
        rep.err("metadata.name", "is required");
    } else if label_name && !is_dns1123_label(&m.name) {
        rep.err(
            "metadata.name",
            format!("`{}` must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)", m.name),
        );
    } else if !is_dns1123_subdomain(&m.name) {
        rep.err(
            "metadata.name",
            format!("`{}` must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", m.name),
        );
    }
    if let Some(ns) = &m.namespace {
        if !namespaced {
            rep.warn("metadata.namespace", "is ignored for cluster-scoped kinds");
        } else if !is_dns1123_label(ns) {
            rep.err("metadata.namespace", format!("`{ns}` must be a DNS-1123 label"));
        }
    }
    check_labels("metadata.labels", &m.labels, rep);
}

fn check_export_to(path: &str, export_to: &[String], rep: &mut Report) {
    let mut seen = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns1123_label(e) {
            rep.err(format!("{path}[{i}]"), format!("`{e}` must be `.`, `*` or a namespace name"));
        }
        if !seen.insert(e.as_str()) {
            rep.err(format!("{path}[{i}]"), format!("duplicate entry `{e}`"));
        }
    }
    if seen.contains("*") && seen.len() > 1 {
        rep.err(path, "`*` cannot be combined with other namespaces");
    }
}

mod certmanager;
mod destination_rule;
mod gateway;
mod security;
mod service_entry;
mod unenforced;
mod virtual_service;
mod workloads;

use certmanager::*;
use destination_rule::*;
use gateway::*;
use security::*;
use service_entry::*;
pub use unenforced::unenforced;
use virtual_service::*;
use workloads::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse::parse_documents;

    fn one(yaml: &str) -> Resource {
        let mut docs = parse_documents("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(docs.len(), 1);
        docs.remove(0).resource
    }

    fn errors(yaml: &str) -> Vec<String> {
        validate(&one(yaml)).expect_err("expected validation errors")
    }

    fn has(errs: &[String], needle: &str) -> bool {
        errs.iter().any(|e| e.contains(needle))
    }

    const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n";

    #[test]
    fn weights_all_zero() {
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 0\n    - destination: {{host: reviews, subset: v2}}\n"
        ));
        assert!(has(&errs, "spec.http[0].route: total destination weight = 0"), "{errs:?}");
        // Relative weights need not sum to 100.
        let ok = one(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 1\n    - destination: {{host: reviews, subset: v2}}\n      weight: 3\n"
        ));
        assert!(validate(&ok).is_ok());
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n      weight: -1\n"
        ));
        assert!(has(&errs, "spec.http[0].route[0].weight"), "{errs:?}");
    }

    #[test]
    fn bad_regex_and_string_match_rules() {
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - match:\n    - uri:\n        regex: \"/api/(v1\"\n    route:\n    - destination: {{host: reviews}}\n"
        ));
        assert!(has(&errs, "spec.http[0].match[0].uri.regex: invalid regex"), "{errs:?}");

        let long = "a".repeat(1025);
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - match:\n    - uri:\n        regex: \"{long}\"\n    route:\n    - destination: {{host: reviews}}\n"
        ));
        assert!(has(&errs, "limit is 1024"), "{errs:?}");

        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - match:\n    - uri: {{exact: /a, prefix: /b}}\n    - method: {{}}\n    route:\n    - destination: {{host: reviews}}\n"
        ));
        assert!(has(&errs, "spec.http[0].match[0].uri: set exactly one"), "{errs:?}");
        assert!(has(&errs, "spec.http[0].match[1].method: set exactly one"), "{errs:?}");

        // `{}` and `regex: "*"` mean presence for headers / queryParams.
        let ok = one(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        end-user: {{}}\n        x-b: {{regex: \"*\"}}\n      queryParams:\n        q: {{}}\n      uri: {{prefix: \"\"}}\n    route:\n    - destination: {{host: reviews}}\n"
        ));
        assert_eq!(validate(&ok), Ok(vec![]));
    }

    #[test]
    fn wildcard_host_bound_to_mesh() {
        let errs =
            errors(&format!("{VS_HEAD}  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {{host: httpbin}}\n"));
        assert!(
            has(&errs, "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"),
            "{errs:?}"
        );
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [\"*\"]\n  gateways: [mesh, httpbin-gateway]\n  http:\n  - route:\n    - destination: {{host: httpbin}}\n"
        ));
        assert!(has(&errs, "wildcard host"), "{errs:?}");
        let ok = one(&format!(
            "{VS_HEAD}  hosts: [\"*\"]\n  gateways: [istio-system/httpbin-gateway]\n  http:\n  - route:\n    - destination: {{host: httpbin}}\n"
        ));
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn route_actions_and_other_vs_rules() {
        let errs = errors(&format!("{VS_HEAD}  hosts: [a]\n"));
        assert!(has(&errs, "http, tcp or tls must be provided"), "{errs:?}");
        let errs = errors(&format!(
            "{VS_HEAD}  hosts: [a, a]\n  gateways: [\"bad/ref/x\"]\n  http:\n  - redirect: {{uri: /x}}\n    route:\n    - destination: {{host: a}}\n  - directResponse: {{status: 700}}\n  - fault: {{}}\n    timeout: 0.5ms\n    retries: {{attempts: -1}}\n    route:\n    - destination: {{host: a}}\n  - route: []\n"
        ));
        for needle in [
            "spec.hosts[1]: host `a` overlaps",
            "spec.gateways[0]: invalid gateway reference",
            "spec.http[0]: HTTP route cannot contain both route and redirect",
            "spec.http[1].directResponse.status",
            "spec.http[2].fault: fault must have a delay, an abort, or both",
            "spec.http[2].timeout: duration `0.5ms` must be at least 1ms",
            "spec.http[2].retries.attempts: must not be negative",
            "spec.http[3]: one of route, redirect, directResponse or delegate is required",
        ] {
            assert!(has(&errs, needle), "missing {needle}: {errs:?}");
        }
        // Delegate VS (no hosts) may not set gateways.
        let errs = errors(&format!("{VS_HEAD}  gateways: [g]\n  http:\n  - route:\n    - destination: {{host: a}}\n"));
        assert!(has(&errs, "spec.gateways: a delegate VirtualService"), "{errs:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").unwrap_err().contains("has no unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit \"x\""));
        assert!(parse_duration("99999999999h").unwrap_err().contains("invalid duration"));
    }

    const DR_HEAD: &str =
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n";

    #[test]
    fn subset_duplicate_and_names() {
        let errs = errors(&format!(
            "{DR_HEAD}  host: reviews\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v1\n    labels: {{version: v2}}\n  - name: V_3\n"
        ));
        assert!(has(&errs, "spec.subsets[1].name: duplicate subset name `v1`"), "{errs:?}");
        assert!(has(&errs, "spec.subsets[2].name: `V_3` must be a DNS-1123 label"), "{errs:?}");
        let errs = errors(&format!("{DR_HEAD}  subsets: []\n"));
        assert!(has(&errs, "spec.host: is required"), "{errs:?}");
    }

    #[test]
    fn consecutive_errors_is_a_warning() {
        let r = one(&format!(
            "{DR_HEAD}  host: httpbin\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: 1}}\n      http: {{http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}\n    outlierDetection:\n      consecutiveErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n"
        ));
        let warnings = validate(&r).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("spec.trafficPolicy.outlierDetection.consecutiveErrors:"));
        let un = unenforced(&r);
        assert!(un.is_empty(), "Istio's circuit-breaking rule is enforced whole: {un:?}");
    }

    #[test]
    fn selector_template_mismatch() {
        let errs = errors(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: -1\n  selector:\n    matchLabels: {app: web, version: v1}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n        volumeMounts:\n        - {name: data, mountPath: /data}\n",
        );
        assert!(has(&errs, "selector does not match template labels (missing version=v1)"), "{errs:?}");
        assert!(has(&errs, "spec.replicas"), "{errs:?}");
        assert!(has(&errs, "volume `data` is not declared"), "{errs:?}");
        let errs = errors(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers: []\n",
        );
        assert!(has(&errs, "at least one container"), "{errs:?}");
    }

    #[test]
    fn service_rules() {
        let errs = errors("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector: {app: s}\n");
        assert!(has(&errs, "spec.ports: at least one port is required"), "{errs:?}");
        let errs = errors(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Name\nspec:\n  ports:\n  - {name: http, port: 80}\n  - {name: http, port: 0}\n",
        );
        assert!(has(&errs, "metadata.name"), "{errs:?}");
        assert!(has(&errs, "spec.ports[1].name: duplicate port name `http`"), "{errs:?}");
        assert!(has(&errs, "spec.ports[1].port: must be between 1 and 65535"), "{errs:?}");
    }

    #[test]
    fn gateway_rules() {
        let errs = errors(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"foo/bar/baz\"]\n  - port: {number: 80, name: https, protocol: SMTP}\n    hosts: []\n  - port: {number: 0}\n    hosts: [\"ns/*.example.com\"]\n",
        );
        for needle in [
            "spec.servers[0].tls: server must have TLS settings for HTTPS",
            "spec.servers[0].hosts[0]",
            "spec.servers[1].port.name: port names in servers must be unique",
            "spec.servers[1].port.protocol: unsupported protocol `SMTP`",
            "spec.servers[1].hosts: at least one host is required",
            "spec.servers[2].port.number",
            "spec.servers[2].port.protocol: is required",
            "spec.servers[2].port.name: is required",
        ] {
            assert!(has(&errs, needle), "missing {needle}: {errs:?}");
        }
        let errs = errors("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec: {}\n");
        assert!(has(&errs, "spec.servers: at least one server is required"), "{errs:?}");
        // Protocol is case-insensitive; HTTP may carry only httpsRedirect.
        let ok = one("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: http}\n    hosts: [\"./*\"]\n    tls: {httpsRedirect: true}\n");
        assert!(validate(&ok).is_ok());
        assert!(unenforced(&ok).is_empty(), "httpsRedirect is served");
        let passthrough = one("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n    tls: {mode: PASSTHROUGH}\n");
        assert!(unenforced(&passthrough).is_empty(), "PASSTHROUGH is served");
        let auto = one("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  servers:\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [\"*.local\"]\n    tls: {mode: AUTO_PASSTHROUGH}\n");
        assert_eq!(
            unenforced(&auto),
            vec!["spec.servers[0].tls: mode AUTO_PASSTHROUGH is accepted but not served yet by meshrig (PASSTHROUGH, SIMPLE, MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL are)"]
        );
    }

    #[test]
    fn unenforced_fields() {
        let r = one(&format!(
            "{VS_HEAD}  hosts: [reviews]\n  exportTo: [\".\"]\n  http:\n  - name: main\n    match:\n    - uri: {{prefix: /}}\n      statPrefix: s\n      headers: {{end-user: {{exact: jason}}}}\n    timeout: 10s\n    route:\n    - destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}\n      weight: 100\n      headers: {{request: {{set: {{x: y}}}}}}\n"
        ));
        assert!(validate(&r).is_ok());
        assert_eq!(
            unenforced(&r),
            vec![
                "spec.exportTo is accepted but not enforced yet by meshrig",
                "spec.http[0].match[0].statPrefix is accepted but not enforced yet by meshrig",
            ]
        );
        let d = one("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchExpressions:\n    - {key: app, operator: In, values: [web]}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: web, image: nginx, imagePullPolicy: Always}\n");
        assert_eq!(unenforced(&d), vec!["spec.selector.matchExpressions is accepted but not enforced yet by meshrig"]);
    }
}
