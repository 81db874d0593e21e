//! Route and cluster policy as Istio writes it for Envoy: timeouts, retries (with Istio's
//! default policy), fault injection, and DestinationRule load balancing merged top level →
//! port level → subset. Pure; the inputs were validated at apply time.

use crate::resources::networking::{
    self, ConnectionPoolSettings, CorsPolicy, HeaderOperations, HttpFaultInjection, HttpRedirect, HttpRetry, HttpRoute,
    LoadBalancerSettings, Percent, StringMatch, TrafficPolicy,
};
use crate::snapshot::{
    ConnectionPool, Cors, Fault, FaultAbort, FaultDelay, HashOn, HeaderOps, Headers, Keepalive, LbPolicy,
    OutlierDetection, Redirect, RetryPolicy, Rewrite, RoutePolicy, ValueMatch, UNLIMITED,
};
use crate::validate::parse_duration;

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

/// Everything but mirrors (which name clusters; the translator adds them).
pub fn route(rule: &HttpRoute) -> RoutePolicy {
    let headers = headers(rule.headers.as_ref());
    RoutePolicy {
        // `0s` disables the timeout, as in Envoy.
        timeout_ms: millis(&rule.timeout).filter(|&ms| ms > 0),
        retry: retry(rule.retries.as_ref()),
        fault: rule.fault.as_ref().and_then(fault),
        rewrite: rewrite(rule),
        headers,
        mirrors: vec![],
        cors: rule.cors_policy.as_ref().map(cors),
    }
}

fn ops(o: Option<&HeaderOperations>) -> HeaderOps {
    let Some(o) = o else { return HeaderOps::default() };
    // Pseudo-headers and Host are not edited as headers (an authority edit is a rewrite).
    let keep = |k: &String| !k.starts_with(':') && !k.eq_ignore_ascii_case("host");
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
    };
    HeaderOps {
        set: pairs(&o.set),
        add: pairs(&o.add),
        remove: o.remove.iter().filter(|k| keep(k)).map(|k| k.to_ascii_lowercase()).collect(),
    }
}

pub fn headers(h: Option<&networking::Headers>) -> Headers {
    Headers { request: ops(h.and_then(|h| h.request.as_ref())), response: ops(h.and_then(|h| h.response.as_ref())) }
}

