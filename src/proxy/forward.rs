//! The request path, in phases: decide (pure, `decide`), act (`router`: fault, timeout,
//! retries; or one straight try for inbound and passthrough), answer locally from one table
//! (`outcome::Reply`), and one outcome per request, completed when the response body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;

use crate::authz;
use crate::jwt::TokenAt;
use crate::net::{self, Body};
use crate::proxy::connection::{Connection, Reset};
use crate::proxy::decide::{self, Decision, Listener};
use crate::proxy::edits;
use crate::proxy::exchange;
use crate::proxy::explain::{self, Routing};
use crate::proxy::outcome::{self, set_header, Outcome, Reply};
use crate::proxy::route::{self, RequestView};
use crate::proxy::router::{self, Routed, Upstream};
use crate::proxy::runtime::Runtime;
use crate::proxy::stats::{Reporter, Sides};
use crate::proxy::Shared;
use crate::snapshot::{Discovery, MtlsMode, Role};

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

pub async fn handle(
    shared: Arc<Shared>,
    direction: Direction,
    mut req: Request<Incoming>,
    conn: Arc<Connection>,
) -> Result<Response<Body>, Reset> {
    let started = Instant::now();
    if let Direction::Gateway { .. } = direction {
        // Istio's gateways use the remote address: the client's IP is appended to X-Forwarded-For.
        append_forwarded_for(req.headers_mut(), conn.peer);
    }
    let runtime = shared.runtime.borrow().clone();
    let server_header = if runtime.snapshot.proxy.role == Role::Gateway { "istio-envoy" } else { "envoy" };
    let request_bytes = outcome::request_bytes(&req);
    let (reporter, source) = match direction {
        Direction::Inbound { .. } => (
            Reporter::Destination,
            exchange::caller(req.headers_mut(), &conn.caller).unwrap_or_else(|| runtime.unknown.clone()),
        ),
        _ => (Reporter::Source, runtime.me.clone()),
    };
    if matches!(direction, Direction::Outbound) && req.method() == http::Method::CONNECT {
        return crate::proxy::tcp::connect(&shared, &runtime, req).await;
    }
    // Before anything reads the request (authorization, routing, telemetry, the upstream).
    let refused = normalize(&mut req, runtime.snapshot.path_normalization);
    // Only requests that carry their own id are explained (the record costs nothing otherwise).
    let explain_id = match direction {
        Direction::Inbound { .. } => None,
        _ => req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    let request_line =
        explain_id.as_ref().map(|_| (req.method().to_string(), req.uri().path().to_string(), authority_of(&req)));
    let span = start_span(&runtime, direction, &mut req, &conn);
    let access_log = match direction {
        Direction::Inbound { .. } => &runtime.inbound_access_log,
        _ => &runtime.access_log,
    };
    let access = access_log.clone().map(|config| {
        let entry = access_entry(&req, &conn, config.format.as_deref().map(Vec::as_slice));
        outcome::AccessEnd { config, entry }
    });
    let request = runtime.capture.as_ref().map(|names| Box::new(capture(&req, &conn, names)));
    // `destination.port` is read only by a Telemetry's expressions: worked out only for them.
    let destination_port = match direction {
        _ if request.is_none() => 0,
        Direction::Inbound { port } | Direction::Gateway { port } => port,
        Direction::Outbound => outbound_port(&req, &conn, &authority_of(&req)),
    };
    let name_upstream = span.is_some() || access.is_some();
    let (mut routed, service, routing) = match direction {
        Direction::Inbound { port } => {
            // The mode may have changed since the connection was accepted (Envoy drains the
            // old filter chains): a plaintext connection kept alive from before STRICT is
            // reset at its next request; an mTLS one under DISABLE is answered, then closed.
            let listener = runtime.inbound.get(&port);
            let mode = listener.map(|i| i.mtls);
            if mode == Some(MtlsMode::Strict) && !conn.mtls() {
                return Err(Reset("plaintext under STRICT mutual TLS"));
            }
            if let Some(refused) = refused.map(Routed::reply).or_else(|| admit(&runtime, &conn, port, &mut req)) {
                let service = listener.map_or_else(|| "unknown".into(), |i| i.service.clone());
                (refused, service, None)
            } else {
                client_cert_header(req.headers_mut(), &conn, runtime.me.principal.as_deref());
                let (mut r, s) = inbound(&runtime, &shared, port, conn.original_dst.is_some(), req).await;
                if mode == Some(MtlsMode::Disable) && conn.mtls() {
                    r.response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                (r, s, None)
            }
        }
        // The gateway's jwt_authn and RBAC filters run before its router.
        Direction::Gateway { port } => {
            match refused.map(Routed::reply).or_else(|| admit(&runtime, &conn, port, &mut req)) {
                Some(refused) => (refused, "unknown".into(), None),
                None => routed(&runtime, &shared, direction, req, &conn, explain_id.is_some(), name_upstream).await?,
            }
        }
        Direction::Outbound => match refused {
            Some(reply) => (Routed::reply(reply), "unknown".into(), None),
            None => routed(&runtime, &shared, direction, req, &conn, explain_id.is_some(), name_upstream).await?,
        },
    };
    if let (Some(id), Some((method, path, authority)), Some(routing)) = (explain_id, request_line, routing) {
        let status = routed.response.status().as_u16();
        let reason = match (&routing.reason, &routing.route, &routing.cluster) {
            (Some(r), _, _) => r.clone(),
            (None, Some(route), Some(cluster)) => explain::forwarded(route, cluster, status, routed.flags),
            _ => format!("answered {status}"),
        };
        shared.explain.record(explain::Record {
            id,
            listener: routing.listener,
            method,
            authority,
            path,
            route: routing.route,
            cluster: routing.cluster,
            status,
            response_flags: routed.flags.to_string(),
            reason,
        });
    }
    // Without a sidecar the local forwarder stands in for kube-proxy, which only rewrites
    // addresses: when the endpoint resets or refuses, the client's own connection is reset
    // (curl: 000, exit 56), not answered by a proxy.
    if runtime.snapshot.proxy.role == Role::Plain
        && (routed.flags.contains(outcome::Flags::UPSTREAM_CONNECT_FAILURE)
            || routed.flags.contains(outcome::Flags::UPSTREAM_TERMINATION))
    {
        return Err(Reset("the endpoint reset or refused the connection"));
    }
    let destination = match direction {
        Direction::Inbound { .. } => runtime.me.clone(),
        _ => routed.destination.take().unwrap_or_else(|| runtime.unknown.clone()),
    };
    // Both SPIFFE ids when the hop was mutual TLS: the client's certificate on the way in,
    // the endpoint's on the way out.
    let principals = match direction {
        Direction::Inbound { .. } => conn.peer_identity.clone().zip(runtime.me.principal.clone()),
        _ => runtime.me.principal.clone().zip(destination.principal.clone()),
    };
    routed.response.headers_mut().insert(header::SERVER, HeaderValue::from_static(server_header));
    let (operation, cluster) = match (direction, routed.upstream.take()) {
        (Direction::Inbound { port }, _) if name_upstream => {
            (format!("{service}:{port}/*"), format!("inbound|{port}||"))
        }
        (_, Some(upstream)) => upstream,
        _ => (format!("{service}/*"), "-".into()),
    };
    let access = access.map(|mut a| {
        a.entry.from_upstream = routed.upstream_host.is_some();
        a.entry.upstream_host = routed.upstream_host;
        a.entry.upstream_cluster = (cluster != "-").then(|| cluster.clone());
        a
    });
    let span =
        span.map(|open| crate::proxy::outcome::SpanEnd { open, operation, cluster, exporter: shared.spans.clone() });
    let outcome = Outcome {
        span,
        access,
        stats: shared.stats.clone(),
        sides: Sides { reporter, source, destination, service, principals, overrides: runtime.metrics.clone() },
        request,
        destination_port,
        mtls: conn.mtls(),
        code: routed.response.status().as_u16(),
        flags: routed.flags,
        started,
        active: routed.active.take(),
        request_bytes,
        response_header_bytes: 0,
    };
    Ok(outcome::finish(routed.response, outcome))
}

/// This hop's span when the request is traced (sidecars and gateways; a plain forwarder, like
/// a pod without Envoy, takes no part), with the tags Istio's spans carry from the request.
/// A client-side proxy gives the request its `x-request-id` here, as Envoy's edge does.
fn start_span(
    runtime: &Runtime,
    direction: Direction,
    req: &mut Request<Incoming>,
    conn: &Connection,
) -> Option<crate::proxy::spans::Open> {
    if runtime.snapshot.proxy.role == Role::Plain {
        return None;
    }
    let inbound = matches!(direction, Direction::Inbound { .. });
    let telemetry = runtime.snapshot.telemetry(inbound);
    let kind = match direction {
        Direction::Inbound { .. } => crate::trace::Kind::Server,
        _ => {
            if !req.headers().contains_key("x-request-id") {
                set_header(req.headers_mut(), "x-request-id", &request_id());
            }
            crate::trace::Kind::Client
        }
    };
    let mut open =
        crate::proxy::spans::start(req.headers_mut(), kind, telemetry.sampling_percent(), &mut fastrand::Rng::new())?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let me = &runtime.snapshot.proxy;
    open.tags = vec![
        ("component", "proxy".into()),
        ("node_id", runtime.exchange.as_ref().and_then(|(id, _)| id.to_str().ok()).unwrap_or("-").into()),
        ("guid:x-request-id", header("x-request-id")),
        ("http.method", req.method().to_string()),
        ("http.url", format!("http://{}{}", authority_of(req), req.uri().path_and_query().map_or("/", |p| p.as_str()))),
        ("http.protocol", format!("{:?}", req.version())),
        ("user_agent", header("user-agent")),
        ("downstream_cluster", "-".into()),
        ("peer.address", conn.peer.ip().to_string()),
        ("istio.namespace", me.namespace.clone()),
        ("istio.mesh_id", "cluster.local".into()),
        ("istio.canonical_service", me.labels.get("app").cloned().unwrap_or_else(|| me.workload.clone())),
        ("istio.canonical_revision", me.labels.get("version").cloned().unwrap_or_else(|| "latest".into())),
    ];
    use crate::snapshot::telemetry::SpanTag;
    open.custom = telemetry
        .span_tags
        .iter()
        .filter_map(|(name, tag)| {
            let value = match tag {
                SpanTag::Literal(v) => Some(v.clone()),
                SpanTag::Environment { name, default } => std::env::var(name).ok().or_else(|| default.clone()),
                SpanTag::Header { name, default } => req
                    .headers()
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| default.clone()),
            };
            value.map(|v| (name.clone(), v))
        })
        .collect();
    Some(open)
}

/// What an access-log line knows when the request arrives.
fn access_entry(
    req: &Request<Incoming>,
    conn: &Connection,
    format: Option<&[crate::proxy::access_format::Piece]>,
) -> crate::proxy::access_log::Entry {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let request_headers = format
        .into_iter()
        .flat_map(|f| crate::proxy::access_format::header_names(f, false))
        .filter_map(|name| Some((name.to_string(), header(name)?)))
        .collect();
    crate::proxy::access_log::Entry {
        start: Some(std::time::SystemTime::now()),
        method: req.method().to_string(),
        path: req.uri().path_and_query().map_or_else(|| "/".into(), |p| p.as_str().to_string()),
        protocol: format!("{:?}", req.version()),
        bytes_received: header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0),
        forwarded_for: header("x-forwarded-for"),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
        authority: authority_of(req),
        downstream_local: Some(conn.local),
        downstream_remote: Some(conn.peer),
        server_name: conn.sni.clone(),
        request_headers,
        ..Default::default()
    }
}

