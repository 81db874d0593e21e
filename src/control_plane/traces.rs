//! The embedded trace collector: spans the proxies send, kept by trace (the oldest traces go
//! first beyond `MAX_SPANS`), and Jaeger's HTTP query API over them (`/api/services`,
//! `/api/services/{service}/operations`, `/api/traces?service=..`, `/api/traces/{id}`, also
//! under `/jaeger/api/`), on its own published port, so Jaeger clients and lab checks read
//! it as they read a real Jaeger. Services are named `app.namespace`, as Istio names them.
//! A kept span is compact: numeric ids, and its strings (operation, tag keys and values,
//! reporting process) shared with every other span that has the same one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::net::{self, Body};
use crate::trace::{Kind, Span};

/// Spans kept in all; beyond this the oldest traces are forgotten. (About 2,000 Bookinfo
/// pages, in a few tens of megabytes; see docs/BENCHMARKS.md.)
pub const MAX_SPANS: usize = 20_000;

/// Who reported a span: the workload's service name and its pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Process {
    pub service: String,
    pub pod: String,
    pub namespace: String,
}

/// One kept span.
struct Kept {
    trace_id: u128,
    span_id: u64,
    parent_id: Option<u64>,
    operation: Arc<str>,
    kind: Kind,
    start_us: u64,
    duration_us: u64,
    tags: Box<[(Arc<str>, Arc<str>)]>,
    process: Arc<Process>,
}

/// Values many spans share, kept once. Those no span holds any more are let go whenever the
/// table has doubled since it was last swept, so unique values (request ids, URLs) do not
/// pile up after their spans are gone.
struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>>,
    swept_at: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner { set: HashSet::new(), swept_at: 0 }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    fn get(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(shared) = self.set.get(value) {
            return shared.clone();
        }
        if self.set.len() >= (2 * self.swept_at).max(1024) {
            self.set.retain(|v| Arc::strong_count(v) > 1);
            self.swept_at = self.set.len();
        }
        let shared = make();
        self.set.insert(shared.clone());
        shared
    }
}

#[derive(Default)]
struct Store {
    traces: HashMap<u128, Vec<Kept>>,
    /// Trace ids, first seen first.
    order: VecDeque<u128>,
    spans: usize,
    strings: Interner<str>,
    processes: Interner<Process>,
}

impl Store {
    fn text(&mut self, s: &str) -> Arc<str> {
        self.strings.get(s, || Arc::from(s))
    }

    /// The span in its kept form; `None` when its ids are not hex (Jaeger's own ids are).
    fn keep(&mut self, span: Span, process: &Arc<Process>) -> Option<Kept> {
        let hex64 = |s: &str| u64::from_str_radix(s, 16).ok();
        let parent_id = match span.parent_id.as_deref() {
            Some(p) => Some(hex64(p)?),
            None => None,
        };
        let tags = span.tags.iter().map(|(k, v)| (self.text(k), self.text(v))).collect();
        Some(Kept {
            trace_id: u128::from_str_radix(&span.trace_id, 16).ok()?,
            span_id: hex64(&span.span_id)?,
            parent_id,
            operation: self.text(&span.operation),
            kind: span.kind,
            start_us: span.start_us,
            duration_us: span.duration_us,
            tags,
            process: process.clone(),
        })
    }
}

#[derive(Default)]
pub struct Collector {
    store: Mutex<Store>,
    /// Where spans are handed on as well (a Zipkin collector), when set.
    exporter: std::sync::OnceLock<crate::control_plane::zipkin::Exporter>,
}

/// What `/api/traces` asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    pub service: String,
    pub operation: Option<String>,
    pub limit: usize,
    /// Microseconds since the epoch.
    pub start_us: u64,
    pub end_us: u64,
    pub min_duration_us: Option<u64>,
    pub max_duration_us: Option<u64>,
    pub tags: BTreeMap<String, String>,
}

