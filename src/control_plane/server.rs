//! The control plane's HTTP API (see `api` for the wire types): apply, delete, list, status,
//! the proxies' snapshot watch and the sync wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api::{
    Action, ApplyRequest, CertificateRequest, CertificateResponse, ChangeResponse, ControlPlaneStatus, DeleteRequest,
    ErrorBody, Finding, Push, Status,
};
use crate::control_plane::state::State;
use crate::net::{self, Body};
use crate::resources::{self, Kind, Resource};
use crate::snapshot::Version;
use crate::translate;

pub struct Server {
    pub state: Arc<State>,
    pub token: String,
    pub started: String,
    pub address: std::net::SocketAddr,
    /// The addons it runs (Prometheus).
    pub addons: Arc<crate::control_plane::addons::Addons>,
    /// The trace collector the proxies send spans to, and its query listener's address.
    pub traces: Arc<crate::control_plane::traces::Collector>,
    pub tracing: Option<std::net::SocketAddr>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    net::json(status, &ErrorBody { error: msg.into(), findings: vec![] })
}

/// The input was refused: the findings as text (for any client) and as data (the CLI maps
/// them to file and line).
fn refused(findings: Vec<Finding>) -> Response<Body> {
    let text: Vec<String> = findings.iter().map(Finding::to_string).collect();
    net::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &ErrorBody { error: format!("nothing was applied:\n{}", text.join("\n")), findings },
    )
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

pub async fn handle(server: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() == "/ready" {
        return net::text(StatusCode::OK, "ready\n");
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let q = query(&req);
    if !constant_time_eq(bearer.as_bytes(), server.token.as_bytes()) {
        // A proxy's own credential: its snapshot and its certificate, nothing else.
        let owner = if bearer.is_empty() { None } else { server.state.credential_owner(bearer).await };
        let Some(pod) = owner else {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: the CLI's is in the environment's state dir; a proxy's is its pod's (given by the \
                 local runner, or on Kubernetes its projected ServiceAccount token, which the API server must accept)",
            );
        };
        let own = format!("{}/{}", q.get("namespace").map_or("", |s| s), q.get("pod").map_or("", |s| s));
        return match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/v1/snapshot") if own == pod => snapshot(&server, &q).await,
            (Method::GET, "/v1/credentials") => credential(&server, Some(&pod), &q),
            (Method::POST, "/v1/certificates") => match read_json::<CertificateRequest>(req).await {
                Ok(body) => certificate(&server, &pod, &body),
                Err(e) => e,
            },
            (Method::POST, "/v1/spans") => match read_json::<Vec<crate::trace::Span>>(req).await {
                Ok(spans) => take_spans(&server, &pod, spans),
                Err(e) => e,
            },
            _ => error(
                StatusCode::FORBIDDEN,
                format!("the credential of pod {pod} is good for its own snapshot, certificate and spans only"),
            ),
        };
    }
    if let Some(name) = req.uri().path().strip_prefix("/v1/addons/").map(str::to_string) {
        if req.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "POST /v1/addons/NAME {\"enabled\": true|false}");
        }
        return match read_json::<crate::api::AddonRequest>(req).await {
            Ok(body) => addon(&server, &name, body.enabled),
            Err(e) => e,
        };
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/v1/apply") => match read_json::<ApplyRequest>(req).await {
            Ok(body) => apply(&server, body),
            Err(e) => e,
        },
        (Method::POST, "/v1/delete") => match read_json::<DeleteRequest>(req).await {
            Ok(body) => delete(&server, body),
            Err(e) => e,
        },
        (Method::GET, "/v1/resources") => list(&server, &q),
        (Method::GET, "/v1/status") => status(&server, &q).await,
        (Method::GET, "/v1/snapshot") => snapshot(&server, &q).await,
        (Method::GET, "/v1/credentials") => credential(&server, None, &q),
        // A proxy started by hand with the environment's token names its pod.
        (Method::POST, "/v1/certificates") => {
            let pod = format!("{}/{}", q.get("namespace").map_or("", |s| s), q.get("pod").map_or("", |s| s));
            match read_json::<CertificateRequest>(req).await {
                Ok(body) => certificate(&server, &pod, &body),
                Err(e) => e,
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no API route {} {}", req.method(), req.uri().path())),
    }
}

