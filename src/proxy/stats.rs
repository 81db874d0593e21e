//! Istio's standard request metrics, with Istio's label names, in Prometheus text format.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::snapshot::{Endpoint, ProxyIdentity};

/// Envoy's default histogram buckets, in milliseconds.
const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_cluster: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

/// One side of a request as metrics describe it.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Its SPIFFE id, when requests to or from it use mTLS.
    pub principal: Option<std::sync::Arc<str>>,
}

impl Peer {
    pub fn unknown() -> Peer {
        Peer { workload: "unknown".into(), namespace: "unknown".into(), labels: BTreeMap::new(), principal: None }
    }

    pub fn of_endpoint(e: &Endpoint) -> Peer {
        Peer { workload: e.workload.clone(), namespace: e.namespace.clone(), labels: e.labels.clone(), principal: None }
    }

    pub fn of(identity: &ProxyIdentity) -> Peer {
        Peer {
            workload: identity.workload.clone(),
            namespace: identity.namespace.clone(),
            labels: identity.labels.clone(),
            principal: None,
        }
    }

    fn app(&self) -> String {
        self.labels.get("app").cloned().unwrap_or_else(|| "unknown".into())
    }
    fn version(&self) -> String {
        self.labels.get("version").cloned().unwrap_or_else(|| "unknown".into())
    }
    fn canonical_service(&self) -> String {
        self.labels
            .get("service.istio.io/canonical-name")
            .or_else(|| self.labels.get("app.kubernetes.io/name"))
            .or_else(|| self.labels.get("app"))
            .cloned()
            .unwrap_or_else(|| self.workload.clone())
    }
    fn canonical_revision(&self) -> String {
        self.labels
            .get("service.istio.io/canonical-revision")
            .or_else(|| self.labels.get("app.kubernetes.io/version"))
            .or_else(|| self.labels.get("version"))
            .cloned()
            .unwrap_or_else(|| "latest".into())
    }
}

/// What one finished request contributes to the metrics.
pub struct RequestRecord<'a> {
    pub reporter: &'a str,
    pub source: &'a Peer,
    pub destination: &'a Peer,
    /// FQDN of the destination service, or the Host header when unknown.
    pub service: &'a str,
    pub code: u16,
    pub flags: crate::proxy::outcome::Flags,
    pub millis: f64,
    /// The source's and destination's SPIFFE ids, when the request went over mutual TLS.
    pub principals: Option<(&'a str, &'a str)>,
}

pub struct Stats {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Encoding is rare (scrapes); this only serializes scrapes against each other.
    encode_lock: Mutex<()>,
}

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS_MS.iter().copied())
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram as fn() -> Histogram,
        );
        // prometheus-client appends `_total` to counters.
        registry.register("istio_requests", "Requests processed by the proxy", requests.clone());
        registry.register("istio_request_duration_milliseconds", "Request duration in milliseconds", duration.clone());
        Stats { registry, requests, duration, encode_lock: Mutex::new(()) }
    }

    pub fn record(&self, r: &RequestRecord<'_>) {
        let (svc_name, svc_ns) = split_service(r.service);
        let labels = RequestLabels {
            reporter: r.reporter.into(),
            source_workload: r.source.workload.clone(),
            source_workload_namespace: r.source.namespace.clone(),
            source_principal: r.principals.map_or("unknown", |p| p.0).into(),
            source_app: r.source.app(),
            source_version: r.source.version(),
            source_canonical_service: r.source.canonical_service(),
            source_canonical_revision: r.source.canonical_revision(),
            source_cluster: "Kubernetes".into(),
            destination_workload: r.destination.workload.clone(),
            destination_workload_namespace: r.destination.namespace.clone(),
            destination_principal: r.principals.map_or("unknown", |p| p.1).into(),
            destination_app: r.destination.app(),
            destination_version: r.destination.version(),
            destination_service: r.service.into(),
            destination_service_name: svc_name,
            destination_service_namespace: svc_ns,
            destination_canonical_service: r.destination.canonical_service(),
            destination_canonical_revision: r.destination.canonical_revision(),
            destination_cluster: "Kubernetes".into(),
            request_protocol: "http".into(),
            response_code: r.code.to_string(),
            grpc_response_status: String::new(),
            response_flags: r.flags.to_string(),
            connection_security_policy: match (r.reporter, r.principals.is_some()) {
                ("destination", true) => "mutual_tls".into(),
                ("destination", false) => "none".into(),
                _ => "unknown".into(),
            },
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(r.millis);
    }

    pub fn encode(&self) -> String {
        let _guard = self.encode_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `httpbin.default.svc.cluster.local` → (`httpbin`, `default`); other hosts keep their name.
fn split_service(fqdn: &str) -> (String, String) {
    match fqdn.strip_suffix(".svc.cluster.local").and_then(|s| s.split_once('.')) {
        Some((name, ns)) => (name.into(), ns.into()),
        None => (fqdn.into(), "unknown".into()),
    }
}
