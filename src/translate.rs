//! Translation: a pure function from (resources, workloads, one proxy) to that proxy's snapshot.
//!
//! Istio's rules live here: how short hosts expand, which VirtualService applies to a sidecar
//! or a gateway, how Gateway servers become listeners and virtual hosts, how DestinationRule
//! subsets become clusters. No IO; tested with YAML fixtures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::registry::Workload;
use crate::resources::core::{Service, ServicePort};
use crate::resources::mesh_config::{self, MeshConfig};
use crate::resources::meta::IntOrString;
use crate::resources::networking::{
    Destination, DestinationRule, Gateway, HttpMatchRequest, HttpRoute, RouteDestination, Server, ServiceEntry,
    StringMatch, TrafficPolicy, VirtualService, WorkloadEntry,
};
use crate::resources::security::{MtlsMode, PeerAuthentication};
use crate::resources::{Kind, Resource};
use crate::snapshot::{
    cluster_name, Cluster, Discovery, Endpoint, GatewayListener, HeaderMatch, InboundPort, Mirror, PathMatch,
    QueryMatch, Role, Route, RouteAction, RouteConfig, RouteMatch, RoutePolicy, Snapshot, SniRoute, TcpHost, TcpRoute,
    ValueMatch, Version, VirtualHost, WeightedCluster,
};

mod delegate;
pub mod mtls;
pub mod policy;
pub mod telemetry;

pub const DOMAIN: &str = "svc.cluster.local";
pub use crate::resources::ROOT_NAMESPACE;

/// The kinds translation reads; the control plane copies only these into a [`World`].
pub fn reads(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Service
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ConfigMap
            | Kind::ServiceEntry
            | Kind::PeerAuthentication
            | Kind::AuthorizationPolicy
            | Kind::Secret
            | Kind::RequestAuthentication
            | Kind::Telemetry
    )
}

/// Everything translation reads, at one version: immutable and indexed, built once and shared
/// by every proxy's translation (so a change costs one build plus one lookup-driven pass per
/// proxy, not a scan of everything per proxy).
#[derive(Default)]
pub struct World {
    /// In key order (namespace, name).
    services: Vec<Service>,
    /// Service FQDN → index in `services`.
    by_fqdn: HashMap<String, usize>,
    /// In Istio's order: creation time, then namespace and name.
    virtual_services: Vec<VirtualService>,
    /// Host FQDN → the rules for it, in key order.
    destination_rules: HashMap<String, Vec<DestinationRule>>,
    gateways: Vec<Gateway>,
    /// In key order.
    service_entries: Vec<ServiceEntry>,
    /// Istio's mesh config (ConfigMap `istio` in `istio-system`).
    mesh: MeshConfig,
    /// Oldest first (the oldest wins among policies at one level).
    peer_authentications: Vec<PeerAuthentication>,
    /// Compiled, with the namespace and selector that say whom each applies to.
    authorization: Vec<(String, Option<Labels>, crate::authz::Policy)>,
    /// Each RequestAuthentication's namespace, selector and JWT rules.
    request_authentication: Vec<(String, Option<Labels>, Vec<crate::jwt::Rule>)>,
    /// Telemetry resources (sampling and access logging per mesh, namespace, workload).
    telemetries: Vec<crate::resources::telemetry::Telemetry>,
    /// Each `jwksUri` to fetch and its timeout.
    jwks_timeouts: Vec<(String, std::time::Duration)>,
    /// `namespace/name` → a hash of each Secret's content (never the content: gateways fetch
    /// that themselves).
    secrets: HashMap<String, u64>,
    /// By `namespace/pod`.
    workloads: BTreeMap<String, Workload>,
    /// (service index, service port) → its endpoints (all subsets), computed once and shared
    /// by every proxy's snapshot.
    endpoints: HashMap<(usize, u16), Arc<Vec<Endpoint>>>,
    /// The same for each DestinationRule subset of the service (by the subset's labels).
    subset_endpoints: HashMap<(usize, u16, Labels), Arc<Vec<Endpoint>>>,
}

type Labels = BTreeMap<String, String>;