impl Collector {
    /// Keeps `spans` as reported by `process`; how many were kept (not those with ids that are
    /// not hex).
    pub fn add(&self, process: &Process, spans: Vec<Span>) -> usize {
        if let Some(e) = self.exporter.get() {
            e.send(process, &spans);
        }
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let process = s.processes.get(process, || Arc::new(process.clone()));
        let mut kept = 0;
        for span in spans {
            let Some(span) = s.keep(span, &process) else { continue };
            let id = span.trace_id;
            let list = s.traces.entry(id).or_default();
            let new = list.is_empty();
            list.push(span);
            if new {
                s.order.push_back(id);
            }
            s.spans += 1;
            kept += 1;
        }
        while s.spans > MAX_SPANS {
            let Some(oldest) = s.order.pop_front() else { break };
            if let Some(gone) = s.traces.remove(&oldest) {
                s.spans -= gone.len();
            }
        }
        kept
    }

    /// Hands every span added from now on to `exporter` as well (once; later calls are ignored).
    pub fn export_to(&self, exporter: crate::control_plane::zipkin::Exporter) {
        let _ = self.exporter.set(exporter);
    }

    pub fn services(&self) -> Vec<String> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let all: BTreeSet<&str> = s.traces.values().flatten().map(|k| k.process.service.as_str()).collect();
        all.into_iter().map(str::to_string).collect()
    }

    pub fn operations(&self, service: &str) -> Vec<(String, Kind)> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let all: BTreeSet<(&str, &str)> = s
            .traces
            .values()
            .flatten()
            .filter(|k| k.process.service == service)
            .map(|k| (&*k.operation, kind_name(k.kind)))
            .collect();
        all.into_iter()
            .map(|(op, kind)| (op.to_string(), if kind == "client" { Kind::Client } else { Kind::Server }))
            .collect()
    }

    /// Traces with a span of `q.service` (and `q.operation`) that matches, newest first: Jaeger's
    /// response, written straight from the kept spans (no intermediate JSON tree, whose size
    /// would be many times the answer's).
    pub fn find(&self, q: &Query) -> Vec<u8> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let mut hits: Vec<(u64, &Vec<Kept>)> = s
            .traces
            .values()
            .filter_map(|spans| {
                let matching = spans.iter().any(|k| {
                    k.process.service == q.service
                        && q.operation.as_ref().is_none_or(|o| **o == *k.operation)
                        && k.start_us >= q.start_us
                        && k.start_us <= q.end_us
                        && q.min_duration_us.is_none_or(|d| k.duration_us >= d)
                        && q.max_duration_us.is_none_or(|d| k.duration_us <= d)
                        && q.tags
                            .iter()
                            .all(|(key, value)| k.tags.iter().any(|(k2, v2)| **k2 == **key && **v2 == **value))
                });
                matching.then(|| (spans.iter().map(|k| k.start_us).min().unwrap_or(0), spans))
            })
            .collect();
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        let traces: Vec<TraceOut> = hits.into_iter().take(q.limit).map(|(_, spans)| jaeger_trace(spans)).collect();
        envelope_bytes(&traces)
    }

    /// One trace by id, as Jaeger's response.
    pub fn get(&self, trace_id: &str) -> Option<Vec<u8>> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        // Jaeger accepts ids without their leading zeros.
        let id = u128::from_str_radix(trace_id, 16).ok()?;
        s.traces.get(&id).map(|spans| envelope_bytes(&[jaeger_trace(spans)]))
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Client => "client",
        Kind::Server => "server",
    }
}

/// A trace id as Jaeger writes it: 32 hex digits.
#[derive(Clone, Copy)]
struct Hex128(u128);

impl Serialize for Hex128 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:032x}", self.0))
    }
}

/// A span id as Jaeger writes it: 16 hex digits.
#[derive(Clone, Copy)]
struct Hex64(u64);

impl Serialize for Hex64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", self.0))
    }
}

/// Jaeger's JSON shapes, borrowing from the kept spans.
#[derive(Serialize)]
struct TagOut<'a> {
    key: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

