//! Istio's standard metrics (`istio_requests_total`, the duration and size histograms, the TCP
//! byte and connection counters, `istio_build`) with Istio's labels, in Prometheus text format.
//! Each side of a request (`Peer`) renders its labels once, when the config that names it is
//! built; a finished request or connection adds to one series found by a precomputed hash.
//! A Telemetry's metric overrides (`Overrides`) are compiled once per snapshot: a disabled metric
//! is not written, a removed label is left out (series that then look alike are summed, as
//! Envoy's stats with equal tags are one), and an added label's value is evaluated per request.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::cel;
use crate::proxy::outcome::Flags;
use crate::snapshot::telemetry::{Metric, MetricRules, Mode};
use crate::snapshot::{Endpoint, ProxyIdentity};

/// Envoy's default histogram buckets (milliseconds for durations, bytes for sizes).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Series beyond this many (per kind) are not created: a proxy's memory stays bounded whatever
/// its callers send (Envoy has no such cap; a lab mesh never comes near it).
const MAX_SERIES: usize = 10_000;

/// The metrics a proxy writes, in the order it writes them: four per request, four per TCP
/// connection.
pub const METRICS: [(Metric, &str, &str); 8] = [
    (Metric::RequestCount, "istio_requests_total", "Requests processed by the proxy"),
    (Metric::RequestDuration, "istio_request_duration_milliseconds", "Request duration in milliseconds"),
    (Metric::RequestSize, "istio_request_bytes", "Request sizes in bytes (headers and body)"),
    (Metric::ResponseSize, "istio_response_bytes", "Response sizes in bytes (headers and body)"),
    (Metric::TcpSentBytes, "istio_tcp_sent_bytes_total", "Bytes sent to the downstream client over TCP connections"),
    (
        Metric::TcpReceivedBytes,
        "istio_tcp_received_bytes_total",
        "Bytes received from the downstream client over TCP connections",
    ),
    (Metric::TcpOpenedConnections, "istio_tcp_connections_opened_total", "TCP connections opened"),
    (Metric::TcpClosedConnections, "istio_tcp_connections_closed_total", "TCP connections closed"),
];

/// One side of a request or connection as Istio's labels describe it: rendered once.
#[derive(Debug)]
pub struct Peer {
    /// Its SPIFFE id, when requests to or from it use mutual TLS.
    pub principal: Option<Arc<str>>,
    /// `source_workload="..",source_workload_namespace="..",source_app=..` (no principal).
    as_source: Box<str>,
    /// The same labels named `destination_*`.
    as_destination: Box<str>,
    /// The values of those labels, in `PEER_LABELS` order (for overrides that edit labels).
    values: [Box<str>; 7],
    hash: u64,
}

const PEER_LABELS: [&str; 7] =
    ["workload", "workload_namespace", "app", "version", "canonical_service", "canonical_revision", "cluster"];

impl PartialEq for Peer {
    fn eq(&self, other: &Peer) -> bool {
        self.hash == other.hash && self.as_source == other.as_source
    }
}
impl Eq for Peer {}

