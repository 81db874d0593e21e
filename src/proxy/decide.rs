//! The decision step, pure: listener and request → route, its policy, the weighted destination
//! cluster, the consistent-hash key and the fault decision. Randomness is passed in, so every
//! rule is tested without sockets and without chance.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::proxy::clusters::Cluster;
use crate::proxy::edits;
use crate::proxy::outcome::Reply;
use crate::proxy::route::{self, RequestView};
use crate::proxy::runtime::Runtime;
use crate::snapshot::{Fault, HashOn, LbPolicy, OutboundMode, RouteAction, WeightedCluster};

/// A routed listener: the sidecar's outbound (by destination port) or a gateway port.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    Outbound { port: u16 },
    Gateway { port: u16 },
}

pub enum Decision<'a> {
    /// `redirect`: the status and where to.
    Redirect {
        status: StatusCode,
        location: String,
        service: Arc<str>,
    },
    /// A CORS preflight from an allowed origin, answered by the proxy.
    Preflight {
        headers: Vec<(&'static str, String)>,
        service: Arc<str>,
    },
    /// The proxy answers itself (no route, no cluster).
    Reply {
        reply: Reply,
        service: Arc<str>,
    },
    /// `directResponse`.
    Direct {
        status: StatusCode,
        body: &'a str,
        service: Arc<str>,
    },
    Forward(Forward<'a>),
    /// A host the mesh does not know, from a sidecar: Istio's `ALLOW_ANY` passes it through
    /// (under `REGISTRY_ONLY` the decision is a direct 502 instead).
    Passthrough,
}

pub struct Forward<'a> {
    pub route: &'a route::Route,
    /// The destination drawn by weight (its header edits apply after the route's).
    pub weighted: &'a WeightedCluster,
    pub cluster: &'a Arc<Cluster>,
    /// Mirror clusters drawn for this request (each by its own percentage).
    pub mirrors: Vec<&'a Arc<Cluster>>,
    /// The request's `Origin`, when the route's CORS policy allows it.
    pub cors_origin: Option<String>,
    /// The request's consistent-hash key, when the cluster hashes and the request has the key.
    pub hash: Option<u64>,
    pub fault: FaultDecision,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<u16>,
}

/// Envoy's fault filter: delay and abort are drawn independently, per million.
pub fn fault(f: Option<&Fault>, rng: &mut fastrand::Rng) -> FaultDecision {
    let Some(f) = f else { return FaultDecision::default() };
    let mut hit = |per_million: u32| per_million > 0 && rng.u32(..1_000_000) < per_million;
    FaultDecision {
        delay: f.delay.as_ref().filter(|d| hit(d.per_million)).map(|d| Duration::from_millis(d.delay_ms)),
        abort: f.abort.as_ref().filter(|a| hit(a.per_million)).map(|a| a.status),
    }
}

