//! DestinationRule validation: host, subsets, traffic policies.

use super::*;

pub(super) fn validate_destination_rule(dr: &DestinationRule, rep: &mut Report) {
    let spec = &dr.spec;
    if spec.host.is_empty() {
        rep.err("spec.host", "is required");
    } else if spec.host.contains('/') || !is_wildcard_domain(&spec.host) {
        rep.err("spec.host", format!("`{}` is not a valid host name", spec.host));
    }
    if let Some(tp) = &spec.traffic_policy {
        check_traffic_policy("spec.trafficPolicy", tp, rep);
    }
    let mut names = BTreeSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            rep.err(format!("{path}.name"), "is required");
        } else if !is_dns1123_label(&s.name) {
            rep.err(format!("{path}.name"), format!("`{}` must be a DNS-1123 label", s.name));
        }
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            rep.err(format!("{path}.name"), format!("duplicate subset name `{}`", s.name));
        }
        check_labels(&format!("{path}.labels"), &s.labels, rep);
        if let Some(tp) = &s.traffic_policy {
            check_traffic_policy(&format!("{path}.trafficPolicy"), tp, rep);
        }
    }
    check_export_to("spec.exportTo", &spec.export_to, rep);
    if let Some(ws) = &spec.workload_selector {
        check_labels("spec.workloadSelector.matchLabels", &ws.match_labels, rep);
    }
}

fn non_negative(path: &str, v: Option<i32>, rep: &mut Report) {
    if v.is_some_and(|n| n < 0) {
        rep.err(path, "must not be negative");
    }
}

fn check_traffic_policy(path: &str, tp: &TrafficPolicy, rep: &mut Report) {
    check_policy_blocks(path, &tp.load_balancer, &tp.connection_pool, &tp.outlier_detection, &tp.tls, rep);
    let mut ports = BTreeSet::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let ppath = format!("{path}.portLevelSettings[{i}]");
        match p.port.as_ref().and_then(|p| p.number) {
            Some(n) if (1..=65535).contains(&n) => {
                if !ports.insert(n) {
                    rep.err(format!("{ppath}.port.number"), format!("duplicate port {n}"));
                }
            }
            Some(_) => rep.err(format!("{ppath}.port.number"), "must be between 1 and 65535"),
            None => rep.err(format!("{ppath}.port.number"), "is required"),
        }
        check_policy_blocks(&ppath, &p.load_balancer, &p.connection_pool, &p.outlier_detection, &p.tls, rep);
    }
    if let Some(t) = &tp.tunnel {
        if t.target_host.is_empty() {
            rep.err(format!("{path}.tunnel.targetHost"), "is required");
        }
        if t.target_port == 0 || t.target_port > 65535 {
            rep.err(format!("{path}.tunnel.targetPort"), "must be between 1 and 65535");
        }
        if let Some(p) = &t.protocol {
            if p != "CONNECT" && p != "POST" {
                rep.err(format!("{path}.tunnel.protocol"), format!("unsupported value `{p}`: use CONNECT or POST"));
            }
        }
    }
    if let Some(pp) = &tp.proxy_protocol {
        if let Some(v) = &pp.version {
            if v != "V1" && v != "V2" {
                rep.err(format!("{path}.proxyProtocol.version"), format!("unsupported value `{v}`: use V1 or V2"));
            }
        }
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(p) = &rb.percent {
            check_percent(&format!("{path}.retryBudget.percent"), p, rep);
        }
    }
}

