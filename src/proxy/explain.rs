//! Why the proxy answered a request as it did: a decision record for each of the last requests
//! that arrived with an `x-request-id`, served by the admin listener at `/explain?id=ID`.
//!
//! Only requests that carry their own id are recorded (lab checks send one, and so can a learner
//! with `curl -H 'x-request-id: mine'`), so ordinary traffic pays nothing. The reason texts are
//! pure functions of the decision and the outcome, unit-tested below.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::proxy::decide::{Decision, Listener};
use crate::proxy::outcome::{Flags, Reply};
use crate::proxy::route::Table;

/// How many records a proxy keeps (the oldest is dropped first).
pub const KEEP: usize = 256;

/// One request's record, as `/explain` returns it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Record {
    pub id: String,
    /// `gateway:8080`, `outbound:8000`.
    pub listener: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// `<namespace>/<virtualservice>#<rule>` (or the rule's name), when a route matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub status: u16,
    pub response_flags: String,
    /// The proxy's reason, in a sentence a learner can act on.
    pub reason: String,
}

#[derive(Default)]
pub struct Recorder {
    ring: Mutex<VecDeque<Arc<Record>>>,
}

impl Recorder {
    pub fn record(&self, r: Record) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(Arc::new(r));
    }

    /// The newest record with that id.
    pub fn find(&self, id: &str) -> Option<Arc<Record>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().find(|r| r.id == id).cloned()
    }
}

/// What the decision step chose, before the outcome is known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    pub listener: String,
    pub route: Option<String>,
    pub cluster: Option<String>,
    /// Set when the decision alone explains the answer (no route, no cluster, direct response).
    pub reason: Option<String>,
}

impl Routing {
    fn on(l: Listener) -> Routing {
        let listener = match l {
            Listener::Gateway { port } => format!("gateway:{port}"),
            Listener::Outbound { port } => format!("outbound:{port}"),
        };
        Routing { listener, ..Routing::default() }
    }
}

/// A gateway listener as the learner wrote it: Gateway servers on port 80 land on the pod's 8080.
fn gateway_port(container: u16) -> String {
    match container {
        8080 => "port 80 (8080 in the gateway pod)".into(),
        8443 => "port 443 (8443 in the gateway pod)".into(),
        p => format!("port {p}"),
    }
}

/// The decision, in words. `table` is the route table the decision looked in.
pub fn routing(decision: &Decision<'_>, listener: Listener, table: Option<&Table>, authority: &str) -> Routing {
    let host = crate::uri::strip_port(authority);
    match decision {
        Decision::Reply { reply: Reply::NoRoute, service } => {
            let reason = match (listener, table) {
                (Listener::Gateway { port }, None) => {
                    format!("the gateway has no HTTP listener on port {port}: no Gateway server opens it")
                }
                (Listener::Gateway { port }, Some(t)) if t.hosts().is_empty() => format!(
                    "the gateway's listener on {} has no routes: no VirtualService that names this \
                     Gateway in `gateways:` has a host the Gateway's servers accept (a VirtualService without \
                     `gateways:` applies only to sidecars, as if it said `mesh`)",
                    gateway_port(port)
                ),
                (Listener::Gateway { port }, Some(t)) if t.virtual_host(authority).is_none() => format!(
                    "no route on the gateway's listener on {} is for host {host:?}; it routes: {}",
                    gateway_port(port),
                    t.hosts().join(", ")
                ),
                _ => format!(
                    "host {host:?} matched the routes of {service}, but none of them matches this request's \
                     method, path and headers"
                ),
            };
            Routing { reason: Some(reason), ..Routing::on(listener) }
        }
        Decision::Reply { reply: Reply::NoCluster, service } => Routing {
            reason: Some(format!(
                "the route for {service} sends to a destination that does not exist: no Service has that \
                 `host`, or no DestinationRule defines that `subset` (Envoy's NC, cluster not found)"
            )),
            ..Routing::on(listener)
        },
        Decision::Reply { reply, .. } => {
            Routing { reason: Some(format!("the proxy answered itself: {reply:?}")), ..Routing::on(listener) }
        }
        Decision::Direct { status, service, .. } if service.as_ref() == "BlackHoleCluster" => Routing {
            cluster: Some("BlackHoleCluster".into()),
            reason: Some(format!(
                "host {host:?} is not in the mesh's registry and outboundTrafficPolicy is REGISTRY_ONLY: \
                 answered {} (add a ServiceEntry for it)",
                status.as_u16()
            )),
            ..Routing::on(listener)
        },
        Decision::Direct { status, .. } => Routing {
            reason: Some(format!("the route answers directly with {} (directResponse)", status.as_u16())),
            ..Routing::on(listener)
        },
        Decision::Redirect { status, location, .. } => Routing {
            reason: Some(format!("the route redirects with {} to {location}", status.as_u16())),
            ..Routing::on(listener)
        },
        Decision::Preflight { .. } => Routing {
            reason: Some("a CORS preflight, answered by the route's corsPolicy".into()),
            ..Routing::on(listener)
        },
        Decision::Passthrough => Routing {
            cluster: Some("PassthroughCluster".into()),
            reason: Some(format!(
                "host {host:?} is not in the mesh's registry: passed through to it (outboundTrafficPolicy \
                 ALLOW_ANY)"
            )),
            ..Routing::on(listener)
        },
        Decision::Forward(f) => Routing {
            route: Some(f.route.name.clone()),
            cluster: Some(f.weighted.cluster.clone()),
            ..Routing::on(listener)
        },
    }
}

