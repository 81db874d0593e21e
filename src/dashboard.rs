//! `meshrig dashboard`: a local web page to look at the mesh, as Kiali and Jaeger's UI show
//! it: the live service graph (workloads and versions, edges with rate, errors, p99 and a lock
//! for mTLS), traces (search by service, a waterfall per trace) and each service's golden
//! signals. One page (`dashboard/page.html`, no outside scripts) over a small JSON API: the
//! graph from every proxy's metrics, scraped every few seconds and kept for a minute so a
//! window's rates come from two scrapes; traces passed through from the collector.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request, Response, StatusCode};
use serde::Serialize;

use crate::graph::{self, Edge, Sample};
use crate::net::{self, Body};

const PAGE: &str = include_str!("dashboard/page.html");

/// How often the proxies are scraped, and how many scrapes are kept (a minute's worth).
pub const SCRAPE_EVERY: Duration = Duration::from_secs(5);
const KEPT: usize = 13;

/// Where traces come from: the environment's trace collector.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub tracing: Option<SocketAddr>,
}

/// The scrapes kept, oldest first, each with when it was taken.
#[derive(Default)]
pub struct Scrapes {
    kept: Mutex<VecDeque<(Instant, Arc<Vec<Sample>>)>>,
}

impl Scrapes {
    pub fn push(&self, at: Instant, samples: Vec<Sample>) {
        let mut k = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        k.push_back((at, Arc::new(samples)));
        while k.len() > KEPT {
            k.pop_front();
        }
    }

    /// The edges over about `window` (between the newest scrape and the one closest to
    /// `window` before it), with rates; totals since the proxies started when `window` is zero
    /// or only one scrape is kept.
    pub fn edges(&self, window: Duration) -> Vec<Edge> {
        let k = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let Some((newest_at, newest)) = k.back().cloned() else { return vec![] };
        let before = k
            .iter()
            .rev()
            .skip(1)
            .min_by_key(|(at, _)| {
                (newest_at.duration_since(*at).as_millis() as i128 - window.as_millis() as i128).abs()
            })
            .cloned();
        match before {
            Some((at, samples)) if !window.is_zero() => {
                graph::edges(Some(&samples), &newest, Some(newest_at.duration_since(at).as_secs_f64()))
            }
            _ => graph::edges(None, &newest, None),
        }
    }
}

/// One service's golden signals over the window: traffic, errors, latency.
#[derive(Debug, PartialEq, Serialize)]
pub struct Signals {
    pub service: String,
    pub requests: f64,
    pub rps: Option<f64>,
    pub error_percent: f64,
    pub p99_ms: Option<f64>,
}

/// Golden signals per destination service, from the edges into it (pure).
pub fn signals(edges: &[Edge]) -> Vec<Signals> {
    #[derive(Default)]
    struct Sum {
        requests: f64,
        rps: Option<f64>,
        errors: f64,
        p99: Option<f64>,
    }
    let mut by: std::collections::BTreeMap<&str, Sum> = Default::default();
    for e in edges {
        let s = by.entry(e.service.as_str()).or_default();
        s.requests += e.requests;
        s.rps = match (s.rps, e.rps) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        s.errors += e.errors;
        // The slowest caller's p99 bounds the service's from below; Envoy's buckets do not add.
        s.p99 = match (s.p99, e.p99_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    by.into_iter()
        .map(|(service, s)| Signals {
            service: service.to_string(),
            requests: s.requests,
            rps: s.rps,
            error_percent: if s.requests > 0.0 { s.errors / s.requests * 100.0 } else { 0.0 },
            p99_ms: s.p99.filter(|p| p.is_finite()),
        })
        .collect()
}

/// Every proxy's samples, now (a proxy that does not answer adds nothing).
pub async fn scrape_all(client: &net::HttpClient, admins: &[SocketAddr]) -> Vec<Sample> {
    let mut all = Vec::new();
    for admin in admins {
        all.extend(scrape(client, *admin).await);
    }
    all
}

async fn scrape(client: &net::HttpClient, admin: SocketAddr) -> Vec<Sample> {
    match net::get(client, &format!("http://{admin}/stats/prometheus"), Duration::from_secs(5)).await {
        Ok((_, body)) => graph::parse(&String::from_utf8_lossy(&body)),
        Err(_) => vec![],
    }
}

/// `window=10s` in a query string (Go durations, as `meshrig graph --window`); 10 s without.
fn window(query: Option<&str>) -> Duration {
    crate::uri::query_param(query, "window")
        .and_then(crate::load::fortio::go_duration)
        .unwrap_or(Duration::from_secs(10))
}

/// Passes a GET through to the trace collector's Jaeger API (same origin for the page).
async fn traces(client: &net::HttpClient, tracing: Option<SocketAddr>, path_and_query: &str) -> Response<Body> {
    let Some(tracing) = tracing else {
        return net::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"errors": [{"msg": "the trace collector is not listening"}]}),
        );
    };
    match net::get(client, &format!("http://{tracing}{path_and_query}"), Duration::from_secs(10)).await {
        Ok((status, body)) => {
            let mut out = Response::new(net::full(body));
            *out.status_mut() = status;
            out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            out
        }
        Err(e) => net::text(StatusCode::BAD_GATEWAY, &format!("the trace collector did not answer: {e}")),
    }
}