impl World {
    pub fn new(resources: impl IntoIterator<Item = Resource>, workloads: impl IntoIterator<Item = Workload>) -> World {
        let mut w = World::default();
        let mut sorted: Vec<Resource> = resources.into_iter().collect();
        sorted.sort_by_key(|r| r.key());
        for r in sorted {
            match r {
                Resource::Service(s) => w.services.push(s),
                Resource::VirtualService(v) => w.virtual_services.push(v),
                Resource::DestinationRule(d) => {
                    let dr_ns = ns(&d.metadata.namespace);
                    w.destination_rules.entry(fqdn(&d.spec.host, dr_ns)).or_default().push(d);
                }
                Resource::Gateway(g) => w.gateways.push(g),
                Resource::ServiceEntry(se) => w.service_entries.push(se),
                Resource::PeerAuthentication(pa) => w.peer_authentications.push(pa),
                Resource::RequestAuthentication(ra) => {
                    let selector = ra.spec.selector.as_ref().map(|s| s.match_labels.clone()).filter(|l| !l.is_empty());
                    let rules: Vec<crate::jwt::Rule> = ra.spec.jwt_rules.iter().map(jwt_rule).collect();
                    for (rule, spec) in rules.iter().zip(&ra.spec.jwt_rules) {
                        if let Some(uri) = &rule.jwks_uri {
                            let timeout = spec.timeout.as_deref().and_then(|t| crate::validate::parse_duration(t).ok());
                            w.jwks_timeouts.push((uri.clone(), timeout.unwrap_or(std::time::Duration::from_secs(5))));
                        }
                    }
                    w.request_authentication.push((ns(&ra.metadata.namespace).to_string(), selector, rules));
                }
                Resource::Telemetry(t) => w.telemetries.push(t),
                Resource::Secret(s) => {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (&s.type_, &s.data, &s.string_data).hash(&mut h);
                    w.secrets.insert(format!("{}/{}", ns(&s.metadata.namespace), s.metadata.name), h.finish() | 1);
                }
                Resource::AuthorizationPolicy(ap) => {
                    let selector = ap.spec.selector.as_ref().map(|s| s.match_labels.clone()).filter(|l| !l.is_empty());
                    if let Some(policy) = crate::authz::compile(&ap) {
                        w.authorization.push((ns(&ap.metadata.namespace).to_string(), selector, policy));
                    }
                }
                Resource::ConfigMap(cm) if mesh_config::is_mesh_config(&cm) => {
                    w.mesh = mesh_config::from_config_map(&cm)
                }
                _ => {}
            }
        }
        // Delegating rules are replaced by their delegates' rules, merged (`delegate.rs`).
        let expanded: Vec<VirtualService> =
            w.virtual_services.iter().map(|vs| delegate::expand(vs, &w.virtual_services)).collect();
        w.virtual_services = expanded;
        // Istio orders by creation time, then name; the first one wins where they conflict.
        w.virtual_services.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_deref(), ns(&a.metadata.namespace), &a.metadata.name).cmp(&(
                b.metadata.creation_timestamp.as_deref(),
                ns(&b.metadata.namespace),
                &b.metadata.name,
            ))
        });
        // Telemetries too: at each level the first (oldest) one applies, as in Istio.
        w.telemetries.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_deref(), ns(&a.metadata.namespace), &a.metadata.name).cmp(&(
                b.metadata.creation_timestamp.as_deref(),
                ns(&b.metadata.namespace),
                &b.metadata.name,
            ))
        });
        w.peer_authentications.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_deref(), ns(&a.metadata.namespace), &a.metadata.name).cmp(&(
                b.metadata.creation_timestamp.as_deref(),
                ns(&b.metadata.namespace),
                &b.metadata.name,
            ))
        });
        w.workloads = workloads.into_iter().map(|wl| (wl.key(), wl)).collect();
        let mut by_ns: HashMap<&str, Vec<&Workload>> = HashMap::new();
        for wl in w.workloads.values().filter(|wl| wl.serving) {
            by_ns.entry(wl.identity.namespace.as_str()).or_default().push(wl);
        }
        for (i, svc) in w.services.iter().enumerate() {
            w.by_fqdn.insert(service_fqdn(svc), i);
            if svc.spec.selector.is_empty() {
                continue;
            }
            let members: Vec<&Workload> = by_ns
                .get(ns(&svc.metadata.namespace))
                .into_iter()
                .flatten()
                .filter(|wl| selects(&svc.spec.selector, &wl.identity.labels))
                .copied()
                .collect();
            let host = service_fqdn(svc);
            let subsets: BTreeSet<&Labels> = w
                .destination_rules
                .get(&host)
                .into_iter()
                .flatten()
                .flat_map(|dr| dr.spec.subsets.iter().map(|s| &s.labels))
                .filter(|l| !l.is_empty())
                .collect();
            for sp in &svc.spec.ports {
                let list: Vec<Endpoint> = members
                    .iter()
                    .filter_map(|wl| {
                        let port = target_port(sp, wl)?;
                        let address = wl.endpoint(port)?;
                        let mtls = wl.identity.role == Role::Sidecar && w.peer_mode(wl, port) != MtlsMode::Disable;
                        Some(Endpoint {
                            mtls,
                            address,
                            namespace: wl.identity.namespace.clone(),
                            pod: wl.identity.pod.clone(),
                            workload: wl.identity.workload.clone(),
                            labels: wl.identity.labels.clone(),
                            service_account: wl.identity.service_account.clone(),
                        })
                    })
                    .collect();
                for labels in &subsets {
                    let subset = list.iter().filter(|e| selects(labels, &e.labels)).cloned().collect();
                    w.subset_endpoints.insert((i, sp.port, (*labels).clone()), Arc::new(subset));
                }
                w.endpoints.insert((i, sp.port), Arc::new(list));
            }
        }
        w
    }

    /// The PeerAuthentication mode in force for container `port` of `wl`.
    fn peer_mode(&self, wl: &Workload, port: u16) -> MtlsMode {
        let id = &wl.identity;
        mtls::peer_mode(&self.peer_authentications, ROOT_NAMESPACE, &id.namespace, &id.labels, port)
    }

    /// The workload `namespace/pod`, as this world knows it.
    pub fn workload(&self, key: &str) -> Option<&Workload> {
        self.workloads.get(key)
    }

    fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter()
    }

    fn service(&self, fqdn: &str) -> Option<&Service> {
        self.by_fqdn.get(fqdn).map(|i| &self.services[*i])
    }

    fn virtual_services(&self) -> &[VirtualService] {
        &self.virtual_services
    }

    fn destination_rules(&self, host_fqdn: &str) -> &[DestinationRule] {
        self.destination_rules.get(host_fqdn).map(Vec::as_slice).unwrap_or_default()
    }

    fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.gateways.iter()
    }

    fn service_entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.service_entries.iter()
    }

    /// Fills each JWT rule's keys from its `jwksUri` with what the control plane fetched
    /// (`uri → JWKS`); a rule whose keys were not fetched keeps none and verifies no token.
    pub fn with_jwks(mut self, fetched: &BTreeMap<String, String>) -> World {
        for (_, _, rules) in &mut self.request_authentication {
            for rule in rules {
                if let Some(uri) = &rule.jwks_uri {
                    rule.jwks = match fetched.get(uri) {
                        Some(text) => text.clone(),
                        None => unfetched_jwks(uri),
                    };
                }
            }
        }
        self
    }

    /// Every `jwksUri` the RequestAuthentications name (without inline `jwks`), with its fetch
    /// timeout (`timeout`, 5 s by default).
    pub fn jwks_uris(&self) -> Vec<(String, std::time::Duration)> {
        let mut out: BTreeMap<String, std::time::Duration> = BTreeMap::new();
        for (uri, timeout) in &self.jwks_timeouts {
            out.entry(uri.clone()).or_insert(*timeout);
        }
        out.into_iter().collect()
    }

    /// The app listeners of the ready pods behind a Service in the mesh (`host` is
    /// `name.ns`, `name.ns.svc` or `name.ns.svc.cluster.local`) and one of its ports; `None`
    /// when `host` names no Service here.
    pub fn mesh_app_addresses(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let svc = self.services().find(|s| {
            let fqdn = service_fqdn(s);
            let short = fqdn.strip_suffix(".cluster.local").unwrap_or(&fqdn);
            host == fqdn || host == short || Some(host.as_str()) == short.strip_suffix(".svc")
        })?;
        let svc_ns = ns(&svc.metadata.namespace);
        let Some(sp) = svc.spec.ports.iter().find(|p| p.port == port) else { return Some(vec![]) };
        Some(
            self.workloads
                .values()
                .filter(|w| w.serving && w.identity.namespace == svc_ns)
                .filter(|w| !svc.spec.selector.is_empty() && selects(&svc.spec.selector, &w.identity.labels))
                .filter_map(|w| w.apps.get(&target_port(sp, w)?).copied())
                .collect(),
        )
    }
}