/// Runs or stops an addon; its status (null once stopped), or 400 saying why it cannot run.
fn addon(server: &Server, name: &str, enabled: bool) -> Response<Body> {
    let result = if enabled {
        server.addons.enable(&server.state, name).map(Some)
    } else {
        server.addons.disable(&server.state, name).map(|_| None)
    };
    match result {
        Ok(status) => net::json(StatusCode::OK, &status),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

/// Spans from a proxy, kept under its own pod's service name (`app.namespace`, or the
/// workload's name without an `app` label): a proxy cannot report for another workload.
fn take_spans(server: &Server, pod: &str, spans: Vec<crate::trace::Span>) -> Response<Body> {
    let Some(identity) = server.state.pod_identity(pod) else {
        return error(StatusCode::NOT_FOUND, format!("pod {pod} is gone"));
    };
    let app = identity.labels.get("app").cloned().unwrap_or_else(|| identity.workload.clone());
    let process = crate::control_plane::traces::Process {
        service: format!("{app}.{}", identity.namespace),
        pod: identity.pod.clone(),
        namespace: identity.namespace.clone(),
    };
    let n = server.traces.add(&process, spans);
    net::json(StatusCode::OK, &serde_json::json!({"accepted": n}))
}

/// A TLS credential from a Secret. A proxy (`caller`) may read only Secrets of its own
/// namespace, and only if it is a gateway (Istio's gateways read Secrets in theirs).
fn credential(server: &Server, caller: Option<&str>, q: &HashMap<String, String>) -> Response<Body> {
    let name = q.get("name").map(String::as_str).unwrap_or_default();
    let Some((ns, secret_name)) = name.split_once('/') else {
        return error(StatusCode::BAD_REQUEST, "name=NAMESPACE/NAME");
    };
    let state = &server.state;
    if let Some(pod) = caller {
        let allowed =
            state.pod_identity(pod).is_some_and(|id| id.role == crate::snapshot::Role::Gateway && id.namespace == ns);
        if !allowed {
            return error(StatusCode::FORBIDDEN, format!("pod {pod} may not read Secrets in namespace {ns}"));
        }
    }
    let secret = |n: &str| state.secret(ns, n);
    let Some(s) = secret(secret_name) else {
        return error(StatusCode::NOT_FOUND, format!("secret {name} not found"));
    };
    let (Some(cert_chain), Some(key)) = (s.text(&["tls.crt", "cert"]), s.text(&["tls.key", "key"])) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("secret {name} has no tls.crt and tls.key (or cert and key)"),
        );
    };
    let ca = s
        .text(&["ca.crt", "cacert"])
        .or_else(|| secret(&format!("{secret_name}-cacert")).and_then(|c| c.text(&["ca.crt", "cacert"])));
    net::json(StatusCode::OK, &crate::api::Credential { cert_chain, key, ca })
}

