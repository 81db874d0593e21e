//! The config snapshot the control plane sends to one proxy: plain data, JSON on the wire.
//!
//! A snapshot is complete (never a delta): the proxy swaps it in atomically. Everything the
//! proxy needs per request is decided here, at config time, by `translate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod telemetry;

/// How a sidecar's inbound port takes connections: the PeerAuthentication modes composed for
/// the port (an unset mode is already resolved, to PERMISSIVE when nothing is set anywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext on the same port.
    #[default]
    Permissive,
    /// mTLS only: a plaintext connection is reset.
    Strict,
}

/// Where a sidecar sends a host the mesh does not know (`outboundTrafficPolicy.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Pass it through (`PassthroughCluster`).
    #[default]
    AllowAny,
    /// Answer 502 (`BlackHoleCluster`).
    RegistryOnly,
}

/// Which snapshot a proxy holds. `epoch` is random per control-plane start, so a proxy that
/// reconnects to a restarted control plane never mistakes an old counter for a current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    pub epoch: u64,
    pub counter: u64,
}

impl Version {
    /// True when `self` (what a proxy acknowledged) is at least `target`, in the same epoch.
    pub fn reached(&self, target: Version) -> bool {
        self.epoch == target.epoch && self.counter >= target.counter
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{}", self.epoch & 0xffff, self.counter)
    }
}

/// What kind of proxy a pod runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Injected sidecar: inbound in front of the app, outbound for the app's traffic.
    #[default]
    Sidecar,
    /// Ingress gateway: listeners from the Gateway resources that select it.
    Gateway,
    /// No sidecar: the local stand-in for kube-proxy (names and round-robin, no mesh features).
    Plain,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Gateway => "gateway",
            Role::Plain => "plain",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct ProxyIdentity {
    pub namespace: String,
    pub pod: String,
    /// The Deployment that owns the pod.
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub role: Role,
}

#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: Version,
    pub proxy: ProxyIdentity,
    /// Sidecar: one inbound listener per container port, forwarding to the app.
    pub inbound: Vec<InboundPort>,
    /// Sidecar and plain: outbound routes, one route config per destination port.
    pub outbound: Vec<RouteConfig>,
    /// Gateway: one listener per container port with Gateway servers on it.
    pub listeners: Vec<GatewayListener>,
    /// Every cluster a route may name, by name (`outbound|8000||httpbin.default.svc.cluster.local`).
    pub clusters: BTreeMap<String, Cluster>,
    /// Sidecar: where a host the mesh does not know goes (`meshConfig.outboundTrafficPolicy`).
    #[serde(default)]
    pub outbound_policy: OutboundMode,
    /// Sidecar: the Services' TCP ports, reached with HTTP CONNECT through the outbound listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_tcp: Vec<TcpHost>,
    /// Sidecar and gateway: the AuthorizationPolicies that apply to this workload, compiled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authz: Vec<crate::authz::Policy>,
    /// Sidecar and gateway: the JWT rules of the RequestAuthentications that apply here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<crate::jwt::Rule>,
    /// Sidecar and gateway: tracing and the access log of the client side (sidecar outbound,
    /// gateways).
    #[serde(default, skip_serializing_if = "crate::snapshot::is_default")]
    pub client: SideTelemetry,
    /// Sidecar: the server side's (inbound), when a Telemetry's `match.mode` sets it apart;
    /// `None`: the same as the client side's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<SideTelemetry>,
    /// Sidecar and gateway: the Telemetries' metric overrides (disabled metrics, labels).
    #[serde(default, skip_serializing_if = "crate::snapshot::is_default")]
    pub metrics: telemetry::MetricRules,
    /// Sidecar and gateway: how request paths are normalised (mesh config
    /// `pathNormalization`); a plain forwarder, outside the mesh, leaves them alone.
    #[serde(default, skip_serializing_if = "crate::snapshot::is_default")]
    pub path_normalization: crate::normalize::PathNormalization,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl Snapshot {
    /// Tracing and the access log of one side: inbound (server) or the rest (client).
    pub fn telemetry(&self, inbound: bool) -> &SideTelemetry {
        match &self.server {
            Some(server) if inbound => server,
            _ => &self.client,
        }
    }
}

