//! The proxy's side of tracing: each hop's span is started from the request's trace context
//! (joining the caller's trace or starting one, sampled as `trace::DEFAULT_SAMPLING` says),
//! the next hop is given the new context, and finished spans go to a bounded queue that a
//! background task sends to the control plane's collector in batches. A full queue drops
//! spans (counted) rather than holding requests or memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tokio::sync::Notify;

use crate::api;
use crate::net::log;
use crate::trace::{self, Kind, Span};

/// Spans waiting to be sent; beyond this they are dropped.
const MAX_QUEUE: usize = 4096;
/// A batch this large is sent at once; a smaller one waits up to `FLUSH`.
const BATCH: usize = 512;
const FLUSH: Duration = Duration::from_secs(1);

/// A span in progress: its ids, when it began, and the tags known at the start.
#[derive(Debug)]
pub struct Open {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent: Option<u64>,
    pub kind: Kind,
    pub start: SystemTime,
    pub tags: Vec<(&'static str, String)>,
    /// A Telemetry's custom tags, with their values.
    pub custom: Vec<(String, String)>,
}

/// This hop's span, when the trace is sampled. The headers are rewritten either way so the
/// next hop continues the same trace (and honours the sampling decision).
pub fn start(headers: &mut HeaderMap, kind: Kind, sampling: f64, rng: &mut fastrand::Rng) -> Option<Open> {
    let parent = trace::extract(headers);
    let sampled = parent.and_then(|p| p.sampled).unwrap_or_else(|| rng.f64() * 100.0 < sampling);
    let trace_id = parent.map_or_else(|| trace::new_trace_id(rng), |p| p.trace_id);
    let span_id = trace::new_span_id(rng);
    let parent = parent.map(|p| p.span_id);
    // A `traceparent` of another trace than the B3 headers' is the client's own business:
    // left as it came, as Envoy's Zipkin tracer (Istio's default) leaves it.
    let foreign = headers.get("traceparent").filter(|_| trace::w3c_trace_id(headers) != Some(trace_id)).cloned();
    trace::inject(headers, trace_id, span_id, parent, sampled);
    if let Some(v) = foreign {
        headers.insert("traceparent", v);
    }
    sampled.then(|| Open {
        trace_id,
        span_id,
        parent,
        kind,
        start: SystemTime::now(),
        tags: Vec::new(),
        custom: Vec::new(),
    })
}

impl Open {
    /// The finished span.
    pub fn finish(self, operation: String, tags: impl IntoIterator<Item = (&'static str, String)>) -> Span {
        let start_us = self.start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let duration_us = self.start.elapsed().map_or(0, |d| d.as_micros() as u64);
        Span {
            trace_id: format!("{:032x}", self.trace_id),
            span_id: format!("{:016x}", self.span_id),
            parent_id: self.parent.map(|p| format!("{p:016x}")),
            operation,
            kind: self.kind,
            start_us,
            duration_us,
            tags: self.tags.into_iter().chain(tags).map(|(k, v)| (k.to_string(), v)).chain(self.custom).collect(),
        }
    }
}

#[derive(Default)]
pub struct Exporter {
    queue: Mutex<Vec<Span>>,
    /// Spans dropped because the queue was full or the collector refused them.
    pub dropped: AtomicU64,
    /// Something was queued.
    queued: Notify,
    /// A batch is full.
    full: Notify,
}

impl Exporter {
    pub fn push(&self, span: Span) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_QUEUE {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push(span);
        if q.len() == 1 {
            self.queued.notify_one();
        }
        if q.len() == BATCH {
            self.full.notify_one();
        }
    }

    fn take(&self) -> Vec<Span> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Sends queued spans to the control plane (`POST /v1/spans`, with the pod's credential):
/// at most a second after the first one of a batch, or at once when a batch is full. A batch
/// the collector does not take is dropped and counted; the proxy never waits for it.
pub async fn export(exporter: Arc<Exporter>, client: api::Client, namespace: String, pod: String) {
    let path = format!("/v1/spans?namespace={namespace}&pod={pod}");
    let mut failing = false;
    loop {
        exporter.queued.notified().await;
        let _ = tokio::time::timeout(FLUSH, exporter.full.notified()).await;
        let batch = exporter.take();
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        match client.post::<_, serde_json::Value>(&path, &batch).await {
            Ok(_) => failing = false,
            Err(e) => {
                exporter.dropped.fetch_add(n, Ordering::Relaxed);
                if !failing {
                    log(&format!("tracing: the collector did not take {n} span(s): {e}; dropping until it does"));
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_joins_its_callers_trace_and_hands_on_its_own_span() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut h = HeaderMap::new();
        let root = start(&mut h, Kind::Client, 100.0, &mut rng).unwrap();
        assert_eq!(root.parent, None);
        let child = start(&mut h, Kind::Server, 0.0, &mut rng).expect("the caller's decision wins over 0%");
        assert_eq!((child.trace_id, child.parent), (root.trace_id, Some(root.span_id)));
        let span =
            child.finish("httpbin.default.svc.cluster.local:8000/*".into(), [("http.status_code", "200".into())]);
        assert_eq!(span.parent_id, Some(format!("{:016x}", root.span_id)));
        assert_eq!(span.tags, vec![("http.status_code".to_string(), "200".to_string())]);

        let mut unsampled = HeaderMap::new();
        assert!(start(&mut unsampled, Kind::Client, 0.0, &mut rng).is_none());
        assert_eq!(unsampled["x-b3-sampled"], "0");
        assert!(
            start(&mut unsampled, Kind::Server, 100.0, &mut rng).is_none(),
            "not sampled upstream: not here either"
        );

        // A traceparent of another trace than B3's passes untouched; one of the same trace
        // carries this hop's span.
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut mixed = HeaderMap::new();
        mixed.insert("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7".parse().unwrap());
        mixed.insert("x-b3-spanid", "e457b5a2e4d86bd1".parse().unwrap());
        mixed.insert("traceparent", other.parse().unwrap());
        let hop = start(&mut mixed, Kind::Client, 100.0, &mut rng).unwrap();
        assert_eq!(mixed["traceparent"], other);
        assert_eq!(mixed["x-b3-spanid"], format!("{:016x}", hop.span_id).as_str());
        let mut same = HeaderMap::new();
        same.insert("traceparent", other.parse().unwrap());
        let hop = start(&mut same, Kind::Client, 100.0, &mut rng).unwrap();
        let expected = format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-01", hop.span_id);
        assert_eq!(same["traceparent"], expected.as_str());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let e = Exporter::default();
        let span = start(&mut HeaderMap::new(), Kind::Client, 100.0, &mut fastrand::Rng::new())
            .unwrap()
            .finish("op".into(), []);
        for _ in 0..MAX_QUEUE + 3 {
            e.push(span.clone());
        }
        assert_eq!((e.take().len(), e.dropped.load(Ordering::Relaxed)), (MAX_QUEUE, 3));
    }
}