impl Peer {
    /// A workload's labels: `app`, `version` and the canonical service and revision Istio
    /// derives from them (`service.istio.io/canonical-*`, then `app.kubernetes.io/*`).
    pub fn new(workload: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Peer {
        let get = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).map(String::as_str);
        let app = get(&["app"]).unwrap_or("unknown");
        let version = get(&["version"]).unwrap_or("unknown");
        let canonical_service =
            get(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"]).unwrap_or(workload);
        let canonical_revision =
            get(&["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"]).unwrap_or("latest");
        let values = [workload, namespace, app, version, canonical_service, canonical_revision, "Kubernetes"];
        let render = |side: &str| {
            let mut out = String::new();
            for (name, value) in PEER_LABELS.iter().zip(values) {
                label(&mut out, &format!("{side}_{name}"), value);
            }
            out.into_boxed_str()
        };
        let as_source = render("source");
        let mut h = DefaultHasher::new();
        as_source.hash(&mut h);
        Peer {
            principal: None,
            as_destination: render("destination"),
            as_source,
            values: values.map(Into::into),
            hash: h.finish(),
        }
    }

    /// A peer nothing is known about: Istio's `unknown` labels.
    pub fn unknown() -> Peer {
        Peer::new("unknown", "unknown", &BTreeMap::new())
    }

    pub fn of_endpoint(e: &Endpoint) -> Peer {
        Peer::new(&e.workload, &e.namespace, &e.labels)
    }

    pub fn of(identity: &ProxyIdentity) -> Peer {
        Peer::new(&identity.workload, &identity.namespace, &identity.labels)
    }

    fn pairs(&self, side: &str, out: &mut Vec<(String, String)>) {
        for (name, value) in PEER_LABELS.iter().zip(&self.values) {
            out.push((format!("{side}_{name}"), value.to_string()));
        }
    }
}

/// Appends `name="value"` (comma-separated), escaped as Prometheus' text format requires.
fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Who reports: the client side (sidecar outbound, gateways) or the server side (inbound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }

    /// The Telemetry API's name for this side (`match.mode`).
    fn side(self) -> usize {
        match self {
            Reporter::Source => 0,
            Reporter::Destination => 1,
        }
    }
}

/// A Telemetry's metric overrides for one proxy, compiled once per snapshot. Two with the same
/// content share an `id`, so a push that changes nothing keeps the series.
#[derive(Debug, Default)]
pub struct Overrides {
    id: u64,
    off: bool,
    /// Per side (client, server), per metric (`METRICS` order).
    rules: [[Rule; 8]; 2],
    /// Per side: the expressions whose values a series keeps, in order.
    exprs: [Vec<cel::Expr>; 2],
    /// The request headers those expressions read.
    pub headers: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Rule {
    disabled: bool,
    /// Label name → `None`: removed; `Some(i)`: set from the series' `i`th value.
    tags: Vec<(String, Option<usize>)>,
}

impl Overrides {
    pub fn new(rules: &MetricRules) -> Overrides {
        let mut o = Overrides { off: rules.off, ..Default::default() };
        if *rules != MetricRules::default() {
            let mut h = DefaultHasher::new();
            rules.hash(&mut h);
            o.id = h.finish() | 1;
        }
        for r in &rules.rules {
            let Some(slot) = METRICS.iter().position(|(m, _, _)| *m == r.metric) else { continue };
            let side = match r.mode {
                Mode::Client => 0,
                Mode::Server => 1,
            };
            let mut rule = Rule { disabled: r.disabled, tags: Vec::new() };
            for (name, expr) in &r.tags {
                let index = expr.as_ref().map(|e| match o.exprs[side].iter().position(|x| x == e) {
                    Some(i) => i,
                    None => {
                        e.headers(&mut o.headers);
                        o.exprs[side].push(e.clone());
                        o.exprs[side].len() - 1
                    }
                });
                rule.tags.push((name.clone(), index));
            }
            o.rules[side][slot] = rule;
        }
        o
    }

    /// Whether a request's facts are needed (some label is set from an expression).
    pub fn needs_request(&self) -> bool {
        self.exprs.iter().any(|e| !e.is_empty())
    }

    /// The values a series on this side keeps: each expression's, or `unknown` when it cannot
    /// be evaluated (an absent header, a TCP connection's `request.*`), as Istio's stats do.
    pub fn values(&self, reporter: Reporter, facts: &cel::Facts) -> Box<[Box<str>]> {
        self.exprs[reporter.side()]
            .iter()
            .map(|e| e.eval(facts).map_or_else(|| "unknown".into(), |v| v.to_string().into_boxed_str()))
            .collect()
    }