/// Tracing and the access log on one side of a proxy (mesh config, then its Telemetries).
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct SideTelemetry {
    /// The share of new traces sampled, in hundredths of a percent (mesh config
    /// `defaultConfig.tracing.sampling`); `None`: `trace::DEFAULT_SAMPLING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<u32>,
    /// The access log (mesh config `accessLogFile`), off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<telemetry::AccessLog>,
    /// A Telemetry's custom span tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub span_tags: Vec<(String, telemetry::SpanTag)>,
}

impl SideTelemetry {
    /// The sampling percentage in force.
    pub fn sampling_percent(&self) -> f64 {
        self.sampling.map_or(crate::trace::DEFAULT_SAMPLING, |s| f64::from(s) / 100.0)
    }
}

/// A TCP service port as a sidecar reaches it: its domains, its cluster IPs (a captured
/// connection to one of them at `port` is this service's) and `tcp` rules.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct TcpHost {
    pub port: u16,
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
    pub routes: Vec<TcpRoute>,
}

impl Snapshot {
    /// A hash of everything but the version: two snapshots with the same content hash give
    /// the proxy the same config. (The control plane keeps this, not the snapshot, per proxy.)
    pub fn content_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let Snapshot {
            version: _,
            proxy,
            inbound,
            outbound,
            listeners,
            clusters,
            outbound_policy,
            outbound_tcp,
            authz,
            jwt,
            client,
            server,
            metrics,
            path_normalization,
        } = self;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (proxy, inbound, outbound, listeners, clusters, outbound_policy, outbound_tcp, authz, jwt, client, server)
            .hash(&mut h);
        (metrics, path_normalization).hash(&mut h);
        h.finish()
    }
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct InboundPort {
    /// The container port a Service's targetPort names.
    pub port: u16,
    /// The FQDN of the first Service that sends to this port (metrics' `destination_service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Where the app listens; `None` until the app has started.
    pub app: Option<SocketAddr>,
    /// The Service port is TCP (by name or `appProtocol`): connections are relayed as bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// The PeerAuthentication mode in force for this port.
    #[serde(default)]
    pub mtls: MtlsMode,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct RouteConfig {
    pub port: u16,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct GatewayListener {
    /// Container port of the gateway workload (8080 for Gateway servers on port 80 or 8080).
    pub port: u16,
    pub protocol: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// `TCP` listeners: the VirtualServices' `tcp` rules that apply here, in order (the first
    /// one takes every connection, as Envoy's tcp_proxy does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    /// `HTTPS` listeners: TLS terminated here, the server's certificate chosen by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<ServerTls>,
    /// `PASSTHROUGH` servers: the VirtualServices' `tls` rules, each taking the connections
    /// whose SNI it names, relayed as bytes (TLS ends at the destination).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<SniRoute>,
}

/// A `tls` rule of a PASSTHROUGH server: the SNI names it takes and where they go.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct SniRoute {
    /// `name`, `*.suffix` or `*`.
    pub sni_hosts: Vec<String>,
    pub route: TcpRoute,
}

/// One Gateway server that terminates TLS: its hosts (SNI), mode, and the Secret that holds its
/// certificate. The key is not here: the gateway fetches it from the control plane with its own
/// credential (as Envoy's SDS), and `version` (a hash of the Secret) tells it when to fetch again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerTls {
    /// SNI patterns: `name`, `*.suffix` or `*`.
    pub hosts: Vec<String>,
    /// `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`, or `ISTIO_MUTUAL` (the gateway's own workload
    /// certificate; clients present one from the mesh's root).
    pub mode: String,
    /// `namespace/name` of the Secret (in the gateway's namespace); empty for `ISTIO_MUTUAL`.
    pub credential: String,
    /// Content hash of the Secret (and of its `-cacert` companion); 0 when it is missing.
    pub version: u64,
    /// `TLSV1_2` or `TLSV1_3` (`minProtocolVersion`); none is TLS 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// A `tcp` rule: the weighted destinations of each connection.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct TcpRoute {
    pub name: String,
    pub clusters: Vec<WeightedCluster>,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    /// A Gateway server's `httpsRedirect`: every request gets a 301 to `https://`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Envoy-style domains: exact, `*.suffix`, `prefix.*` or `*`; ports are ignored when matching.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// `<namespace>/<virtualservice>` and the rule, or `default` for the service's default route.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Timeout, retries and fault injection (ignored by `Direct` actions).
    #[serde(default)]
    pub policy: RoutePolicy,
}