/// What a Telemetry expression may read of the request: its line, and the headers named.
fn capture(req: &Request<Incoming>, conn: &Connection, names: &[String]) -> crate::cel::Request {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let always = ["user-agent", "x-request-id"];
    crate::cel::Request {
        method: req.method().to_string(),
        host: authority_of(req),
        path: req.uri().path_and_query().map_or_else(|| "/".into(), |p| p.as_str().to_string()),
        scheme: if conn.sni.is_some() || conn.mtls() { "https" } else { "http" },
        protocol: match req.version() {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        headers: always
            .iter()
            .map(|n| n.to_string())
            .chain(names.iter().filter(|n| !always.contains(&n.as_str())).cloned())
            .filter_map(|n| {
                let value = header(&n)?;
                Some((n, value))
            })
            .collect(),
    }
}

/// The request's authority: the URI's (proxy form) or the Host header.
fn authority_of<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default()
}

fn listener_of<B>(direction: Direction, req: &Request<B>, conn: &Connection, authority: &str) -> Listener {
    match direction {
        Direction::Gateway { port } => Listener::Gateway { port },
        _ => Listener::Outbound { port: outbound_port(req, conn, authority) },
    }
}

/// The port an outbound request is for: the one the app dialled when its connection was
/// captured (Envoy picks the listener by the original destination), else the request's.
fn outbound_port<B>(req: &Request<B>, conn: &Connection, authority: &str) -> u16 {
    conn.original_dst.map_or_else(|| destination_port(req.uri(), authority), |d| d.port())
}

