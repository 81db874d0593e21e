//! Clusters and endpoints that outlive a snapshot, and load balancing over them.
//!
//! A new snapshot is reconciled, not rebuilt: a cluster whose definition did not change keeps
//! its state object, and every endpoint keeps its state (connection pool, active requests, and
//! later outlier ejections) for as long as any cluster names its address. So a pod restarting
//! elsewhere in the mesh resets nothing here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::proxy::breakers::{Breakers, Limits};
use crate::proxy::identity::Identity;
use crate::proxy::stats::Peer;
use crate::proxy::upstream::{Pool, Tls};
use crate::snapshot::{self, ClusterTls, Discovery, Endpoint, LbPolicy};

/// Per-endpoint state shared by every cluster that names the address.
#[derive(Default)]
pub struct EndpointState {
    pub pool: Arc<Pool>,
    /// Requests in flight (for `LEAST_REQUEST`).
    active: AtomicUsize,
}

impl EndpointState {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

pub struct ActiveGuard(Arc<EndpointState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The proxy's endpoint states by address, and its clusters' circuit breakers by name;
/// entries no cluster names are dropped on reconcile.
#[derive(Default)]
pub struct Endpoints {
    by_addr: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    pub breakers: crate::proxy::breakers::Registry,
}

impl Endpoints {
    pub fn get(&self, addr: SocketAddr) -> Arc<EndpointState> {
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).entry(addr).or_default().clone()
    }

    /// Forgets endpoints (and breakers) that only this map still holds.
    pub fn sweep(&self) {
        self.breakers.sweep();
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| Arc::strong_count(s) > 1);
    }

    /// Closes idle upstream connections past their idle timeout or maximum duration.
    pub fn reap(&self) {
        let now = std::time::Instant::now();
        let states: Vec<Arc<EndpointState>> =
            self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in states {
            s.pool.reap(now);
        }
    }

    pub fn len(&self) -> usize {
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Host {
    pub endpoint: Endpoint,
    /// This endpoint as metrics describe it (built once per reconcile, not per request).
    pub peer: Arc<Peer>,
    pub state: Arc<EndpointState>,
    /// The mTLS this proxy originates to it, if any (auto mTLS or DestinationRule `tls`).
    pub tls: Option<Arc<Tls>>,
}

/// The TLS to originate to endpoint `e` of cluster `c`: none without an identity, under
/// `DISABLE`, or (auto mTLS) to an endpoint without a sidecar that accepts it.
fn upstream_tls(c: &snapshot::Cluster, e: &Endpoint, identity: Option<&Identity>) -> Option<Arc<Tls>> {
    let identity = identity?;
    let own = crate::ca::spiffe_id(&e.namespace, &e.service_account);
    let (sni, allowed) = match &c.tls {
        ClusterTls::Disable | ClusterTls::Simple(_) | ClusterTls::Mutual(_) => return None,
        ClusterTls::Auto if !e.mtls => return None,
        ClusterTls::Auto => (None, vec![own.clone()]),
        ClusterTls::IstioMutual { sni, subject_alt_names } if subject_alt_names.is_empty() => {
            (sni.clone(), vec![own.clone()])
        }
        ClusterTls::IstioMutual { sni, subject_alt_names } => (sni.clone(), subject_alt_names.clone()),
    };
    let sni = sni.unwrap_or_else(|| c.istio_sni());
    let server_name = rustls_pki_types::ServerName::try_from(sni.clone())
        .unwrap_or_else(|_| rustls_pki_types::ServerName::try_from("outbound").expect("a valid name"));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&sni, &allowed).hash(&mut h);
    let principal = if allowed.contains(&own) { own } else { allowed[0].clone() };
    Some(Arc::new(Tls {
        config: identity.mtls.client(&allowed),
        sni: server_name,
        key: h.finish() | 1,
        principal: principal.into(),
    }))
}

/// DestinationRule `SIMPLE`/`MUTUAL`: the TLS to originate to every endpoint of the cluster,
/// built once (its files read once) per cluster definition.
fn origination(c: &snapshot::Cluster) -> Option<Arc<Tls>> {
    let (o, mutual) = match &c.tls {
        ClusterTls::Simple(o) => (o, false),
        ClusterTls::Mutual(o) => (o, true),
        _ => return None,
    };
    let sni = o.sni.clone().unwrap_or_else(|| c.service.clone());
    let config = crate::tls::origin::config(o, mutual).unwrap_or_else(|e| {
        crate::net::log(&format!(
            "cluster {}: {e}; its TLS handshakes fail until the DestinationRule is fixed",
            c.name
        ));
        crate::tls::origin::refusing(e)
    });
    let server_name = rustls_pki_types::ServerName::try_from(sni.clone())
        .unwrap_or_else(|_| rustls_pki_types::ServerName::try_from("outbound").expect("a valid name"));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&c.tls, &sni).hash(&mut h);
    Some(Arc::new(Tls { config, sni: server_name, key: h.finish() | 1, principal: "unknown".into() }))
}

