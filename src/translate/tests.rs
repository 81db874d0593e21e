//! Translation tested with YAML fixtures: resources as users write them, pods as the runner
//! registers them, and the snapshot a proxy would get.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::resources::parse::parse_documents;
use crate::resources::ResourceKey;
use crate::snapshot::{Discovery, ProxyIdentity};

const HTTPBIN: &str = "
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
";

fn resources(yaml: &str) -> BTreeMap<ResourceKey, Resource> {
    let mut out = BTreeMap::new();
    for (i, d) in parse_documents("fixture.yaml", yaml).expect("fixture parses").into_iter().enumerate() {
        let mut r = d.resource;
        r.set_default_namespace("default");
        // Creation order decides which VirtualService wins; keep the fixture's order.
        r.meta_mut().creation_timestamp = Some(format!("2026-01-01T00:00:{i:02}Z"));
        out.insert(r.key(), r);
    }
    out
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], role: Role) -> Workload {
    let mut w = Workload::new(ProxyIdentity {
        namespace: ns.into(),
        pod: name.into(),
        workload: name.split('-').next().unwrap_or(name).into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        service_account: "default".into(),
        role,
    });
    w.serving = true;
    w
}

/// A sidecar-injected httpbin pod whose inbound listener for 8080 is at `port`.
fn httpbin(name: &str, version: &str, port: u16) -> Workload {
    let mut p = pod("default", name, &[("app", "httpbin"), ("version", version)], Role::Sidecar);
    p.destinations.insert(8080, addr(port));
    p.intercepted.insert(8080);
    p.apps.insert(8080, addr(port + 1));
    p
}

/// The world of a fixture's resources and these workloads.
fn world(res: &BTreeMap<ResourceKey, Resource>, pods: &[Workload]) -> World {
    World::new(res.values().cloned(), pods.iter().cloned())
}

fn gateway_pod() -> Workload {
    pod("istio-system", "istio-ingressgateway-x", &[("istio", "ingressgateway")], Role::Gateway)
}

fn clusters_of(action: &RouteAction) -> Vec<(String, u32)> {
    match action {
        RouteAction::Clusters(c) => c.iter().map(|w| (w.cluster.clone(), w.weight)).collect(),
        RouteAction::Direct { .. } | RouteAction::Redirect(_) => vec![],
    }
}

#[test]
fn gateway_port_80_listens_on_the_target_port_and_routes_to_the_sidecar_inbound() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: httpbin-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: ['*']
  gateways: [httpbin-gateway]
  http: [{{route: [{{destination: {{host: httpbin, port: {{number: 8000}}}}}}]}}]
"
    );
    let res = resources(&yaml);
    let gw = gateway_pod();
    let all = world(&res, &[gw.clone(), httpbin("httpbin-a", "v1", 4000)]);
    let snap = snapshot(&all, &gw, Version::default());
    assert_eq!(snap.listeners.len(), 1);
    let l = &snap.listeners[0];
    assert_eq!(l.port, 8080, "Gateway port 80 is the ingress Service's port 80 → targetPort 8080");
    assert_eq!(l.virtual_hosts[0].domains, vec!["*"]);
    let route = &l.virtual_hosts[0].routes[0];
    assert_eq!(clusters_of(&route.action), vec![("outbound|8000||httpbin.default.svc.cluster.local".into(), 100)]);
    let cluster = &snap.clusters["outbound|8000||httpbin.default.svc.cluster.local"];
    assert_eq!(cluster.endpoints.len(), 1);
    assert_eq!(cluster.endpoints[0].address, addr(4000), "traffic enters the pod through its sidecar");
}

#[test]
fn a_virtual_service_without_gateways_is_not_served_by_the_gateway() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [httpbin.example.com]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin.example.com]
  http: [{{route: [{{destination: {{host: httpbin}}}}]}}]
"
    );
    let res = resources(&yaml);
    let gw = gateway_pod();
    let all = world(&res, std::slice::from_ref(&gw));
    let snap = snapshot(&all, &gw, Version::default());
    assert_eq!(snap.listeners.len(), 1, "the Gateway still opens the port");
    assert!(snap.listeners[0].virtual_hosts.is_empty(), "but nothing routes: every request is 404");
}