async fn routed(
    runtime: &Runtime,
    shared: &Shared,
    direction: Direction,
    req: Request<Incoming>,
    conn: &Connection,
    explain: bool,
    traced: bool,
) -> Result<(Routed, Arc<str>, Option<Routing>), Reset> {
    let authority = authority_of(&req);
    let listener = listener_of(direction, &req, conn, &authority);
    let mut rng = fastrand::Rng::new();
    let view = RequestView {
        method: req.method().as_str(),
        authority: &authority,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let decision = decide::decide(runtime, listener, &view, conn.peer.ip(), &mut rng);
    let routing = explain.then(|| {
        let table = match listener {
            Listener::Gateway { port } => runtime.listeners.get(&port),
            Listener::Outbound { port } => runtime.outbound.get(&port),
        };
        explain::routing(&decision, listener, table, &authority)
    });
    let (routed, service) = match decision {
        Decision::Reply { reply, service } => (Routed::reply(reply), service),
        Decision::Direct { status, body, service } => (Routed::plain(net::text(status, body)), service),
        Decision::Redirect { status, location, service } => {
            let mut resp = net::text(status, "");
            set_header(resp.headers_mut(), "location", &location);
            (Routed::plain(resp), service)
        }
        Decision::Preflight { headers, service } => {
            let mut resp = net::text(http::StatusCode::OK, "");
            for (name, value) in headers {
                set_header(resp.headers_mut(), name, &value);
            }
            (Routed::plain(resp), service)
        }
        Decision::Passthrough => passthrough(shared, &authority, conn.original_dst, req).await?,
        Decision::Forward(fwd) => {
            let service = fwd.cluster.service.clone();
            // DNS and ORIGINAL_DST clusters (ServiceEntries) get their endpoints now.
            let resolved;
            let fwd = if fwd.cluster.resolves() {
                let port = destination_port(req.uri(), &authority);
                let addrs = resolve(fwd.cluster, &authority, port).await;
                if addrs.iter().any(|a| shared.is_own_address(*a)) {
                    return Err(Reset("the request is addressed to this proxy's own listener"));
                }
                resolved = Arc::new(fwd.cluster.resolved(&addrs, &shared.endpoints));
                decide::Forward { cluster: &resolved, ..fwd }
            } else {
                fwd
            };
            let timeout = requested_timeout(req.headers()).or(fwd.route.policy.timeout_ms.map(Duration::from_millis));
            let policy = &fwd.route.policy;
            let mut up = Upstream::new(req, policy.retry.attempts > 0 || !fwd.mirrors.is_empty()).await;
            up.worker = conn.worker;
            edge_headers(&mut up.headers);
            // Istio's metadata exchange, to the mesh's own Services (not to ServiceEntry hosts).
            if matches!(fwd.cluster.discovery, Discovery::Eds) {
                exchange::announce(&mut up.headers, &runtime.exchange);
            }
            edit_request(&fwd, &mut up);
            for mirror in &fwd.mirrors {
                shadow(mirror, &up, &mut rng);
            }
            let upstream_started = Instant::now();
            let mut routed = router::route(&fwd, up, timeout, &mut rng).await;
            if routed.from_upstream() {
                let ms = upstream_started.elapsed().as_millis().to_string();
                let headers = routed.response.headers_mut();
                set_header(headers, "x-envoy-upstream-service-time", &ms);
                edits::apply(headers, &policy.headers.response);
                edits::apply(headers, &fwd.weighted.headers.response);
            }
            if let (Some(cors), Some(origin)) = (&policy.cors, &fwd.cors_origin) {
                for (name, value) in edits::response_headers(cors, origin) {
                    set_header(routed.response.headers_mut(), name, &value);
                }
            }
            if traced {
                // Istio's route decorator names the span: `reviews.default.svc.cluster.local:9080/*`.
                let port = fwd.cluster.name.split('|').nth(1).unwrap_or_default();
                routed.upstream = Some((format!("{service}:{port}/*"), fwd.cluster.name.clone()));
            }
            (routed, service)
        }
    };
    Ok((routed, service, routing))
}

/// The route's rewrites and header edits, then the destination's header edits.
fn edit_request(fwd: &decide::Forward<'_>, up: &mut Upstream) {
    let policy = &fwd.route.policy;
    if let Some(rw) = &policy.rewrite {
        up.path_and_query = edits::rewrite_path(fwd.route, &up.path_and_query, rw);
        if let Some(a) = &rw.authority {
            set_header(&mut up.headers, "host", a);
        }
    }
    edits::apply(&mut up.headers, &policy.headers.request);
    edits::apply(&mut up.headers, &fwd.weighted.headers.request);
}

/// Sends a copy of the request to a mirror cluster, fire and forget: the Host gets `-shadow`
/// and the answer is read and dropped.
fn shadow(cluster: &Arc<crate::proxy::clusters::Cluster>, up: &Upstream, rng: &mut fastrand::Rng) {
    let Some(mut req) = up.copy() else { return };
    let Some(host) = cluster.pick(None, &[], rng) else { return };
    let host_header = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let shadow_host = edits::shadow_host(host_header);
    set_header(req.headers_mut(), "host", &shadow_host);
    let (state, addr, tls) = (host.state.clone(), host.endpoint.address, host.tls.clone());
    let (breakers, options, worker) = (cluster.breakers.clone(), cluster.options.clone(), up.worker);
    tokio::spawn(async move {
        if let Ok(resp) = state.pool.send(addr, tls.as_deref(), (&breakers, &options, worker), req).await {
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        }
    });
}

/// `x-envoy-upstream-rq-timeout-ms` overrides the route timeout for one request (Envoy reads
/// it at the edge; `0` disables the timeout).
fn requested_timeout(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get("x-envoy-upstream-rq-timeout-ms")?.to_str().ok()?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// What the client-side proxy adds to a request it forwards (Envoy's edge behaviour).
fn edge_headers(headers: &mut HeaderMap) {
    headers.remove("x-envoy-upstream-rq-timeout-ms");
    exchange::strip(headers);
    if !headers.contains_key("x-request-id") {
        set_header(headers, "x-request-id", &request_id());
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
}

/// An inbound request to the app's `port`. A captured connection reaches the app on
/// localhost at the port it was sent to, also when no Service names the port (Istio's
/// InboundPassthroughCluster).
async fn inbound(
    runtime: &Runtime,
    shared: &Shared,
    port: u16,
    captured: bool,
    req: Request<Incoming>,
) -> (Routed, Arc<str>) {
    let on_localhost = SocketAddr::from(([127, 0, 0, 1], port));
    let (service, app) = match runtime.inbound.get(&port) {
        Some(inbound) => (inbound.service.clone(), inbound.app.or(captured.then_some(on_localhost))),
        None if captured => ("InboundPassthroughCluster".into(), Some(on_localhost)),
        None => return (Routed::reply(Reply::NoRoute), "unknown".into()),
    };
    let Some(app) = app else {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let e = crate::proxy::upstream::Error::ConnectFailure { addr, source: std::io::ErrorKind::NotConnected.into() };
        return (Routed::reply(Reply::Upstream(e)), service);
    };
    let up = Upstream::new(req, false).await;
    let routed = match router::send_once(&shared.endpoints.get(app), app, up).await {
        Ok(resp) => Routed { upstream_host: Some(app), ..Routed::plain(resp) },
        Err(reply) => Routed::reply(reply),
    };
    (routed, service)
}

/// The addresses of a DNS cluster's names, or (ORIGINAL_DST) of the host the client asked for;
/// empty when nothing resolves (the router then answers `no healthy upstream`, as Envoy does).
async fn resolve(cluster: &crate::proxy::clusters::Cluster, authority: &str, port: u16) -> Vec<SocketAddr> {
    let names: Vec<String> = match &cluster.discovery {
        Discovery::Dns(names) => names.clone(),
        Discovery::OriginalDst => {
            let host = route::strip_port(authority).trim_start_matches('[').trim_end_matches(']');
            vec![format!("{host}:{port}")]
        }
        Discovery::Eds | Discovery::Static => vec![],
    };
    let mut out = Vec::new();
    for name in names {
        if let Ok(addrs) = tokio::net::lookup_host(name.as_str()).await {
            out.extend(addrs);
        }
    }
    if matches!(cluster.discovery, Discovery::OriginalDst) {
        // One original destination, as the client's own lookup would give it (IPv4 first).
        out.sort_by_key(|a| !a.is_ipv4());
        out.truncate(1);
    }
    out
}

/// Istio's `ALLOW_ANY`: a host the mesh does not know goes where it points. A request that
/// points back at this proxy is closed unanswered, as Istio's outbound listener black-holes
/// traffic addressed to itself (otherwise it would forward to itself until out of sockets).
/// A request for a host the mesh does not know, sent on as it was: to the address the app
/// dialled when its connection was captured (Envoy's ORIGINAL_DST cluster), else to what the
/// request's host resolves to.
async fn passthrough(
    shared: &Shared,
    authority: &str,
    original_dst: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<(Routed, Arc<str>), Reset> {
    let service: Arc<str> = "PassthroughCluster".into();
    let port = destination_port(req.uri(), authority);
    let host = route::strip_port(authority).trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs: Vec<SocketAddr> = match original_dst {
        Some(dst) => vec![dst],
        None => match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(_) => vec![],
        },
    };
    if addrs.iter().any(|a| shared.is_own_address(*a)) {
        return Err(Reset("the request is addressed to this proxy's own listener"));
    }
    let Some(&addr) = addrs.first() else {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let e = crate::proxy::upstream::Error::ConnectFailure { addr, source: std::io::ErrorKind::NotFound.into() };
        return Ok((Routed::reply(Reply::Upstream(e)), service));
    };
    let mut up = Upstream::new(req, false).await;
    edge_headers(&mut up.headers);
    let mut routed = match router::send_once(&shared.endpoints.get(addr), addr, up).await {
        Ok(resp) => Routed { upstream_host: Some(addr), ..Routed::plain(resp) },
        Err(reply) => Routed::reply(reply),
    };
    // Istio's name for the cluster of hosts the mesh does not know.
    routed.upstream = Some((format!("{service}/*"), "PassthroughCluster".into()));
    Ok((routed, service))
}

/// The port a request is for: from an absolute URI or the Host header; 80 when absent.
fn destination_port(uri: &Uri, authority: &str) -> u16 {
    if let Some(p) = uri.port_u16() {
        return p;
    }
    let host = route::strip_port(authority);
    authority.get(host.len() + 1..).and_then(|p| p.parse().ok()).unwrap_or(80)
}

/// Istio's normalisation, before anything reads the request: a method that is not upper case
/// and a path the normalisation refuses (`%00`) get 400; otherwise the path is rewritten in
/// place (the query kept as sent), so authorization, routing and the app see the same path.
fn normalize<B>(req: &mut Request<B>, mode: crate::normalize::PathNormalization) -> Option<Reply> {
    if !crate::normalize::method_ok(req.method().as_str()) {
        return Some(Reply::BadRequest);
    }
    let path = match crate::normalize::path(req.uri().path(), mode) {
        Err(_) => return Some(Reply::BadPath),
        Ok(std::borrow::Cow::Borrowed(_)) => return None,
        Ok(std::borrow::Cow::Owned(p)) => p,
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // Fails closed: a path that cannot be written back is refused, never passed on as sent.
    let mut parts = req.uri().clone().into_parts();
    let Ok(path_and_query) = path_and_query.parse() else { return Some(Reply::BadPath) };
    parts.path_and_query = Some(path_and_query);
    match http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Some(Reply::BadPath),
    }
    None
}

/// Envoy's jwt_authn then RBAC filters, before routing, for one HTTP request on container
/// `port`: a token its RequestAuthentication refuses gets 401 with Envoy's text (no token
/// passes, without an identity); then the AuthorizationPolicies judge the request, with the
/// token's principal and claims. `Some` is the answer that refuses the request.
fn admit<B>(runtime: &Runtime, conn: &Connection, port: u16, req: &mut Request<B>) -> Option<Routed> {
    let snap = &runtime.snapshot;
    if snap.authz.is_empty() && snap.jwt.is_empty() {
        return None;
    }
    // Every token the request carries where a rule looks must verify (Envoy's jwt_authn: a
    // forged second token is not let through beside a good one); the first found names the
    // request's principal.
    let found = crate::jwt::find_tokens(&snap.jwt, req.headers(), req.uri().query());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut verified = Vec::with_capacity(found.len());
    // Envoy verifies the last extracted first; the first refusal is the answer.
    for f in found.iter().rev() {
        match crate::jwt::verify_found(&snap.jwt, f, now) {
            Ok(v) => verified.push((f, v)),
            Err(refusal) => {
                let mut routed = Routed::plain(net::text(refusal.status(), refusal.message()));
                let realm = format!(
                    "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
                    authority_of(req),
                    req.uri().path()
                );
                set_header(routed.response.headers_mut(), "www-authenticate", &realm);
                return Some(routed);
            }
        }
    }
    let mut principal = None;
    while let Some((f, v)) = verified.pop() {
        let rule = &snap.jwt[v.rule];
        if let (TokenAt::Header(name), false) = (&f.at, rule.forward_original_token) {
            req.headers_mut().remove(name.as_str());
        }
        if let Some(h) = &rule.output_payload_to_header {
            put_header(req.headers_mut(), h, &v.payload);
        }
        for (h, claim) in &rule.output_claim_to_headers {
            if let Some(value) = v.claims.get(claim).and_then(|c| c.as_str()) {
                put_header(req.headers_mut(), h, value);
            }
        }
        principal.get_or_insert(v);
    }
    let verified = principal;
    if snap.authz.is_empty() {
        return None;
    }
    let host = authority_of(req);
    let http = authz::Http {
        host: &host,
        method: req.method().as_str(),
        path: req.uri().path(),
        headers: req.headers(),
        request_principal: verified.as_ref().map(|v| v.principal.as_str()),
        claims: verified.as_ref().map(|v| &v.claims),
    };
    match authz::decide(&snap.authz, &attributes(conn, port, Some(http))) {
        authz::Verdict::Allow => None,
        authz::Verdict::Deny(_) => Some(Routed::reply(Reply::AccessDenied)),
    }
}

/// A header whose name comes from configuration.
fn put_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        headers.insert(n, v);
    }
}

/// What authorization judges a connection (and, for HTTP, a request) on.
pub fn attributes<'a>(conn: &'a Connection, port: u16, http: Option<authz::Http<'a>>) -> authz::Attrs<'a> {
    let principal = conn.peer_identity.as_deref().map(|p| p.strip_prefix("spiffe://").unwrap_or(p));
    authz::Attrs {
        principal,
        source_ip: conn.peer.ip(),
        remote_ip: conn.peer.ip(),
        destination_ip: conn.local.ip(),
        destination_port: port,
        sni: conn.sni.as_deref(),
        http,
    }
}

/// `x-forwarded-client-cert` as Istio's inbound sets it (Envoy's APPEND_FORWARD with the
/// subject and URI): a client that spoke mTLS is described, `By=` this workload; from a
/// plaintext client any such header is dropped (it could be forged).
fn client_cert_header(headers: &mut HeaderMap, conn: &Connection, me: Option<&str>) {
    const XFCC: &str = "x-forwarded-client-cert";
    let (Some(peer), Some(hash), Some(me)) = (&conn.peer_identity, &conn.peer_cert_hash, me) else {
        headers.remove(XFCC);
        return;
    };
    let element = format!("By={me};Hash={hash};Subject=\"\";URI={peer}");
    let value = match headers.get(XFCC).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{element}"),
        _ => element,
    };
    set_header(headers, XFCC, &value);
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    set_header(headers, "x-forwarded-for", &value);
}

pub use crate::trace::request_id;

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
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn a_request_can_set_its_own_timeout() {
        let mut h = HeaderMap::new();
        assert_eq!(requested_timeout(&h), None);
        h.insert("x-envoy-upstream-rq-timeout-ms", "250".parse().unwrap());
        assert_eq!(requested_timeout(&h), Some(Duration::from_millis(250)));
        edge_headers(&mut h);
        assert!(!h.contains_key("x-envoy-upstream-rq-timeout-ms"));
        assert!(h.contains_key("x-request-id"));
    }
}