/// A ServiceEntry's ports (only its HTTP ones with `http_only`): (port, the port endpoints
/// listen on, its name). Every port has a cluster (a gateway's `tls` or `tcp` rule may send
/// to it); only HTTP ports have routes.
fn service_entry_ports(se: &ServiceEntry, http_only: bool) -> impl Iterator<Item = (u16, u16, &str)> {
    se.spec.ports.iter().filter(move |p| !http_only || p.is_http()).filter_map(|p| {
        let port = u16::try_from(p.number).ok()?;
        let target = p.target_port.and_then(|t| u16::try_from(t).ok()).unwrap_or(port);
        Some((port, target, p.name.as_str()))
    })
}

/// How a ServiceEntry host's port (a subset: its endpoints with `labels`) is reached.
fn service_entry_endpoints(
    se: &ServiceEntry,
    host: &str,
    (target, name): (u16, &str),
    labels: &Labels,
) -> (Discovery, Vec<Endpoint>) {
    let members = se.spec.endpoints.iter().filter(|e| selects(labels, &e.labels));
    let port_of = |e: &WorkloadEntry| e.ports.get(name).and_then(|p| u16::try_from(*p).ok()).unwrap_or(target);
    match se.spec.resolution() {
        "STATIC" => {
            let list = members
                .filter_map(|e| {
                    let ip: std::net::IpAddr = e.address.as_deref()?.parse().ok()?;
                    Some(Endpoint {
                        address: SocketAddr::new(ip, port_of(e)),
                        // Outside the registry's workloads: metrics say `unknown`, as Istio's do.
                        namespace: "unknown".into(),
                        pod: String::new(),
                        workload: "unknown".into(),
                        labels: e.labels.clone(),
                        service_account: e.service_account.clone().unwrap_or_default(),
                        mtls: false,
                    })
                })
                .collect();
            (Discovery::Static, list)
        }
        "NONE" => (Discovery::OriginalDst, vec![]),
        _ if se.spec.endpoints.is_empty() && !host.starts_with('*') => {
            (Discovery::Dns(vec![format!("{host}:{target}")]), vec![])
        }
        _ => {
            let names = members.filter_map(|e| Some(format!("{}:{}", e.address.as_deref()?, port_of(e)))).collect();
            (Discovery::Dns(names), vec![])
        }
    }
}

fn ns(n: &Option<String>) -> &str {
    n.as_deref().unwrap_or("default")
}

/// Istio's short-name rule: a host without dots is in the namespace of the resource naming it.
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host == "*" || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{DOMAIN}")
    }
}

fn service_fqdn(s: &Service) -> String {
    format!("{}.{}.{DOMAIN}", s.metadata.name, ns(&s.metadata.namespace))
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container port a Service port sends to in `pod`.
fn target_port(sp: &ServicePort, pod: &Workload) -> Option<u16> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod.port_names.get(name).copied().or_else(|| name.parse().ok()),
    }
}

/// Endpoints of a service port whose pods carry `extra` labels too (a subset): the list the
/// world built, shared.
fn endpoints(world: &World, svc: usize, port: u16, extra: &Labels) -> Arc<Vec<Endpoint>> {
    let all = world.endpoints.get(&(svc, port));
    if extra.is_empty() {
        return all.cloned().unwrap_or_default();
    }
    if let Some(list) = world.subset_endpoints.get(&(svc, port, extra.clone())) {
        return list.clone();
    }
    let all = all.map(|a| a.as_slice()).unwrap_or_default();
    Arc::new(all.iter().filter(|e| selects(extra, &e.labels)).cloned().collect())
}

/// A subset as a client sees it: name, labels, and its own traffic policy.
type SubsetView<'a> = (String, BTreeMap<String, String>, Option<&'a TrafficPolicy>);

/// DestinationRules for `host` as a client in `client_ns` sees them: client namespace, then
/// the service's namespace, then the root namespace. Subsets merge, first definition wins; the
/// first top-level `trafficPolicy` wins.
fn destination_rules_for<'a>(
    world: &'a World,
    host_fqdn: &str,
    svc_ns: &str,
    client_ns: &str,
) -> (Option<&'a TrafficPolicy>, Vec<SubsetView<'a>>) {
    let mut top: Option<&TrafficPolicy> = None;
    let mut out: Vec<SubsetView<'a>> = Vec::new();
    let order = [client_ns, svc_ns, ROOT_NAMESPACE];
    let mut seen_ns = BTreeSet::new();
    for want in order {
        if !seen_ns.insert(want) {
            continue;
        }
        for dr in world.destination_rules(host_fqdn) {
            if ns(&dr.metadata.namespace) != want {
                continue;
            }
            if top.is_none() {
                top = dr.spec.traffic_policy.as_ref();
            }
            for s in &dr.spec.subsets {
                if !out.iter().any(|(n, _, _)| n == &s.name) {
                    out.push((s.name.clone(), s.labels.clone(), s.traffic_policy.as_ref()));
                }
            }
        }
    }
    (top, out)
}

fn clusters(world: &World, client_ns: &str) -> BTreeMap<String, Cluster> {
    let mut out = BTreeMap::new();
    for (i, svc) in world.services().enumerate() {
        let host = service_fqdn(svc);
        let svc_ns = ns(&svc.metadata.namespace);
        let (top, subsets) = destination_rules_for(world, &host, svc_ns, client_ns);
        for sp in &svc.spec.ports {
            let mut add = |subset: &str, labels: &BTreeMap<String, String>, sub_policy: Option<&TrafficPolicy>| {
                let name = cluster_name(sp.port, subset, &host);
                let endpoints = endpoints(world, i, sp.port, labels);
                let lb = policy::load_balancer(top, sub_policy, sp.port);
                let tls = mtls::cluster_tls(top, sub_policy, sp.port);
                let pool = policy::connection_pool(top, sub_policy, sp.port);
                let outlier = policy::outlier_detection(top, sub_policy, sp.port);
                out.insert(
                    name.clone(),
                    Cluster {
                        name,
                        service: host.clone(),
                        port: sp.port,
                        endpoints,
                        lb,
                        discovery: Discovery::Eds,
                        tls,
                        pool,
                        outlier,
                    },
                );
            };
            add("", &BTreeMap::new(), None);
            for (subset, labels, sub_policy) in &subsets {
                add(subset, labels, *sub_policy);
            }
        }
    }
    for se in world.service_entries() {
        let se_ns = ns(&se.metadata.namespace);
        for host in &se.spec.hosts {
            let (top, subsets) = destination_rules_for(world, host, se_ns, client_ns);
            for (port, target, port_name) in service_entry_ports(se, false) {
                let mut add = |subset: &str, labels: &Labels, sub_policy: Option<&TrafficPolicy>| {
                    let name = cluster_name(port, subset, host);
                    let (discovery, endpoints) = service_entry_endpoints(se, host, (target, port_name), labels);
                    let lb = policy::load_balancer(top, sub_policy, port);
                    let tls = mtls::cluster_tls(top, sub_policy, port);
                    let pool = policy::connection_pool(top, sub_policy, port);
                    let outlier = policy::outlier_detection(top, sub_policy, port);
                    let endpoints = Arc::new(endpoints);
                    out.entry(name.clone()).or_insert(Cluster {
                        name,
                        service: host.clone(),
                        port,
                        endpoints,
                        lb,
                        discovery,
                        tls,
                        pool,
                        outlier,
                    });
                };
                add("", &BTreeMap::new(), None);
                for (subset, labels, sub_policy) in &subsets {
                    add(subset, labels, *sub_policy);
                }
            }
        }
    }
    out
}