/// `rewrite`, plus Istio's rule that a request `set`/`add` of `:authority` or `host` is an
/// authority rewrite (`set` wins over `add`, the rewrite field over both).
fn rewrite(rule: &HttpRoute) -> Option<Rewrite> {
    let req = rule.headers.as_ref().and_then(|h| h.request.as_ref());
    let authority_op = req.and_then(|r| {
        let find = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().find(|(k, _)| *k == ":authority" || k.eq_ignore_ascii_case("host")).map(|(_, v)| v.clone())
        };
        find(&r.set).or_else(|| find(&r.add))
    });
    let r = rule.rewrite.as_ref();
    let out = Rewrite {
        uri: r.and_then(|r| r.uri.clone()),
        uri_regex: r.and_then(|r| r.uri_regex_rewrite.as_ref()).map(|x| (x.r#match.clone(), x.rewrite.clone())),
        authority: r.and_then(|r| r.authority.clone()).or(authority_op),
    };
    (out != Rewrite::default()).then_some(out)
}

pub fn redirect(r: &HttpRedirect) -> Redirect {
    Redirect {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        port: r.port.and_then(|p| u16::try_from(p).ok()),
        keep_request_port: r.derive_port.as_deref() == Some("FROM_REQUEST_PORT"),
        scheme: r.scheme.clone(),
        code: r.redirect_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(301),
    }
}

fn string_match(m: &StringMatch) -> Option<ValueMatch> {
    if let Some(e) = &m.exact {
        Some(ValueMatch::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(ValueMatch::Prefix(p.clone()))
    } else {
        m.regex.as_ref().map(|r| ValueMatch::Regex(r.clone()))
    }
}

pub fn cors(c: &CorsPolicy) -> Cors {
    let mut allow_origins: Vec<ValueMatch> = c.allow_origins.iter().filter_map(string_match).collect();
    // Deprecated `allowOrigin`: exact strings, `*` for any.
    allow_origins.extend(c.allow_origin.iter().map(|o| {
        if o == "*" {
            ValueMatch::Present
        } else {
            ValueMatch::Exact(o.clone())
        }
    }));
    let join = |v: &Vec<String>| (!v.is_empty()).then(|| v.join(","));
    Cors {
        allow_origins,
        allow_methods: join(&c.allow_methods),
        allow_headers: join(&c.allow_headers),
        expose_headers: join(&c.expose_headers),
        max_age: c.max_age.as_deref().and_then(|d| parse_duration(d).ok()).map(|d| d.as_secs().to_string()),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
    }
}

/// `mirrorPercentage` / deprecated `mirrorPercent` / a mirror's own `percentage`: absent is 100%.
pub fn mirror_per_million(p: &Option<Percent>, deprecated: Option<u32>) -> u32 {
    match (p, deprecated) {
        (None, None) => 1_000_000,
        (p, d) => per_million(p, d.map(|d| d.min(100) as i32)),
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

/// The `connectionPool` block in force for one port of a policy: a port-level entry replaces
/// the policy's own; `None` when neither sets one.
fn pool_block(tp: &TrafficPolicy, port: u16) -> Option<Option<&ConnectionPoolSettings>> {
    let port_level =
        tp.port_level_settings.iter().find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
    match port_level {
        Some(p) => Some(p.connection_pool.as_ref()),
        None => tp.connection_pool.as_ref().map(Some),
    }
}

/// A cluster's `connectionPool` for `port`: the DR's block, replaced by the subset's where the
/// subset sets one (Istio's MergeTrafficPolicy). Values of 0 or less are unset (unlimited).
pub fn connection_pool(dr: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> ConnectionPool {
    let mut block = dr.and_then(|tp| pool_block(tp, port)).flatten();
    if let Some(sub) = subset.and_then(|tp| pool_block(tp, port)) {
        block = sub;
    }
    let defaults = ConnectionPool::default();
    let Some(b) = block else { return defaults };
    let limit = |v: Option<i32>| v.filter(|v| *v > 0).map_or(UNLIMITED, |v| v as u64);
    let (tcp, http) = (b.tcp.as_ref(), b.http.as_ref());
    ConnectionPool {
        max_connections: limit(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: limit(http.and_then(|h| h.http2_max_requests)),
        max_retries: limit(http.and_then(|h| h.max_retries)),
        max_requests_per_connection: http
            .and_then(|h| h.max_requests_per_connection)
            .filter(|v| *v > 0)
            .map_or(0, |v| v as u32),
        connect_timeout_ms: positive_ms(tcp.and_then(|t| t.connect_timeout.as_deref()))
            .unwrap_or(defaults.connect_timeout_ms),
        idle_timeout_ms: positive_ms(http.and_then(|h| h.idle_timeout.as_deref()))
            .or_else(|| positive_ms(tcp.and_then(|t| t.idle_timeout.as_deref())))
            .unwrap_or(defaults.idle_timeout_ms),
        max_connection_duration_ms: positive_ms(tcp.and_then(|t| t.max_connection_duration.as_deref())).unwrap_or(0),
        keepalive: tcp.and_then(|t| t.tcp_keepalive.as_ref()).map(|k| Keepalive {
            probes: k.probes.filter(|p| *p > 0),
            time_s: secs(k.time.as_deref()),
            interval_s: secs(k.interval.as_deref()),
        }),
    }
}

/// A duration field in milliseconds; unset, unparsable (validation reports it) or zero: `None`.
fn positive_ms(d: Option<&str>) -> Option<u64> {
    let d = parse_duration(d?).ok()?;
    Some(d.as_millis() as u64).filter(|ms| *ms > 0)
}

/// A keepalive duration in whole seconds (the socket option's unit), at least 1.
fn secs(d: Option<&str>) -> Option<u32> {
    positive_ms(d).map(|ms| (ms / 1000).clamp(1, u64::from(u32::MAX)) as u32)
}

/// A cluster's `outlierDetection` for `port`, merged as `connectionPool` (the subset's or
/// port-level block replaces the DR's). Unset fields take Envoy's defaults; the deprecated
/// `consecutiveErrors` is ignored, as Istio has since 1.7.
pub fn outlier_detection(
    dr: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Option<OutlierDetection> {
    fn block_of(tp: &TrafficPolicy, port: u16) -> Option<Option<&crate::resources::networking::OutlierDetection>> {
        let port_level =
            tp.port_level_settings.iter().find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
        match port_level {
            Some(p) => Some(p.outlier_detection.as_ref()),
            None => tp.outlier_detection.as_ref().map(Some),
        }
    }
    let block_of = |tp| block_of(tp, port);
    let mut block = dr.and_then(block_of).flatten();
    if let Some(sub) = subset.and_then(block_of) {
        block = sub;
    }
    let b = block?;
    let d = OutlierDetection::default();
    let ms = |s: &Option<String>, default: u64| {
        s.as_deref().and_then(|s| parse_duration(s).ok()).map_or(default, |d| d.as_millis() as u64)
    };
    let percent = |v: Option<i32>, default: u32| v.map_or(default, |v| v.clamp(0, 100) as u32);
    Some(OutlierDetection {
        consecutive_5xx: b.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
        consecutive_gateway: b.consecutive_gateway_errors.unwrap_or(0),
        consecutive_local: b.consecutive_local_origin_failures.unwrap_or(d.consecutive_local),
        split_local: b.split_external_local_origin_errors.unwrap_or(false),
        interval_ms: ms(&b.interval, d.interval_ms),
        base_ejection_ms: ms(&b.base_ejection_time, d.base_ejection_ms),
        max_ejection_percent: percent(b.max_ejection_percent, d.max_ejection_percent),
        min_health_percent: percent(b.min_health_percent, 0),
    })
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
    fn authority_header_edits_are_a_rewrite_and_pseudo_headers_are_not_edited() {
        let yaml = "headers:\n  request:\n    set: {':authority': a.example, X-Env: prod}\n    remove: [Host, X-Drop]\n  response:\n    add: {x-served-by: meshrig}\nrewrite: {uri: /v2}\n";
        let rule: HttpRoute = serde_yaml::from_str(yaml).unwrap();
        let p = route(&rule);
        assert_eq!(
            p.rewrite,
            Some(Rewrite { uri: Some("/v2".into()), uri_regex: None, authority: Some("a.example".into()) })
        );
        assert_eq!(p.headers.request.set, [("x-env".to_string(), "prod".to_string())]);
        assert_eq!(p.headers.request.remove, ["x-drop"]);
        assert_eq!(p.headers.response.add, [("x-served-by".to_string(), "meshrig".to_string())]);
    }

    #[test]
    fn redirect_and_mirror_defaults() {
        let r = redirect(&HttpRedirect { uri: Some("/new".into()), ..Default::default() });
        assert_eq!(r.code, 301);
        assert_eq!(mirror_per_million(&None, None), 1_000_000);
        assert_eq!(mirror_per_million(&Some(Percent { value: 0.0 }), None), 0);
        assert_eq!(mirror_per_million(&None, Some(50)), 500_000);
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

    #[test]
    fn connection_pools_merge_as_load_balancing_and_non_positive_values_are_unset() {
        use crate::resources::networking::{HttpSettings, TcpSettings};
        let pool = |cx: i32, pending: i32, per_conn: i32| {
            Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings { max_connections: Some(cx), ..Default::default() }),
                http: Some(HttpSettings {
                    http1_max_pending_requests: Some(pending),
                    max_requests_per_connection: Some(per_conn),
                    ..Default::default()
                }),
            })
        };
        assert!(connection_pool(None, None, 8000).is_default());
        // Connection options: http.idleTimeout wins over tcp.idleTimeout; unset ones keep
        // meshConfig's and Envoy's defaults.
        let opts = TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    connect_timeout: Some("250ms".into()),
                    idle_timeout: Some("30s".into()),
                    max_connection_duration: Some("1m".into()),
                    tcp_keepalive: Some(crate::resources::networking::TcpKeepalive {
                        probes: Some(3),
                        time: Some("7s".into()),
                        interval: None,
                    }),
                    ..Default::default()
                }),
                http: Some(HttpSettings { idle_timeout: Some("5s".into()), ..Default::default() }),
            }),
            ..Default::default()
        };
        let p = connection_pool(Some(&opts), None, 8000);
        assert_eq!((p.connect_timeout_ms, p.idle_timeout_ms, p.max_connection_duration_ms), (250, 5_000, 60_000));
        assert_eq!(p.keepalive, Some(Keepalive { probes: Some(3), time_s: Some(7), interval_s: None }));
        let d = connection_pool(None, None, 8000);
        assert_eq!((d.connect_timeout_ms, d.idle_timeout_ms, d.max_connection_duration_ms), (10_000, 3_600_000, 0));
        let top = TrafficPolicy {
            connection_pool: pool(1, 1, 1),
            port_level_settings: vec![PortTrafficPolicy {
                port: Some(PortSelector { number: Some(9000) }),
                connection_pool: pool(0, -1, 0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = connection_pool(Some(&top), None, 8000);
        assert_eq!(
            (p.max_connections, p.max_pending_requests, p.max_requests, p.max_requests_per_connection),
            (1, 1, UNLIMITED, 1)
        );
        assert!(connection_pool(Some(&top), None, 9000).is_default(), "0 and negatives are unset");
        let sub = TrafficPolicy { connection_pool: pool(7, 3, 2), ..Default::default() };
        assert_eq!(
            connection_pool(Some(&top), Some(&sub), 8000).max_connections,
            7,
            "the subset's block replaces the DR's"
        );
        assert_eq!(connection_pool(Some(&top), Some(&TrafficPolicy::default()), 8000).max_connections, 1);
    }
}