fn tag<'a>(key: &'a str, value: &'a str) -> TagOut<'a> {
    TagOut { key, kind: "string", value }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefOut {
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: Hex128,
    #[serde(rename = "spanID")]
    span_id: Hex64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: Hex128,
    #[serde(rename = "spanID")]
    span_id: Hex64,
    operation_name: &'a str,
    references: Vec<RefOut>,
    start_time: u64,
    duration: u64,
    tags: Vec<TagOut<'a>>,
    logs: [(); 0],
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<()>,
    flags: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessOut<'a> {
    service_name: &'a str,
    tags: [TagOut<'a>; 2],
}

#[derive(Serialize)]
struct TraceOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: Hex128,
    spans: Vec<SpanOut<'a>>,
    processes: BTreeMap<String, ProcessOut<'a>>,
    warnings: Option<()>,
}

/// Jaeger's envelope around `data`: `{"data": [...], "total": N, "limit": 0, "offset": 0, "errors": null}`.
fn envelope_bytes(data: &[TraceOut]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a, 'b> {
        data: &'b [TraceOut<'a>],
        total: usize,
        limit: usize,
        offset: usize,
        errors: Option<()>,
    }
    serde_json::to_vec(&Envelope { data, total: data.len(), limit: 0, offset: 0, errors: None }).unwrap_or_default()
}

/// One trace in Jaeger's JSON: spans in start order, processes `p1`, `p2`... by service and pod.
fn jaeger_trace(spans: &[Kept]) -> TraceOut<'_> {
    let mut ordered: Vec<&Kept> = spans.iter().collect();
    ordered.sort_by_key(|k| k.start_us);
    let mut processes: Vec<&Process> = ordered.iter().map(|k| &*k.process).collect();
    processes.sort();
    processes.dedup();
    let pid = |p: &Process| format!("p{}", processes.iter().position(|q| *q == p).unwrap_or(0) + 1);
    let trace_id = Hex128(ordered.first().map_or(0, |k| k.trace_id));
    let spans = ordered
        .iter()
        .map(|s| {
            let mut tags: Vec<TagOut> = s.tags.iter().map(|(k, v)| tag(k, v)).collect();
            tags.push(tag("span.kind", kind_name(s.kind)));
            SpanOut {
                trace_id,
                span_id: Hex64(s.span_id),
                operation_name: &s.operation,
                references: s
                    .parent_id
                    .map(|p| RefOut { ref_type: "CHILD_OF", trace_id, span_id: Hex64(p) })
                    .into_iter()
                    .collect(),
                start_time: s.start_us,
                duration: s.duration_us,
                tags,
                logs: [],
                process_id: pid(&s.process),
                warnings: None,
                flags: 1,
            }
        })
        .collect();
    let processes = processes
        .iter()
        .map(|p| {
            let tags = [tag("hostname", &p.pod), tag("namespace", &p.namespace)];
            (pid(p), ProcessOut { service_name: &p.service, tags })
        })
        .collect();
    TraceOut { trace_id, spans, processes, warnings: None }
}

/// Jaeger's envelope: `{"data": ..., "total": N, "limit": 0, "offset": 0, "errors": null}`.
fn envelope(data: Value, total: usize) -> Response<Body> {
    net::json(StatusCode::OK, &json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

/// A JSON answer already written (Jaeger's envelope, from the kept spans).
fn json_bytes(body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(net::full(body));
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

fn failure(status: StatusCode, msg: &str) -> Response<Body> {
    net::json(
        status,
        &json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status.as_u16(), "msg": msg}]}),
    )
}

/// Jaeger's duration syntax (`1.5s`, `100ms`, `2h`) in microseconds.
fn duration_us(text: &str) -> Option<u64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 0.001,
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        "d" => 86400e6,
        _ => return None,
    };
    (n >= 0.0).then_some((n * scale) as u64)
}