/// The dashboard's routes.
pub async fn handle(
    req: Request<hyper::body::Incoming>,
    sources: Arc<Sources>,
    scrapes: Arc<Scrapes>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    match path.as_str() {
        "/" | "/index.html" => {
            let mut res = Response::new(net::full(PAGE));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            res
        }
        "/api/graph" => {
            let w = window(query.as_deref());
            let edges = scrapes.edges(w);
            let signals = signals(&edges);
            net::json(
                StatusCode::OK,
                &serde_json::json!({"window_seconds": w.as_secs_f64(), "edges": edges, "services": signals}),
            )
        }
        p if p.starts_with("/api/traces") || p.starts_with("/api/services") => {
            let pq = match &query {
                Some(q) => format!("{p}?{q}"),
                None => p.to_string(),
            };
            traces(&net::client(), sources.tracing, &pq).await
        }
        _ => net::text(
            StatusCode::NOT_FOUND,
            "meshrig dashboard: / (the page), /api/graph?window=10s, /api/traces, /api/services",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(n: u32, code: u16) -> Vec<Sample> {
        graph::parse(&format!(
            "istio_requests_total{{reporter=\"source\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",source_app=\"productpage\",source_version=\"v1\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"default\",destination_app=\"reviews\",destination_version=\"v2\",destination_service=\"reviews.default.svc.cluster.local\",response_code=\"{code}\"}} {n}\n"
        ))
    }

    #[test]
    fn a_window_is_the_newest_scrape_against_the_one_closest_to_that_long_before() {
        let s = Scrapes::default();
        assert!(s.edges(Duration::from_secs(10)).is_empty());
        let t0 = Instant::now();
        s.push(t0, exposition(100, 200));
        // One scrape: totals.
        assert_eq!(s.edges(Duration::from_secs(10))[0].requests, 100.0);
        s.push(t0 + Duration::from_secs(5), exposition(150, 200));
        s.push(t0 + Duration::from_secs(10), exposition(200, 200));
        let e = &s.edges(Duration::from_secs(10))[0];
        assert_eq!((e.requests, e.rps), (100.0, Some(10.0)));
        let e = &s.edges(Duration::from_secs(5))[0];
        assert_eq!((e.requests, e.rps), (50.0, Some(10.0)));
        assert_eq!(s.edges(Duration::ZERO)[0].requests, 200.0, "0: totals");
        for i in 0..20 {
            s.push(t0 + Duration::from_secs(15 + i), exposition(200, 200));
        }
        assert_eq!(s.kept.lock().unwrap().len(), KEPT);
    }

    #[test]
    fn golden_signals_add_up_the_edges_into_each_service() {
        let mut all = exposition(90, 200);
        all.extend(exposition(10, 503));
        let sig = signals(&graph::edges(None, &all, None));
        assert_eq!(sig.len(), 1);
        assert_eq!(
            (sig[0].service.as_str(), sig[0].requests, sig[0].error_percent),
            ("reviews.default.svc.cluster.local", 100.0, 10.0)
        );
        assert_eq!(window(Some("window=1m")), Duration::from_secs(60));
        assert_eq!(window(None), Duration::from_secs(10));
    }
}