pub struct Cluster {
    pub name: String,
    /// The service FQDN, shared with every outcome that names it.
    pub service: Arc<str>,
    pub lb: LbPolicy,
    /// DNS and ORIGINAL_DST clusters have no hosts until a request resolves them (`resolved`).
    pub discovery: Discovery,
    pub hosts: Vec<Host>,
    /// The cluster's circuit breakers and counters (kept by name across snapshots).
    pub breakers: Arc<Breakers>,
    /// How its connections are made and kept (`maxRequestsPerConnection`, timeouts).
    pub options: crate::proxy::upstream::ConnOptions,
    /// TLS originated to every endpoint (DestinationRule SIMPLE or MUTUAL), resolved ones too.
    origination: Option<Arc<Tls>>,
    next: AtomicUsize,
}

impl Cluster {
    pub fn new(c: &snapshot::Cluster, endpoints: &Endpoints, identity: Option<&Identity>) -> Cluster {
        let origination = origination(c);
        let hosts: Vec<Host> = c
            .endpoints
            .iter()
            .map(|e| {
                let mut peer = Peer::of_endpoint(e);
                let tls = match &origination {
                    Some(t) => Some(t.clone()),
                    None => {
                        let tls = upstream_tls(c, e, identity);
                        peer.principal = tls.as_ref().map(|t| t.principal.clone());
                        tls
                    }
                };
                Host { endpoint: e.clone(), peer: Arc::new(peer), state: endpoints.get(e.address), tls }
            })
            .collect();
        // Start round-robin at a random endpoint so proxies do not move in lockstep.
        let start = if hosts.is_empty() { 0 } else { fastrand::usize(..hosts.len()) };
        Cluster {
            name: c.name.clone(),
            service: c.service.as_str().into(),
            lb: c.lb.clone(),
            discovery: c.discovery.clone(),
            hosts,
            breakers: endpoints.breakers.get(&c.name, Limits::from_pool(&c.pool), c.outlier),
            options: (&c.pool).into(),
            origination,
            next: AtomicUsize::new(start),
        }
    }

    /// Resolved when a request needs it: DNS names, or the address the client asked for.
    pub fn resolves(&self) -> bool {
        matches!(self.discovery, Discovery::Dns(_) | Discovery::OriginalDst)
    }