/// `/api/traces`' parameters, as Jaeger reads them; a message when one is wrong.
pub fn parse_query(params: &HashMap<String, String>, now_us: u64) -> Result<Query, String> {
    let service = params.get("service").filter(|s| !s.is_empty()).ok_or("parameter 'service' is required")?.clone();
    let limit = match params.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| format!("unable to parse param 'limit': {l}"))?,
        // Jaeger's query service's default (`defaultQueryLimit`).
        None => 100,
    };
    let micros = |name: &str| -> Result<Option<u64>, String> {
        params
            .get(name)
            .map(|v| v.parse::<u64>().map_err(|_| format!("unable to parse param '{name}': {v}")))
            .transpose()
    };
    let end_us = micros("end")?.unwrap_or(now_us);
    let lookback = match params.get("lookback").map(String::as_str) {
        None | Some("" | "custom") => None,
        Some(l) => Some(duration_us(l).ok_or_else(|| format!("unable to parse param 'lookback': {l}"))?),
    };
    let start_us = match (micros("start")?, lookback) {
        (Some(s), _) => s,
        (None, Some(back)) => end_us.saturating_sub(back),
        (None, None) => end_us.saturating_sub(2 * 86_400_000_000),
    };
    let dur = |name: &str| -> Result<Option<u64>, String> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| duration_us(v).ok_or_else(|| format!("unable to parse param '{name}': {v}")))
            .transpose()
    };
    let tags = match params.get("tags") {
        Some(t) => serde_json::from_str::<BTreeMap<String, String>>(t)
            .map_err(|e| format!("malformed 'tags' parameter, expecting JSON object: {e}"))?,
        None => BTreeMap::new(),
    };
    Ok(Query {
        service,
        operation: params.get("operation").filter(|o| !o.is_empty()).cloned(),
        limit: if limit == 0 { usize::MAX } else { limit },
        start_us,
        end_us,
        min_duration_us: dur("minDuration")?,
        max_duration_us: dur("maxDuration")?,
        tags,
    })
}

/// The query string's parameters, percent-decoded (`tags` is JSON).
fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as u64
}