pub fn decide<'a>(
    rt: &'a Runtime,
    listener: Listener,
    view: &RequestView<'_>,
    peer: IpAddr,
    rng: &mut fastrand::Rng,
) -> Decision<'a> {
    let table = match listener {
        Listener::Gateway { port } => rt.listeners.get(&port),
        Listener::Outbound { port } => rt.outbound.get(&port),
    };
    let Some(vhost) = table.and_then(|t| t.virtual_host(view.authority)) else {
        return match listener {
            // Istio's catch-all virtual host: `allow_any` passes through, `block_all` answers 502.
            Listener::Outbound { .. } if rt.snapshot.outbound_policy == OutboundMode::RegistryOnly => {
                Decision::Direct { status: StatusCode::BAD_GATEWAY, body: "", service: "BlackHoleCluster".into() }
            }
            Listener::Outbound { .. } => Decision::Passthrough,
            Listener::Gateway { .. } => Decision::Reply { reply: Reply::NoRoute, service: view.authority.into() },
        };
    };
    if vhost.https_redirect {
        // Envoy's `require_tls: ALL`: the same host and path over https, before any route.
        let location = match view.query {
            Some(q) => format!("https://{}{}?{q}", view.authority, view.path),
            None => format!("https://{}{}", view.authority, view.path),
        };
        return Decision::Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            location,
            service: vhost.name.as_str().into(),
        };
    }
    let Some(route) = vhost.route(view) else {
        return Decision::Reply { reply: Reply::NoRoute, service: vhost.name.as_str().into() };
    };
    let service = || -> Arc<str> { vhost.name.as_str().into() };
    let origin = view.headers.get("origin").and_then(|o| o.to_str().ok());
    let cors_origin = origin.filter(|o| route.cors_allows(o));
    if let (Some(cors), true) = (&route.policy.cors, edits::is_preflight(view.method, view.headers)) {
        match cors_origin {
            Some(o) => return Decision::Preflight { headers: edits::preflight_headers(cors, o), service: service() },
            None if !cors.forward_unmatched_preflights => {
                return Decision::Preflight { headers: vec![], service: service() };
            }
            None => {}
        }
    }
    let clusters = match &route.action {
        RouteAction::Direct { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return Decision::Direct { status, body, service: service() };
        }
        RouteAction::Redirect(r) => {
            let path_and_query = match view.query {
                Some(q) => format!("{}?{q}", view.path),
                None => view.path.to_string(),
            };
            let location = edits::redirect_location(r, view.scheme, view.authority, &path_and_query);
            let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Decision::Redirect { status, location, service: service() };
        }
        RouteAction::Clusters(c) => c,
    };
    let total = route::total_weight(clusters);
    let Some(weighted) = route::pick_weighted(clusters, if total == 0 { 0 } else { rng.u64(..total) }) else {
        return Decision::Reply { reply: Reply::NoCluster, service: service() };
    };
    let Some((_, cluster)) = rt.clusters.get(&weighted.cluster) else {
        return Decision::Reply { reply: Reply::NoCluster, service: service() };
    };
    let hash = match &cluster.lb {
        LbPolicy::ConsistentHash(on) => hash_key(on, view, peer),
        _ => None,
    };
    let mirrors = route
        .policy
        .mirrors
        .iter()
        .filter(|m| m.per_million > 0 && rng.u32(..1_000_000) < m.per_million)
        .filter_map(|m| rt.clusters.get(&m.cluster).map(|(_, c)| c))
        .collect();
    Decision::Forward(Forward {
        route,
        weighted,
        cluster,
        mirrors,
        cors_origin: cors_origin.map(str::to_string),
        hash,
        fault: fault(route.policy.fault.as_ref(), rng),
    })
}

