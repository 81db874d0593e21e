//! The registry translation reads: each workload's identity, labels, service account, named
//! ports, and where traffic for each of its ports goes. The backend fills it (the local runner
//! from the addresses its processes announce; a kind backend from the Pod's IP); nothing about
//! how a backend runs a pod (pids, restarts, phases, listener addresses) lives here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::snapshot::ProxyIdentity;

/// One pod as the mesh sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub identity: ProxyIdentity,
    /// Container port numbers by name (for named targetPorts).
    pub port_names: BTreeMap<String, u16>,
    /// Its processes run and announced their listeners: it can be an endpoint.
    pub serving: bool,
    /// Container port → where the mesh sends traffic for it (an endpoint's address).
    pub destinations: BTreeMap<u16, SocketAddr>,
    /// Container port → where the app itself listens, as the pod's own sidecar reaches it (and
    /// the control plane, fetching a key set from it directly).
    pub apps: BTreeMap<u16, SocketAddr>,
    /// The container ports the pod's sidecar takes inbound traffic for.
    pub intercepted: BTreeSet<u16>,
}

impl Workload {
    pub fn new(identity: ProxyIdentity) -> Workload {
        Workload {
            identity,
            port_names: BTreeMap::new(),
            serving: false,
            destinations: BTreeMap::new(),
            apps: BTreeMap::new(),
            intercepted: BTreeSet::new(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.identity.namespace, self.identity.pod)
    }

    /// Where traffic for container `port` goes.
    pub fn endpoint(&self, port: u16) -> Option<SocketAddr> {
        self.destinations.get(&port).copied()
    }
}
