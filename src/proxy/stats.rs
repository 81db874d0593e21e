//! Istio's standard metrics (`istio_requests_total`, the duration and size histograms, the TCP
//! byte and connection counters, `istio_build`) with Istio's labels, in Prometheus text format.
//! Each side of a request (`Peer`) renders its labels once, when the config that names it is
//! built; a finished request or connection adds to one series found by a precomputed hash.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::proxy::outcome::Flags;
use crate::snapshot::{Endpoint, ProxyIdentity};

/// Envoy's default histogram buckets (milliseconds for durations, bytes for sizes).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Series beyond this many (per kind) are not created: a proxy's memory stays bounded whatever
/// its callers send (Envoy has no such cap; a lab mesh never comes near it).
const MAX_SERIES: usize = 10_000;

/// One side of a request or connection as Istio's labels describe it: rendered once.
#[derive(Debug)]
pub struct Peer {
    /// Its SPIFFE id, when requests to or from it use mutual TLS.
    pub principal: Option<Arc<str>>,
    /// `source_workload="..",source_workload_namespace="..",source_app=..` (no principal).
    as_source: Box<str>,
    /// The same labels named `destination_*`.
    as_destination: Box<str>,
    hash: u64,
}

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
        let render = |side: &str| {
            let mut out = String::new();
            for (name, value) in [
                ("workload", workload),
                ("workload_namespace", namespace),
                ("app", app),
                ("version", version),
                ("canonical_service", canonical_service),
                ("canonical_revision", canonical_revision),
                ("cluster", "Kubernetes"),
            ] {
                label(&mut out, &format!("{side}_{name}"), value);
            }
            out.into_boxed_str()
        };
        let as_source = render("source");
        let mut h = DefaultHasher::new();
        as_source.hash(&mut h);
        Peer { principal: None, as_destination: render("destination"), as_source, hash: h.finish() }
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
}

impl Sides {
    fn hash_into(&self, h: &mut DefaultHasher) {
        (self.reporter, self.source.hash, self.destination.hash, &*self.service).hash(h);
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
    }

    fn render(&self, out: &mut String) {
        label(out, "reporter", self.reporter.as_str());
        out.push(',');
        out.push_str(&self.source.as_source);
        let (source_principal, destination_principal) = match &self.principals {
            Some((s, d)) => (&**s, &**d),
            None => ("unknown", "unknown"),
        };
        label(out, "source_principal", source_principal);
        out.push(',');
        out.push_str(&self.destination.as_destination);
        label(out, "destination_principal", destination_principal);
        let (name, namespace) = split_service(&self.service);
        label(out, "destination_service", &self.service);
        label(out, "destination_service_name", name);
        label(out, "destination_service_namespace", namespace);
        let policy = match (self.reporter, self.principals.is_some()) {
            (Reporter::Destination, true) => "mutual_tls",
            (Reporter::Destination, false) => "none",
            (Reporter::Source, _) => "unknown",
        };
        label(out, "connection_security_policy", policy);
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
}

/// What one closed TCP connection contributes.
pub struct ConnectionRecord<'a> {
    pub sides: &'a Sides,
    pub flags: Flags,
    /// From the downstream client, and sent back to it.
    pub received: u64,
    pub sent: u64,
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
}

#[derive(Debug)]
struct HttpSeries {
    sides: Sides,
    code: u16,
    flags: Flags,
    requests: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug)]
struct TcpSeries {
    sides: Sides,
    flags: Flags,
    opened: u64,
    closed: u64,
    received: u64,
    sent: u64,
}

