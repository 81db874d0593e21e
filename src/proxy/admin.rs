//! The admin listener: `/ready`, `/stats` (Envoy's cluster counters), `/stats/prometheus`,
//! `/config_dump`, `/clusters`, `/listeners`
//! (Envoy's admin, in small), and meshrig's `/explain?id=` (why a request was answered so).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::net::{self, Body};
use crate::proxy::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/ready" | "/healthz/ready" => {
            if shared.has_config() {
                net::text(StatusCode::OK, "LIVE\n")
            } else {
                net::text(StatusCode::SERVICE_UNAVAILABLE, "no config received from the control plane yet\n")
            }
        }
        "/stats/prometheus" => {
            let mut resp = net::text(StatusCode::OK, &shared.stats.encode());
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        "/stats" => envoy_stats(&shared, req.uri().query()),
        "/config_dump" => {
            let runtime = shared.runtime.borrow().clone();
            net::json_pretty(StatusCode::OK, &runtime.snapshot)
        }
        "/clusters" => net::text(StatusCode::OK, &clusters(&shared.runtime.borrow())),
        "/certs" => net::json_pretty(StatusCode::OK, &certs(&shared)),
        "/listeners" => {
            // Envoy's text format: `name::address`, named as Istio names gateway listeners.
            let bound = shared.gateway_bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let text: String = bound.iter().map(|(port, addr)| format!("0.0.0.0_{port}::{addr}\n")).collect();
            net::text(StatusCode::OK, &text)
        }
        "/explain" => {
            let id = crate::uri::query_param(req.uri().query(), "id").unwrap_or_default();
            match shared.explain.find(id) {
                Some(record) => net::json(StatusCode::OK, &*record),
                None => net::text(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no request with x-request-id {id:?} among the last {} this proxy recorded; only requests \
                         that arrive with an x-request-id are recorded\n",
                        crate::proxy::explain::KEEP
                    ),
                ),
            }
        }
        _ => net::text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /ready /stats[?filter=REGEX&format=json] /stats/prometheus /config_dump /clusters /listeners /certs /explain?id=REQUEST_ID\n",
        ),
    }
}

/// Envoy's `/stats`: every cluster's circuit breakers and pool counters under Envoy's names
/// (`cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_pending_overflow: 21`),
/// filtered by a regular expression (`filter=`), as text or `format=json`.
fn envoy_stats(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let param = |name| crate::uri::query_param(query, name);
    // A filter naming a cluster carries `|`, sent as `%7C`.
    let decoded = |f: &str| crate::uri::percent_decode_lossy(f, true);
    let filter = match param("filter").map(|f| regex::Regex::new(&String::from_utf8_lossy(&decoded(f)))) {
        None => None,
        Some(Ok(re)) => Some(re),
        Some(Err(e)) => return net::text(StatusCode::BAD_REQUEST, &format!("Invalid regex: {e}\n")),
    };
    let mut stats: Vec<(String, u64)> = Vec::new();
    for (name, breakers) in shared.endpoints.breakers.all() {
        stats.extend(breakers.envoy_stats(&name));
    }
    stats.retain(|(name, _)| filter.as_ref().is_none_or(|re| re.is_match(name)));
    if param("format") == Some("json") {
        let list: Vec<serde_json::Value> =
            stats.iter().map(|(name, value)| serde_json::json!({"name": name, "value": value})).collect();
        return net::json_pretty(StatusCode::OK, &serde_json::json!({ "stats": list }));
    }
    let text: String = stats.iter().map(|(name, value)| format!("{name}: {value}\n")).collect();
    net::text(StatusCode::OK, &text)
}

/// Envoy's `/certs`: the workload's certificate chain and the root it trusts, described (never
/// the key). Empty for a proxy without an identity.
fn certs(shared: &Shared) -> serde_json::Value {
    let Some(identity) = &shared.identity else { return serde_json::json!({ "certificates": [] }) };
    let (chain, root) = identity.pems();
    let describe = |pem: &str| -> Vec<serde_json::Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        crate::tls::describe(pem)
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let sans: Vec<serde_json::Value> = c
                    .uris
                    .iter()
                    .map(|u| serde_json::json!({ "uri": u }))
                    .chain(c.dns.iter().map(|d| serde_json::json!({ "dns": d })))
                    .collect();
                serde_json::json!({
                    "path": "<inline>",
                    "serial_number": c.serial,
                    "subject": c.subject,
                    "subject_alt_names": sans,
                    "days_until_expiration": ((c.not_after - now).max(0) / 86_400).to_string(),
                    "valid_from": crate::env::rfc3339(c.not_before),
                    "expiration_time": crate::env::rfc3339(c.not_after),
                })
            })
            .collect()
    };
    serde_json::json!({ "certificates": [{ "ca_cert": describe(&root), "cert_chain": describe(&chain) }] })
}

/// Envoy's `/clusters` text: one `cluster::host::stat::value` line per endpoint statistic. The
/// counts are the endpoint's, shared by every cluster that names its address (subsets).
fn clusters(runtime: &crate::proxy::runtime::Runtime) -> String {
    let mut names: Vec<&String> = runtime.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let (_, cluster) = &runtime.clusters[name];
        let ejected = cluster.breakers.ejected(cluster.hosts.len());
        for host in &cluster.hosts {
            let (pool, addr) = (&host.state.pool, host.endpoint.address);
            for (stat, value) in [
                ("cx_total", pool.connections_total()),
                ("rq_active", host.state.active() as u64),
                ("rq_total", pool.requests_total()),
            ] {
                out.push_str(&format!("{name}::{addr}::{stat}::{value}\n"));
            }
            // Envoy's flag for an endpoint outlier detection has ejected.
            let health = if ejected.contains(&addr) { "/failed_outlier_check" } else { "healthy" };
            out.push_str(&format!("{name}::{addr}::health_flags::{health}\n"));
        }
    }
    out
}