    fn enabled(&self, reporter: Reporter, slot: usize) -> bool {
        !self.off && !self.rules[reporter.side()][slot].disabled
    }
}

/// What both kinds of series are keyed by.
#[derive(Clone, Debug)]
pub struct Sides {
    pub reporter: Reporter,
    pub source: Arc<Peer>,
    pub destination: Arc<Peer>,
    /// FQDN of the destination service, or the Host header when unknown.
    pub service: Arc<str>,
    /// The source's and destination's SPIFFE ids, when the hop was mutual TLS.
    pub principals: Option<(Arc<str>, Arc<str>)>,
    /// The metric overrides in force when the request came in.
    pub overrides: Arc<Overrides>,
}

impl Sides {
    fn hash_into(&self, h: &mut DefaultHasher) {
        (self.reporter, self.source.hash, self.destination.hash, &*self.service, self.overrides.id).hash(h);
        if let Some((s, d)) = &self.principals {
            (&**s, &**d).hash(h);
        }
    }

    fn same(&self, o: &Sides) -> bool {
        self.reporter == o.reporter
            && self.source == o.source
            && self.destination == o.destination
            && self.service == o.service
            && self.principals == o.principals
            && self.overrides.id == o.overrides.id
    }

    fn policy(&self) -> &'static str {
        match (self.reporter, self.principals.is_some()) {
            (Reporter::Destination, true) => "mutual_tls",
            (Reporter::Destination, false) => "none",
            (Reporter::Source, _) => "unknown",
        }
    }

    fn principal_names(&self) -> (&str, &str) {
        match &self.principals {
            Some((s, d)) => (s, d),
            None => ("unknown", "unknown"),
        }
    }

    fn render(&self, out: &mut String) {
        label(out, "reporter", self.reporter.as_str());
        out.push(',');
        out.push_str(&self.source.as_source);
        let (source_principal, destination_principal) = self.principal_names();
        label(out, "source_principal", source_principal);
        out.push(',');
        out.push_str(&self.destination.as_destination);
        label(out, "destination_principal", destination_principal);
        let (name, namespace) = split_service(&self.service);
        label(out, "destination_service", &self.service);
        label(out, "destination_service_name", name);
        label(out, "destination_service_namespace", namespace);
        label(out, "connection_security_policy", self.policy());
    }

    /// The same labels as `render`, as pairs an override can edit.
    fn pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![("reporter".to_string(), self.reporter.as_str().to_string())];
        let (source_principal, destination_principal) = self.principal_names();
        self.source.pairs("source", &mut out);
        out.push(("source_principal".into(), source_principal.into()));
        self.destination.pairs("destination", &mut out);
        out.push(("destination_principal".into(), destination_principal.into()));
        let (name, namespace) = split_service(&self.service);
        out.push(("destination_service".into(), self.service.to_string()));
        out.push(("destination_service_name".into(), name.into()));
        out.push(("destination_service_namespace".into(), namespace.into()));
        out.push(("connection_security_policy".into(), self.policy().into()));
        out
    }

    /// One metric's labels for a series: Istio's, then the metric's overrides applied.
    fn labels(&self, slot: usize, values: &[Box<str>], extra: &[(&str, &str)]) -> String {
        let rule = &self.overrides.rules[self.reporter.side()][slot];
        let mut out = String::new();
        if rule.tags.is_empty() {
            self.render(&mut out);
            for (name, value) in extra {
                label(&mut out, name, value);
            }
            return out;
        }
        let mut pairs = self.pairs();
        pairs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        for (name, set) in &rule.tags {
            match set {
                None => pairs.retain(|(n, _)| n != name),
                Some(i) => {
                    let value = values.get(*i).map_or("unknown", |v| v).to_string();
                    match pairs.iter_mut().find(|(n, _)| n == name) {
                        Some(pair) => pair.1 = value,
                        None => pairs.push((name.clone(), value)),
                    }
                }
            }
        }
        for (name, value) in &pairs {
            label(&mut out, name, value);
        }
        out
    }
}