/// The consistent-hash key of a request, or None when it lacks the attribute (Envoy then
/// balances the request as if no hash policy were set).
pub fn hash_key(on: &HashOn, view: &RequestView<'_>, peer: IpAddr) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match on {
        HashOn::Header(name) => view.headers.get(name.as_str())?.as_bytes().hash(&mut h),
        HashOn::Query(name) => route::query_param(view.query, name)?.hash(&mut h),
        HashOn::SourceIp => peer.hash(&mut h),
        HashOn::Cookie(name) => view
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().split_once('=').filter(|(k, _)| k == name).map(|(_, v)| v))?
            .hash(&mut h),
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{self, FaultAbort, FaultDelay};
    use http::HeaderMap;

    fn view<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView { method: "GET", authority, scheme: "http", path, query: None, headers }
    }

    fn runtime(lb: LbPolicy, fault: Option<Fault>) -> Runtime {
        let cluster = "outbound|80||s.default.svc.cluster.local";
        let snap = serde_json::json!({
            "version": {"epoch": 1, "counter": 1},
            "proxy": {"namespace": "default", "pod": "p", "workload": "w", "labels": {},
                      "service_account": "default", "role": "gateway"},
            "inbound": [], "outbound": [],
            "listeners": [{"port": 8080, "protocol": "HTTP", "virtual_hosts": [{
                "name": "a.example.com:80", "domains": ["a.example.com"],
                "routes": [
                    {"name": "r1", "match": {"path": {"prefix": "/direct"}},
                     "action": {"direct": {"status": 418, "body": "teapot"}}},
                    {"name": "r2", "match": {"path": {"prefix": "/missing"}},
                     "action": {"clusters": [{"cluster": "outbound|80|v9|s.default.svc.cluster.local", "weight": 100}]}},
                    {"name": "r3", "match": {"path": {"prefix": "/"}},
                     "action": {"clusters": [{"cluster": cluster, "weight": 100}]},
                     "policy": {"retry": {"attempts": 0}, "fault": fault}}
                ]}]}],
            "clusters": {cluster: {"name": cluster, "service": "s.default.svc.cluster.local", "port": 80,
                                   "endpoints": [], "lb": lb}}
        });
        let snap: snapshot::Snapshot = serde_json::from_value(snap).unwrap();
        Runtime::new(snap, None, &Default::default(), None)
    }

    #[test]
    fn gateway_decisions_follow_envoys_rules() {
        let rt = runtime(LbPolicy::LeastRequest, None);
        let h = HeaderMap::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let gw = Listener::Gateway { port: 8080 };
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(matches!(
            decide(&rt, gw, &view("b.example.com", "/", &h), ip, &mut rng),
            Decision::Reply { reply: Reply::NoRoute, .. }
        ));
        assert!(matches!(
            decide(&rt, gw, &view("a.example.com", "/direct", &h), ip, &mut rng),
            Decision::Direct { status: StatusCode::IM_A_TEAPOT, body: "teapot", .. }
        ));
        assert!(matches!(
            decide(&rt, gw, &view("a.example.com", "/missing", &h), ip, &mut rng),
            Decision::Reply { reply: Reply::NoCluster, .. }
        ));
        match decide(&rt, gw, &view("a.example.com:80", "/get", &h), ip, &mut rng) {
            Decision::Forward(f) => {
                assert_eq!(f.route.name, "r3");
                assert_eq!(&*f.cluster.service, "s.default.svc.cluster.local");
                assert_eq!(f.fault, FaultDecision::default());
                assert_eq!(f.hash, None);
            }
            _ => panic!("expected a forward"),
        }
        // A sidecar passes unknown hosts through, unless the mesh allows only registry hosts.
        let out = Listener::Outbound { port: 80 };
        assert!(matches!(decide(&rt, out, &view("example.org", "/", &h), ip, &mut rng), Decision::Passthrough));
        let mut strict = rt.snapshot.clone();
        strict.outbound_policy = OutboundMode::RegistryOnly;
        let rt = Runtime::new(strict, None, &crate::proxy::clusters::Endpoints::default(), None);
        match decide(&rt, out, &view("example.org", "/", &h), ip, &mut rng) {
            Decision::Direct { status, body, service } => {
                assert_eq!((status.as_u16(), body, &*service), (502, "", "BlackHoleCluster"));
            }
            _ => panic!("REGISTRY_ONLY answers an unknown host with a direct 502"),
        }
    }

    #[test]
    fn faults_are_drawn_per_million() {
        let f = Fault {
            delay: Some(FaultDelay { delay_ms: 7000, per_million: 1_000_000 }),
            abort: Some(FaultAbort { status: 500, per_million: 0 }),
        };
        let mut rng = fastrand::Rng::with_seed(9);
        let d = fault(Some(&f), &mut rng);
        assert_eq!(d, FaultDecision { delay: Some(Duration::from_secs(7)), abort: None });
        let half = Fault { delay: None, abort: Some(FaultAbort { status: 503, per_million: 500_000 }) };
        let aborted = (0..10_000).filter(|_| fault(Some(&half), &mut rng).abort.is_some()).count();
        // Binomial(10000, 0.5): 6 standard deviations is ±300.
        assert!((4700..=5300).contains(&aborted), "{aborted}");
    }

    #[test]
    fn hash_keys_come_from_the_configured_attribute() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "jason".parse().unwrap());
        h.insert("cookie", "a=1; session=abc".parse().unwrap());
        let v = view("a", "/", &h);
        let ip: IpAddr = [127, 0, 0, 9].into();
        let user = hash_key(&HashOn::Header("x-user".into()), &v, ip);
        assert!(user.is_some());
        assert_eq!(user, hash_key(&HashOn::Header("x-user".into()), &v, ip));
        assert_eq!(hash_key(&HashOn::Header("x-other".into()), &v, ip), None);
        assert!(hash_key(&HashOn::Cookie("session".into()), &v, ip).is_some());
        assert_eq!(hash_key(&HashOn::Cookie("missing".into()), &v, ip), None);
        assert!(hash_key(&HashOn::SourceIp, &v, ip).is_some());
    }
}