    /// This cluster over addresses resolved for one request (endpoint state is still shared
    /// by address, so pools and counts carry over between requests).
    pub fn resolved(&self, addrs: &[SocketAddr], endpoints: &Endpoints) -> Cluster {
        let unknown = Arc::new(Peer::unknown());
        let hosts = addrs
            .iter()
            .map(|&address| Host {
                endpoint: Endpoint {
                    address,
                    namespace: "unknown".into(),
                    pod: String::new(),
                    workload: "unknown".into(),
                    labels: Default::default(),
                    service_account: String::new(),
                    mtls: false,
                },
                peer: unknown.clone(),
                state: endpoints.get(address),
                tls: self.origination.clone(),
            })
            .collect();
        Cluster {
            name: self.name.clone(),
            service: self.service.clone(),
            lb: self.lb.clone(),
            discovery: Discovery::Static,
            hosts,
            breakers: self.breakers.clone(),
            options: self.options.clone(),
            origination: self.origination.clone(),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks an endpoint. `hash` is the request's consistent-hash key, when the policy has one
    /// and the request carries it; `avoid` lists endpoints already tried (Envoy's previous-hosts
    /// retry predicate), honoured while another endpoint is left.
    pub fn pick(&self, hash: Option<u64>, avoid: &[SocketAddr], rng: &mut fastrand::Rng) -> Option<&Host> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        // Ejected endpoints are left out (with no outlier detection the list is empty, for free).
        let ejected = self.breakers.ejected(n);
        if !ejected.is_empty() {
            let healthy: Vec<&Host> = self.hosts.iter().filter(|h| !ejected.contains(&h.endpoint.address)).collect();
            if healthy.is_empty() {
                return None;
            }
            if let (LbPolicy::ConsistentHash(_), Some(key)) = (&self.lb, hash) {
                return healthy.into_iter().max_by_key(|h| mix(key, h.endpoint.address));
            }
            let left: Vec<&Host> = healthy.iter().copied().filter(|h| !avoid.contains(&h.endpoint.address)).collect();
            let from = if left.is_empty() { healthy } else { left };
            return Some(self.choose(from.len(), |i| from[i], rng));
        }
        if let (LbPolicy::ConsistentHash(_), Some(key)) = (&self.lb, hash) {
            // Rendezvous hashing: stable under endpoint changes, like Envoy's ring (soft affinity).
            return self.hosts.iter().max_by_key(|h| mix(key, h.endpoint.address));
        }
        // The first try picks among all endpoints without allocating; only a retry that must
        // avoid endpoints already tried builds the list of those left.
        let left: Vec<&Host> = if avoid.is_empty() {
            Vec::new()
        } else {
            self.hosts.iter().filter(|h| !avoid.contains(&h.endpoint.address)).collect()
        };
        if left.is_empty() {
            Some(self.choose(self.hosts.len(), |i| &self.hosts[i], rng))
        } else {
            Some(self.choose(left.len(), |i| left[i], rng))
        }
    }

    /// The policy's choice among `n > 0` candidates, `at(i)` being the i-th.
    fn choose<'a>(&self, n: usize, at: impl Fn(usize) -> &'a Host, rng: &mut fastrand::Rng) -> &'a Host {
        match &self.lb {
            LbPolicy::RoundRobin => at(self.next.fetch_add(1, Ordering::Relaxed) % n),
            // Passthrough keeps the address the client chose; locally a name resolves to every
            // endpoint, so the choice is kube-proxy's: random. A hash policy without a key: random.
            LbPolicy::Random | LbPolicy::Passthrough | LbPolicy::ConsistentHash(_) => at(rng.usize(..n)),
            LbPolicy::LeastRequest if n == 1 => at(0),
            LbPolicy::LeastRequest => {
                // Power of two choices (Envoy's default `choice_count: 2`).
                let a = rng.usize(..n);
                let mut b = rng.usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ha, hb) = (at(a), at(b));
                if hb.state.active() < ha.state.active() {
                    hb
                } else {
                    ha
                }
            }
        }
    }
}

fn mix(key: u64, addr: SocketAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    addr.hash(&mut h);
    h.finish()
}

