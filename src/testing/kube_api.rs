//! A Kubernetes API server in one process, for testing the kind backend's kube-rs code where no
//! cluster can be had: objects of any kind kept as JSON under the paths Kubernetes serves them
//! at, list and watch with resourceVersion (history kept until `compact`, after which a watch
//! from an older version gets the `410 Expired` ERROR event that makes a client relist), create,
//! get, replace, delete, JSON merge patch, server-side apply (the `application/apply-patch+yaml`
//! PATCH: the applied object replaces the stored one's content but its status, an apply that
//! changes nothing writes nothing, the manager is recorded; field ownership is not modelled),
//! TokenReview for the tokens a test registers, pod logs, and port-forward over WebSocket
//! (`v4.channel.k8s.io`) to a target the test names. Every request is logged for tests to assert
//! what a client did. Self-contained (only crates, no `crate::`) so the end-to-end tests include
//! the same file.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

/// Where a collection lives: its API group ("" for the core group) and plural name.
type Collection = (String, String);

/// One change, as a watch sends it.
#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    collection: Collection,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Db {
    objects: BTreeMap<(Collection, String, String), Value>,
    rv: u64,
    history: Vec<Event>,
    /// Watches from a version below this one are told it expired (410).
    compacted: u64,
    /// (namespace, pod, port) → where a port-forward to it connects.
    forwards: HashMap<(String, String, u16), SocketAddr>,
    /// (namespace, pod, container) → what an exec there prints on stdout and exits with.
    execs: HashMap<(String, String, String), (String, i32)>,
    /// (namespace, pod, container) → its log.
    logs: HashMap<(String, String, String), String>,
    /// Token → (namespace, service account, pod).
    tokens: HashMap<String, (String, String, String)>,
    requests: Vec<Logged>,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
}

/// A running fake API server; it stops when the runtime that started it does.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    db: Arc<Mutex<Db>>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch (as an API server's watch timeout does).
    cut: Arc<watch::Sender<u64>>,
    /// Collections (plural names) whose lists do not answer until released.
    held: Arc<watch::Sender<Vec<String>>>,
}