#[test]
fn gateway_virtual_host_is_the_more_specific_host_and_server_namespaces_filter() {
    assert_eq!(host_intersection("*", "httpbin.example.com").as_deref(), Some("httpbin.example.com"));
    assert_eq!(host_intersection("httpbin.example.com", "*").as_deref(), Some("httpbin.example.com"));
    assert_eq!(host_intersection("*.example.com", "a.example.com").as_deref(), Some("a.example.com"));
    assert_eq!(host_intersection("*.example.com", "example.com"), None);
    assert_eq!(host_intersection("a.com", "b.com"), None);

    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['other/*', 'default/*.example.com']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{{route: [{{destination: {{host: httpbin}}}}]}}]
"
    );
    let res = resources(&yaml);
    let gw = gateway_pod();
    let all = world(&res, std::slice::from_ref(&gw));
    let snap = snapshot(&all, &gw, Version::default());
    let domains: Vec<&str> =
        snap.listeners[0].virtual_hosts.iter().flat_map(|v| v.domains.iter().map(String::as_str)).collect();
    assert_eq!(domains, vec!["*.example.com"], "only the server host open to the VS's namespace binds");
}

#[test]
fn sidecar_routes_subsets_by_weight_and_expands_short_hosts_in_the_vs_namespace() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin}}
spec:
  host: httpbin
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: httpbin, subset: v2}}}}]
  - route:
    - {{destination: {{host: httpbin, subset: v1}}, weight: 75}}
    - {{destination: {{host: httpbin, subset: v2}}, weight: 25}}
    - {{destination: {{host: httpbin, subset: v2}}, weight: 0}}
  - route: [{{destination: {{host: never}}}}]
"
    );
    let res = resources(&yaml);
    let me = pod("default", "curl-a", &[("app", "curl")], Role::Sidecar);
    let all = world(&res, &[me.clone(), httpbin("httpbin-a", "v1", 4000), httpbin("httpbin-b", "v2", 5000)]);
    let snap = snapshot(&all, &me, Version::default());
    let rc = snap.outbound.iter().find(|r| r.port == 8000).expect("route config for port 8000");
    let vh = &rc.virtual_hosts[0];
    assert_eq!(
        vh.domains,
        vec!["httpbin", "httpbin.default", "httpbin.default.svc", "httpbin.default.svc.cluster.local"]
    );
    assert_eq!(vh.routes.len(), 2, "the rule after the catch-all is dropped, as Istio does");
    assert_eq!(vh.routes[0].matcher.headers[0].name, "end-user");
    assert_eq!(
        clusters_of(&vh.routes[1].action),
        vec![
            ("outbound|8000|v1|httpbin.default.svc.cluster.local".into(), 75),
            ("outbound|8000|v2|httpbin.default.svc.cluster.local".into(), 25)
        ],
        "weight 0 entries are dropped"
    );
    let v2 = &snap.clusters["outbound|8000|v2|httpbin.default.svc.cluster.local"];
    assert_eq!(v2.endpoints.iter().map(|e| e.pod.as_str()).collect::<Vec<_>>(), vec!["httpbin-b"]);
    assert_eq!(snap.clusters["outbound|8000||httpbin.default.svc.cluster.local"].endpoints.len(), 2);
}

#[test]
fn other_namespaces_see_no_short_name_and_plain_forwarders_ignore_virtual_services() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http: [{{route: [{{destination: {{host: httpbin, subset: v9}}}}]}}]
"
    );
    let res = resources(&yaml);
    let other = pod("legacy", "client-a", &[], Role::Plain);
    let all = world(&res, &[other.clone(), httpbin("httpbin-a", "v1", 4000)]);
    let snap = snapshot(&all, &other, Version::default());
    let vh = &snap.outbound.iter().find(|r| r.port == 8000).unwrap().virtual_hosts[0];
    assert!(!vh.domains.contains(&"httpbin".to_string()));
    assert!(vh.domains.contains(&"httpbin.default".to_string()));
    assert_eq!(vh.routes[0].name, "default", "no mesh features without a sidecar");
}

#[test]
fn match_port_and_source_labels_are_config_time_filters() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http:
  - match: [{{port: 9999}}]
    route: [{{destination: {{host: httpbin}}}}]
  - match: [{{sourceLabels: {{app: curl}}, uri: {{prefix: /only-curl}}}}]
    route: [{{destination: {{host: httpbin}}}}]
  - route: [{{destination: {{host: httpbin}}}}]
