//! The service graph from the proxies' own metrics (pure): who calls whom, how often, with
//! what errors and latency, over mutual TLS or not, as Kiali draws it from Istio's metrics.
//! Edges come from the client side's `istio_requests_total` (reporter `source`: every call a
//! sidecar or gateway makes, local replies included), and from the server side for callers
//! without a proxy; mTLS is what the server side saw.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample of a Prometheus text exposition: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition (comments and malformed lines skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some(Sample { name: head.to_string(), labels: BTreeMap::new(), value });
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), val);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample { name: name.to_string(), labels, value })
}

/// A caller or callee: its workload and namespace, with its app and version when known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Node {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
}

/// Calls from one workload to one destination workload through one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    pub source: Node,
    pub destination: Node,
    pub service: String,
    /// Requests in the window (or since the proxies started), and per second when a window was given.
    pub requests: f64,
    pub rps: Option<f64>,
    /// Responses that were 5xx, or a proxy's own failure (code 0).
    pub errors: f64,
    /// The 99th percentile of the client-side duration, in milliseconds (from Envoy's buckets:
    /// the bucket's upper bound), when any request fell in the window.
    pub p99_ms: Option<f64>,
    /// The server side saw mutual TLS (`connection_security_policy="mutual_tls"`), when it reported.
    pub mtls: Option<bool>,
}

fn node(labels: &BTreeMap<String, String>, side: &str) -> Node {
    let get = |k: &str| labels.get(&format!("{side}_{k}")).cloned().unwrap_or_else(|| "unknown".into());
    Node { workload: get("workload"), namespace: get("workload_namespace"), app: get("app"), version: get("version") }
}

type Key = (Node, Node, String);

fn key(labels: &BTreeMap<String, String>) -> Key {
    let service = labels.get("destination_service").cloned().unwrap_or_else(|| "unknown".into());
    (node(labels, "source"), node(labels, "destination"), service)
}

#[derive(Default, Clone)]
struct Tally {
    requests: f64,
    errors: f64,
    /// Cumulative duration buckets by upper bound.
    buckets: BTreeMap<u64, f64>,
    mtls: Option<bool>,
}

