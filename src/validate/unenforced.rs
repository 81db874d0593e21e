//! Fields meshrig parses but does not enforce yet, so `apply` can warn about each one.

use super::*;
use crate::resources::networking::LoadBalancerSettings;

fn not_enforced(path: impl AsRef<str>) -> String {
    format!("{} is accepted but not enforced yet by meshrig", path.as_ref())
}

/// `simple` and `consistentHash` are enforced; locality and warm-up are not.
fn load_balancer_paths(path: &str, lb: &LoadBalancerSettings, out: &mut Vec<String>) {
    let fields = [
        ("localityLbSetting", lb.locality_lb_setting.is_some()),
        ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ("warmup", lb.warmup.is_some()),
    ];
    for (name, present) in fields {
        if present {
            out.push(not_enforced(format!("{path}.loadBalancer.{name}")));
        }
    }
}

/// Every mode is enforced, with files; certificates from a Secret and CRLs are not.
fn tls_path(path: &str, tls: &Option<crate::resources::networking::ClientTlsSettings>, out: &mut Vec<String>) {
    let Some(tls) = tls else { return };
    if tls.credential_name.is_some() {
        out.push(format!(
            "{path}.tls.credentialName is not read by meshrig yet: give the files (clientCertificate, privateKey, \
             caCertificates; paths on this machine)"
        ));
    }
    if tls.ca_crl.is_some() {
        out.push(not_enforced(format!("{path}.tls.caCrl")));
    }
}

/// The circuit-breaker thresholds and the TCP and idle options are enforced. Upstreams are
/// HTTP/1.1, so only what asks for HTTP/2 upstream is not: `h2UpgradePolicy: UPGRADE`,
/// `useClientProtocol: true` (an HTTP/2 client's requests still go out as HTTP/1.1) and
/// `maxConcurrentStreams`.
fn pool_paths(path: &str, pool: &crate::resources::networking::ConnectionPoolSettings, out: &mut Vec<String>) {
    if let Some(h) = &pool.http {
        for (name, present) in [
            ("h2UpgradePolicy", h.h2_upgrade_policy.as_deref() == Some("UPGRADE")),
            ("useClientProtocol", h.use_client_protocol == Some(true)),
            ("maxConcurrentStreams", h.max_concurrent_streams.is_some()),
        ] {
            if present {
                out.push(not_enforced(format!("{path}.http.{name}")));
            }
        }
    }
}

fn policy_paths(path: &str, tp: &TrafficPolicy, out: &mut Vec<String>) {
    if let Some(lb) = &tp.load_balancer {
        load_balancer_paths(path, lb, out);
    }
    if let Some(pool) = &tp.connection_pool {
        pool_paths(&format!("{path}.connectionPool"), pool, out);
    }
    let blocks = [
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
        ("retryBudget", tp.retry_budget.is_some()),
    ];
    for (name, present) in blocks {
        if present {
            out.push(not_enforced(format!("{path}.{name}")));
        }
    }
    tls_path(path, &tp.tls, out);
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let path = format!("{path}.portLevelSettings[{i}]");
        tls_path(&path, &p.tls, out);
        if let Some(lb) = &p.load_balancer {
            load_balancer_paths(&path, lb, out);
        }
        if let Some(pool) = &p.connection_pool {
            pool_paths(&format!("{path}.connectionPool"), pool, out);
        }
    }
}