/// What the router does around the upstream call: fault, then timeout ⊃ retries ⊃ per-try timeout.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct RoutePolicy {
    /// The whole request, retries included; `None` is Istio's default (no timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Route-level header edits (destination-level ones are on the weighted cluster).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// VirtualService `headers`: edits of the request sent upstream and of the response.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// Lower-case names. `set` overwrites, `add` appends, `remove` deletes.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// VirtualService `rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct Rewrite {
    /// Replaces the matched prefix (the whole path for exact and regex matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `uriRegexRewrite`: every match of the regex in the path is replaced (`\1` groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// VirtualService `redirect`.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct Redirect {
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `derivePort: FROM_REQUEST_PORT`: keep the request's port when the authority changes.
    #[serde(default)]
    pub keep_request_port: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    pub code: u16,
}

/// A shadow copy of each request to `cluster`, fire and forget.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: String,
    pub per_million: u32,
}

/// VirtualService `corsPolicy`, as Envoy's CORS filter applies it.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    /// Seconds, as Envoy writes `access-control-max-age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// `unmatchedPreflights: FORWARD` (the default): a preflight from another origin goes upstream.
    #[serde(default)]
    pub forward_unmatched_preflights: bool,
}

/// Envoy's retry policy as Istio writes it.
#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (0: none).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy's `retry_on` conditions (`connect-failure`, `5xx`, `gateway-error`, ...).
    #[serde(default)]
    pub retry_on: Vec<String>,
    /// Numeric codes of `retryOn` (Envoy's `retriable_status_codes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_codes: Vec<u16>,
    /// Base interval of the jittered exponential back-off between tries.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_backoff_ms() -> u64 {
    25
}

impl Default for RetryPolicy {
    /// No retries (what a snapshot without a policy means; the translator writes Istio's default).
    fn default() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout_ms: None,
            retry_on: vec![],
            retriable_codes: vec![],
            backoff_ms: default_backoff_ms(),
        }
    }
}

/// Fault injection; a percentage is kept in parts per million, as Envoy does.
#[derive(Clone, Debug, Default, PartialEq, Hash, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct FaultDelay {
    pub delay_ms: u64,
    pub per_million: u32,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct FaultAbort {
    pub status: u16,
    pub per_million: u32,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    #[serde(default)]
    pub ignore_case: bool,
    /// All must hold. Pseudo-headers `:method`, `:authority` and `:scheme` are matched too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
}