/// Signs the CSR of pod `key`'s proxy for the pod's own identity (its service account).
fn certificate(server: &Server, key: &str, body: &CertificateRequest) -> Response<Body> {
    let Some(id) = server.state.pod_identity(key) else {
        return error(StatusCode::NOT_FOUND, format!("pod {key} is not known to this control plane"));
    };
    let identity = crate::ca::spiffe_id(&id.namespace, &id.service_account);
    match server.state.ca.sign_workload(&body.csr, &identity, server.state.cert_ttl) {
        Ok(cert_chain) => net::json(
            StatusCode::OK,
            &CertificateResponse { cert_chain, root: server.state.ca.root_pem().to_string(), identity },
        ),
        Err(e @ crate::ca::Error::WrongIdentity { .. }) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    let bytes = net::read_body(req.into_body(), 64 << 20).await.map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// Validates the whole batch, then applies all of it or none. The work (validation, admission,
/// certificate keys, port probes, the bounds) runs outside the state lock, against a clone of
/// the store; the lock is held only to take that clone and to commit, and the plan is made again
/// if another change landed in between.
fn apply(server: &Server, body: ApplyRequest) -> Response<Body> {
    let state = &server.state;
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    for mut r in body.resources {
        r.set_default_namespace("default");
        let key = r.key();
        match crate::validate::validate(&r) {
            Ok(mut warnings) => {
                warnings.extend(crate::validate::unenforced(&r));
                checked.push((r, warnings));
            }
            Err(es) => errors.extend(es.iter().map(|e| Finding::new(Some(key.clone()), e))),
        }
    }
    // A few tries against fresh clones; then the plan is made under the lock, so an apply is
    // never starved by a stream of others.
    for attempt in 0..4 {
        let planned = if attempt < 3 {
            let objects = state.lock().config.objects().clone();
            let batch = plan(state, &objects, checked.clone(), errors.clone());
            let mut inner = state.lock();
            if inner.config.objects().generation() != objects.generation() {
                continue;
            }
            commit(state, &mut inner, batch, (body.dry_run, body.create_only))
        } else {
            let mut inner = state.lock();
            let objects = inner.config.objects().clone();
            let batch = plan(state, &objects, checked.clone(), errors.clone());
            commit(state, &mut inner, batch, (body.dry_run, body.create_only))
        };
        return planned;
    }
    unreachable!("the last attempt plans under the lock")
}

/// The checks that need the store, against `store`: namespaces, admission, notes, certificates,
/// the bounds. The batch to commit, or every reason it is refused.
fn plan(
    state: &State,
    store: &crate::control_plane::config::Objects,
    checked: Vec<(Resource, Vec<String>)>,
    mut errors: Vec<Finding>,
) -> Result<Vec<(Resource, Vec<String>)>, Vec<Finding>> {
    let mut batch = Vec::new();
    let new_namespaces: HashMap<String, std::collections::BTreeMap<String, String>> = checked
        .iter()
        .filter_map(|(r, _)| match r {
            Resource::Namespace(n) => Some((n.metadata.name.clone(), n.metadata.labels.clone())),
            _ => None,
        })
        .collect();
    // (batch index, deployment, images) of Deployments run as the echo stand-in.
    let mut stand_ins: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (r, mut warnings) in checked {
        let key = r.key();
        if key.kind.namespaced()
            && !store.namespace_exists(&key.namespace)
            && !new_namespaces.contains_key(&key.namespace)
        {
            errors.push(Finding {
                key: Some(key.clone()),
                field: Some("metadata.namespace".into()),
                message: format!(
                    "namespace {:?} not found; create it first (kind: Namespace) or set metadata.namespace",
                    key.namespace
                ),
            });
            continue;
        }
        if let Resource::Deployment(d) = &r {
            let ns_labels = new_namespaces.get(&key.namespace).cloned().unwrap_or_else(|| {
                store
                    .get(&resources::ResourceKey {
                        kind: Kind::Namespace,
                        namespace: String::new(),
                        name: key.namespace.clone(),
                    })
                    .map(|n| n.meta().labels.clone())
                    .unwrap_or_default()
            });
            match state.backend.admit(d, &ns_labels) {
                Ok(admitted) => {
                    warnings.extend(admitted.warnings);
                    if !admitted.stand_ins.is_empty() {
                        stand_ins.push((batch.len(), key.name.clone(), admitted.stand_ins));
                    }
                }
                Err(e) => {
                    errors.push(Finding::new(Some(key.clone()), &e.to_string()));
                    continue;
                }
            }
        }
        batch.push((r, warnings));
    }
    if let Some((first, _, _)) = stand_ins.first() {
        let note = stand_in_note(&stand_ins);
        batch[*first].1.push(note);
    }
    gateway_port_notes(state, store, &mut batch);
    if errors.is_empty() {
        crate::control_plane::certmanager::issue(store, &mut batch);
    }
    // Pods of every Deployment once this batch is in, against the environment's bound.
    let replicas = |r: &Resource| if let Resource::Deployment(d) = r { u64::from(d.replicas()) } else { 0 };
    let batch_keys: std::collections::HashSet<resources::ResourceKey> = batch.iter().map(|(r, _)| r.key()).collect();
    let pods: u64 = store.all().iter().filter(|(k, _)| !batch_keys.contains(k)).map(|(_, r)| replicas(r)).sum::<u64>()
        + batch.iter().map(|(r, _)| replicas(r)).sum::<u64>();
    if let Some(max) = state.backend.max_pods().filter(|max| pods > *max) {
        errors.push(Finding::new(
            None,
            &format!(
                "the environment would run {pods} pods; the local backend runs at most {max} (lower spec.replicas)"
            ),
        ));
    }
    // The applied resources together, against the store's bound.
    let size = |r: &Resource| serde_json::to_vec(r).map_or(0, |v| v.len() as u64);
    let bytes = store.all().iter().filter(|(k, _)| !batch_keys.contains(k)).map(|(_, r)| size(r)).sum::<u64>()
        + batch.iter().map(|(r, _)| size(r)).sum::<u64>();
    if bytes > crate::control_plane::store::MAX_BYTES {
        errors.push(Finding::new(
            None,
            &format!(
                "the environment's applied resources would take {:.1} MiB; meshrig keeps at most {} MiB (delete what \
                 you no longer need, or keep large data out of the mesh)",
                bytes as f64 / (1024.0 * 1024.0),
                crate::control_plane::store::MAX_BYTES >> 20
            ),
        ));
    }
    if errors.is_empty() {
        Ok(batch)
    } else {
        Err(errors)
    }
}

/// Commits a plan made against the store as it still is (the lock held): all of it or none.
fn commit(
    state: &State,
    inner: &mut crate::control_plane::state::Inner,
    planned: Result<Vec<(Resource, Vec<String>)>, Vec<Finding>>,
    (dry_run, create_only): (bool, bool),
) -> Response<Body> {
    let batch = match planned {
        Ok(b) => b,
        Err(errors) => return refused(errors),
    };
    if dry_run {
        let results = batch
            .iter()
            .map(|(r, w)| crate::api::ResourceResult {
                key: r.key(),
                action: inner.config.objects().plan(r, create_only),
                warnings: w.clone(),
            })
            .collect();
        return net::json(StatusCode::OK, &ChangeResponse { results, version: state.version() });
    }
    match inner.config.apply(batch, create_only) {
        Ok(results) => {
            let changed = results.iter().any(|r| r.action != Action::Unchanged);
            let version =
                if changed { state.bump(inner) } else { Version { epoch: state.epoch, counter: inner.counter } };
            net::json(StatusCode::OK, &ChangeResponse { results, version })
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("nothing was applied: {e}")),
    }
}

/// One warning for every Deployment of an apply that runs as the echo stand-in.
fn stand_in_note(stand_ins: &[(usize, String, Vec<String>)]) -> String {
    let mut by_image: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (_, deployment, images) in stand_ins {
        for i in images {
            by_image.entry(i.as_str()).or_default().push(deployment.as_str());
        }
    }
    let list: Vec<String> = by_image.iter().map(|(i, ds)| format!("{i} ({})", ds.join(", "))).collect();
    format!(
        "{} meshrig does not have run{} its echo app instead: {}. It answers on each container port with its \
         pod, app and version labels, the path and headers; the pod annotations {}, {} and {} make it slow or failing",
        if by_image.len() == 1 { "an image" } else { "images" },
        if stand_ins.len() == 1 { "s" } else { "" },
        list.join("; "),
        crate::apps::echo::DELAY,
        crate::apps::echo::ERROR_RATE,
        crate::apps::echo::ERROR_STATUS,
    )
}

/// Adds to each Gateway's warnings where the ingress gateway publishes its ports, and which of
/// them another program holds.
fn gateway_port_notes(
    state: &State,
    store: &crate::control_plane::config::Objects,
    batch: &mut [(Resource, Vec<String>)],
) {
    use crate::control_plane::gateway_ports;
    let service_key = resources::ResourceKey::new(Kind::Service, "istio-system", "istio-ingressgateway");
    let service = batch.iter().map(|(r, _)| r).chain(store.get(&service_key)).find_map(|r| match r {
        Resource::Service(s) if r.key() == service_key => Some(s.clone()),
        _ => None,
    });
    let labels = gateway_ports::ingress_labels();
    let before = gateway_ports::served_ports(
        store.all().values().filter_map(|r| if let Resource::Gateway(g) = r { Some(g) } else { None }),
        service.as_ref(),
        &labels,
    );
    let free = |p: u16| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok();
    for (r, warnings) in batch.iter_mut() {
        if let Resource::Gateway(g) = r {
            warnings.extend(gateway_ports::notes(g, service.as_ref(), &labels, &state.settings, &before, free));
        }
    }
}

/// Deletes the keys, all or nothing; a Namespace takes everything in it along (as Kubernetes'
/// namespace deletion does), and `default` cannot be deleted (as in Kubernetes).
fn delete(server: &Server, body: DeleteRequest) -> Response<Body> {
    if body.keys.iter().any(|k| k.kind == Kind::Namespace && k.name == "default") {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "namespace \"default\" may not be deleted (as in Kubernetes); delete what is in it instead",
        );
    }
    match server.state.delete(body.keys) {
        Ok((results, version)) => net::json(StatusCode::OK, &ChangeResponse { results, version }),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("nothing was deleted: {e}")),
    }
}

