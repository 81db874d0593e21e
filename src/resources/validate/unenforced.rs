//! Fields meshrig parses but does not enforce yet, so `apply` can warn about each one.

use super::*;

fn not_enforced(path: impl AsRef<str>) -> String {
    format!("{} is accepted but not enforced yet by meshrig", path.as_ref())
}

fn policy_paths(path: &str, tp: &TrafficPolicy, out: &mut Vec<String>) {
    let blocks = [
        ("loadBalancer", tp.load_balancer.is_some()),
        ("connectionPool", tp.connection_pool.is_some()),
        ("outlierDetection", tp.outlier_detection.is_some()),
        ("tls", tp.tls.is_some()),
        ("portLevelSettings", !tp.port_level_settings.is_empty()),
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
        ("retryBudget", tp.retry_budget.is_some()),
    ];
    for (name, present) in blocks {
        if present {
            out.push(not_enforced(format!("{path}.{name}")));
        }
    }
}

/// One warning per field that is present, parsed, but not yet acted on by meshrig.
pub fn unenforced(r: &Resource) -> Vec<String> {
    let mut out = Vec::new();
    match r {
        Resource::Namespace(_) | Resource::ServiceAccount(_) | Resource::Service(_) => {}
        Resource::Deployment(d) => {
            if !d.spec.selector.match_expressions.is_empty() {
                out.push(not_enforced("spec.selector.matchExpressions"));
            }
        }
        Resource::Gateway(g) => {
            for (i, s) in g.spec.servers.iter().enumerate() {
                let path = format!("spec.servers[{i}]");
                if s.tls.is_some() {
                    out.push(not_enforced(format!("{path}.tls")));
                }
                if s.bind.is_some() {
                    out.push(not_enforced(format!("{path}.bind")));
                }
                if s.default_endpoint.is_some() {
                    out.push(not_enforced(format!("{path}.defaultEndpoint")));
                }
            }
        }
        Resource::VirtualService(vs) => {
            let spec = &vs.spec;
            if !spec.export_to.is_empty() {
                out.push(not_enforced("spec.exportTo"));
            }
            for (i, h) in spec.http.iter().enumerate() {
                let path = format!("spec.http[{i}]");
                let fields = [
                    ("redirect", h.redirect.is_some()),
                    ("directResponse", h.direct_response.is_some()),
                    ("delegate", h.delegate.is_some()),
                    ("rewrite", h.rewrite.is_some()),
                    ("timeout", h.timeout.is_some()),
                    ("retries", h.retries.is_some()),
                    ("fault", h.fault.is_some()),
                    ("mirror", h.mirror.is_some()),
                    ("mirrors", !h.mirrors.is_empty()),
                    ("mirrorPercentage", h.mirror_percentage.is_some()),
                    ("mirrorPercent", h.mirror_percent.is_some()),
                    ("corsPolicy", h.cors_policy.is_some()),
                    ("headers", h.headers.is_some()),
                ];
                for (name, present) in fields {
                    if present {
                        out.push(not_enforced(format!("{path}.{name}")));
                    }
                }
                for (j, m) in h.r#match.iter().enumerate() {
                    if m.stat_prefix.is_some() {
                        out.push(not_enforced(format!("{path}.match[{j}].statPrefix")));
                    }
                }
                for (k, d) in h.route.iter().enumerate() {
                    if d.headers.is_some() {
                        out.push(not_enforced(format!("{path}.route[{k}].headers")));
                    }
                }
            }
            if !spec.tls.is_empty() {
                out.push(not_enforced("spec.tls"));
            }
            if !spec.tcp.is_empty() {
                out.push(not_enforced("spec.tcp"));
            }
        }
        Resource::DestinationRule(dr) => {
            let spec = &dr.spec;
            if let Some(tp) = &spec.traffic_policy {
                policy_paths("spec.trafficPolicy", tp, &mut out);
            }
            for (i, s) in spec.subsets.iter().enumerate() {
                if let Some(tp) = &s.traffic_policy {
                    policy_paths(&format!("spec.subsets[{i}].trafficPolicy"), tp, &mut out);
                }
            }
            if !spec.export_to.is_empty() {
                out.push(not_enforced("spec.exportTo"));
            }
            if spec.workload_selector.is_some() {
                out.push(not_enforced("spec.workloadSelector"));
            }
        }
    }
    out
}
