//! Spans handed on to a Zipkin collector (Jaeger's included, on 9411): istiod on the kind
//! backend sends what its proxies report to `zipkin.istio-system:9411`, where Istio's proxies
//! send theirs, so the Jaeger addon shows meshrig's traces. Spans are queued (bounded: a full
//! queue drops, the proxies never wait) and posted in batches as Zipkin v2 JSON; a collector
//! that is absent or refuses is said once a minute, never retried span by span.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::control_plane::traces::Process;
use crate::net;
use crate::trace::{Kind, Span};

/// Istio's default Zipkin address, as its mesh config's `defaultConfig.tracing.zipkin.address`.
pub const ISTIO_ZIPKIN: &str = "http://zipkin.istio-system:9411/api/v2/spans";
/// Spans queued at most; beyond, new ones are dropped.
const QUEUE: usize = 10_000;
/// Spans per POST at most.
const BATCH: usize = 500;

/// One span as Zipkin v2 JSON: ids as given (hex), `kind` CLIENT or SERVER, microseconds, the
/// reporting workload as the local endpoint's service, the tags as strings. Pure.
pub fn span(process: &Process, s: &Span) -> Value {
    let mut tags: serde_json::Map<String, Value> = s.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    tags.insert("istio.namespace".into(), json!(process.namespace));
    tags.insert("node_id".into(), json!(process.pod));
    let mut v = json!({
        "traceId": s.trace_id,
        "id": s.span_id,
        "name": s.operation,
        "kind": match s.kind { Kind::Client => "CLIENT", Kind::Server => "SERVER" },
        "timestamp": s.start_us,
        "duration": s.duration_us.max(1),
        "localEndpoint": {"serviceName": process.service},
        "tags": tags,
    });
    if let Some(parent) = &s.parent_id {
        v["parentId"] = json!(parent);
    }
    v
}

/// Where spans are handed: a queue a task drains to `url`.
#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Value>,
}

impl Exporter {
    /// Starts the task posting to `url` (on the current runtime).
    pub fn start(url: String) -> Exporter {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(url, rx));
        Exporter { queue }
    }

    /// Queues `spans` as reported by `process`; drops what does not fit.
    pub fn send(&self, process: &Process, spans: &[Span]) {
        for s in spans {
            if self.queue.try_send(span(process, s)).is_err() {
                return;
            }
        }
    }
}

async fn drain(url: String, mut rx: mpsc::Receiver<Value>) {
    let client = net::client();
    let mut said: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // What else is queued, up to a batch, without waiting for more.
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(v) => batch.push(v),
                Err(_) => break,
            }
        }
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        let request = client.post(&url).timeout(Duration::from_secs(5)).header("content-type", "application/json");
        let sent = request.body(body).send().await;
        let failed = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("{} answered {}", url, r.status())),
            Err(e) => Some(format!("{url}: {}", net::error_chain(&e))),
        };
        if let Some(why) = failed {
            if said.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                net::log(&format!(
                    "traces: {} span(s) not handed on: {why} (is the Jaeger addon installed?)",
                    batch.len()
                ));
                said = Some(Instant::now());
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_zipkin_v2_json_of_the_reporting_workload() {
        let process =
            Process { service: "reviews.default".into(), pod: "reviews-v2-1".into(), namespace: "default".into() };
        let s = Span {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_id: Some("00f067aa0ba902b7".into()),
            operation: "ratings.default.svc.cluster.local:9080/*".into(),
            kind: Kind::Client,
            start_us: 1_700_000_000_000_000,
            duration_us: 0,
            tags: vec![("http.status_code".into(), "200".into())],
        };
        let v = span(&process, &s);
        assert_eq!(v["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!((v["id"].as_str(), v["parentId"].as_str()), (Some("b7ad6b7169203331"), Some("00f067aa0ba902b7")));
        assert_eq!(
            (v["kind"].as_str(), v["duration"].as_u64()),
            (Some("CLIENT"), Some(1)),
            "Zipkin wants a duration of at least 1"
        );
        assert_eq!(v["localEndpoint"]["serviceName"], "reviews.default");
        assert_eq!(v["tags"]["http.status_code"], "200");
        assert_eq!(v["tags"]["node_id"], "reviews-v2-1");
        let root = span(&process, &Span { parent_id: None, kind: Kind::Server, ..s });
        assert!(root.get("parentId").is_none() && root["kind"] == "SERVER");
    }
}
