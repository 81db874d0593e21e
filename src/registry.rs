//! The registry translation reads: each workload's identity, labels, service account, named
//! ports and addresses. Nothing about how a backend runs it (pids, restarts, phases) lives here;
//! the local runner keeps that beside it, and a kind backend would fill the same record.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::ready::{Addrs, Listener};
use crate::snapshot::ProxyIdentity;

/// One pod as the mesh sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub identity: ProxyIdentity,
    /// Container port numbers by name (for named targetPorts).
    pub port_names: BTreeMap<String, u16>,
    /// Its processes run and announced their listeners: it can be an endpoint.
    pub serving: bool,
    /// The proxy's listeners.
    pub proxy: Addrs,
    /// The app's listener for each container port.
    pub app: BTreeMap<u16, SocketAddr>,
    /// Gateway: container port → the localhost address its listener is published on.
    pub published: BTreeMap<u16, SocketAddr>,
}

impl Workload {
    pub fn new(identity: ProxyIdentity) -> Workload {
        Workload {
            identity,
            port_names: BTreeMap::new(),
            serving: false,
            proxy: Addrs::new(),
            app: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.identity.namespace, self.identity.pod)
    }

    /// Where traffic for container `port` goes: the sidecar's inbound listener when the pod
    /// has one, otherwise the app itself; for a gateway, the listener published for the port
    /// (so the mesh reaches `istio-ingressgateway` as Istio's sidecars do).
    pub fn endpoint(&self, port: u16) -> Option<SocketAddr> {
        self.proxy
            .get(&Listener::Inbound(port))
            .or_else(|| self.app.get(&port))
            .or_else(|| self.published.get(&port))
            .copied()
    }

    /// The container ports the sidecar has an inbound listener for, ascending.
    pub fn inbound_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.proxy.keys().filter_map(|l| if let Listener::Inbound(p) = l { Some(*p) } else { None })
    }
}
