//! A snapshot compiled for the request path: route tables per port, inbound ports, and the
//! clusters reconciled with the previous runtime (`clusters::reconcile`), so per-endpoint state
//! survives the swap. Built once when a snapshot arrives; requests only read it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::proxy::clusters::{self, Cluster, Endpoints};
use crate::proxy::identity::Identity;
use crate::proxy::route::Table;
use crate::proxy::stats::{Overrides, Peer};
use crate::snapshot::{self, Snapshot};

pub struct Runtime {
    pub snapshot: Snapshot,
    /// Sidecar/plain outbound: route table per destination port.
    pub outbound: HashMap<u16, Table>,
    /// Gateway: route table per listener (container) port.
    pub listeners: HashMap<u16, Table>,
    /// Sidecar inbound: container port → the app behind it.
    pub inbound: HashMap<u16, Inbound>,
    /// Gateway TCP listeners: container port → its `tcp` rules, in order.
    pub tcp: HashMap<u16, Vec<snapshot::TcpRoute>>,
    /// Gateway TLS listeners: container port → its PASSTHROUGH servers' `tls` rules.
    pub passthrough: HashMap<u16, Vec<snapshot::SniRoute>>,
    /// By name, with the definition they were built from (to tell what changed).
    pub clusters: HashMap<String, (snapshot::Cluster, Arc<Cluster>)>,
    /// This proxy as metrics describe it (built once per snapshot, not per request).
    pub me: Arc<Peer>,
    /// A peer metrics cannot identify.
    pub unknown: Arc<Peer>,
    /// The metadata-exchange headers this proxy sends into the mesh (`exchange::headers`).
    pub exchange: Option<(http::HeaderValue, http::HeaderValue)>,
    /// The access log's writer and whether it writes JSON, when the mesh config turns it on:
    /// for the client side (outbound, gateway) and the server side (inbound).
    pub access_log: Option<crate::proxy::access_log::AccessConfig>,
    pub inbound_access_log: Option<crate::proxy::access_log::AccessConfig>,
    /// The Telemetries' metric overrides (the previous runtime's when unchanged).
    pub metrics: Arc<Overrides>,
    /// The request headers a Telemetry expression reads (metric labels, access-log filter);
    /// `None` when none needs the request, so nothing is captured.
    pub capture: Option<Arc<[String]>>,
}

pub struct Inbound {
    /// Where the app listens; `None` until it has started.
    pub app: Option<SocketAddr>,
    /// The service FQDN metrics report (`destination_service`), or `unknown`.
    pub service: Arc<str>,
    /// Relay connections as bytes (a TCP Service port), not HTTP.
    pub tcp: bool,
    /// The PeerAuthentication mode in force.
    pub mtls: snapshot::MtlsMode,
}

impl Runtime {
    pub fn new(
        snapshot: Snapshot,
        previous: Option<&Runtime>,
        endpoints: &Endpoints,
        identity: Option<&Arc<Identity>>,
    ) -> Runtime {
        let outbound = snapshot.outbound.iter().map(|rc| (rc.port, Table::new(&rc.virtual_hosts))).collect();
        let listeners = snapshot.listeners.iter().map(|l| (l.port, Table::new(&l.virtual_hosts))).collect();
        let inbound = snapshot
            .inbound
            .iter()
            .map(|p| {
                let service = p.service.as_deref().unwrap_or("unknown").into();
                (p.port, Inbound { app: p.app, service, tcp: p.tcp, mtls: p.mtls })
            })
            .collect();
        let tcp =
            snapshot.listeners.iter().filter(|l| l.protocol == "TCP").map(|l| (l.port, l.tcp_routes.clone())).collect();
        let passthrough = snapshot
            .listeners
            .iter()
            .filter(|l| !l.passthrough.is_empty())
            .map(|l| (l.port, l.passthrough.clone()))
            .collect();
        let empty = HashMap::new();
        let clusters = clusters::reconcile(
            &snapshot.clusters,
            previous.map_or(&empty, |p| &p.clusters),
            endpoints,
            identity.map(|i| &**i),
        );
        let mut me = Peer::of(&snapshot.proxy);
        me.principal = identity.map(|i| i.spiffe.as_str().into());
        let me = Arc::new(me);
        let exchange = crate::proxy::exchange::headers(&snapshot.proxy);
        let metrics = match previous {
            Some(p) if p.snapshot.metrics == snapshot.metrics => p.metrics.clone(),
            _ => Arc::new(Overrides::new(&snapshot.metrics)),
        };
        let mut headers = metrics.headers.clone();
        let filters: Vec<&crate::cel::Expr> = [false, true]
            .iter()
            .filter_map(|inbound| snapshot.telemetry(*inbound).access_log.as_ref()?.filter.as_ref())
            .collect();
        filters.iter().for_each(|f| f.headers(&mut headers));
        let capture = (metrics.needs_request() || !filters.is_empty()).then(|| headers.into());
        Runtime {
            snapshot,
            outbound,
            listeners,
            inbound,
            tcp,
            passthrough,
            clusters,
            me,
            unknown: Arc::new(Peer::unknown()),
            exchange,
            access_log: None,
            inbound_access_log: None,
            metrics,
            capture,
        }
    }

    /// Before the first snapshot: nothing routes.
    pub fn empty() -> Runtime {
        Runtime::new(Snapshot::default(), None, &Endpoints::default(), None)
    }
}