impl RouteMatch {
    pub fn any() -> RouteMatch {
        RouteMatch { path: PathMatch::Prefix("/".into()), ignore_case: false, headers: vec![], query: vec![] }
    }
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    pub value: ValueMatch,
    /// `withoutHeaders`: the route matches only if this does not.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    Present,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Pick one cluster by relative weight.
    Clusters(Vec<WeightedCluster>),
    /// Answer locally.
    Direct {
        status: u16,
        body: String,
    },
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    /// Destination-level header edits, applied after the route's.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

#[derive(Clone, Debug, PartialEq, Hash, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    /// The service's FQDN (for metrics and headers).
    pub service: String,
    pub port: u16,
    /// Shared between the snapshots of every proxy that sees the same list (the control plane
    /// builds each list once per version).
    pub endpoints: Arc<Vec<Endpoint>>,
    /// From DestinationRule `loadBalancer` (top level, port level, subset merged); Istio's
    /// default is `LEAST_REQUEST`.
    #[serde(default)]
    pub lb: LbPolicy,
    /// Where the endpoints come from.
    #[serde(default)]
    pub discovery: Discovery,
    /// How a client reaches the endpoints (DestinationRule `tls`, else auto mTLS).
    #[serde(default, skip_serializing_if = "ClusterTls::is_auto")]
    pub tls: ClusterTls,
    /// DestinationRule `connectionPool` (top level, port level, subset merged).
    #[serde(default, skip_serializing_if = "ConnectionPool::is_default")]
    pub pool: ConnectionPool,
    /// DestinationRule `outlierDetection`, merged as `connectionPool` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierDetection>,
}

impl Cluster {
    /// Istio's SNI for mTLS to this cluster, from its name (`outbound|PORT|SUBSET|FQDN`).
    pub fn istio_sni(&self) -> String {
        let subset = self.name.split('|').nth(2).unwrap_or_default();
        istio_sni(self.port, subset, &self.service)
    }
}

/// Istio's SNI for mTLS to a cluster (`BuildDNSSrvSubsetKey`): `outbound_.<port>_.<subset>_.<fqdn>`,
/// so `outbound_.8000_._.httpbin...` without a subset.
pub fn istio_sni(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{fqdn}")
}

/// A cluster's outlier detection (DestinationRule `outlierDetection`, present means on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// 0 disables.
    pub consecutive_5xx: u32,
    /// 0 disables.
    pub consecutive_gateway: u32,
    /// With `split_local`: connection failures counted apart (0 disables).
    pub consecutive_local: u32,
    pub split_local: bool,
    pub interval_ms: u64,
    pub base_ejection_ms: u64,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

impl Default for OutlierDetection {
    /// Envoy's defaults under an empty `outlierDetection` block.
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            consecutive_local: 5,
            split_local: false,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// Istio's default for every circuit-breaker threshold: 2^32-1, unlimited in practice.
pub const UNLIMITED: u64 = u32::MAX as u64;

/// A cluster's circuit-breaker thresholds (Envoy's, from `connectionPool`) and pool options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`.
    pub max_connections: u64,
    /// `http.http1MaxPendingRequests`.
    pub max_pending_requests: u64,
    /// `http.http2MaxRequests` (active requests, whatever the protocol).
    pub max_requests: u64,
    /// `http.maxRetries` (retries in flight).
    pub max_retries: u64,
    /// `http.maxRequestsPerConnection`: 0 is unlimited, 1 disables keep-alive.
    pub max_requests_per_connection: u32,
    /// `tcp.connectTimeout` (meshConfig's 10 s when unset): TCP connect and TLS handshake.
    #[serde(default = "ten_seconds")]
    pub connect_timeout_ms: u64,
    /// `http.idleTimeout`, else `tcp.idleTimeout` (1 h when unset): an idle upstream connection
    /// is closed after this long.
    #[serde(default = "one_hour")]
    pub idle_timeout_ms: u64,
    /// `tcp.maxConnectionDuration` (0: none): a connection is closed once it is this old and
    /// idle (Envoy drains it).
    #[serde(default)]
    pub max_connection_duration_ms: u64,
    /// `tcp.tcpKeepalive`: SO_KEEPALIVE on upstream sockets, with the OS's values where unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
}

/// TCP keepalive probes (`tcp.tcpKeepalive`); `None` fields keep the OS's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Keepalive {
    pub probes: Option<u32>,
    pub time_s: Option<u32>,
    pub interval_s: Option<u32>,
}

fn ten_seconds() -> u64 {
    10_000
}