fn list(server: &Server, q: &HashMap<String, String>) -> Response<Body> {
    let Some(kind) = q.get("kind").and_then(|k| Kind::from_user(k)) else {
        return error(StatusCode::BAD_REQUEST, "kind is required");
    };
    let items = server.state.list(kind, q.get("namespace").map(String::as_str), q.get("name").map(String::as_str));
    net::json(StatusCode::OK, &items)
}

/// The status; with `wait_ready_ms`, answers once the environment is settled at `counter`
/// (see `State::settled`) or when the time is up, whichever comes first.
async fn status(server: &Server, q: &HashMap<String, String>) -> Response<Body> {
    let state = &server.state;
    let target = q.get("counter").and_then(|v| v.parse().ok()).unwrap_or_else(|| *state.changes.borrow());
    let mut settled = state.settled(target);
    if let Some(ms) = q.get("wait_ready_ms").and_then(|v| v.parse::<u64>().ok()) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        let (mut changes, mut progress, mut reconciled) =
            (state.changes.subscribe(), state.progress.subscribe(), state.reconciled.subscribe());
        while !settled {
            let changed = async {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = progress.changed() => {}
                    _ = reconciled.changed() => {}
                }
            };
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
            settled = state.settled(target);
        }
    }
    let (version, pods) = state.pods_status();
    let status = Status {
        control_plane: ControlPlaneStatus {
            pid: std::process::id(),
            address: Some(server.address),
            version,
            started: server.started.clone(),
            tracing: server.tracing,
            addons: server.addons.statuses(),
        },
        pods,
        settled,
    };
    net::json(StatusCode::OK, &status)
}

