//! `meshrig load`'s report for people (the status split with circuit-breaker answers called
//! out, percentiles in ms) and as JSON for scripts and lab checks. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::Report;

/// The JSON form (`meshrig load --json`).
#[derive(Debug, Serialize)]
pub struct Json {
    pub calls: u64,
    pub seconds: f64,
    pub qps: f64,
    pub requested_qps: f64,
    pub connections: usize,
    pub connections_opened: u64,
    /// Answers by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Calls without an answer, by reason.
    pub errors: BTreeMap<String, u64>,
    /// Answers with `x-envoy-overloaded: true`.
    pub overloaded: u64,
    pub latency_ms: Latency,
    /// Calls that started over 1 ms late because every connection was busy.
    pub late: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub fn json(r: &Report) -> Json {
    let l = &r.latency;
    Json {
        calls: r.calls(),
        seconds: (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        qps: (r.qps() * 10.0).round() / 10.0,
        requested_qps: r.options_qps,
        connections: r.options_connections,
        connections_opened: r.sockets,
        codes: r.codes.clone(),
        errors: r.errors.clone(),
        overloaded: r.overloaded,
        latency_ms: Latency {
            mean: (l.mean()).round() / 1000.0,
            p50: ms(l.percentile(50.0)),
            p90: ms(l.percentile(90.0)),
            p99: ms(l.percentile(99.0)),
            p999: ms(l.percentile(99.9)),
            max: ms(l.max),
        },
        late: r.late,
    }
}

/// The summary a learner reads.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let calls = r.calls();
    let rate = if r.options_qps > 0.0 {
        format!(", at {}/s asked", r.options_qps)
    } else {
        ", as fast as answers came".into()
    };
    let _ = writeln!(
        out,
        "{calls} calls in {:.2} s ({:.1}/s) over {} connection{}{rate}",
        r.elapsed.as_secs_f64(),
        r.qps(),
        r.options_connections,
        if r.options_connections == 1 { "" } else { "s" }
    );
    let share = |n: u64| n as f64 * 100.0 / calls.max(1) as f64;
    for (code, n) in &r.codes {
        let note = match *code {
            503 if r.overloaded > 0 => {
                format!("  {} with x-envoy-overloaded: a circuit breaker's overflow", r.overloaded)
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "  {code}  {n:>7}  ({:5.1}%){note}", share(*n));
    }
    for (why, n) in &r.errors {
        let _ = writeln!(out, "  ---  {n:>7}  ({:5.1}%)  no answer: {why}", share(*n));
    }
    let l = &r.latency;
    if l.count > 0 {
        let _ = writeln!(
            out,
            "latency ms: p50 {}  p90 {}  p99 {}  max {}{}",
            ms(l.percentile(50.0)),
            ms(l.percentile(90.0)),
            ms(l.percentile(99.0)),
            ms(l.max),
            if r.options_qps > 0.0 { "  (from each call's due time)" } else { "" }
        );
    }
    if r.late > 0 {
        let _ =
            writeln!(out, "{} calls started late: every connection was busy; the rate asked for needs more -c", r.late);
    }
    let _ = writeln!(out, "connections opened: {}", r.sockets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overflows_are_called_out() {
        let mut r = Report {
            options_connections: 3,
            elapsed: Duration::from_secs(2),
            sockets: 3,
            overloaded: 4,
            ..Report::default()
        };
        r.codes.insert(200, 26);
        r.codes.insert(503, 4);
        r.errors.insert("connection refused".into(), 0);
        for i in 0..30 {
            r.latency.record(1000 + i * 100);
        }
        let t = text(&r);
        assert!(t.starts_with("30 calls in 2.00 s (15.0/s) over 3 connections, as fast as answers came\n"), "{t}");
        assert!(t.contains("  503        4  ( 13.3%)  4 with x-envoy-overloaded"), "{t}");
        let j = json(&r);
        assert_eq!((j.calls, j.codes[&503], j.overloaded), (30, 4, 4));
        assert!((j.latency_ms.p50 - 2.4).abs() < 0.05, "{}", j.latency_ms.p50);
    }
}