impl FakeApi {
    /// Serves on a loopback port the OS picks, on the current tokio runtime, with the namespaces
    /// every cluster has.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API server");
        let addr = listener.local_addr().unwrap();
        let api = FakeApi {
            addr,
            db: Arc::new(Mutex::new(Db { rv: 100, ..Db::default() })),
            events: broadcast::channel(4096).0,
            cut: Arc::new(watch::channel(0).0),
            held: Arc::new(watch::channel(Vec::new()).0),
        };
        // What every cluster has.
        for ns in ["default", "kube-system", "kube-public"] {
            api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
                });
            }
        });
        api
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file's text for this server (no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\ncurrent-context: fake\n",
            self.url()
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object` (its apiVersion, kind, metadata.name and, when namespaced, namespace say
    /// where), as a create or an update would.
    pub fn put(&self, object: Value) -> Value {
        let (collection, namespace, name) = locate(&object);
        self.write(collection, namespace, name, object)
    }

    /// Deletes what `put` stored under the same apiVersion, kind, namespace and name.
    pub fn remove(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let collection = (group_of(api_version), plural_of(kind));
        self.delete(collection, namespace.to_string(), name.to_string()).is_some()
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ((group_of(api_version), plural_of(kind)), namespace.to_string(), name.to_string());
        self.lock().objects.get(&key).cloned()
    }

    /// Every stored object of `api_version`/`kind`.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let collection = (group_of(api_version), plural_of(kind));
        self.lock().objects.iter().filter(|((c, _, _), _)| *c == collection).map(|(_, o)| o.clone()).collect()
    }

    /// Forgets the change history: a watch resumed from any version seen so far gets 410.
    pub fn compact(&self) {
        let mut db = self.lock();
        db.compacted = db.rv + 1;
        db.history.clear();
    }

    /// Ends every open watch (clients watch again from the last version they saw).
    pub fn cut_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Lists of `plural` (e.g. `telemetries`) do not answer until `release`: a slow API server.
    pub fn hold(&self, plural: &str) {
        self.held.send_modify(|h| h.push(plural.to_string()));
    }

    /// Lists answer again, the held ones at once.
    pub fn release(&self) {
        self.held.send_replace(Vec::new());
    }

    /// A TokenReview of `token` says it is service account `namespace/sa`'s, bound to `pod`.
    pub fn add_token(&self, token: &str, namespace: &str, sa: &str, pod: &str) {
        self.lock().tokens.insert(token.into(), (namespace.into(), sa.into(), pod.into()));
    }

    /// A port-forward to `namespace/pod`'s `port` connects to `target`.
    pub fn forward_to(&self, namespace: &str, pod: &str, port: u16, target: SocketAddr) {
        self.lock().forwards.insert((namespace.into(), pod.into(), port), target);
    }

    /// An exec in `namespace/pod`'s `container` prints `stdout`, then the command it was given
    /// (`ran: ARGS`), and exits with `code`.
    pub fn on_exec(&self, namespace: &str, pod: &str, container: &str, stdout: &str, code: i32) {
        self.lock().execs.insert((namespace.into(), pod.into(), container.into()), (stdout.into(), code));
    }

    /// What `kubectl logs` of `namespace/pod -c container` prints.
    pub fn set_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.lock().logs.insert((namespace.into(), pod.into(), container.into()), text.into());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().requests.clone()
    }

    fn write(&self, collection: Collection, namespace: String, name: String, mut object: Value) -> Value {
        let mut db = self.lock();
        db.rv += 1;
        let rv = db.rv;
        let key = (collection.clone(), namespace.clone(), name.clone());
        let old = db.objects.get(&key).cloned();
        let meta = object["metadata"].as_object_mut().expect("an object with metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("name".into(), json!(name));
        if !namespace.is_empty() {
            meta.insert("namespace".into(), json!(namespace));
        }
        let (uid, created, generation) = match &old {
            Some(o) => (
                o["metadata"]["uid"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
                json!(o["metadata"]["generation"].as_u64().unwrap_or(1) + 1),
            ),
            None => (json!(format!("uid-{rv}")), json!("2026-01-01T00:00:00Z"), json!(1)),
        };
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("generation".into(), generation);
        db.objects.insert(key, object.clone());
        let event = Event {
            rv,
            collection,
            namespace,
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object: object.clone(),
        };
        db.history.push(event.clone());
        let _ = self.events.send(event);
        object
    }

    fn delete(&self, collection: Collection, namespace: String, name: String) -> Option<Value> {
        let mut db = self.lock();
        let mut object = db.objects.remove(&(collection.clone(), namespace.clone(), name))?;
        db.rv += 1;
        let rv = db.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event { rv, collection, namespace, kind: "DELETED", object: object.clone() };
        db.history.push(event.clone());
        let _ = self.events.send(event);
        Some(object)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body_> {
        if req.uri().path().ends_with("/portforward") && req.headers().contains_key("upgrade") {
            return self.port_forward(req);
        }
        if req.uri().path().ends_with("/exec") && req.headers().contains_key("upgrade") {
            return self.exec(req);
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let content_type =
            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        self.lock().requests.push(Logged {
            method: method.to_string(),
            uri: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            content_type: content_type.clone(),
        });
        let query: HashMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let Some(path) = Path::parse(uri.path()) else {
            return status(StatusCode::NOT_FOUND, "NotFound", &format!("the server could not find {}", uri.path()));
        };
        if path.collection == ("authentication.k8s.io".to_string(), "tokenreviews".to_string())
            && method == Method::POST
        {
            return self.token_review(&body);
        }
        if path.subresource.as_deref() == Some("log") && method == Method::GET {
            let name = path.name.clone().unwrap_or_default();
            let container = query.get("container").cloned().unwrap_or_default();
            let Some(text) = self.lock().logs.get(&(path.namespace.clone(), name.clone(), container)).cloned() else {
                return not_found(&path, &name);
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = query.get("tailLines").and_then(|n| n.parse::<usize>().ok()).unwrap_or(lines.len());
            let kept: String = lines[lines.len().saturating_sub(tail)..].iter().map(|l| format!("{l}\n")).collect();
            return Response::builder()
                .header("content-type", "text/plain")
                .body(Body_::Full(Full::new(Bytes::from(kept))))
                .expect("a response");
        }
        match (method, &path.name) {
            (Method::GET, None) if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
                let from = query.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let timeout = query.get("timeoutSeconds").and_then(|v| v.parse::<u64>().ok()).unwrap_or(300);
                self.watch(path, from, Duration::from_secs(timeout))
            }
            (Method::GET, None) => {
                let mut held = self.held.subscribe();
                let _ = held.wait_for(|h| !h.contains(&path.collection.1)).await;
                self.list_response(&path)
            }
            (Method::GET, Some(name)) => {
                match self.lock().objects.get(&(path.collection.clone(), path.namespace.clone(), name.clone())) {
                    Some(o) => ok(StatusCode::OK, o),
                    None => not_found(&path, name),
                }
            }
            (Method::POST, None) => {
                let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON");
                };
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let key = (path.collection.clone(), path.namespace.clone(), name.clone());
                if self.lock().objects.contains_key(&key) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{} \"{name}\" already exists", path.collection.1),
                    );
                }
                ok(StatusCode::CREATED, &self.write(path.collection, path.namespace, name, object))
            }
            (Method::PATCH, Some(name)) => {
                let existing =
                    self.lock().objects.get(&(path.collection.clone(), path.namespace.clone(), name.clone())).cloned();
                let patched = if content_type.starts_with("application/apply-patch") {
                    let Ok(mut applied) = serde_yaml::from_slice::<Value>(&body) else {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", "the apply patch is not YAML");
                    };
                    applied["metadata"]["name"] = json!(name);
                    if !path.namespace.is_empty() {
                        applied["metadata"]["namespace"] = json!(path.namespace);
                    }
                    let manager = query.get("fieldManager").cloned().unwrap_or_default();
                    applied["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply"}]);
                    if let Some(old) = &existing {
                        // The status is the controllers', not the applier's.
                        if !old["status"].is_null() {
                            applied["status"] = old["status"].clone();
                        }
                        // An apply that changes nothing writes nothing (the version stays).
                        if content(old) == content(&applied) {
                            return ok(StatusCode::OK, old);
                        }
                    }
                    applied
                } else if content_type.starts_with("application/merge-patch+json") {
                    let Some(mut old) = existing else { return not_found(&path, name) };
                    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", "the patch is not JSON");
                    };
                    merge(&mut old, &patch);
                    old
                } else {
                    return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", &content_type);
                };
                let code = if self.get_key(&path, name).is_some() { StatusCode::OK } else { StatusCode::CREATED };
                ok(code, &self.write(path.collection, path.namespace, name.clone(), patched))
            }
            (Method::PUT, Some(name)) => {
                let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON");
                };
                if self.get_key(&path, name).is_none() {
                    return not_found(&path, name);
                }
                ok(StatusCode::OK, &self.write(path.collection, path.namespace, name.clone(), object))
            }
            (Method::DELETE, Some(name)) => {
                match self.delete(path.collection.clone(), path.namespace.clone(), name.clone()) {
                    Some(o) => ok(StatusCode::OK, &o),
                    None => not_found(&path, name),
                }
            }
            (m, _) => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &format!("{m} is not served here")),
        }
    }

    fn get_key(&self, path: &Path, name: &str) -> Option<Value> {
        self.lock().objects.get(&(path.collection.clone(), path.namespace.clone(), name.to_string())).cloned()
    }

    fn list_response(&self, path: &Path) -> Response<Body_> {
        let db = self.lock();
        let items: Vec<Value> = db
            .objects
            .iter()
            .filter(|((c, ns, _), _)| *c == path.collection && (path.namespace.is_empty() || *ns == path.namespace))
            .map(|(_, o)| o.clone())
            .collect();
        ok(
            StatusCode::OK,
            &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": db.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, path: Path, from: u64, timeout: Duration) -> Response<Body_> {
        let (tx, rx) = mpsc::channel::<Bytes>(1024);
        let db = self.lock();
        if from != 0 && from < db.compacted {
            let expired = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("too old resource version: {from} ({})", db.compacted),
                "reason": "Expired", "code": 410}});
            let _ = tx.try_send(line(&expired));
            drop(tx);
            return streaming(rx);
        }
        let wanted = move |e: &Event| {
            e.collection == path.collection
                && (path.namespace.is_empty() || e.namespace == path.namespace)
                && e.rv > from
        };
        let backlog: Vec<Event> = db.history.iter().filter(|e| wanted(e)).cloned().collect();
        let mut live = self.events.subscribe();
        let mut cut = self.cut.subscribe();
        drop(db);
        tokio::spawn(async move {
            for e in backlog {
                if tx.send(line(&json!({"type": e.kind, "object": e.object}))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut deadline => return,
                    _ = cut.changed() => return,
                    e = live.recv() => match e {
                        Ok(e) if wanted(&e) => {
                            if tx.send(line(&json!({"type": e.kind, "object": e.object}))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
        });
        streaming(rx)
    }

    fn token_review(&self, body: &[u8]) -> Response<Body_> {
        let review: Value = serde_json::from_slice(body).unwrap_or_default();
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let audiences = review["spec"]["audiences"].clone();
        let status = match self.lock().tokens.get(token) {
            Some((ns, sa, pod)) => json!({
                "authenticated": true,
                "user": {"username": format!("system:serviceaccount:{ns}:{sa}"), "uid": format!("uid-{sa}"),
                         "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}")],
                         "extra": {"authentication.kubernetes.io/pod-name": [pod], "authentication.kubernetes.io/pod-uid": [format!("uid-{pod}")]}},
                "audiences": audiences,
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        let mut out = review.clone();
        out["status"] = status;
        ok(StatusCode::CREATED, &out)
    }
}

impl FakeApi {
    /// A pod's port-forward, as the API server serves it to a WebSocket client: subprotocol
    /// `v4.channel.k8s.io`, two channels per port (data, error), each opened by a frame that
    /// names the port; the data channel piped to the target the test gave.
    fn port_forward(&self, req: Request<Incoming>) -> Response<Body_> {
        let key = req.headers().get("sec-websocket-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let accept = accept_key(&key);
        let path = Path::parse(req.uri().path());
        let port: u16 = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("ports="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let target = path.as_ref().and_then(|p| {
            self.lock().forwards.get(&(p.namespace.clone(), p.name.clone().unwrap_or_default(), port)).copied()
        });
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let ws = hyper_util::rt::TokioIo::new(upgraded);
            let (mut from_client, mut to_client) = tokio::io::split(ws);
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let [lo, hi] = port.to_le_bytes();
            let _ = to_client.write_all(&frame(&[0, lo, hi])).await;
            let _ = to_client.write_all(&frame(&[1, lo, hi])).await;
            let Some(Ok(tcp)) = (match target {
                Some(t) => Some(tokio::net::TcpStream::connect(t).await),
                None => None,
            }) else {
                let _ = to_client.write_all(&frame(b"\x01no such port to forward to")).await;
                return;
            };
            let (mut from_pod, mut to_pod) = tcp.into_split();
            let upstream = async move {
                while let Some(payload) = read_frame(&mut from_client).await {
                    if payload.first() == Some(&0) && to_pod.write_all(&payload[1..]).await.is_err() {
                        break;
                    }
                }
                let _ = to_pod.shutdown().await;
            };
            let downstream = async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match from_pod.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut data = vec![0u8];
                    data.extend_from_slice(&buf[..n]);
                    if to_client.write_all(&frame(&data)).await.is_err() {
                        break;
                    }
                }
                let _ = to_client.write_all(&[0x88, 0]).await;
            };
            tokio::join!(upstream, downstream);
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", "v4.channel.k8s.io")
            .body(Body_::Full(Full::new(Bytes::new())))
            .expect("a response")
    }
}

impl FakeApi {
    /// An exec, as the API server serves it to a WebSocket client (`v4.channel.k8s.io`):
    /// stdout on channel 1, then the status on channel 3 (`Success`, or `Failure` with the
    /// `ExitCode` cause kubectl reads), then a close.
    fn exec(&self, req: Request<Incoming>) -> Response<Body_> {
        let key = req.headers().get("sec-websocket-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let path = Path::parse(req.uri().path());
        let mut command = Vec::new();
        let mut container = String::new();
        for (k, v) in req.uri().query().unwrap_or_default().split('&').filter_map(|kv| kv.split_once('=')) {
            let v = percent_decode(v);
            match k {
                "command" => command.push(v),
                "container" => container = v,
                _ => {}
            }
        }
        let found = path.as_ref().and_then(|p| {
            self.lock()
                .execs
                .get(&(p.namespace.clone(), p.name.clone().unwrap_or_default(), container.clone()))
                .cloned()
        });
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let mut ws = hyper_util::rt::TokioIo::new(upgraded);
            use tokio::io::AsyncWriteExt;
            let status = match found {
                Some((stdout, code)) => {
                    let mut out = vec![1u8];
                    out.extend_from_slice(format!("{stdout}ran: {}\n", command.join(" ")).as_bytes());
                    let _ = ws.write_all(&frame(&out)).await;
                    if code == 0 {
                        json!({"metadata": {}, "status": "Success"})
                    } else {
                        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                            "message": format!("command terminated with non-zero exit code: exit status {code}"),
                            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
                    }
                }
                None => json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                    "message": format!("container {container:?} not found in pod")}),
            };
            let mut out = vec![3u8];
            out.extend_from_slice(status.to_string().as_bytes());
            let _ = ws.write_all(&frame(&out)).await;
            let _ = ws.write_all(&[0x88, 0]).await;
            let _ = ws.flush().await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept_key(&key))
            .header("sec-websocket-protocol", "v4.channel.k8s.io")
            .body(Body_::Full(Full::new(Bytes::new())))
            .expect("a response")
    }
}

/// `%XX` and `+` in a query value, decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Sec-WebSocket-Accept` for a client's key (RFC 6455).
fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// A binary WebSocket frame, as a server sends it (unmasked).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// The payload of the client's next data frame (masked, as clients send them); None at a close
/// frame or the end of the stream. Control frames other than close are skipped.
async fn read_frame(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.ok()?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).await.ok()?;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.ok()?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x8 => return None,
            0x0..=0x2 => return Some(payload),
            _ => continue,
        }
    }
}

