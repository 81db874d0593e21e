//! The control plane's loopback HTTP API: wire types and the client the CLI and proxies use.
//!
//! Every route but `/ready` requires `Authorization: Bearer <token>` (the environment's token).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Method, StatusCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::env::Env;
use crate::net;
use crate::ready::Addrs;
use crate::resources::{Kind, Resource, ResourceKey};
use crate::snapshot::{Role, Snapshot, Version};

#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub resources: Vec<Resource>,
    /// Leave existing objects alone (what `up` uses for its built-in manifests).
    #[serde(default)]
    pub create_only: bool,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
    NotFound,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
            Action::NotFound => "not found",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceResult {
    pub key: ResourceKey,
    pub action: Action,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub results: Vec<ResourceResult>,
    /// The config version that includes this change; `GET /v1/sync?counter=N` waits for it.
    pub version: Version,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub keys: Vec<ResourceKey>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub control_plane: ControlPlaneStatus,
    pub pods: Vec<PodStatus>,
    /// Every pod ready and every proxy running the current config.
    #[serde(default)]
    pub settled: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlPlaneStatus {
    pub pid: u32,
    pub address: Option<SocketAddr>,
    pub version: Version,
    pub started: String,
    /// Where the trace collector answers Jaeger's query API (`/jaeger/api/traces?service=..`).
    #[serde(default)]
    pub tracing: Option<SocketAddr>,
    /// The addons it runs (`meshrig addons enable`).
    #[serde(default)]
    pub addons: Vec<AddonStatus>,
}

/// An addon the control plane runs, and how it is doing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddonStatus {
    pub name: String,
    pub address: Option<SocketAddr>,
    /// It answers (Prometheus's `/-/ready`).
    pub ready: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Why it is not ready, when it is not.
    pub message: Option<String>,
}

/// `POST /v1/addons/{name}`: run it or stop it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddonRequest {
    pub enabled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The proxy this pod runs (sidecar, gateway, or the plain forwarder).
    pub role: Role,
    /// The built-in app, if the pod runs one (`httpbin`); idle client pods run none.
    pub app: Option<String>,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
    pub message: Option<String>,
    pub created: String,
    /// Proxy listeners: `outbound`, `admin`, `inbound:<port>`.
    pub proxy_addrs: Addrs,
    /// App listeners by container port.
    pub app_addrs: BTreeMap<u16, SocketAddr>,
    pub pids: Vec<u32>,
    /// The config version the proxy last acknowledged.
    pub acked: Option<Version>,
}

/// Where a pod is in its life, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Planned; its processes are not started yet.
    Pending,
    /// Its processes are starting and have not all announced their listeners.
    Starting,
    /// Every process runs and announced its listeners.
    Running,
    /// A process exited; the pod restarts after a back-off.
    CrashLoopBackOff,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::CrashLoopBackOff => "CrashLoopBackOff",
        })
    }
}

/// The answer to a proxy's watch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// Config the proxy does not have yet.
    Snapshot(std::sync::Arc<Snapshot>),
    /// The proxy's config is current at this version; nothing to install.
    Unchanged(Version),
}

/// `POST /v1/certificates`: a proxy asks for its workload certificate (its own credential,
/// its own identity only; the key never leaves the proxy).
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub csr: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    /// The workload certificate (PEM), leaf first.
    pub cert_chain: String,
    /// The mesh's root (PEM): what every workload trusts.
    pub root: String,
    /// The SPIFFE id the certificate names.
    pub identity: String,
}

/// `GET /v1/credentials?name=NAMESPACE/NAME`: a gateway's certificate from a Secret in its own
/// namespace (Envoy's SDS, in one call). Never part of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub cert_chain: String,
    pub key: String,
    /// For MUTUAL: the CA that client certificates must chain to (`ca.crt`/`cacert` of the
    /// Secret, or of `NAME-cacert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl PodStatus {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Containers as Kubernetes counts them: the workload's, plus `istio-proxy` when injected
    /// (a gateway pod is the proxy alone).
    pub fn containers(&self) -> u32 {
        match self.role {
            Role::Sidecar => 2,
            Role::Gateway | Role::Plain => 1,
        }
    }

    /// `READY` as kubectl prints it (`2/2`).
    pub fn ready_column(&self) -> String {
        let n = self.containers();
        format!("{}/{n}", if self.ready { n } else { 0 })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the control plane of environment {env:?} is not running; start it with `meshrig up`")]
    NotRunning { env: String },
    #[error("cannot reach the control plane at {address}: {reason}; `meshrig down` then `meshrig up` restarts it")]
    Unreachable { address: SocketAddr, reason: String },
    /// The API refused the call; `findings` say which resource and field, when it is about input.
    #[error("{message}")]
    Status { status: u16, message: String, findings: Vec<Finding> },
    #[error("unexpected answer from the control plane: {0}")]
    Decode(String),
    /// The client's own token cannot be had.
    #[error("{0}")]
    Credentials(String),
    /// The environment's backend does not do this (yet); the message says what does.
    #[error("{0}")]
    NotOnThisBackend(String),
    #[error(transparent)]
    Env(#[from] crate::env::Error),
}

/// How long an API call may take before the caller gives up (held calls get their hold on
/// top): 30 s, or `MESHRIG_API_TIMEOUT_MS`.
pub fn answer_within() -> Duration {
    static WITHIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WITHIN.get_or_init(|| {
        let ms = std::env::var("MESHRIG_API_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
        Duration::from_millis(ms)
    })
}

/// An error body from the API: `{"error": "...", "findings": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// One thing wrong with applied input: the resource, the field path, what is wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub key: Option<crate::resources::ResourceKey>,
    /// `spec.http[0].route[0].weight`
    pub field: Option<String>,
    pub message: String,
}

impl Finding {
    /// From a validation message `path: what is wrong` (or a message without a path).
    pub fn new(key: Option<crate::resources::ResourceKey>, text: &str) -> Finding {
        let is_path = |p: &str| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_' | '-' | '/'))
        };
        match text.split_once(": ") {
            Some((path, message)) if is_path(path) => {
                Finding { key, field: Some(path.to_string()), message: message.to_string() }
            }
            _ => Finding { key, field: None, message: text.to_string() },
        }
    }
}