#[derive(Default)]
struct Series {
    /// By the hash of (sides, code, flags); a collision keeps a short list.
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
        let mut h = DefaultHasher::new();
        r.sides.hash_into(&mut h);
        (r.code, r.flags).hash(&mut h);
        let key = h.finish();
        let mut all = self.lock();
        let Series { http, http_count, .. } = &mut *all;
        let list = http.entry(key).or_default();
        let i = match list.iter().position(|s| s.code == r.code && s.flags == r.flags && s.sides.same(r.sides)) {
            Some(i) => i,
            None if *http_count >= MAX_SERIES => return,
            None => {
                *http_count += 1;
                list.push(HttpSeries {
                    sides: r.sides.clone(),
                    code: r.code,
                    flags: r.flags,
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
    pub fn tcp_opened(&self, sides: &Sides) {
        self.tcp(sides, Flags::default(), |s| s.opened += 1);
    }

    /// A TCP connection closed, with the bytes it carried.
    pub fn tcp_closed(&self, r: &ConnectionRecord<'_>) {
        self.tcp(r.sides, r.flags, |s| {
            s.closed += 1;
            s.received += r.received;
            s.sent += r.sent;
        });
    }

    fn tcp(&self, sides: &Sides, flags: Flags, add: impl FnOnce(&mut TcpSeries)) {
        let mut h = DefaultHasher::new();
        sides.hash_into(&mut h);
        flags.hash(&mut h);
        let key = h.finish();
        let mut all = self.lock();
        let Series { tcp, tcp_count, .. } = &mut *all;
        let list = tcp.entry(key).or_default();
        let i = match list.iter().position(|s| s.flags == flags && s.sides.same(sides)) {
            Some(i) => i,
            None if *tcp_count >= MAX_SERIES => return,
            None => {
                *tcp_count += 1;
                list.push(TcpSeries { sides: sides.clone(), flags, opened: 0, closed: 0, received: 0, sent: 0 });
                list.len() - 1
            }
        };
        add(&mut list[i]);
    }

    /// Prometheus' text exposition format, series sorted by their labels.
    pub fn encode(&self) -> String {
        let mut http: Vec<(String, u64, [Histogram; 3])> = Vec::new();
        let mut tcp: Vec<(String, [u64; 4])> = Vec::new();
        {
            let all = self.lock();
            for s in all.http.values().flatten() {
                let mut labels = String::new();
                s.sides.render(&mut labels);
                label(&mut labels, "request_protocol", "http");
                label(&mut labels, "response_code", &s.code.to_string());
                label(&mut labels, "grpc_response_status", "");
                label(&mut labels, "response_flags", &s.flags.to_string());
                http.push((
                    labels,
                    s.requests,
                    [s.duration.clone(), s.request_bytes.clone(), s.response_bytes.clone()],
                ));
            }
            for s in all.tcp.values().flatten() {
                let mut labels = String::new();
                s.sides.render(&mut labels);
                label(&mut labels, "request_protocol", "tcp");
                label(&mut labels, "response_flags", &s.flags.to_string());
                tcp.push((labels, [s.sent, s.received, s.opened, s.closed]));
            }
        }
        http.sort_by(|a, b| a.0.cmp(&b.0));
        tcp.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        header(&mut out, "istio_requests_total", "counter", "Requests processed by the proxy");
        for (labels, n, _) in &http {
            let _ = writeln!(out, "istio_requests_total{{{labels}}} {n}");
        }
        for (i, (name, help)) in [
            ("istio_request_duration_milliseconds", "Request duration in milliseconds"),
            ("istio_request_bytes", "Request sizes in bytes (headers and body)"),
            ("istio_response_bytes", "Response sizes in bytes (headers and body)"),
        ]
        .into_iter()
        .enumerate()
        {
            header(&mut out, name, "histogram", help);
            for (labels, _, hists) in &http {
                histogram(&mut out, name, labels, &hists[i]);
            }
        }
        for (i, (name, help)) in [
            ("istio_tcp_sent_bytes_total", "Bytes sent to the downstream client over TCP connections"),
            ("istio_tcp_received_bytes_total", "Bytes received from the downstream client over TCP connections"),
            ("istio_tcp_connections_opened_total", "TCP connections opened"),
            ("istio_tcp_connections_closed_total", "TCP connections closed"),
        ]
        .into_iter()
        .enumerate()
        {
            header(&mut out, name, "counter", help);
            for (labels, values) in &tcp {
                let _ = writeln!(out, "{name}{{{labels}}} {}", values[i]);
            }
        }
        header(&mut out, "istio_build", "gauge", "The proxy's build");
        let _ = writeln!(out, "istio_build{{component=\"proxy\",tag=\"meshrig-{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
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
        };
        for millis in [0.3, 7.0] {
            stats.record(&RequestRecord {
                sides: &sides,
                code: 200,
                flags: Flags::default(),
                millis,
                request_bytes: 120,
                response_bytes: 900,
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
        };
        stats.tcp_opened(&sides);
        stats.tcp_closed(&ConnectionRecord { sides: &sides, flags: Flags::default(), received: 5, sent: 12 });
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
}