/// Where a route is being built: which proxy, which port, which gateway.
struct Scope<'a> {
    /// `ns/name` of the gateway, or `mesh` for sidecars.
    gateway: &'a str,
    client_ns: &'a str,
    client_labels: &'a BTreeMap<String, String>,
    /// The listener or service port; `match.port` is compared with it.
    port: u16,
}

fn value_match(m: &StringMatch) -> Option<ValueMatch> {
    if let Some(e) = &m.exact {
        Some(ValueMatch::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(ValueMatch::Prefix(p.clone()))
    } else if let Some(r) = &m.regex {
        // `regex: "*"` is Istio's special case for presence.
        Some(if r == "*" { ValueMatch::Present } else { ValueMatch::Regex(r.clone()) })
    } else {
        Some(ValueMatch::Present)
    }
}

/// One HTTPMatchRequest → a route match, or None when it does not apply here (config-time filters).
fn route_match(m: &HttpMatchRequest, scope: &Scope<'_>, vs_ns: &str) -> Option<RouteMatch> {
    if m.port.is_some_and(|p| p != u32::from(scope.port)) {
        return None;
    }
    if !m.gateways.is_empty() && !m.gateways.iter().any(|g| gateway_ref(g, vs_ns) == scope.gateway) {
        return None;
    }
    if !selects(&m.source_labels, scope.client_labels) {
        return None;
    }
    if m.source_namespace.as_deref().is_some_and(|s| s != scope.client_ns) {
        return None;
    }
    let path = match &m.uri {
        None => PathMatch::Prefix("/".into()),
        Some(u) => match (&u.exact, &u.prefix, &u.regex) {
            (Some(e), _, _) => PathMatch::Exact(e.clone()),
            (_, Some(p), _) => PathMatch::Prefix(if p.is_empty() { "/".into() } else { p.clone() }),
            (_, _, Some(r)) => PathMatch::Regex(r.clone()),
            _ => PathMatch::Prefix("/".into()),
        },
    };
    let mut headers = Vec::new();
    for (pseudo, sm) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(v) = sm.as_ref().and_then(value_match) {
            headers.push(HeaderMatch { name: pseudo.into(), value: v, invert: false });
        }
    }
    for (invert, map) in [(false, &m.headers), (true, &m.without_headers)] {
        for (name, sm) in map {
            if matches!(name.as_str(), "uri" | "scheme" | "method" | "authority") {
                continue;
            }
            if let Some(v) = value_match(sm) {
                headers.push(HeaderMatch { name: name.to_ascii_lowercase(), value: v, invert });
            }
        }
    }
    let query = m
        .query_params
        .iter()
        .filter_map(|(k, sm)| Some(QueryMatch { name: k.clone(), value: value_match(sm)? }))
        .collect();
    Some(RouteMatch { path, ignore_case: m.ignore_uri_case, headers, query })
}

fn is_catch_all(m: &RouteMatch) -> bool {
    m.path == PathMatch::Prefix("/".into()) && m.headers.is_empty() && m.query.is_empty()
}

/// `name` → `vs_ns/name`; `ns/name` as is; `mesh` as is.
pub fn gateway_ref(g: &str, vs_ns: &str) -> String {
    if g == "mesh" || g.contains('/') {
        g.to_string()
    } else {
        format!("{vs_ns}/{g}")
    }
}

fn action(world: &World, rule: &HttpRoute, vs_ns: &str, scope: &Scope<'_>) -> Option<RouteAction> {
    if let Some(dr) = &rule.direct_response {
        let body = dr
            .body
            .as_ref()
            .and_then(|b| b.string.clone().or_else(|| b.bytes.as_deref().and_then(base64)))
            .unwrap_or_default();
        return Some(RouteAction::Direct { status: dr.status as u16, body });
    }
    if let Some(r) = &rule.redirect {
        return Some(RouteAction::Redirect(policy::redirect(r)));
    }
    if rule.route.is_empty() {
        return None;
    }
    let multi = rule.route.len() > 1;
    let mut out = Vec::new();
    for d in &rule.route {
        let weight = if multi { d.weight.unwrap_or(0).max(0) as u32 } else { 100 };
        if weight == 0 {
            continue;
        }
        let cluster = destination_cluster(world, &d.destination, vs_ns, scope);
        out.push(WeightedCluster { cluster, weight, headers: policy::headers(d.headers.as_ref()) });
    }
    Some(RouteAction::Clusters(out))
}

/// The cluster a Destination names: its host in the rule's namespace, the port it gives (or the
/// service's only port, or the listener's), and its subset.
fn destination_cluster(world: &World, d: &Destination, vs_ns: &str, scope: &Scope<'_>) -> String {
    let host = fqdn(&d.host, vs_ns);
    let port = d
        .port
        .as_ref()
        .and_then(|p| p.number)
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| world.service(&host).and_then(|s| single_port(s, scope.port)).unwrap_or(scope.port));
    cluster_name(port, d.subset.as_deref().unwrap_or_default(), &host)
}

/// The rule's policy with its mirrors resolved to clusters (`mirror` + `mirrorPercentage`, or
/// `mirrors` each with its own percentage).
fn route_policy(world: &World, rule: &HttpRoute, vs_ns: &str, scope: &Scope<'_>) -> RoutePolicy {
    let mut p = policy::route(rule);
    if let Some(m) = &rule.mirror {
        let per_million = policy::mirror_per_million(&rule.mirror_percentage, rule.mirror_percent);
        p.mirrors.push(Mirror { cluster: destination_cluster(world, m, vs_ns, scope), per_million });
    }
    for m in &rule.mirrors {
        let per_million = policy::mirror_per_million(&m.percentage, None);
        p.mirrors.push(Mirror { cluster: destination_cluster(world, &m.destination, vs_ns, scope), per_million });
    }
    p
}