"
    );
    let res = resources(&yaml);
    let curl = pod("default", "curl-a", &[("app", "curl")], Role::Sidecar);
    let other = pod("default", "other-a", &[("app", "other")], Role::Sidecar);
    let all = world(&res, &[curl.clone(), other.clone()]);
    let routes_for = |p: &Workload| {
        let snap = snapshot(&all, p, Version::default());
        let vh = &snap.outbound.iter().find(|r| r.port == 8000).unwrap().virtual_hosts[0];
        vh.routes.iter().map(|r| r.matcher.path.clone()).collect::<Vec<_>>()
    };
    assert_eq!(routes_for(&curl), vec![PathMatch::Prefix("/only-curl".into()), PathMatch::Prefix("/".into())]);
    assert_eq!(routes_for(&other), vec![PathMatch::Prefix("/".into())]);
}

#[test]
fn direct_response_bytes_are_base64_and_mirrors_and_redirects_translate() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin]
  http:
  - match: [{{uri: {{exact: /bytes}}}}]
    directResponse: {{status: 200, body: {{bytes: aGVsbG8gd29ybGQ=}}}}
  - match: [{{uri: {{prefix: /old}}}}]
    redirect: {{uri: /new, redirectCode: 302}}
  - route: [{{destination: {{host: httpbin}}}}]
    mirror: {{host: httpbin, subset: v2}}
    mirrorPercentage: {{value: 50}}
"
    );
    let res = resources(&yaml);
    let me = pod("default", "curl-a", &[("app", "curl")], Role::Sidecar);
    let all = world(&res, &[me.clone(), httpbin("httpbin-a", "v1", 4000)]);
    let snap = snapshot(&all, &me, Version::default());
    let routes = &snap.outbound.iter().find(|r| r.port == 8000).unwrap().virtual_hosts[0].routes;
    assert_eq!(routes[0].action, RouteAction::Direct { status: 200, body: "hello world".into() });
    match &routes[1].action {
        RouteAction::Redirect(r) => assert_eq!((r.uri.as_deref(), r.code), (Some("/new"), 302)),
        other => panic!("expected a redirect, got {other:?}"),
    }
    let m = &routes[2].policy.mirrors;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].cluster, "outbound|8000|v2|httpbin.default.svc.cluster.local");
    assert_eq!(m[0].per_million, 500_000);
}

#[test]
fn service_entries_become_virtual_hosts_and_clusters_by_resolution() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 8080}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-endpoints, namespace: default}
spec:
  hosts: [mirror.example.com]
  ports: [{number: 80, name: http-web, targetPort: 8000}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: a.example.net}, {address: b.example.net, ports: {http-web: 9000}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: default}
spec:
  hosts: ['*.wild.example.com']
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: static, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v2, labels: {version: v2}}]
";
    let res = resources(yaml);
    let me = pod("default", "curl-a", &[("app", "curl")], Role::Sidecar);
    let all = world(&res, std::slice::from_ref(&me));
    let snap = snapshot(&all, &me, Version::default());
    let c = &snap.clusters["outbound|80||api.example.com"];
    assert_eq!(c.discovery, Discovery::Static);
    let addrs: Vec<String> = c.endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:8080"], "an endpoint's named port wins over the entry's");
    assert_eq!(c.lb, crate::snapshot::LbPolicy::RoundRobin, "DestinationRules apply to entry hosts");
    let v2 = &snap.clusters["outbound|80|v2|api.example.com"];
    assert_eq!(v2.endpoints.iter().map(|e| e.address.to_string()).collect::<Vec<_>>(), ["10.0.0.2:8080"]);
    assert!(snap.clusters.contains_key("outbound|443||api.example.com"), "a gateway's tls rule may send to it");
    assert!(!snap.outbound.iter().any(|rc| rc.port == 443), "but sidecars route only HTTP ports");
    assert_eq!(snap.clusters["outbound|80||httpbin.org"].discovery, Discovery::Dns(vec!["httpbin.org:80".into()]));
    assert_eq!(
        snap.clusters["outbound|80||mirror.example.com"].discovery,
        Discovery::Dns(vec!["a.example.net:8000".into(), "b.example.net:9000".into()])
    );
    assert_eq!(snap.clusters["outbound|80||*.wild.example.com"].discovery, Discovery::OriginalDst);
    let port80 = snap.outbound.iter().find(|r| r.port == 80).unwrap();
    let mut domains: Vec<&str> =
        port80.virtual_hosts.iter().flat_map(|v| v.domains.iter().map(String::as_str)).collect();
    domains.sort_unstable();
    assert_eq!(domains, ["*.wild.example.com", "api.example.com", "httpbin.org", "mirror.example.com"]);

    // A pod without a sidecar is outside the mesh: no entries, and no outbound restriction.
    let plain = pod("default", "plain-a", &[("app", "plain")], Role::Plain);
    let all = world(&res, std::slice::from_ref(&plain));
    let snap = snapshot(&all, &plain, Version::default());
    assert!(snap.outbound.iter().all(|r| r.virtual_hosts.is_empty()));
}