impl std::fmt::Display for Finding {
    /// `VirtualService default/httpbin: spec.http[0]: message`, as the API's text says it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        if let Some(p) = &self.field {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Clone)]
pub struct Client {
    address: SocketAddr,
    token: Token,
    http: net::HttpClient,
}

/// Where a client's bearer token comes from: given, or a file read at every call (a projected
/// ServiceAccount token, which the kubelet rotates in place).
#[derive(Clone)]
enum Token {
    Fixed(String),
    File(std::path::PathBuf),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs and panics.
        f.debug_struct("Client").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(address: SocketAddr, token: String) -> Client {
        Client { address, token: Token::Fixed(token), http: net::client() }
    }

    /// A client whose token is the content of `path`, read at every call.
    pub fn with_token_file(address: SocketAddr, path: std::path::PathBuf) -> Client {
        Client { address, token: Token::File(path), http: net::client() }
    }

    fn bearer(&self) -> Result<String, Error> {
        match &self.token {
            Token::Fixed(t) => Ok(t.clone()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| Error::Credentials(format!("read the token file {}: {e}", path.display()))),
        }
    }

    /// The client for a running environment, from its state directory.
    pub fn for_env(env: &Env) -> Result<Client, Error> {
        let info = env.control_plane()?.ok_or_else(|| Error::NotRunning { env: env.name.clone() })?;
        Ok(Client::new(info.address, env.read_token()?))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub async fn ready(&self) -> bool {
        let req = self.http.get(format!("http://{}/ready", self.address)).send();
        matches!(tokio::time::timeout(Duration::from_secs(2), req).await, Ok(Ok(r)) if r.status().is_success())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::GET, path, None, answer_within()).await
    }

    /// A GET the control plane may hold open (a long poll) for up to `hold`.
    pub async fn get_held<T: DeserializeOwned>(&self, path: &str, hold: Duration) -> Result<T, Error> {
        self.call(Method::GET, path, None, hold + answer_within()).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Decode(e.to_string()))?;
        self.call(Method::POST, path, Some(bytes), answer_within()).await
    }

    /// One API call; no answer within `limit` is an error that says what to do (a hung control
    /// plane never makes a command wait forever).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<T, Error> {
        match tokio::time::timeout(limit, self.call_once(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable {
                address: self.address,
                reason: format!("no answer within {:.1}s (it may be hung)", limit.as_secs_f64()),
            }),
        }
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let mut req = self
            .http
            .request(method, format!("http://{}{}", self.address, path))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.bearer()?))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(body) = body {
            req = req.body(body);
        }
        let unreachable = |e: reqwest::Error| Error::Unreachable { address: self.address, reason: error_chain(&e) };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = net::read_all(resp, 64 << 20).await.map_err(Error::Decode)?;
        if status != StatusCode::OK {
            let (message, findings) = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| (b.error, b.findings))
                .unwrap_or_else(|_| (String::from_utf8_lossy(&bytes).into_owned(), vec![]));
            return Err(Error::Status { status: status.as_u16(), message, findings });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    pub async fn apply(&self, req: &ApplyRequest) -> Result<ChangeResponse, Error> {
        self.post("/v1/apply", req).await
    }

    pub async fn delete(&self, keys: Vec<ResourceKey>) -> Result<ChangeResponse, Error> {
        self.post("/v1/delete", &DeleteRequest { keys }).await
    }

    pub async fn list(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Result<Vec<Resource>, Error> {
        let mut path = format!("/v1/resources?kind={}", kind.as_str());
        if let Some(ns) = namespace {
            path.push_str(&format!("&namespace={ns}"));
        }
        if let Some(n) = name {
            path.push_str(&format!("&name={n}"));
        }
        self.get(&path).await
    }

    pub async fn status(&self) -> Result<Status, Error> {
        self.get("/v1/status").await
    }

    /// Enables (its status) or disables (`None`) an addon.
    pub async fn addon(&self, name: &str, enabled: bool) -> Result<Option<AddonStatus>, Error> {
        self.post(&format!("/v1/addons/{name}"), &AddonRequest { enabled }).await
    }

    /// Waits until the environment is settled at `version` (the runner has started the pods it
    /// asks for, every pod is ready, every proxy runs the current config) or `timeout` passes;
    /// the answer's `settled` says which.
    pub async fn wait_settled(&self, version: Option<Version>, timeout: Duration) -> Result<Status, Error> {
        let mut path = format!("/v1/status?wait_ready_ms={}", timeout.as_millis());
        if let Some(v) = version {
            path.push_str(&format!("&counter={}", v.counter));
        }
        self.get_held(&path, timeout).await
    }
}

pub use crate::net::error_chain;
