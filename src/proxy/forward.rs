//! The request path: pick a route and an endpoint, forward, and answer locally the way Envoy
//! does when it cannot (404 no route, 503 no cluster / no healthy upstream / connect failure).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::net::{self, Body};
use crate::proxy::route::{self, RequestView};
use crate::proxy::runtime::Runtime;
use crate::proxy::stats::{Peer, RequestRecord};
use crate::proxy::Shared;
use crate::snapshot::{Role, RouteAction};

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// The app's own traffic, through HTTP_PROXY.
    Outbound,
    /// Traffic for the app on container `port`.
    Inbound { port: u16 },
    /// A gateway listener on container `port`.
    Gateway { port: u16 },
}

/// Why a request ended without (or with) an upstream response; Envoy's response flags.
struct Local {
    status: StatusCode,
    body: &'static str,
    flags: &'static str,
}

const NO_ROUTE: Local = Local { status: StatusCode::NOT_FOUND, body: "", flags: "NR" };
const NO_CLUSTER: Local = Local { status: StatusCode::SERVICE_UNAVAILABLE, body: "", flags: "NC" };
const NO_HEALTHY: Local = Local { status: StatusCode::SERVICE_UNAVAILABLE, body: "no healthy upstream", flags: "UH" };
const CONNECT_FAILURE: Local = Local {
    status: StatusCode::SERVICE_UNAVAILABLE,
    body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
    flags: "UF",
};

pub async fn handle(
    shared: Arc<Shared>,
    direction: Direction,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    if let Direction::Gateway { .. } = direction {
        // Istio's gateways use the remote address: the client's IP is appended to X-Forwarded-For.
        append_forwarded_for(req.headers_mut(), peer);
    }
    let runtime = shared.runtime.borrow().clone();
    let server_header = if runtime.snapshot.proxy.role == Role::Gateway { "istio-envoy" } else { "envoy" };
    let (mut resp, record) = match direction {
        Direction::Inbound { port } => inbound(&shared, &runtime, port, req).await,
        Direction::Outbound | Direction::Gateway { .. } => routed(&shared, &runtime, direction, req).await,
    };
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let (reporter, source, destination) = match direction {
        Direction::Inbound { .. } => ("destination", &runtime.unknown, &runtime.me),
        _ => ("source", &runtime.me, record.destination.as_ref().unwrap_or(&runtime.unknown)),
    };
    shared.stats.record(&RequestRecord {
        reporter,
        source,
        destination,
        service: &record.service,
        code: resp.status().as_u16(),
        flags: record.flags,
        millis,
    });
    resp.headers_mut().insert(header::SERVER, HeaderValue::from_static(server_header));
    resp
}

/// What the metrics need to know about how a request was routed.
struct Record {
    /// None when the destination is not a known workload.
    destination: Option<Arc<Peer>>,
    service: String,
    flags: &'static str,
}

fn local(l: &Local, service: String) -> (Response<Body>, Record) {
    (net::text(l.status, l.body), Record { destination: None, service, flags: l.flags })
}