/// The reason for a forwarded request, from what the router reported.
pub fn forwarded(route: &str, cluster: &str, status: u16, flags: Flags) -> String {
    let to = format!("route {route} sent it to cluster {cluster}");
    let what = if flags.contains(Flags::FAULT_INJECTED) {
        format!("the route's fault injection aborted it with {status}")
    } else if flags.contains(Flags::NO_HEALTHY_UPSTREAM) {
        "the cluster has no healthy endpoint (no ready pod behind that Service or subset)".into()
    } else if flags.contains(Flags::UPSTREAM_TIMEOUT) {
        "no answer came before the route's timeout".into()
    } else if flags.contains(Flags::UPSTREAM_CONNECT_FAILURE) {
        "connecting to the endpoint failed (is the app running and listening?)".into()
    } else if flags.contains(Flags::UPSTREAM_TERMINATION) {
        "the endpoint reset the connection before answering".into()
    } else if flags.contains(Flags::UPSTREAM_PROTOCOL_ERROR) {
        "the endpoint's answer was not valid HTTP".into()
    } else {
        format!("the app answered {status}")
    };
    let retried = if flags.contains(Flags::RETRY_LIMIT_EXCEEDED) { ", after every retry" } else { "" };
    let delayed = if flags.contains(Flags::DELAY_INJECTED) { " (after an injected delay)" } else { "" };
    format!("{to}{delayed}; {what}{retried}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot;

    fn table(hosts: &[&str]) -> Table {
        let vhosts: Vec<snapshot::VirtualHost> = hosts
            .iter()
            .map(|h| snapshot::VirtualHost {
                name: format!("{h}:80"),
                https_redirect: false,
                domains: vec![h.to_string()],
                routes: vec![],
            })
            .collect();
        Table::new(&vhosts)
    }

    fn no_route(service: &str) -> Decision<'static> {
        Decision::Reply { reply: Reply::NoRoute, service: service.into() }
    }

    #[test]
    fn a_gateway_without_bound_routes_says_so() {
        let r = routing(&no_route("x"), Listener::Gateway { port: 8080 }, Some(&table(&[])), "httpbin.example.com");
        let reason = r.reason.unwrap();
        assert!(reason.contains("has no routes") && reason.contains("`gateways:`"), "{reason}");
    }

    #[test]
    fn an_unknown_host_at_the_gateway_lists_the_hosts_it_routes() {
        let t = table(&["httpbin.example.com"]);
        let r =
            routing(&no_route("other.example.com"), Listener::Gateway { port: 8080 }, Some(&t), "other.example.com");
        assert_eq!(
            r.reason.unwrap(),
            "no route on the gateway's listener on port 80 (8080 in the gateway pod) is for host \
             \"other.example.com\"; it routes: httpbin.example.com"
        );
    }

    #[test]
    fn a_known_host_without_a_matching_rule_is_told_apart() {
        let t = table(&["httpbin.example.com"]);
        let d = no_route("httpbin.example.com:80");
        let r = routing(&d, Listener::Gateway { port: 8080 }, Some(&t), "httpbin.example.com:8080");
        assert!(r.reason.unwrap().contains("none of them matches"));
    }

    #[test]
    fn a_missing_destination_is_a_missing_cluster() {
        let d = Decision::Reply { reply: Reply::NoCluster, service: "httpbin.example.com:80".into() };
        let r = routing(&d, Listener::Gateway { port: 8080 }, None, "httpbin.example.com");
        assert!(r.reason.unwrap().contains("no Service has that `host`"));
    }

    #[test]
    fn forwarded_reasons_follow_the_flags() {
        let c = "outbound|8000||httpbin.default.svc.cluster.local";
        assert_eq!(
            forwarded("default/httpbin#0", c, 200, Flags::default()),
            format!("route default/httpbin#0 sent it to cluster {c}; the app answered 200")
        );
        let mut f = Flags::default();
        f.set(Flags::NO_HEALTHY_UPSTREAM);
        assert!(forwarded("r", c, 503, f).contains("no healthy endpoint"));
        let mut f = Flags::default();
        f.set(Flags::UPSTREAM_CONNECT_FAILURE);
        f.set(Flags::RETRY_LIMIT_EXCEEDED);
        assert!(forwarded("r", c, 503, f).ends_with("listening?), after every retry"));
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let rec = Recorder::default();
        let r = |id: String| Record {
            id,
            listener: "gateway:8080".into(),
            method: "GET".into(),
            authority: "h".into(),
            path: "/".into(),
            route: None,
            cluster: None,
            status: 404,
            response_flags: "NR".into(),
            reason: String::new(),
        };
        for i in 0..KEEP + 10 {
            rec.record(r(format!("id-{i}")));
        }
        assert!(rec.find("id-0").is_none());
        assert!(rec.find("id-9").is_none());
        assert!(rec.find("id-10").is_some());
        assert!(rec.find(&format!("id-{}", KEEP + 9)).is_some());
    }
}