/// What one finished HTTP request contributes.
pub struct RequestRecord<'a> {
    pub sides: &'a Sides,
    pub code: u16,
    pub flags: Flags,
    pub millis: f64,
    /// Headers and body, as Envoy's `request.total_size` and `response.total_size` count them.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The values of the labels the overrides set (`Overrides::values`).
    pub values: Box<[Box<str>]>,
}

/// What one closed TCP connection contributes.
pub struct ConnectionRecord<'a> {
    pub sides: &'a Sides,
    pub flags: Flags,
    /// From the downstream client, and sent back to it.
    pub received: u64,
    pub sent: u64,
    pub values: &'a [Box<str>],
}

#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn add(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

#[derive(Debug)]
struct HttpSeries {
    sides: Sides,
    code: u16,
    flags: Flags,
    values: Box<[Box<str>]>,
    requests: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug)]
struct TcpSeries {
    sides: Sides,
    flags: Flags,
    values: Box<[Box<str>]>,
    opened: u64,
    closed: u64,
    received: u64,
    sent: u64,
}

#[derive(Default)]
struct Series {
    /// By the hash of (sides, code, flags, values); a collision keeps a short list.
    http: HashMap<u64, Vec<HttpSeries>>,
    http_count: usize,
    tcp: HashMap<u64, Vec<TcpSeries>>,
    tcp_count: usize,
}

