//! A snapshot compiled for the request path: route tables per port, clusters with their
//! balancers. Built once when a snapshot arrives; requests only read it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use crate::proxy::route::Table;
use crate::proxy::stats::Peer;
use crate::snapshot::{Endpoint, Snapshot};

pub struct Runtime {
    pub snapshot: Snapshot,
    /// Sidecar/plain outbound: route table per destination port.
    pub outbound: HashMap<u16, Table>,
    /// Gateway: route table per listener (container) port.
    pub listeners: HashMap<u16, Table>,
    /// Sidecar inbound: container port → app address.
    pub inbound: HashMap<u16, Option<SocketAddr>>,
    pub clusters: HashMap<String, ClusterState>,
    /// This proxy as metrics describe it (built once per snapshot, not per request).
    pub me: Arc<Peer>,
    /// A peer metrics cannot identify.
    pub unknown: Arc<Peer>,
}

pub struct ClusterState {
    pub service: String,
    /// Endpoints with their metric description, built once per snapshot.
    pub endpoints: Vec<(Endpoint, Arc<Peer>)>,
    next: AtomicUsize,
}

impl ClusterState {
    /// Round-robin over the endpoints.
    pub fn pick(&self) -> Option<&(Endpoint, Arc<Peer>)> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }
}

impl Runtime {
    pub fn new(snapshot: Snapshot) -> Runtime {
        let outbound = snapshot.outbound.iter().map(|rc| (rc.port, Table::new(&rc.virtual_hosts))).collect();
        let listeners = snapshot.listeners.iter().map(|l| (l.port, Table::new(&l.virtual_hosts))).collect();
        let inbound = snapshot.inbound.iter().map(|p| (p.port, p.app)).collect();
        let clusters = snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                // Start each cluster at a random endpoint so proxies do not move in lockstep.
                let start = if c.endpoints.is_empty() { 0 } else { fastrand::usize(..c.endpoints.len()) };
                (
                    name.clone(),
                    ClusterState {
                        service: c.service.clone(),
                        endpoints: c.endpoints.iter().map(|e| (e.clone(), Arc::new(Peer::of_endpoint(e)))).collect(),
                        next: AtomicUsize::new(start),
                    },
                )
            })
            .collect();
        let me = Arc::new(Peer::of(&snapshot.proxy));
        Runtime { snapshot, outbound, listeners, inbound, clusters, me, unknown: Arc::new(Peer::unknown()) }
    }

    /// Before the first snapshot: nothing routes.
    pub fn empty() -> Runtime {
        Runtime::new(Snapshot::default())
    }
}