/// Standard base64 (with or without padding), as `directResponse.body.bytes` carries it.
fn base64(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The service's port when it has one; with several, the one equal to the listener port.
fn single_port(s: &Service, fallback: u16) -> Option<u16> {
    match s.spec.ports.as_slice() {
        [one] => Some(one.port),
        many => many.iter().find(|p| p.port == fallback).map(|p| p.port),
    }
}

/// A VirtualService's http rules as routes, in order; a catch-all ends the list (Istio drops
/// every rule after it).
fn routes(world: &World, vs: &VirtualService, scope: &Scope<'_>) -> Vec<Route> {
    let vs_ns = ns(&vs.metadata.namespace);
    let mut out = Vec::new();
    for (i, rule) in vs.spec.http.iter().enumerate() {
        let Some(action) = action(world, rule, vs_ns, scope) else { continue };
        let name = format!("{vs_ns}/{}", rule.name.clone().unwrap_or_else(|| format!("{}#{i}", vs.metadata.name)));
        if rule.r#match.is_empty() {
            out.push(Route {
                name,
                matcher: RouteMatch::any(),
                action,
                policy: route_policy(world, rule, vs_ns, scope),
            });
            return out;
        }
        for m in &rule.r#match {
            let Some(matcher) = route_match(m, scope, vs_ns) else { continue };
            let stop = is_catch_all(&matcher);
            let policy = route_policy(world, rule, vs_ns, scope);
            out.push(Route { name: name.clone(), matcher, action: action.clone(), policy });
            if stop {
                return out;
            }
        }
    }
    out
}

fn vs_gateways(vs: &VirtualService) -> Vec<String> {
    let vs_ns = ns(&vs.metadata.namespace);
    if vs.spec.gateways.is_empty() {
        vec!["mesh".into()]
    } else {
        vs.spec.gateways.iter().map(|g| gateway_ref(g, vs_ns)).collect()
    }
}

/// Does `wild` (`*` or `*.suffix`) cover `name`? Istio's host.Name semantics.
fn covers(wild: &str, name: &str) -> bool {
    if wild == "*" {
        return true;
    }
    match wild.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => false,
    }
}

/// The more specific of two intersecting hosts, or None.
pub fn host_intersection(a: &str, b: &str) -> Option<String> {
    if a == b {
        Some(a.to_string())
    } else if covers(a, b) {
        Some(b.to_string())
    } else if covers(b, a) {
        Some(a.to_string())
    } else {
        None
    }
}

/// Virtual host domains for a Kubernetes service as a client in `client_ns` writes them.
fn service_domains(svc: &Service, client_ns: &str) -> Vec<String> {
    let name = &svc.metadata.name;
    let svc_ns = ns(&svc.metadata.namespace);
    let mut d = Vec::new();
    if svc_ns == client_ns {
        d.push(name.clone());
    }
    d.push(format!("{name}.{svc_ns}"));
    d.push(format!("{name}.{svc_ns}.svc"));
    d.push(format!("{name}.{svc_ns}.{DOMAIN}"));
    d
}

fn outbound(world: &World, me: &Workload) -> Vec<RouteConfig> {
    let client_ns = &me.identity.namespace;
    let vss = world.virtual_services();
    let mut by_port: BTreeMap<u16, Vec<VirtualHost>> = BTreeMap::new();
    // One virtual host per registry host and port: Kubernetes Services, then ServiceEntries.
    let mut add = |host: &str, ports: &[u16], domains: Vec<String>| {
        // The first mesh-bound VirtualService for this host wins; sidecars do not merge them.
        let vs = if me.identity.role == Role::Sidecar {
            vss.iter().find(|vs| {
                let vs_ns = ns(&vs.metadata.namespace);
                vs_gateways(vs).iter().any(|g| g == "mesh") && vs.spec.hosts.iter().any(|h| fqdn(h, vs_ns) == host)
            })
        } else {
            None
        };
        for &port in ports {
            let scope = Scope { gateway: "mesh", client_ns, client_labels: &me.identity.labels, port };
            let routes = match vs {
                Some(vs) => routes(world, vs, &scope),
                None => vec![Route {
                    name: "default".into(),
                    matcher: RouteMatch::any(),
                    action: RouteAction::Clusters(vec![WeightedCluster {
                        cluster: cluster_name(port, "", host),
                        weight: 100,
                        headers: Default::default(),
                    }]),
                    // Istio's default retry policy applies to the default route too.
                    policy: RoutePolicy { retry: policy::default_retry(), ..RoutePolicy::default() },
                }],
            };
            by_port.entry(port).or_default().push(VirtualHost {
                name: format!("{host}:{port}"),
                https_redirect: false,
                domains: domains.clone(),
                routes,
            });
        }
    };
    for svc in world.services() {
        let ports: Vec<u16> = svc.spec.ports.iter().map(|p| p.port).collect();
        add(&service_fqdn(svc), &ports, service_domains(svc, client_ns));
    }
    // A pod without a sidecar is outside the mesh: ServiceEntries are mesh config.
    if me.identity.role == Role::Sidecar {
        for se in world.service_entries() {
            let ports: Vec<u16> = service_entry_ports(se, true).map(|(p, _, _)| p).collect();
            for host in &se.spec.hosts {
                add(host, &ports, vec![host.clone()]);
            }
        }
    }
    by_port.into_iter().map(|(port, virtual_hosts)| RouteConfig { port, virtual_hosts }).collect()
}

/// The container port a Gateway server port binds on this gateway workload: the Service
/// port's targetPort when the number is a port of a Service selecting the workload.
/// A Gateway server that terminates TLS here (`SIMPLE` or `MUTUAL` with a `credentialName`),
/// with the Secret's `namespace/name` in the gateway's namespace and its content version.
fn server_tls(world: &World, me: &Workload, server: &Server) -> Option<crate::snapshot::ServerTls> {
    let t = server.tls.as_ref()?;
    let mode = t.mode.as_deref()?.to_ascii_uppercase();
    let hosts: Vec<String> =
        server.hosts.iter().map(|h| h.split_once('/').map_or(h.as_str(), |(_, d)| d).to_string()).collect();
    let min_version = t.min_protocol_version.clone().filter(|v| v == "TLSV1_3");
    if mode == "ISTIO_MUTUAL" {
        return Some(crate::snapshot::ServerTls { hosts, mode, credential: String::new(), version: 0, min_version });
    }
    if !matches!(mode.as_str(), "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") {
        return None;
    }
    let name = t.credential_name.as_ref().or(t.credential_names.first())?;
    let credential = format!("{}/{name}", me.identity.namespace);
    let ca = t.ca_cert_credential_name.clone().unwrap_or_else(|| format!("{name}-cacert"));
    let version = world.secrets.get(&credential).copied().unwrap_or(0)
        ^ world.secrets.get(&format!("{}/{ca}", me.identity.namespace)).copied().unwrap_or(0).rotate_left(1);
    Some(crate::snapshot::ServerTls { hosts, mode, credential, version, min_version })
}