async fn routed(
    shared: &Shared,
    runtime: &Runtime,
    direction: Direction,
    req: Request<Incoming>,
) -> (Response<Body>, Record) {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    let table = match direction {
        Direction::Gateway { port } => runtime.listeners.get(&port),
        _ => runtime.outbound.get(&destination_port(req.uri(), &authority)),
    };
    let view = RequestView {
        method: req.method().as_str(),
        authority: &authority,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let vhost = table.and_then(|t| t.virtual_host(&authority));
    let Some(vhost) = vhost else {
        return match direction {
            // ALLOW_ANY: a host the mesh does not know passes through to where it points.
            Direction::Outbound => passthrough(shared, &authority, req).await,
            _ => local(&NO_ROUTE, authority),
        };
    };
    let Some(route) = vhost.route(&view) else { return local(&NO_ROUTE, vhost.name.clone()) };
    let clusters = match &route.action {
        RouteAction::Direct { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return (net::text(status, body), Record { destination: None, service: vhost.name.clone(), flags: "" });
        }
        RouteAction::Clusters(c) => c,
    };
    let total = route::total_weight(clusters);
    let cluster_name = route::pick_weighted(clusters, if total == 0 { 0 } else { fastrand::u64(..total) });
    let Some(cluster) = cluster_name.and_then(|n| runtime.clusters.get(n)) else {
        return local(&NO_CLUSTER, vhost.name.clone());
    };
    let Some((endpoint, peer)) = cluster.pick() else { return local(&NO_HEALTHY, cluster.service.clone()) };
    let destination = Some(peer.clone());
    let service = cluster.service.clone();
    match forward(shared, endpoint.address, req, true).await {
        Ok(resp) => (resp, Record { destination, service, flags: "" }),
        Err(()) => {
            let (resp, mut rec) = local(&CONNECT_FAILURE, service);
            rec.destination = destination;
            (resp, rec)
        }
    }
}

async fn inbound(shared: &Shared, runtime: &Runtime, port: u16, req: Request<Incoming>) -> (Response<Body>, Record) {
    let service = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let Some(Some(app)) = runtime.inbound.get(&port) else { return local(&CONNECT_FAILURE, service) };
    match forward(shared, *app, req, false).await {
        Ok(resp) => (resp, Record { destination: None, service, flags: "" }),
        Err(()) => local(&CONNECT_FAILURE, service),
    }
}

async fn passthrough(shared: &Shared, authority: &str, req: Request<Incoming>) -> (Response<Body>, Record) {
    let port = destination_port(req.uri(), authority);
    let host = route::strip_port(authority).trim_start_matches('[').trim_end_matches(']').to_string();
    let addr = match tokio::net::lookup_host((host.as_str(), port)).await.ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => return local(&CONNECT_FAILURE, "PassthroughCluster".into()),
    };
    match forward(shared, addr, req, true).await {
        Ok(resp) => (resp, Record { destination: None, service: "PassthroughCluster".into(), flags: "" }),
        Err(()) => local(&CONNECT_FAILURE, "PassthroughCluster".into()),
    }
}

/// The port a request is for: from an absolute URI or the Host header; 80 when absent.
fn destination_port(uri: &Uri, authority: &str) -> u16 {
    if let Some(p) = uri.port_u16() {
        return p;
    }
    let host = route::strip_port(authority);
    authority.get(host.len() + 1..).and_then(|p| p.parse().ok()).unwrap_or(80)
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

/// Headers that belong to one hop and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter_map(|s| HeaderName::from_bytes(s.as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Sends the request to `addr` keeping its Host, and returns the upstream response.
/// `edge` is true where Envoy acts as the client-side proxy (it adds request ids and attempt counts).
async fn forward(shared: &Shared, addr: SocketAddr, req: Request<Incoming>, edge: bool) -> Result<Response<Body>, ()> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let host = parts.uri.authority().map(|a| a.as_str().to_string());
    parts.uri = format!("http://{addr}{path_and_query}").parse().map_err(|_| ())?;
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            parts.headers.insert(header::HOST, h);
        }
    }
    if edge {
        if !parts.headers.contains_key("x-request-id") {
            if let Ok(v) = HeaderValue::from_str(&request_id()) {
                parts.headers.insert("x-request-id", v);
            }
        }
        parts.headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        parts.headers.insert("x-envoy-attempt-count", HeaderValue::from_static("1"));
    }
    let started = Instant::now();
    let upstream = Request::from_parts(parts, body.boxed());
    let resp = shared.client.request(upstream).await.map_err(|_| ())?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if edge {
        let ms = started.elapsed().as_millis().to_string();
        if let Ok(v) = HeaderValue::from_str(&ms) {
            parts.headers.insert("x-envoy-upstream-service-time", v);
        }
    }
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A random UUID v4, as Envoy generates for `x-request-id`.
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_port_from_uri_or_host() {
        assert_eq!(destination_port(&"http://httpbin:8000/get".parse().unwrap(), "httpbin:8000"), 8000);
        assert_eq!(destination_port(&"/get".parse().unwrap(), "httpbin:8000"), 8000);
        assert_eq!(destination_port(&"/get".parse().unwrap(), "httpbin"), 80);
    }

    #[test]
    fn the_gateway_appends_the_client_to_x_forwarded_for() {
        let peer: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, peer);
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        append_forwarded_for(&mut h, "10.0.0.1:1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.9,10.0.0.1");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }
}