fn one_hour() -> u64 {
    3_600_000
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: UNLIMITED,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            max_requests_per_connection: 0,
            connect_timeout_ms: ten_seconds(),
            idle_timeout_ms: one_hour(),
            max_connection_duration_ms: 0,
            keepalive: None,
        }
    }
}

impl ConnectionPool {
    pub fn is_default(&self) -> bool {
        *self == ConnectionPool::default()
    }
}

/// The TLS a client originates to a cluster's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTls {
    /// No DestinationRule `tls`: Istio mTLS to endpoints that accept it (`Endpoint::mtls`),
    /// plaintext to the others.
    #[default]
    Auto,
    /// Plaintext.
    Disable,
    /// Istio mTLS to every endpoint; the SNI (Istio's `outbound_.port_.subset_.host` unless
    /// set) and the accepted server identities (the endpoint's own unless set).
    IstioMutual {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sni: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        subject_alt_names: Vec<String>,
    },
    /// TLS to a server outside the mesh's identities (DestinationRule `SIMPLE`).
    Simple(Originate),
    /// The same with a client certificate (`MUTUAL`).
    Mutual(Originate),
}

/// DestinationRule `tls` for SIMPLE and MUTUAL: files the proxy reads (it runs on this
/// machine, so paths are this machine's), the SNI, and how the server is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Originate {
    /// The SNI (and the name checked in the server's certificate); the service host if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Names accepted in the server's certificate instead of the SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// CA certificates (PEM file) that sign the server's; the system's roots if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// MUTUAL: this client's certificate chain and key (PEM files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Do not check the server's certificate at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl ClusterTls {
    pub fn is_auto(&self) -> bool {
        *self == ClusterTls::Auto
    }
}

/// How a cluster's endpoints are found (Envoy's cluster types).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// The registry's endpoints (Kubernetes Services; Envoy's EDS).
    #[default]
    Eds,
    /// A ServiceEntry's endpoint addresses as written (`resolution: STATIC`).
    Static,
    /// `host:port` names the proxy resolves when it connects (`resolution: DNS`,
    /// `DNS_ROUND_ROBIN`: the entry's endpoint addresses, or the host itself).
    Dns(Vec<String>),
    /// The address the client asked for (`resolution: NONE`; Envoy's ORIGINAL_DST).
    OriginalDst,
}

impl Discovery {
    /// Envoy's name for the cluster type (`proxy-config clusters`).
    pub fn envoy_type(&self) -> &'static str {
        match self {
            Discovery::Eds => "EDS",
            Discovery::Static => "STATIC",
            Discovery::Dns(_) => "STRICT_DNS",
            Discovery::OriginalDst => "ORIGINAL_DST",
        }
    }
}

/// How an endpoint is picked for each request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Power of two choices by active requests (Istio's default).
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
    /// The address the client asked for (no balancing).
    Passthrough,
    /// Soft affinity on a request attribute (ring of endpoints hashed by address).
    ConsistentHash(HashOn),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    Header(String),
    Cookie(String),
    Query(String),
    SourceIp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub namespace: String,
    pub pod: String,
    /// The Deployment that owns the pod, and the pod's labels (for metric labels).
    pub workload: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The endpoint has a sidecar that accepts Istio mTLS on this port (Istio's
    /// `security.istio.io/tlsMode: istio` label, unless its PeerAuthentication is DISABLE).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mtls: bool,
}

/// `outbound|<port>|<subset>|<fqdn>`, Envoy's cluster name as Istio writes it.
pub fn cluster_name(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound|{port}|{subset}|{fqdn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_sni_names_port_subset_and_host() {
        assert_eq!(
            istio_sni(8000, "", "httpbin.default.svc.cluster.local"),
            "outbound_.8000_._.httpbin.default.svc.cluster.local"
        );
        assert_eq!(
            istio_sni(9080, "v1", "reviews.default.svc.cluster.local"),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
    }
}