/// One warning per field that is present, parsed, but not yet acted on by meshrig.
pub fn unenforced(r: &Resource) -> Vec<String> {
    let mut out = Vec::new();
    match r {
        Resource::Namespace(_)
        | Resource::ServiceAccount(_)
        | Resource::ConfigMap(_)
        | Resource::Secret(_)
        | Resource::Issuer(_)
        | Resource::ClusterIssuer(_)
        | Resource::Service(_)
        | Resource::PeerAuthentication(_) => {}
        Resource::Telemetry(t) => out.extend(crate::resources::telemetry::check(t).1),
        Resource::Certificate(c) => {
            if c.spec.renew_before.is_some() {
                out.push(
                    "spec.renewBefore is accepted but not enforced yet by meshrig: a Certificate is issued when it is \
                     applied (apply it again to renew)"
                        .into(),
                );
            }
        }
        Resource::RequestAuthentication(ra) => {
            if ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty() {
                out.push(not_enforced("spec.targetRef(s)"));
            }
        }
        Resource::AuthorizationPolicy(ap) => {
            if ap.spec.target_ref.is_some() {
                out.push(not_enforced("spec.targetRef"));
            }
            if !ap.spec.target_refs.is_empty() {
                out.push(not_enforced("spec.targetRefs"));
            }
        }
        Resource::Deployment(d) => {
            if !d.spec.selector.match_expressions.is_empty() {
                out.push(not_enforced("spec.selector.matchExpressions"));
            }
        }
        Resource::Gateway(g) => {
            for (i, s) in g.spec.servers.iter().enumerate() {
                let path = format!("spec.servers[{i}]");
                // Enforced: httpsRedirect, SIMPLE, MUTUAL and OPTIONAL_MUTUAL from a credentialName,
                // ISTIO_MUTUAL, PASSTHROUGH.
                if let Some(tls) = &s.tls {
                    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
                    let from_secret = tls.credential_name.is_some() || !tls.credential_names.is_empty();
                    match mode {
                        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" if from_secret => {}
                        "ISTIO_MUTUAL" | "PASSTHROUGH" => {}
                        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => out.push(format!(
                            "{path}.tls: certificates from files are not served by meshrig; put them in a Secret \
                             (`meshrig create secret tls NAME --cert FILE --key FILE -n istio-system`) and name it in credentialName"
                        )),
                        _ if s.port.protocol.eq_ignore_ascii_case("HTTP") => {}
                        other => out.push(format!(
                            "{path}.tls: mode {other} is accepted but not served yet by meshrig (PASSTHROUGH, SIMPLE, MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL are)"
                        )),
                    }
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
                    (
                        "retries.retryRemoteLocalities",
                        h.retries.as_ref().is_some_and(|r| r.retry_remote_localities.is_some()),
                    ),
                    (
                        "retries.retryIgnorePreviousHosts",
                        h.retries.as_ref().is_some_and(|r| r.retry_ignore_previous_hosts == Some(false)),
                    ),
                    (
                        "fault.abort.grpcStatus",
                        h.fault.as_ref().and_then(|f| f.abort.as_ref()).is_some_and(|a| a.grpc_status.is_some()),
                    ),
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
            }
            let for_sidecars = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
            if !spec.tls.is_empty() && for_sidecars {
                out.push(
                    "spec.tls: TLS routes are served by gateways (PASSTHROUGH servers), not yet by sidecars (`mesh`)"
                        .into(),
                );
            }
            for (i, rule) in spec.tls.iter().enumerate() {
                for (j, m) in rule.r#match.iter().enumerate() {
                    if !m.destination_subnets.is_empty() || m.source_namespace.is_some() {
                        out.push(not_enforced(format!("spec.tls[{i}].match[{j}] destinationSubnets/sourceNamespace")));
                    }
                }
            }
            for (i, rule) in spec.tcp.iter().enumerate() {
                for (j, m) in rule.r#match.iter().enumerate() {
                    if !m.destination_subnets.is_empty() || m.source_subnet.is_some() {
                        out.push(not_enforced(format!("spec.tcp[{i}].match[{j}] subnets")));
                    }
                }
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
        Resource::ServiceEntry(se) => {
            let spec = &se.spec;
            for (field, present) in [
                ("spec.addresses", !spec.addresses.is_empty()),
                ("spec.workloadSelector", spec.workload_selector.is_some()),
                ("spec.exportTo", !spec.export_to.is_empty()),
                ("spec.subjectAltNames", !spec.subject_alt_names.is_empty()),
            ] {
                if present {
                    out.push(not_enforced(field));
                }
            }
            for (i, p) in spec.ports.iter().enumerate() {
                if !p.is_http() {
                    out.push(format!(
                        "spec.ports[{i}]: port {} ({}) is not HTTP; sidecars route only HTTP ports of a \
                         ServiceEntry yet (a gateway's tls or tcp rule can send to it)",
                        p.number,
                        p.protocol.as_deref().unwrap_or(&p.name)
                    ));
                }
            }
            for (i, e) in spec.endpoints.iter().enumerate() {
                for (field, present) in [
                    ("weight", e.weight.is_some()),
                    ("locality", e.locality.is_some()),
                    ("network", e.network.is_some()),
                ] {
                    if present {
                        out.push(not_enforced(format!("spec.endpoints[{i}].{field}")));
                    }
                }
            }
        }
    }
    out
}