#[test]
fn gateway_tcp_servers_take_the_tcp_rules_that_match_their_port_and_tcp_service_ports_relay_inbound() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: tcp, port: 31400, targetPort: 31400}]
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: default}
spec:
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000}, {name: web, port: 8080, appProtocol: http}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: ['*']
  gateways: [tcp-gw]
  tcp:
  - match: [{port: 9999}]
    route: [{destination: {host: nowhere}}]
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
";
    let res = resources(yaml);
    let gw = gateway_pod();
    let mut echo = pod("default", "tcp-echo-a", &[("app", "tcp-echo")], Role::Sidecar);
    echo.destinations.extend([(9000, addr(4000)), (8080, addr(4001))]);
    echo.intercepted.extend([9000, 8080]);
    let all = world(&res, &[gw.clone(), echo.clone()]);
    let snap = snapshot(&all, &gw, Version::default());
    let l = snap.listeners.iter().find(|l| l.port == 31400).expect("a TCP listener");
    assert_eq!(l.protocol, "TCP");
    assert_eq!(l.tcp_routes.len(), 1, "the rule for another port does not apply");
    let split: Vec<(String, u32)> = l.tcp_routes[0].clusters.iter().map(|c| (c.cluster.clone(), c.weight)).collect();
    assert_eq!(
        split,
        [
            ("outbound|9000|v1|tcp-echo.default.svc.cluster.local".to_string(), 80),
            ("outbound|9000|v2|tcp-echo.default.svc.cluster.local".to_string(), 20)
        ]
    );
    let snap = snapshot(&all, &echo, Version::default());
    let tcp: Vec<(u16, bool)> = snap.inbound.iter().map(|p| (p.port, p.tcp)).collect();
    assert_eq!(tcp, [(8080, false), (9000, true)], "by port name, and appProtocol wins");
}

#[test]
fn passthrough_servers_take_the_tls_rules_whose_sni_hosts_they_accept() {
    let yaml = format!(
        "{HTTPBIN}---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: default}}
spec:
  selector: {{app: nginx}}
  ports: [{{name: https, port: 443}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: ['*.example.com']
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [mesh.example.org]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: ['*.example.com']
  gateways: [gw]
  tls:
  - match: [{{port: 443, sniHosts: [nginx.example.com, other.test]}}]
    route: [{{destination: {{host: nginx, port: {{number: 443}}}}}}]
  - match: [{{port: 8443, sniHosts: [wrong-port.example.com]}}]
    route: [{{destination: {{host: nginx}}}}]
  - match: [{{sniHosts: ['*.example.com']}}]
    route: [{{destination: {{host: nginx, port: {{number: 443}}}}, weight: 100}}]
"
    );
    let res = resources(&yaml);
    let gw = gateway_pod();
    let all = world(&res, std::slice::from_ref(&gw));
    let snap = snapshot(&all, &gw, Version::default());
    let l = snap.listeners.iter().find(|l| l.port == 8443).expect("a listener on the https target port");
    let sni: Vec<&[String]> = l.passthrough.iter().map(|r| r.sni_hosts.as_slice()).collect();
    assert_eq!(
        sni,
        [&["nginx.example.com".to_string()][..], &["*.example.com".to_string()][..]],
        "hosts outside the server's are dropped, and so is a rule for another port"
    );
    assert_eq!(l.passthrough[0].route.clusters[0].cluster, "outbound|443||nginx.default.svc.cluster.local");
    let modes: Vec<(&str, &str)> = l.tls.iter().map(|t| (t.mode.as_str(), t.credential.as_str())).collect();
    assert_eq!(modes, [("ISTIO_MUTUAL", "")], "ISTIO_MUTUAL needs no Secret");
    // An `https` Service port is relayed as bytes by the workload's sidecar, as Istio does.
    assert!(is_tcp_port(&crate::resources::core::ServicePort { name: Some("https".into()), ..Default::default() }));
}
