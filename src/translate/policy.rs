//! Route and cluster policy as Istio writes it for Envoy: timeouts, retries (with Istio's
//! default policy), fault injection, and DestinationRule load balancing merged top level →
//! port level → subset. Pure; the inputs were validated at apply time.

use crate::resources::networking::{
    HttpFaultInjection, HttpRetry, HttpRoute, LoadBalancerSettings, Percent, TrafficPolicy,
};
use crate::resources::validate::parse_duration;
use crate::snapshot::{Fault, FaultAbort, FaultDelay, HashOn, LbPolicy, RetryPolicy, RoutePolicy};

/// Istio's retry conditions when `retries` sets `attempts` but no `retryOn`, and of its default
/// policy (503 is not retried since Istio 1.24).
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Istio's default when a route sets no `retries`: 2 retries on [`DEFAULT_RETRY_ON`].
pub fn default_retry() -> RetryPolicy {
    RetryPolicy { attempts: 2, retry_on: split_retry_on(DEFAULT_RETRY_ON).0, ..RetryPolicy::default() }
}

fn millis(s: &Option<String>) -> Option<u64> {
    s.as_deref().and_then(|d| parse_duration(d).ok()).map(|d| d.as_millis() as u64)
}

/// Conditions and numeric codes of a `retryOn` string; numbers add `retriable-status-codes`.
fn split_retry_on(s: &str) -> (Vec<String>, Vec<u16>) {
    let mut on = Vec::new();
    let mut codes = Vec::new();
    for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token.parse::<u16>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(token.to_string()),
        }
    }
    if !codes.is_empty() && !on.iter().any(|t| t == "retriable-status-codes") {
        on.push("retriable-status-codes".into());
    }
    (on, codes)
}

pub fn retry(r: Option<&HttpRetry>) -> RetryPolicy {
    let Some(r) = r else { return default_retry() };
    if r.attempts <= 0 {
        return RetryPolicy::default();
    }
    let (retry_on, retriable_codes) = split_retry_on(r.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON));
    RetryPolicy {
        attempts: r.attempts as u32,
        per_try_timeout_ms: millis(&r.per_try_timeout),
        retry_on,
        retriable_codes,
        backoff_ms: millis(&r.backoff).unwrap_or(25),
    }
}