#[derive(Default)]
pub struct Stats {
    series: Mutex<Series>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, r: &RequestRecord<'_>) {
        if r.sides.overrides.off {
            return;
        }
        let mut h = DefaultHasher::new();
        r.sides.hash_into(&mut h);
        (r.code, r.flags, &r.values).hash(&mut h);
        let key = h.finish();
        let mut all = self.lock();
        let Series { http, http_count, .. } = &mut *all;
        let list = http.entry(key).or_default();
        let found = list
            .iter()
            .position(|s| s.code == r.code && s.flags == r.flags && s.values == r.values && s.sides.same(r.sides));
        let i = match found {
            Some(i) => i,
            None if *http_count >= MAX_SERIES => return,
            None => {
                *http_count += 1;
                list.push(HttpSeries {
                    sides: r.sides.clone(),
                    code: r.code,
                    flags: r.flags,
                    values: r.values.clone(),
                    requests: 0,
                    duration: Histogram::default(),
                    request_bytes: Histogram::default(),
                    response_bytes: Histogram::default(),
                });
                list.len() - 1
            }
        };
        let s = &mut list[i];
        s.requests += 1;
        s.duration.observe(r.millis);
        s.request_bytes.observe(r.request_bytes as f64);
        s.response_bytes.observe(r.response_bytes as f64);
    }

    /// A TCP connection opened (`istio_tcp_connections_opened_total`).
    pub fn tcp_opened(&self, sides: &Sides, values: &[Box<str>]) {
        self.tcp(sides, Flags::default(), values, |s| s.opened += 1);
    }

    /// A TCP connection closed, with the bytes it carried.
    pub fn tcp_closed(&self, r: &ConnectionRecord<'_>) {
        self.tcp(r.sides, r.flags, r.values, |s| {
            s.closed += 1;
            s.received += r.received;
            s.sent += r.sent;
        });
    }

    fn tcp(&self, sides: &Sides, flags: Flags, values: &[Box<str>], add: impl FnOnce(&mut TcpSeries)) {
        if sides.overrides.off {
            return;
        }
        let mut h = DefaultHasher::new();
        sides.hash_into(&mut h);
        (flags, values).hash(&mut h);
        let key = h.finish();
        let mut all = self.lock();
        let Series { tcp, tcp_count, .. } = &mut *all;
        let list = tcp.entry(key).or_default();
        let i = match list.iter().position(|s| s.flags == flags && *s.values == *values && s.sides.same(sides)) {
            Some(i) => i,
            None if *tcp_count >= MAX_SERIES => return,
            None => {
                *tcp_count += 1;
                list.push(TcpSeries {
                    sides: sides.clone(),
                    flags,
                    values: values.into(),
                    opened: 0,
                    closed: 0,
                    received: 0,
                    sent: 0,
                });
                list.len() - 1
            }
        };
        add(&mut list[i]);
    }

    /// Prometheus' text exposition format, series sorted by their labels; series whose labels
    /// are equal after the overrides are summed.
    pub fn encode(&self) -> String {
        let mut counters: [Vec<(String, u64)>; 8] = Default::default();
        let mut histograms: [Vec<(String, Histogram)>; 8] = Default::default();
        {
            let all = self.lock();
            for s in all.http.values().flatten() {
                let (code, flags) = (s.code.to_string(), s.flags.to_string());
                let extra = [
                    ("request_protocol", "http"),
                    ("response_code", code.as_str()),
                    ("grpc_response_status", ""),
                    ("response_flags", flags.as_str()),
                ];
                let hists = [&s.duration, &s.request_bytes, &s.response_bytes];
                for slot in 0..4 {
                    if !s.sides.overrides.enabled(s.sides.reporter, slot) {
                        continue;
                    }
                    let labels = s.sides.labels(slot, &s.values, &extra);
                    match slot {
                        0 => counters[0].push((labels, s.requests)),
                        _ => histograms[slot].push((labels, hists[slot - 1].clone())),
                    }
                }
            }
            for s in all.tcp.values().flatten() {
                let flags = s.flags.to_string();
                let extra = [("request_protocol", "tcp"), ("response_flags", flags.as_str())];
                for (slot, value) in (4..8).zip([s.sent, s.received, s.opened, s.closed]) {
                    if s.sides.overrides.enabled(s.sides.reporter, slot) {
                        counters[slot].push((s.sides.labels(slot, &s.values, &extra), value));
                    }
                }
            }
        }
        let mut out = String::new();
        for (slot, (_, name, help)) in METRICS.iter().enumerate() {
            if (1..4).contains(&slot) {
                header(&mut out, name, "histogram", help);
                for (labels, h) in merged(std::mem::take(&mut histograms[slot]), |a, b| a.add(&b)) {
                    histogram(&mut out, name, &labels, &h);
                }
            } else {
                header(&mut out, name, "counter", help);
                for (labels, n) in merged(std::mem::take(&mut counters[slot]), |a, b| *a += b) {
                    let _ = writeln!(out, "{name}{{{labels}}} {n}");
                }
            }
        }
        header(&mut out, "istio_build", "gauge", "The proxy's build");
        let _ = writeln!(out, "istio_build{{component=\"proxy\",tag=\"meshrig-{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

/// Sorted by labels, with equal labels summed into one.
fn merged<V>(mut series: Vec<(String, V)>, add: impl Fn(&mut V, V)) -> Vec<(String, V)> {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, V)> = Vec::with_capacity(series.len());
    for (labels, v) in series {
        match out.last_mut() {
            Some(last) if last.0 == labels => add(&mut last.1, v),
            _ => out.push((labels, v)),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (le, n) in BUCKETS.iter().zip(h.buckets) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// `httpbin.default.svc.cluster.local` → (`httpbin`, `default`); other hosts keep their name.
fn split_service(fqdn: &str) -> (&str, &str) {
    match fqdn.strip_suffix(".svc.cluster.local").and_then(|s| s.split_once('.')) {
        Some((name, ns)) => (name, ns),
        None => (fqdn, "unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(workload: &str, labels: &[(&str, &str)]) -> Arc<Peer> {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Arc::new(Peer::new(workload, "default", &labels))
    }

    #[test]
    fn a_request_is_one_series_with_istios_labels_and_envoys_buckets() {
        let stats = Stats::new();
        let sides = Sides {
            reporter: Reporter::Destination,
            source: peer("productpage-v1", &[("app", "productpage"), ("version", "v1")]),
            destination: peer("reviews-v2", &[("app", "reviews"), ("version", "v2")]),
            service: "reviews.default.svc.cluster.local".into(),
            principals: Some((
                "spiffe://cluster.local/ns/default/sa/p".into(),
                "spiffe://cluster.local/ns/default/sa/r".into(),
            )),
            overrides: Default::default(),
        };
        for millis in [0.3, 7.0] {
            stats.record(&RequestRecord {
                sides: &sides,
                code: 200,
                flags: Flags::default(),
                millis,
                request_bytes: 120,
                response_bytes: 900,
                values: Box::new([]),
            });
        }
        // Equal peers built apart (a later snapshot) land in the same series.
        let again =
            Sides { source: peer("productpage-v1", &[("app", "productpage"), ("version", "v1")]), ..sides.clone() };
        stats.record(&RequestRecord {
            sides: &again,
            code: 200,
            flags: Flags::default(),
            millis: 1.0,
            request_bytes: 1,
            response_bytes: 1,
            values: Box::new([]),
        });
        let text = stats.encode();
        let line = text.lines().find(|l| l.starts_with("istio_requests_total{")).unwrap();
        for want in [
            "reporter=\"destination\"",
            "source_workload=\"productpage-v1\"",
            "source_app=\"productpage\"",
            "source_canonical_service=\"productpage\"",
            "source_canonical_revision=\"v1\"",
            "source_principal=\"spiffe://cluster.local/ns/default/sa/p\"",
            "destination_version=\"v2\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "connection_security_policy=\"mutual_tls\"",
            "response_flags=\"-\"",
            "grpc_response_status=\"\"",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(line.ends_with("} 3"), "{line}");
        assert_eq!(text.lines().filter(|l| l.starts_with("istio_requests_total{")).count(), 1);
        let bucket = |le: &str| {
            let prefix = format!("le=\"{le}\"}} ");
            text.lines()
                .find(|l| l.starts_with("istio_request_duration_milliseconds_bucket") && l.contains(&prefix))
                .and_then(|l| l.rsplit_once(' '))
                .map(|(_, n)| n.to_string())
                .unwrap()
        };
        assert_eq!(
            (bucket("0.5"), bucket("1"), bucket("5"), bucket("10"), bucket("+Inf")),
            ("1".into(), "2".into(), "2".into(), "3".into(), "3".into())
        );
        assert!(text.contains("# TYPE istio_response_bytes histogram"));
        assert!(text.contains("istio_build{component=\"proxy\""));
    }

    #[test]
    fn tcp_connections_count_opens_closes_and_bytes_and_values_are_escaped() {
        let stats = Stats::new();
        let sides = Sides {
            reporter: Reporter::Source,
            source: Arc::new(Peer::unknown()),
            destination: peer("tcp-echo-v1", &[("app", "tcp\"echo")]),
            service: "tcp-echo.default.svc.cluster.local".into(),
            principals: None,
            overrides: Default::default(),
        };
        stats.tcp_opened(&sides, &[]);
        let closed = ConnectionRecord { sides: &sides, flags: Flags::default(), received: 5, sent: 12, values: &[] };
        stats.tcp_closed(&closed);
        let text = stats.encode();
        let value = |name: &str| {
            text.lines().find(|l| l.starts_with(&format!("{name}{{"))).unwrap().rsplit_once(' ').unwrap().1.to_string()
        };
        assert_eq!(value("istio_tcp_connections_opened_total"), "1");
        assert_eq!(value("istio_tcp_connections_closed_total"), "1");
        assert_eq!(value("istio_tcp_received_bytes_total"), "5");
        assert_eq!(value("istio_tcp_sent_bytes_total"), "12");
        assert!(text.contains("destination_app=\"tcp\\\"echo\""), "{text}");
        assert!(text.contains("source_workload=\"unknown\""), "{text}");
        assert!(text.contains("source_canonical_revision=\"latest\""), "{text}");
        assert!(text.contains("request_protocol=\"tcp\""));
        assert!(text.contains("connection_security_policy=\"unknown\""));
    }

    fn overridden(yaml: &str) -> Arc<Overrides> {
        let t: crate::resources::telemetry::Telemetry = serde_yaml::from_str(&format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n{yaml}"
        ))
        .unwrap();
        Arc::new(Overrides::new(&crate::translate::telemetry::metric_rules(&[&t])))
    }

    fn request(stats: &Stats, sides: &Sides, code: u16, user: Option<&str>) {
        let r = cel::Request {
            method: "GET".into(),
            host: "httpbin:8000".into(),
            headers: user.map(|u| ("x-user".to_string(), u.to_string())).into_iter().collect(),
            ..Default::default()
        };
        let facts = cel::Facts { request: Some(&r), code: Some(code), destination_port: Some(8000), mtls: false };
        stats.record(&RequestRecord {
            sides,
            code,
            flags: Flags::default(),
            millis: 1.0,
            request_bytes: 1,
            response_bytes: 1,
            values: sides.overrides.values(sides.reporter, &facts),
        });
    }

    fn lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).collect()
    }

    #[test]
    fn overrides_disable_metrics_remove_labels_and_add_labels_from_the_request() {
        let overrides = overridden(
            "  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n    - match: {metric: REQUEST_COUNT, mode: CLIENT}\n      tagOverrides:\n        request_host: {value: request.host}\n        user: {value: \"request.headers['x-user']\"}\n        response_code: {operation: REMOVE}\n        destination_app: {value: \"'renamed'\"}\n    - match: {metric: REQUEST_DURATION}\n      disabled: true\n",
        );
        let stats = Stats::new();
        let client = Sides {
            reporter: Reporter::Source,
            source: peer("curl", &[("app", "curl")]),
            destination: peer("httpbin-v1", &[("app", "httpbin")]),
            service: "httpbin.default.svc.cluster.local".into(),
            principals: None,
            overrides: overrides.clone(),
        };
        for (code, user) in [(200, Some("alice")), (503, Some("alice")), (200, None)] {
            request(&stats, &client, code, user);
        }
        let server = Sides { reporter: Reporter::Destination, ..client.clone() };
        request(&stats, &server, 200, Some("alice"));
        let text = stats.encode();
        let count = lines(&text, "istio_requests_total");
        assert_eq!(
            count.len(),
            3,
            "two client series (the code removed: 200 and 503 summed) and one server: {count:?}"
        );
        let alice = count.iter().find(|l| l.contains("user=\"alice\"")).unwrap();
        assert!(alice.ends_with("} 2") && alice.contains("request_host=\"httpbin:8000\""), "{alice}");
        assert!(alice.contains("destination_app=\"renamed\"") && !alice.contains("response_code="), "{alice}");
        assert!(count.iter().any(|l| l.contains("user=\"unknown\"")), "an absent header reads unknown: {count:?}");
        let server_line = count.iter().find(|l| l.contains("reporter=\"destination\"")).unwrap();
        assert!(server_line.contains("response_code=\"200\"") && !server_line.contains("user="), "{server_line}");
        assert!(lines(&text, "istio_request_duration_milliseconds_count").is_empty(), "REQUEST_DURATION disabled");
        assert_eq!(lines(&text, "istio_request_bytes_count").len(), 3, "untouched metrics keep Istio's labels");
        // ALL_METRICS disabled: nothing is recorded; a provider other than prometheus: the same.
        for yaml in [
            "  metrics:\n  - overrides: [{match: {metric: ALL_METRICS}, disabled: true}]\n",
            "  metrics:\n  - providers: [{name: stackdriver}]\n",
        ] {
            let stats = Stats::new();
            request(&stats, &Sides { overrides: overridden(yaml), ..client.clone() }, 200, None);
            assert!(lines(&stats.encode(), "istio_requests_total").is_empty(), "{yaml}");
        }
    }
}