/// Reconciles the clusters of a new snapshot with the previous ones: unchanged clusters are
/// kept as they are, changed ones are rebuilt over the same endpoint states.
pub fn reconcile(
    wanted: &std::collections::BTreeMap<String, snapshot::Cluster>,
    previous: &HashMap<String, (snapshot::Cluster, Arc<Cluster>)>,
    endpoints: &Endpoints,
    identity: Option<&Identity>,
) -> HashMap<String, (snapshot::Cluster, Arc<Cluster>)> {
    let out = wanted
        .iter()
        .map(|(name, c)| {
            let state = match previous.get(name) {
                Some((old, state)) if old == c => state.clone(),
                _ => Arc::new(Cluster::new(c, endpoints, identity)),
            };
            (name.clone(), (c.clone(), state))
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            namespace: "default".into(),
            pod: format!("p{port}"),
            workload: "w".into(),
            labels: Default::default(),
            service_account: "default".into(),
            mtls: false,
        }
    }

    fn cluster(lb: LbPolicy, ports: &[u16]) -> snapshot::Cluster {
        snapshot::Cluster {
            name: "outbound|80||s.default.svc.cluster.local".into(),
            service: "s.default.svc.cluster.local".into(),
            port: 80,
            endpoints: Arc::new(ports.iter().map(|&p| endpoint(p)).collect()),
            lb,
            discovery: Default::default(),
            tls: Default::default(),
            pool: Default::default(),
            outlier: None,
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let eps = Endpoints::default();
        let c = Cluster::new(&cluster(LbPolicy::LeastRequest, &[1, 2]), &eps, None);
        let _busy = c.hosts[0].state.start();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            assert_eq!(c.pick(None, &[], &mut rng).unwrap().endpoint.address.port(), 2);
        }
    }

    #[test]
    fn round_robin_cycles_and_retries_avoid_the_previous_host() {
        let eps = Endpoints::default();
        let c = Cluster::new(&cluster(LbPolicy::RoundRobin, &[1, 2, 3]), &eps, None);
        let mut rng = fastrand::Rng::with_seed(1);
        let picks: Vec<u16> = (0..6).map(|_| c.pick(None, &[], &mut rng).unwrap().endpoint.address.port()).collect();
        assert_eq!(picks[0..3].iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "{picks:?}");
        assert_eq!(picks[0..3], picks[3..6]);
        let tried = [SocketAddr::from(([127, 0, 0, 1], 1))];
        for _ in 0..10 {
            assert_ne!(c.pick(None, &tried, &mut rng).unwrap().endpoint.address.port(), 1);
        }
        // With nothing else left, a tried endpoint is picked again.
        let one = Cluster::new(&cluster(LbPolicy::RoundRobin, &[1]), &eps, None);
        assert_eq!(one.pick(None, &tried, &mut rng).unwrap().endpoint.address.port(), 1);
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_few_keys_when_an_endpoint_goes() {
        let eps = Endpoints::default();
        let lb = LbPolicy::ConsistentHash(snapshot::HashOn::Header("x-user".into()));
        let three = Cluster::new(&cluster(lb.clone(), &[1, 2, 3]), &eps, None);
        let two = Cluster::new(&cluster(lb, &[1, 2]), &eps, None);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut moved = 0;
        for key in 0..300u64 {
            let a = three.pick(Some(key), &[], &mut rng).unwrap().endpoint.address;
            assert_eq!(three.pick(Some(key), &[], &mut rng).unwrap().endpoint.address, a);
            let b = two.pick(Some(key), &[], &mut rng).unwrap().endpoint.address;
            if a.port() != 3 && a != b {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys on surviving endpoints stay where they were");
    }

    #[test]
    fn reconcile_keeps_unchanged_clusters_and_endpoint_state() {
        let eps = Endpoints::default();
        let mut wanted = std::collections::BTreeMap::new();
        wanted.insert("a".to_string(), cluster(LbPolicy::LeastRequest, &[1, 2]));
        wanted.insert("b".to_string(), cluster(LbPolicy::RoundRobin, &[2]));
        let first = reconcile(&wanted, &HashMap::new(), &eps, None);
        let guard = first["a"].1.hosts[1].state.start();
        // Cluster b changes (a pod restarted elsewhere); a does not.
        wanted.insert("b".to_string(), cluster(LbPolicy::RoundRobin, &[2, 3]));
        let second = reconcile(&wanted, &first, &eps, None);
        assert!(Arc::ptr_eq(&first["a"].1, &second["a"].1));
        assert!(!Arc::ptr_eq(&first["b"].1, &second["b"].1));
        // Endpoint 2 is the same state object in both clusters and kept its in-flight count.
        assert_eq!(second["b"].1.hosts[0].state.active(), 1);
        drop(guard);
        drop(first);
        eps.sweep();
        assert_eq!(eps.len(), 3);
    }
}