/// Envoy keeps fractional percentages per million.
fn per_million(p: &Option<Percent>, deprecated_int: Option<i32>) -> u32 {
    match (p, deprecated_int) {
        (Some(p), _) => (p.value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        (None, Some(i)) => (i.clamp(0, 100) as u32) * 10_000,
        (None, None) => 0,
    }
}

pub fn fault(f: &HttpFaultInjection) -> Option<Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        Some(FaultDelay { delay_ms: millis(&d.fixed_delay)?, per_million: per_million(&d.percentage, d.percent) })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        Some(FaultAbort { status: u16::try_from(a.http_status?).ok()?, per_million: per_million(&a.percentage, None) })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

pub fn route(rule: &HttpRoute) -> RoutePolicy {
    RoutePolicy {
        // `0s` disables the timeout, as in Envoy.
        timeout_ms: millis(&rule.timeout).filter(|&ms| ms > 0),
        retry: retry(rule.retries.as_ref()),
        fault: rule.fault.as_ref().and_then(fault),
    }
}

fn lb_of(s: &LoadBalancerSettings) -> LbPolicy {
    if let Some(h) = &s.consistent_hash {
        let on = if let Some(name) = &h.http_header_name {
            HashOn::Header(name.to_ascii_lowercase())
        } else if let Some(c) = &h.http_cookie {
            HashOn::Cookie(c.name.clone())
        } else if let Some(q) = &h.http_query_parameter_name {
            HashOn::Query(q.clone())
        } else {
            HashOn::SourceIp
        };
        return LbPolicy::ConsistentHash(on);
    }
    match s.simple.as_deref() {
        Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => LbPolicy::Passthrough,
        _ => LbPolicy::LeastRequest,
    }
}

/// The `loadBalancer` block in force for one port of a policy: a port-level entry replaces the
/// policy's own (and does not inherit it); `None` when neither sets one.
fn lb_block(tp: &TrafficPolicy, port: u16) -> Option<Option<&LoadBalancerSettings>> {
    let port_level =
        tp.port_level_settings.iter().find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
    match port_level {
        Some(p) => Some(p.load_balancer.as_ref()),
        None => tp.load_balancer.as_ref().map(Some),
    }
}

/// Load balancing for `port` (and `subset`'s policy when the cluster is a subset's): the DR's
/// block, replaced by the subset's where the subset sets one (Istio's MergeTrafficPolicy).
pub fn load_balancer(dr: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> LbPolicy {
    let mut block = dr.and_then(|tp| lb_block(tp, port)).flatten();
    if let Some(sub) = subset.and_then(|tp| lb_block(tp, port)) {
        block = sub;
    }
    block.map(lb_of).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::networking::{FaultAbort as VsAbort, FaultDelay as VsDelay, PortSelector, PortTrafficPolicy};

    #[test]
    fn without_retries_a_route_gets_istios_default_policy() {
        let r = retry(None);
        assert_eq!(r.attempts, 2);
        assert_eq!(
            r.retry_on,
            ["connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"]
        );
        assert!(r.retriable_codes.is_empty(), "503 is not retried by default since Istio 1.24");
    }

    #[test]
    fn numeric_retry_on_becomes_retriable_codes() {
        let r = retry(Some(&HttpRetry { attempts: 3, retry_on: Some("503, reset".into()), ..Default::default() }));
        assert_eq!(r.attempts, 3);
        assert_eq!(r.retry_on, ["reset", "retriable-status-codes"]);
        assert_eq!(r.retriable_codes, [503]);
        let none = retry(Some(&HttpRetry { attempts: 0, ..Default::default() }));
        assert_eq!(none.attempts, 0);
        let default_on =
            retry(Some(&HttpRetry { attempts: 1, per_try_timeout: Some("2s".into()), ..Default::default() }));
        assert_eq!(default_on.retry_on.len(), 5);
        assert_eq!(default_on.per_try_timeout_ms, Some(2000));
    }

    #[test]
    fn fault_percentages_default_to_zero_and_accept_the_deprecated_integer() {
        let f = fault(&HttpFaultInjection {
            delay: Some(VsDelay { fixed_delay: Some("7s".into()), percent: Some(100), ..Default::default() }),
            abort: Some(VsAbort { http_status: Some(500), ..Default::default() }),
        })
        .unwrap();
        assert_eq!(f.delay, Some(FaultDelay { delay_ms: 7000, per_million: 1_000_000 }));
        assert_eq!(f.abort, Some(FaultAbort { status: 500, per_million: 0 }));
        let half = fault(&HttpFaultInjection {
            abort: Some(VsAbort {
                http_status: Some(503),
                percentage: Some(Percent { value: 0.5 }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(half.abort.unwrap().per_million, 5_000);
    }

    #[test]
    fn zero_timeout_means_none() {
        let rule = HttpRoute { timeout: Some("0s".into()), ..Default::default() };
        assert_eq!(route(&rule).timeout_ms, None);
        let rule = HttpRoute { timeout: Some("0.5s".into()), ..Default::default() };
        assert_eq!(route(&rule).timeout_ms, Some(500));
    }

    fn lb(simple: &str) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings { simple: Some(simple.into()), ..Default::default() })
    }

    #[test]
    fn load_balancer_merges_top_level_port_level_and_subset() {
        assert_eq!(load_balancer(None, None, 80), LbPolicy::LeastRequest);
        let top = TrafficPolicy {
            load_balancer: lb("RANDOM"),
            port_level_settings: vec![
                PortTrafficPolicy {
                    port: Some(PortSelector { number: Some(9080) }),
                    load_balancer: lb("ROUND_ROBIN"),
                    ..Default::default()
                },
                PortTrafficPolicy { port: Some(PortSelector { number: Some(9090) }), ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(load_balancer(Some(&top), None, 80), LbPolicy::Random);
        assert_eq!(load_balancer(Some(&top), None, 9080), LbPolicy::RoundRobin);
        // A port-level entry does not inherit the DR-level block.
        assert_eq!(load_balancer(Some(&top), None, 9090), LbPolicy::LeastRequest);
        // A subset without its own block keeps the DR's; with one, it replaces it.
        let quiet = TrafficPolicy::default();
        assert_eq!(load_balancer(Some(&top), Some(&quiet), 80), LbPolicy::Random);
        let sub = TrafficPolicy { load_balancer: lb("PASSTHROUGH"), ..Default::default() };
        assert_eq!(load_balancer(Some(&top), Some(&sub), 80), LbPolicy::Passthrough);
    }
}