/// The query API (no credential: it is on loopback, as Jaeger's UI port is in a cluster).
pub fn handle<B>(collector: &Collector, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    let path = path.strip_prefix("/jaeger").unwrap_or(path);
    if req.method() != Method::GET {
        return failure(StatusCode::METHOD_NOT_ALLOWED, "the query API is read-only: GET");
    }
    let params = query_pairs(req.uri().query());
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "services"] => {
            let services = collector.services();
            let n = services.len();
            envelope(json!(services), n)
        }
        ["api", "services", service, "operations"] => {
            let ops: Vec<String> = collector.operations(service).into_iter().map(|(op, _)| op).collect();
            let n = ops.len();
            envelope(json!(ops), n)
        }
        ["api", "operations"] => {
            let Some(service) = params.get("service") else {
                return failure(StatusCode::BAD_REQUEST, "parameter 'service' is required");
            };
            let ops: Vec<Value> = collector
                .operations(service)
                .into_iter()
                .map(|(op, kind)| json!({"name": op, "spanKind": kind_name(kind)}))
                .collect();
            let n = ops.len();
            envelope(json!(ops), n)
        }
        ["api", "traces"] => match parse_query(&params, now_us()) {
            Ok(q) => json_bytes(collector.find(&q)),
            Err(msg) => failure(StatusCode::BAD_REQUEST, &msg),
        },
        ["api", "traces", id] => match collector.get(id) {
            Some(t) => json_bytes(t),
            None => failure(StatusCode::NOT_FOUND, "trace not found"),
        },
        _ => failure(
            StatusCode::NOT_FOUND,
            "Jaeger query API: /api/services, /api/services/{service}/operations, /api/traces?service=, /api/traces/{id} (also under /jaeger)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, parent: Option<&str>, op: &str, start_us: u64, duration_us: u64) -> Span {
        Span {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_id: parent.map(str::to_string),
            operation: op.into(),
            kind: Kind::Server,
            start_us,
            duration_us,
            tags: vec![("http.status_code".into(), "200".into())],
        }
    }

    /// The traces of a Jaeger response (its `total` checked against them).
    fn data(body: &[u8]) -> Vec<Value> {
        let v: Value = serde_json::from_slice(body).unwrap();
        let traces = v["data"].as_array().unwrap().clone();
        assert_eq!(v["total"].as_u64(), Some(traces.len() as u64));
        assert_eq!(v["errors"], Value::Null);
        traces
    }

    fn process(service: &str) -> Process {
        Process { service: service.into(), pod: format!("{service}-pod"), namespace: "default".into() }
    }

    #[test]
    fn traces_are_found_by_service_operation_time_duration_and_tags_in_jaegers_shape() {
        let c = Collector::default();
        let t1 = format!("{:032x}", 1);
        c.add(
            &process("istio-ingressgateway.istio-system"),
            vec![span(&t1, "a", None, "productpage.default.svc.cluster.local:9080/productpage", 1_000, 500)],
        );
        c.add(
            &process("productpage.default"),
            vec![span(&t1, "b", Some("a"), "productpage.default.svc.cluster.local:9080/*", 1_100, 300)],
        );
        c.add(
            &process("details.default"),
            vec![span(&format!("{:032x}", 2), "c", None, "details.default.svc.cluster.local:9080/*", 5_000, 50)],
        );
        assert_eq!(c.services(), ["details.default", "istio-ingressgateway.istio-system", "productpage.default"]);
        let q = |pairs: &[(&str, &str)]| {
            let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            parse_query(&params, 10_000).map(|q| data(&c.find(&q)))
        };
        let found = q(&[("service", "productpage.default")]).unwrap();
        assert_eq!(found.len(), 1);
        let trace = &found[0];
        assert_eq!(trace["spans"][0]["spanID"], "000000000000000a", "the gateway's span first");
        assert_eq!(trace["spans"][1]["references"][0]["spanID"], "000000000000000a");
        assert_eq!(trace["spans"][1]["traceID"], t1);
        assert_eq!(trace["spans"][1]["references"][0]["refType"], "CHILD_OF");
        let pid = trace["spans"][1]["processID"].as_str().unwrap();
        assert_eq!(trace["processes"][pid]["serviceName"], "productpage.default");
        assert_eq!(
            q(&[("service", "details.default"), ("lookback", "1ms")]).unwrap().len(),
            0,
            "older than the lookback"
        );
        assert_eq!(q(&[("service", "details.default"), ("lookback", "1h")]).unwrap().len(), 1);
        assert_eq!(q(&[("service", "productpage.default"), ("minDuration", "1ms")]).unwrap().len(), 0);
        assert_eq!(
            q(&[("service", "productpage.default"), ("tags", r#"{"http.status_code":"200"}"#)]).unwrap().len(),
            1
        );
        assert_eq!(q(&[("service", "productpage.default"), ("operation", "nope")]).unwrap().len(), 0);
        assert_eq!(q(&[]).unwrap_err(), "parameter 'service' is required");
        assert!(q(&[("service", "x"), ("limit", "ten")]).unwrap_err().contains("limit"));
        assert_eq!(data(&c.get("1").unwrap())[0]["spans"].as_array().unwrap().len(), 2, "ids without leading zeros");
    }

    #[test]
    fn the_oldest_traces_go_first_when_full() {
        let c = Collector::default();
        for t in 0..(MAX_SPANS + 10) {
            c.add(&process("a.default"), vec![span(&format!("{t:032x}"), "5", None, "op", t as u64, 1)]);
        }
        assert!(c.get("0").is_none() && c.get(&format!("{:x}", MAX_SPANS + 9)).is_some());
        assert_eq!(c.add(&process("a.default"), vec![span("not-hex", "5", None, "op", 1, 1)]), 0);
        assert_eq!(duration_us("1.5s"), Some(1_500_000));
        assert_eq!(duration_us("100ms"), Some(100_000));
        assert_eq!(duration_us("2x"), None);
    }

    #[test]
    fn strings_are_shared_and_unique_ones_go_with_their_spans() {
        let c = Collector::default();
        for t in 0..(3 * MAX_SPANS) {
            let mut s = span(&format!("{t:032x}"), "5", None, "op", t as u64, 1);
            s.tags.push(("guid:x-request-id".into(), format!("request-{t}")));
            c.add(&process("a.default"), vec![s]);
        }
        let store = c.store.lock().unwrap();
        let spans: Vec<&Kept> = store.traces.values().flatten().collect();
        assert_eq!(spans.len(), MAX_SPANS);
        assert!(Arc::ptr_eq(&spans[0].operation, &spans[1].operation));
        assert!(Arc::ptr_eq(&spans[0].tags[0].1, &spans[1].tags[0].1), "the same value, kept once");
        assert!(Arc::ptr_eq(&spans[0].process, &spans[1].process));
        // Each kept span holds one unique value; the table holds at most about twice as many.
        assert!(store.strings.set.len() <= 2 * MAX_SPANS + 8, "{} strings", store.strings.set.len());
    }
}