fn check_policy_blocks(
    path: &str,
    lb: &Option<crate::resources::networking::LoadBalancerSettings>,
    cp: &Option<crate::resources::networking::ConnectionPoolSettings>,
    od: &Option<crate::resources::networking::OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
    rep: &mut Report,
) {
    if let Some(lb) = lb {
        let lpath = format!("{path}.loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            rep.err(&lpath, "set only one of simple or consistentHash");
        }
        if let Some(s) = &lb.simple {
            const SIMPLE: &[&str] =
                &["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"];
            if !SIMPLE.contains(&s.as_str()) {
                rep.err(
                    format!("{lpath}.simple"),
                    format!("unsupported value `{s}`: use one of {}", SIMPLE.join(", ")),
                );
            }
        }
        if let Some(ch) = &lb.consistent_hash {
            let keys = [
                ch.http_header_name.is_some(),
                ch.http_cookie.is_some(),
                ch.use_source_ip == Some(true),
                ch.http_query_parameter_name.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if keys != 1 {
                rep.err(
                    format!("{lpath}.consistentHash"),
                    "set exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
                );
            }
            if ch.ring_hash.is_some() && ch.maglev.is_some() {
                rep.err(format!("{lpath}.consistentHash"), "ringHash and maglev are mutually exclusive");
            }
            if let Some(c) = &ch.http_cookie {
                if c.name.is_empty() {
                    rep.err(format!("{lpath}.consistentHash.httpCookie.name"), "is required");
                }
                if let Some(ttl) = &c.ttl {
                    if let Err(e) = parse_duration(ttl) {
                        rep.err(format!("{lpath}.consistentHash.httpCookie.ttl"), e);
                    }
                }
            }
        }
        if let Some(w) = &lb.warmup_duration_secs {
            check_duration(&format!("{lpath}.warmupDurationSecs"), w, rep);
        }
        if let Some(w) = &lb.warmup {
            if let Some(d) = &w.duration {
                check_duration(&format!("{lpath}.warmup.duration"), d, rep);
            }
        }
    }
    if let Some(cp) = cp {
        let cpath = format!("{path}.connectionPool");
        if let Some(tcp) = &cp.tcp {
            non_negative(&format!("{cpath}.tcp.maxConnections"), tcp.max_connections, rep);
            for (name, d) in [
                ("connectTimeout", &tcp.connect_timeout),
                ("maxConnectionDuration", &tcp.max_connection_duration),
                ("idleTimeout", &tcp.idle_timeout),
            ] {
                if let Some(d) = d {
                    check_duration(&format!("{cpath}.tcp.{name}"), d, rep);
                }
            }
            if let Some(ka) = &tcp.tcp_keepalive {
                for (name, d) in [("time", &ka.time), ("interval", &ka.interval)] {
                    if let Some(d) = d {
                        check_duration(&format!("{cpath}.tcp.tcpKeepalive.{name}"), d, rep);
                    }
                }
            }
        }
        if let Some(h) = &cp.http {
            let hpath = format!("{cpath}.http");
            non_negative(&format!("{hpath}.http1MaxPendingRequests"), h.http1_max_pending_requests, rep);
            non_negative(&format!("{hpath}.http2MaxRequests"), h.http2_max_requests, rep);
            non_negative(&format!("{hpath}.maxRequestsPerConnection"), h.max_requests_per_connection, rep);
            non_negative(&format!("{hpath}.maxRetries"), h.max_retries, rep);
            non_negative(&format!("{hpath}.maxConcurrentStreams"), h.max_concurrent_streams, rep);
            if let Some(d) = &h.idle_timeout {
                check_duration(&format!("{hpath}.idleTimeout"), d, rep);
            }
            if let Some(p) = &h.h2_upgrade_policy {
                if !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&p.as_str()) {
                    rep.err(
                        format!("{hpath}.h2UpgradePolicy"),
                        format!("unsupported value `{p}`: use DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
                    );
                }
            }
            if h.use_client_protocol == Some(true) && h.h2_upgrade_policy.as_deref() == Some("UPGRADE") {
                rep.err(&hpath, "useClientProtocol cannot be combined with h2UpgradePolicy UPGRADE");
            }
        }
    }
    if let Some(od) = od {
        let opath = format!("{path}.outlierDetection");
        if od.consecutive_errors.is_some() {
            rep.warn(
                format!("{opath}.consecutiveErrors"),
                "outlier detection consecutiveErrors is deprecated and ignored since Istio 1.7; use consecutive5xxErrors or consecutiveGatewayErrors",
            );
        }
        for (name, d) in [("interval", &od.interval), ("baseEjectionTime", &od.base_ejection_time)] {
            if let Some(d) = d {
                check_duration(&format!("{opath}.{name}"), d, rep);
            }
        }
        for (name, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)]
        {
            if v.is_some_and(|p| !(0..=100).contains(&p)) {
                rep.err(format!("{opath}.{name}"), "must be between 0 and 100");
            }
        }
    }
    if let Some(tls) = tls {
        let tpath = format!("{path}.tls");
        let mode = tls.mode.as_deref().unwrap_or("DISABLE");
        let has_files = tls.client_certificate.is_some() || tls.private_key.is_some() || tls.ca_certificates.is_some();
        match mode {
            "DISABLE" | "SIMPLE" => {}
            "MUTUAL" => {
                if tls.credential_name.is_none() {
                    if tls.client_certificate.is_none() {
                        rep.err(
                            format!("{tpath}.clientCertificate"),
                            "is required for MUTUAL mode without credentialName",
                        );
                    }
                    if tls.private_key.is_none() {
                        rep.err(format!("{tpath}.privateKey"), "is required for MUTUAL mode without credentialName");
                    }
                }
            }
            "ISTIO_MUTUAL" => {
                // sni and subjectAltNames are allowed (istiod uses them instead of its own).
                if has_files || tls.credential_name.is_some() {
                    rep.err(
                        &tpath,
                        "cannot specify client certificates or CA certificate or credentialName if TLS mode is ISTIO_MUTUAL",
                    );
                }
            }
            other => rep.err(
                format!("{tpath}.mode"),
                format!("unsupported mode `{other}`: use DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL"),
            ),
        }
    }
}