/// Sums the series of every proxy's samples into per-edge tallies.
fn tally(all: &[Sample]) -> BTreeMap<Key, Tally> {
    let mut out: BTreeMap<Key, Tally> = BTreeMap::new();
    // Callers that reported as a client; their server-side series are not counted again.
    let mut client_reported: std::collections::BTreeSet<Key> = Default::default();
    for s in all.iter().filter(|s| s.labels.get("reporter").map(String::as_str) == Some("source")) {
        if s.name == "istio_requests_total" {
            client_reported.insert(key(&s.labels));
        }
    }
    for s in all {
        let reporter = s.labels.get("reporter").map(String::as_str);
        let k = key(&s.labels);
        let counted = match reporter {
            Some("source") => true,
            Some("destination") => !client_reported.contains(&k),
            _ => false,
        };
        if reporter == Some("destination") && s.name == "istio_requests_total" {
            let mtls = s.labels.get("connection_security_policy").map(|p| p == "mutual_tls");
            let t = out.entry(k.clone()).or_default();
            t.mtls = Some(t.mtls.unwrap_or(false) || mtls.unwrap_or(false));
        }
        if !counted {
            continue;
        }
        let t = out.entry(k).or_default();
        match s.name.as_str() {
            "istio_requests_total" => {
                t.requests += s.value;
                let code: u16 = s.labels.get("response_code").and_then(|c| c.parse().ok()).unwrap_or(0);
                if code >= 500 || code == 0 {
                    t.errors += s.value;
                }
            }
            "istio_request_duration_milliseconds_bucket" => {
                let le = s.labels.get("le").map(String::as_str).unwrap_or("+Inf");
                let bound = if le == "+Inf" { u64::MAX } else { (le.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64 };
                *t.buckets.entry(bound).or_default() += s.value;
            }
            _ => {}
        }
    }
    out
}

/// The 99th percentile from cumulative buckets (upper bounds in µs): the first bound that
/// holds 99% of the count, in ms.
fn p99(buckets: &BTreeMap<u64, f64>) -> Option<f64> {
    let total = buckets.get(&u64::MAX).copied().or_else(|| buckets.values().copied().reduce(f64::max))?;
    if total <= 0.0 {
        return None;
    }
    let (bound, _) = buckets.iter().find(|(_, n)| **n >= total * 0.99)?;
    Some(if *bound == u64::MAX { f64::INFINITY } else { *bound as f64 / 1000.0 })
}

/// The edges between `before` and `after` (samples of every proxy, taken `seconds` apart), or
/// since the proxies started when there is no `before`.
pub fn edges(before: Option<&[Sample]>, after: &[Sample], seconds: Option<f64>) -> Vec<Edge> {
    let then = before.map(tally).unwrap_or_default();
    let mut out = Vec::new();
    for (k, now) in tally(after) {
        let old = then.get(&k).cloned().unwrap_or_default();
        let requests = now.requests - old.requests;
        if requests <= 0.0 && before.is_some() {
            continue;
        }
        let buckets: BTreeMap<u64, f64> =
            now.buckets.iter().map(|(b, n)| (*b, n - old.buckets.get(b).copied().unwrap_or(0.0))).collect();
        let (source, destination, service) = k;
        out.push(Edge {
            source,
            destination,
            service,
            requests,
            rps: seconds.filter(|s| *s > 0.0).map(|s| requests / s),
            errors: now.errors - old.errors,
            p99_ms: p99(&buckets),
            mtls: now.mtls,
        });
    }
    out.retain(|e| e.requests > 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(reporter: &str, src: &str, dst: &str, code: u16, n: f64, policy: &str) -> String {
        format!(
            "istio_requests_total{{reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"default\",source_app=\"{src}\",source_version=\"v1\",destination_workload=\"{dst}\",destination_workload_namespace=\"default\",destination_app=\"{dst}\",destination_version=\"v1\",destination_service=\"{dst}.default.svc.cluster.local\",response_code=\"{code}\",connection_security_policy=\"{policy}\"}} {n}\n"
        )
    }

    #[test]
    fn edges_count_client_side_calls_with_errors_p99_and_the_servers_mtls() {
        let mut text = String::from("# TYPE istio_requests_total counter\n");
        text += &series("source", "productpage", "reviews", 200, 90.0, "unknown");
        text += &series("source", "productpage", "reviews", 503, 10.0, "unknown");
        text += &series("destination", "productpage", "reviews", 200, 90.0, "mutual_tls");
        // A caller without a sidecar shows only on the server's side.
        text += &series("destination", "unknown", "reviews", 200, 5.0, "none");
        for (le, n) in [("1", 50.0), ("5", 98.0), ("10", 100.0), ("+Inf", 100.0)] {
            text += &format!("istio_request_duration_milliseconds_bucket{{reporter=\"source\",source_workload=\"productpage\",source_workload_namespace=\"default\",source_app=\"productpage\",source_version=\"v1\",destination_workload=\"reviews\",destination_workload_namespace=\"default\",destination_app=\"reviews\",destination_version=\"v1\",destination_service=\"reviews.default.svc.cluster.local\",le=\"{le}\"}} {n}\n");
        }
        let samples = parse(&text);
        let all = edges(None, &samples, None);
        assert_eq!(all.len(), 2, "{all:#?}");
        let pr = all.iter().find(|e| e.source.workload == "productpage").unwrap();
        assert_eq!((pr.requests, pr.errors, pr.p99_ms, pr.mtls), (100.0, 10.0, Some(10.0), Some(true)));
        let plain = all.iter().find(|e| e.source.workload == "unknown").unwrap();
        assert_eq!((plain.requests, plain.mtls), (5.0, Some(false)));

        // Over a window: only what happened in it, per second.
        let mut later = text.replace("} 90\n", "} 150\n");
        later = later.replace("le=\"10\"} 100", "le=\"10\"} 160").replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 160");
        later = later.replace("le=\"5\"} 98", "le=\"5\"} 158").replace("le=\"1\"} 50", "le=\"1\"} 110");
        let window = edges(Some(&samples), &parse(&later), Some(2.0));
        assert_eq!(window.len(), 1, "the plain caller sent nothing in the window: {window:#?}");
        assert_eq!(
            (window[0].requests, window[0].rps, window[0].errors, window[0].p99_ms),
            (60.0, Some(30.0), 0.0, Some(1.0))
        );
    }

    #[test]
    fn labels_with_escapes_parse() {
        let s = parse("m{a=\"x\\\"y\",b=\"\"} 3\nplain 1\n# HELP m x\n");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "");
        assert_eq!((s[1].name.as_str(), s[1].value), ("plain", 1.0));
    }
}