/// A parsed request path.
struct Path {
    collection: Collection,
    namespace: String,
    name: Option<String>,
    /// `log`, `status`...
    subresource: Option<String>,
}

impl Path {
    fn parse(path: &str) -> Option<Path> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _v, rest @ ..] => (String::new(), rest),
            ["apis", g, _v, rest @ ..] => (g.to_string(), rest),
            _ => return None,
        };
        let (namespace, plural, rest) = match rest {
            ["namespaces", ns, plural, rest @ ..] => (ns.to_string(), plural.to_string(), rest),
            ["namespaces", rest @ ..] => (String::new(), "namespaces".to_string(), rest),
            [plural, rest @ ..] => (String::new(), plural.to_string(), rest),
            [] => return None,
        };
        Some(Path {
            collection: (group, plural),
            namespace,
            name: rest.first().map(|n| n.to_string()),
            subresource: rest.get(1).map(|n| n.to_string()),
        })
    }
}

fn group_of(api_version: &str) -> String {
    api_version.split_once('/').map(|(g, _)| g.to_string()).unwrap_or_default()
}

/// Kubernetes' plural of a kind, as its APIs name it.
fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'o', 'u'])) {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

fn locate(object: &Value) -> (Collection, String, String) {
    let api_version = object["apiVersion"].as_str().expect("an object with apiVersion");
    let kind = object["kind"].as_str().expect("an object with kind");
    let namespace = if kind == "Namespace" { "" } else { object["metadata"]["namespace"].as_str().unwrap_or("") };
    let name = object["metadata"]["name"].as_str().expect("an object with metadata.name");
    ((group_of(api_version), plural_of(kind)), namespace.to_string(), name.to_string())
}

/// An object less what the server sets in its metadata.
fn content(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(meta) = v["metadata"].as_object_mut() {
        for field in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(field);
        }
    }
    v
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("made an object");
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).expect("JSON");
    s.push(b'\n');
    Bytes::from(s)
}

/// A response body: whole, or chunks as a watch sends them.
pub enum Body_ {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for Body_ {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body_::Full(f) => Pin::new(f).poll_frame(cx),
            Body_::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn streaming(rx: mpsc::Receiver<Bytes>) -> Response<Body_> {
    Response::builder().header("content-type", "application/json").body(Body_::Stream(rx)).expect("a response")
}

fn ok(code: StatusCode, v: &Value) -> Response<Body_> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body_::Full(Full::new(Bytes::from(serde_json::to_vec(v).expect("JSON")))))
        .expect("a response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body_> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    ok(code, &body)
}

fn not_found(path: &Path, name: &str) -> Response<Body_> {
    status(StatusCode::NOT_FOUND, "NotFound", &format!("{} \"{name}\" not found", path.collection.1))
}