/// A server that hands TLS through untouched (`PASSTHROUGH`, the default mode, on an HTTPS or
/// TLS port).
fn is_passthrough(server: &Server) -> bool {
    let protocol = server.port.protocol.to_ascii_uppercase();
    let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref()).unwrap_or("PASSTHROUGH");
    matches!(protocol.as_str(), "HTTPS" | "TLS") && mode.eq_ignore_ascii_case("PASSTHROUGH")
}

fn gateway_container_port(world: &World, me: &Workload, number: u32) -> Option<u16> {
    for svc in world.services() {
        if ns(&svc.metadata.namespace) != me.identity.namespace || svc.spec.selector.is_empty() {
            continue;
        }
        if !selects(&svc.spec.selector, &me.identity.labels) {
            continue;
        }
        if let Some(sp) = svc.spec.ports.iter().find(|p| u32::from(p.port) == number) {
            return target_port(sp, me);
        }
    }
    u16::try_from(number).ok()
}

fn listeners(world: &World, me: &Workload) -> Vec<GatewayListener> {
    let vss = world.virtual_services();
    // container port → (protocol, domain → vhost)
    let mut ports: BTreeMap<u16, (String, BTreeMap<String, VirtualHost>)> = BTreeMap::new();
    // container port → tcp rules
    let mut tcp: BTreeMap<u16, Vec<TcpRoute>> = BTreeMap::new();
    // container port → the servers that terminate TLS there
    let mut tls: BTreeMap<u16, Vec<crate::snapshot::ServerTls>> = BTreeMap::new();
    // container port → the `tls` rules of its PASSTHROUGH servers
    let mut passthrough: BTreeMap<u16, Vec<SniRoute>> = BTreeMap::new();
    for gw in world.gateways() {
        if !selects(&gw.spec.selector, &me.identity.labels) {
            continue;
        }
        let gw_ns = ns(&gw.metadata.namespace);
        let gw_key = format!("{gw_ns}/{}", gw.metadata.name);
        for server in &gw.spec.servers {
            let protocol = server.port.protocol.to_ascii_uppercase();
            let Some(cport) = gateway_container_port(world, me, server.port.number) else { continue };
            if protocol == "TCP" {
                let routes = tcp.entry(cport).or_default();
                for r in tcp_routes(world, me, &gw_key, gw_ns, server) {
                    if !routes.contains(&r) {
                        routes.push(r);
                    }
                }
                continue;
            }
            if is_passthrough(server) {
                let routes = passthrough.entry(cport).or_default();
                for r in sni_routes(world, me, &gw_key, gw_ns, server) {
                    if !routes.contains(&r) {
                        routes.push(r);
                    }
                }
                continue;
            }
            let terminated = server_tls(world, me, server);
            let http = matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB");
            if !http && terminated.is_none() {
                continue; // AUTO_PASSTHROUGH, and certificates from files (apply warns).
            }
            if let Some(t) = terminated {
                let list = tls.entry(cport).or_default();
                if !list.contains(&t) {
                    list.push(t);
                }
            }
            let https_redirect = http && server.tls.as_ref().is_some_and(|t| t.https_redirect);
            let entry = ports.entry(cport).or_insert_with(|| (protocol.clone(), BTreeMap::new()));
            for vs in vss {
                let vs_ns = ns(&vs.metadata.namespace);
                if !vs_gateways(vs).contains(&gw_key) {
                    continue;
                }
                let scope = Scope {
                    gateway: &gw_key,
                    client_ns: &me.identity.namespace,
                    client_labels: &me.identity.labels,
                    port: cport,
                };
                for server_host in &server.hosts {
                    let (host_ns, dns) = server_host.split_once('/').unwrap_or(("*", server_host));
                    let ns_ok = match host_ns {
                        "*" => true,
                        "." => vs_ns == gw_ns,
                        other => other == vs_ns,
                    };
                    if !ns_ok {
                        continue;
                    }
                    for vs_host in &vs.spec.hosts {
                        let Some(domain) = host_intersection(dns, vs_host) else { continue };
                        let vh = entry.1.entry(domain.clone()).or_insert_with(|| VirtualHost {
                            name: format!("{domain}:{}", server.port.number),
                            https_redirect,
                            domains: vec![domain.clone()],
                            routes: vec![],
                        });
                        let more = routes(world, vs, &scope);
                        for r in more {
                            if !vh.routes.contains(&r) {
                                vh.routes.push(r);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<GatewayListener> = ports
        .into_iter()
        .map(|(port, (protocol, vhosts))| GatewayListener {
            port,
            protocol,
            virtual_hosts: vhosts.into_values().collect(),
            tcp_routes: vec![],
            tls: tls.remove(&port).unwrap_or_default(),
            passthrough: passthrough.remove(&port).unwrap_or_default(),
        })
        .collect();
    // Ports with PASSTHROUGH servers only: a TLS listener that terminates nothing.
    for (port, routes) in passthrough {
        out.push(GatewayListener {
            port,
            protocol: "TLS".into(),
            virtual_hosts: vec![],
            tcp_routes: vec![],
            tls: vec![],
            passthrough: routes,
        });
    }
    for (port, tcp_routes) in tcp {
        // A port already serving HTTP or TLS keeps it (Istio rejects the conflict; apply warns).
        if !out.iter().any(|l| l.port == port) {
            out.push(GatewayListener {
                port,
                protocol: "TCP".into(),
                virtual_hosts: vec![],
                tcp_routes,
                tls: vec![],
                passthrough: vec![],
            });
        }
    }
    out.sort_by_key(|l| l.port);
    out
}

/// The `tcp` rules of the VirtualServices bound to gateway `gw_key` whose hosts the server
/// accepts, and whose match (port, gateways, source labels and namespace) holds here.
fn tcp_routes(world: &World, me: &Workload, gw_key: &str, gw_ns: &str, server: &Server) -> Vec<TcpRoute> {
    let mut out = Vec::new();
    for vs in world.virtual_services() {
        let vs_ns = ns(&vs.metadata.namespace);
        if !vs_gateways(vs).iter().any(|g| g == gw_key) {
            continue;
        }
        let accepted = server.hosts.iter().any(|server_host| {
            let (host_ns, dns) = server_host.split_once('/').unwrap_or(("*", server_host));
            let ns_ok = match host_ns {
                "*" => true,
                "." => vs_ns == gw_ns,
                other => other == vs_ns,
            };
            ns_ok && vs.spec.hosts.iter().any(|h| host_intersection(dns, h).is_some())
        });
        if !accepted {
            continue;
        }
        out.extend(tcp_rules(world, vs, gw_key, server.port.number, me));
    }
    out
}

/// The `tls` rules of the VirtualServices bound to gateway `gw_key` for a PASSTHROUGH server:
/// each match's `sniHosts` that the server's hosts accept (and whose port and gateways hold),
/// with the rule's weighted destinations. A rule without a match the server takes is left out.
fn sni_routes(world: &World, me: &Workload, gw_key: &str, gw_ns: &str, server: &Server) -> Vec<SniRoute> {
    let mut out = Vec::new();
    let port = server.port.number;
    for vs in world.virtual_services() {
        let vs_ns = ns(&vs.metadata.namespace);
        if !vs_gateways(vs).iter().any(|g| g == gw_key) {
            continue;
        }
        let server_hosts: Vec<&str> = server
            .hosts
            .iter()
            .filter_map(|h| {
                let (host_ns, dns) = h.split_once('/').unwrap_or(("*", h));
                let ok = match host_ns {
                    "*" => true,
                    "." => vs_ns == gw_ns,
                    other => other == vs_ns,
                };
                ok.then_some(dns)
            })
            .collect();
        for (i, rule) in vs.spec.tls.iter().enumerate() {
            let mut sni_hosts: Vec<String> = Vec::new();
            for m in &rule.r#match {
                let applies = m.port.is_none_or(|p| p == port)
                    && (m.gateways.is_empty() || m.gateways.iter().any(|g| gateway_ref(g, vs_ns) == gw_key))
                    && selects(&m.source_labels, &me.identity.labels);
                if !applies {
                    continue;
                }
                for sni in &m.sni_hosts {
                    if let Some(h) = server_hosts.iter().find_map(|s| host_intersection(s, sni)) {
                        if !sni_hosts.contains(&h) {
                            sni_hosts.push(h);
                        }
                    }
                }
            }
            if sni_hosts.is_empty() {
                continue;
            }
            let scope = Scope {
                gateway: gw_key,
                client_ns: &me.identity.namespace,
                client_labels: &me.identity.labels,
                port: u16::try_from(port).unwrap_or_default(),
            };
            let clusters = weighted(world, &rule.route, vs_ns, &scope);
            let name = format!("{vs_ns}/{}#tls{i}", vs.metadata.name);
            out.push(SniRoute { sni_hosts, route: TcpRoute { name, clusters } });
        }
    }
    out
}

/// A rule's destinations as weighted clusters (a lone destination without a weight takes all).
fn weighted(world: &World, route: &[RouteDestination], vs_ns: &str, scope: &Scope) -> Vec<WeightedCluster> {
    route
        .iter()
        .map(|d| WeightedCluster {
            cluster: destination_cluster(world, &d.destination, vs_ns, scope),
            weight: match (d.weight, route.len()) {
                (Some(w), _) => u32::try_from(w).unwrap_or(0),
                (None, 1) => 100,
                (None, _) => 0,
            },
            headers: Default::default(),
        })
        .collect()
}

/// The first Service (by namespace and name) that selects `me` and sends to container `port`:
/// what Istio reports as `destination_service` on the inbound side.
fn inbound_service(world: &World, me: &Workload, port: u16) -> Option<String> {
    world
        .services()
        .filter(|s| ns(&s.metadata.namespace) == me.identity.namespace && !s.spec.selector.is_empty())
        .filter(|s| selects(&s.spec.selector, &me.identity.labels))
        .find(|s| s.spec.ports.iter().any(|sp| target_port(sp, me) == Some(port)))
        .map(service_fqdn)
}

/// The `tcp` rules of `vs` that apply to a connection on `port` through `gateway` (`mesh` for
/// sidecars) from `me`: port, gateways, source labels and namespace, decided at config time.
fn tcp_rules(world: &World, vs: &VirtualService, gateway: &str, port: u32, me: &Workload) -> Vec<TcpRoute> {
    let vs_ns = ns(&vs.metadata.namespace);
    let mut out = Vec::new();
    for (i, rule) in vs.spec.tcp.iter().enumerate() {
        let applies = rule.r#match.is_empty()
            || rule.r#match.iter().any(|m| {
                m.port.is_none_or(|p| p == port)
                    && (m.gateways.is_empty() || m.gateways.iter().any(|g| gateway_ref(g, vs_ns) == gateway))
                    && selects(&m.source_labels, &me.identity.labels)
                    && m.source_namespace.as_ref().is_none_or(|n| *n == me.identity.namespace)
            });
        if !applies {
            continue;
        }
        let scope = Scope {
            gateway,
            client_ns: &me.identity.namespace,
            client_labels: &me.identity.labels,
            port: u16::try_from(port).unwrap_or_default(),
        };
        let clusters = weighted(world, &rule.route, vs_ns, &scope);
        out.push(TcpRoute { name: format!("{vs_ns}/{}#tcp{i}", vs.metadata.name), clusters });
    }
    out
}

/// Is a Service port TCP (by `appProtocol`, or its name's prefix, as Istio decides)?
fn is_tcp_port(sp: &ServicePort) -> bool {
    let name = sp.name.as_deref().unwrap_or_default();
    let protocol = sp.app_protocol.as_deref().unwrap_or_else(|| name.split('-').next().unwrap_or_default());
    // TLS (and HTTPS, which a sidecar cannot read either) is relayed as bytes, as Istio does.
    ["tcp", "tls", "https"].iter().any(|p| protocol.eq_ignore_ascii_case(p))
}

/// Sidecar: the Services' TCP ports, reached with HTTP CONNECT through the outbound listener;
/// each takes the first mesh-bound VirtualService's `tcp` rules for its host, or goes to the
/// service as a whole.
fn outbound_tcp(world: &World, me: &Workload) -> Vec<TcpHost> {
    let mut out = Vec::new();
    for svc in world.services() {
        let host = service_fqdn(svc);
        let vs = world.virtual_services().iter().find(|vs| {
            let vs_ns = ns(&vs.metadata.namespace);
            !vs.spec.tcp.is_empty()
                && vs_gateways(vs).iter().any(|g| g == "mesh")
                && vs.spec.hosts.iter().any(|h| fqdn(h, vs_ns) == host)
        });
        for sp in svc.spec.ports.iter().filter(|sp| is_tcp_port(sp)) {
            let mut routes = vs.map(|vs| tcp_rules(world, vs, "mesh", u32::from(sp.port), me)).unwrap_or_default();
            if routes.is_empty() {
                let cluster = cluster_name(sp.port, "", &host);
                routes.push(TcpRoute {
                    name: "default".into(),
                    clusters: vec![WeightedCluster { cluster, weight: 100, headers: Default::default() }],
                });
            }
            let domains = service_domains(svc, &me.identity.namespace);
            out.push(TcpHost { port: sp.port, domains, addresses: cluster_ips(svc), routes });
        }
    }
    out
}

/// A Service's cluster IPs (`clusterIP`, `clusterIPs`; none for a headless one or where the
/// backend gives Services none, as the local one does).
fn cluster_ips(svc: &Service) -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> =
        svc.spec.cluster_ip.iter().chain(svc.spec.cluster_ips.iter()).filter_map(|ip| ip.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// Is container `port` of `me` a TCP port of a Service that selects it (by the Service port's
/// `appProtocol`, or its name's prefix, as Istio decides)?
fn inbound_is_tcp(world: &World, me: &Workload, port: u16) -> bool {
    world
        .services()
        .filter(|s| ns(&s.metadata.namespace) == me.identity.namespace && !s.spec.selector.is_empty())
        .filter(|s| selects(&s.spec.selector, &me.identity.labels))
        .flat_map(|s| s.spec.ports.iter())
        .find(|sp| target_port(sp, me) == Some(port))
        .is_some_and(is_tcp_port)
}

/// The AuthorizationPolicies that apply to `me`: those of its namespace without a selector or
/// whose selector matches it, and those of the root namespace (with a selector, in every
/// namespace).
fn authorization(world: &World, me: &Workload) -> Vec<crate::authz::Policy> {
    let id = &me.identity;
    world
        .authorization
        .iter()
        .filter(|(policy_ns, selector, _)| {
            (policy_ns == &id.namespace || policy_ns == ROOT_NAMESPACE)
                && selector.as_ref().is_none_or(|s| selects(s, &id.labels))
        })
        .map(|(_, _, p)| p.clone())
        .collect()
}

/// What istiod sends while a `jwksUri` is not fetched: a key set whose one RSA key (kid `abc`,
/// its modulus the URI) verifies nothing, so every token is refused with Envoy's own text.
fn unfetched_jwks(uri: &str) -> String {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Error-IstiodFailedToFetchJwksUri-{uri}"));
    format!(r#"{{"keys":[ {{"e":"AQAB","kid":"abc","kty":"RSA","n":"{n}"}}]}}"#)
}

fn jwt_rule(r: &crate::resources::security::JwtRule) -> crate::jwt::Rule {
    crate::jwt::Rule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        jwks: r.jwks.clone().unwrap_or_default(),
        // Inline keys win; otherwise the control plane fills in what it fetched (`with_jwks`).
        jwks_uri: r.jwks_uri.clone().filter(|_| r.jwks.is_none()),
        from_headers: r
            .from_headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.prefix.clone().unwrap_or_default()))
            .collect(),
        from_params: r.from_params.clone(),
        from_cookies: r.from_cookies.clone(),
        output_payload_to_header: r.output_payload_to_header.clone(),
        forward_original_token: r.forward_original_token.unwrap_or(false),
        output_claim_to_headers: r
            .output_claim_to_headers
            .iter()
            .map(|c| (c.header.clone(), c.claim.clone()))
            .collect(),
        parsed: Default::default(),
    }
}

/// The JWT rules of the RequestAuthentications that apply to `me` (scoped as AuthorizationPolicy).
fn jwt_rules(world: &World, me: &Workload) -> Vec<crate::jwt::Rule> {
    let id = &me.identity;
    world
        .request_authentication
        .iter()
        .filter(|(ra_ns, selector, _)| {
            (ra_ns == &id.namespace || ra_ns == ROOT_NAMESPACE)
                && selector.as_ref().is_none_or(|s| selects(s, &id.labels))
        })
        .flat_map(|(_, _, rules)| rules.iter().cloned())
        .collect()
}

/// The snapshot for the proxy of pod `me`.
pub fn snapshot(world: &World, me: &Workload, version: Version) -> Snapshot {
    let mut snap = Snapshot {
        version,
        proxy: me.identity.clone(),
        clusters: clusters(world, &me.identity.namespace),
        ..Default::default()
    };
    match me.identity.role {
        Role::Gateway => snap.listeners = listeners(world, me),
        Role::Sidecar | Role::Plain => snap.outbound = outbound(world, me),
    }
    // A pod without a sidecar is outside the mesh: nothing restricts where it connects.
    if me.identity.role == Role::Sidecar {
        snap.outbound_policy = match world.mesh.outbound {
            crate::resources::mesh_config::OutboundMode::AllowAny => crate::snapshot::OutboundMode::AllowAny,
            crate::resources::mesh_config::OutboundMode::RegistryOnly => crate::snapshot::OutboundMode::RegistryOnly,
        };
        snap.outbound_tcp = outbound_tcp(world, me);
    }
    if me.identity.role != Role::Plain {
        use crate::snapshot::telemetry::Mode;
        let id = &me.identity;
        let applicable = telemetry::applicable(&world.telemetries, &id.namespace, &id.labels);
        snap.client = telemetry::side(&world.mesh, &applicable, Mode::Client);
        // Only a sidecar has a server side (its inbound listeners).
        if me.identity.role == Role::Sidecar {
            let server = telemetry::side(&world.mesh, &applicable, Mode::Server);
            snap.server = (server != snap.client).then_some(server);
        }
        snap.metrics = telemetry::metric_rules(&applicable);
        snap.path_normalization = world.mesh.path_normalization;
        snap.authz = authorization(world, me);
        snap.jwt = jwt_rules(world, me);
    } else {
        snap.path_normalization = crate::normalize::PathNormalization::None;
    }
    if me.identity.role == Role::Sidecar {
        snap.inbound = me
            .intercepted
            .iter()
            .map(|&port| InboundPort {
                port,
                app: me.apps.get(&port).copied(),
                tcp: inbound_is_tcp(world, me, port),
                service: inbound_service(world, me, port),
                mtls: mtls::inbound_mode(world.peer_mode(me, port)),
            })
            .collect();
    }
    snap
}

#[cfg(test)]
mod tests;