/// The proxies' long poll: answers at once when the proxy's version is not the current one,
/// else when the config changes, else after 30 s (a keep-alive). The answer is the snapshot,
/// or `unchanged` when its content is what the proxy acknowledged (then nothing is resent).
///
/// Translation runs outside the state lock, on the shared view of the current version.
async fn snapshot(server: &Server, q: &HashMap<String, String>) -> Response<Body> {
    let key = format!(
        "{}/{}",
        q.get("namespace").map(String::as_str).unwrap_or(""),
        q.get("pod").map(String::as_str).unwrap_or("")
    );
    let acked = Version {
        epoch: q.get("epoch").and_then(|v| v.parse().ok()).unwrap_or(0),
        counter: q.get("counter").and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let state = &server.state;
    // Not before the backend has read everything once (on Kubernetes: every watch has listed
    // the cluster), so no proxy runs on a config made from half of it.
    if !state.backend.synced() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !state.backend.synced() {
            if tokio::time::Instant::now() >= deadline {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the control plane has not read its sources yet; ask again",
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // What the proxy holds, if this poll acknowledges a version we know the content of.
    let Some(held) = state.acknowledge(&key, acked) else {
        return error(StatusCode::NOT_FOUND, format!("pod {key} is not known to this control plane"));
    };
    let mut rx = state.changes.subscribe();
    if acked.epoch == state.epoch {
        let _ = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c != acked.counter)).await;
    }
    let view = state.view();
    if held.is_some() && view.version == acked {
        return net::json(StatusCode::OK, &Push::Unchanged(acked));
    }
    let Some(me) = view.world.workload(&key) else {
        return error(StatusCode::NOT_FOUND, format!("pod {key} is not known to this control plane"));
    };
    let snap = Arc::new(translate::snapshot(&view.world, me, view.version));
    let hash = snap.content_hash();
    let unchanged = held == Some(hash);
    state.record_push(&key, view.version, hash);
    if unchanged {
        net::json(StatusCode::OK, &Push::Unchanged(view.version))
    } else {
        net::json(StatusCode::OK, &Push::Snapshot(snap))
    }
}
