//! The control plane's shared state: the store, the pods the runner runs, and the version
//! counter every change bumps (proxies long-poll on it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::api::{Phase, PodStatus};
use crate::control_plane::backend::Backend;
use crate::control_plane::config::ConfigSource;
use crate::control_plane::credentials::Credentials;
use crate::env::{Env, Settings};
use crate::ready::{Addrs, Listener};
use crate::registry::Workload;
use crate::resources::Resource;
use crate::snapshot::Version;
use crate::translate::{self, World};

/// A pod as the control plane keeps it: the workload the mesh sees (the registry's record), how
/// the local runner runs it, and what its proxy was pushed.
#[derive(Clone, Debug)]
pub struct Pod {
    pub workload: Workload,
    pub run: Run,
    pub push: Push,
}

/// The runner's bookkeeping of a pod: its processes, their phase and listeners.
#[derive(Clone, Debug)]
pub struct Run {
    pub app: Option<String>,
    pub template_hash: String,
    phase: Phase,
    /// The version at which the pod's listeners were registered; ready once its proxy acked it.
    pub running_since: Version,
    pub restarts: u32,
    pub message: Option<String>,
    pub created: String,
    pub pids: Vec<u32>,
    /// The listeners its proxy announced.
    pub proxy: Addrs,
    /// The app's listener for each container port, as announced.
    pub app_addrs: BTreeMap<u16, SocketAddr>,
    /// Gateway: container port → the localhost address its listener is published on.
    pub published: BTreeMap<u16, SocketAddr>,
}

/// The push bookkeeping of a pod's proxy.
#[derive(Clone, Debug, Default)]
pub struct Push {
    /// The version its proxy last acknowledged.
    pub acked: Option<Version>,
    /// What its proxy was last given: a poll that acknowledges a version in that range tells
    /// what the proxy holds, so unchanged content is not resent.
    pub pushed: Option<Pushed>,
}

/// A snapshot content (by hash) and the versions it was current for, `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pushed {
    pub from: Version,
    pub to: Version,
    pub hash: u64,
}

impl Pushed {
    /// The content a proxy that acknowledged `acked` holds, if known.
    pub fn held_at(&self, acked: Version) -> Option<u64> {
        (acked.epoch == self.to.epoch && self.from.counter <= acked.counter && acked.counter <= self.to.counter)
            .then_some(self.hash)
    }

    /// After translating `hash` at `version`: the range grows while the content stays the same.
    pub fn next(previous: Option<Pushed>, version: Version, hash: u64) -> Pushed {
        match previous {
            Some(p) if p.hash == hash && p.to.epoch == version.epoch && p.to.counter <= version.counter => {
                Pushed { to: version, ..p }
            }
            _ => Pushed { from: version, to: version, hash },
        }
    }
}

impl Pod {
    pub fn new(workload: Workload, app: Option<String>, template_hash: String) -> Pod {
        let run = Run {
            app,
            template_hash,
            phase: Phase::Pending,
            running_since: Version::default(),
            restarts: 0,
            message: None,
            created: crate::env::rfc3339_now(),
            pids: vec![],
            proxy: Addrs::new(),
            app_addrs: BTreeMap::new(),
            published: BTreeMap::new(),
        };
        Pod { workload, run, push: Push::default() }
    }

    pub fn key(&self) -> String {
        self.workload.key()
    }

    pub fn phase(&self) -> Phase {
        self.run.phase
    }

    /// Sets the phase; the workload serves (can be an endpoint) exactly while Running.
    pub fn set_phase(&mut self, phase: Phase) {
        self.run.phase = phase;
        self.workload.serving = phase == Phase::Running;
    }

    /// Records the listeners the pod's processes announced, and registers where the mesh
    /// reaches each of its ports.
    pub fn set_listeners(&mut self, proxy: Option<Addrs>, app: Option<BTreeMap<u16, SocketAddr>>) {
        if let Some(proxy) = proxy {
            self.run.proxy = proxy;
        }
        if let Some(app) = app {
            self.run.app_addrs = app;
        }
        let (destinations, intercepted) = destinations(&self.run.proxy, &self.run.app_addrs, &self.run.published);
        self.workload.destinations = destinations;
        self.workload.intercepted = intercepted;
        self.workload.apps = self.run.app_addrs.clone();
    }

    pub fn ready(&self) -> bool {
        self.run.phase == Phase::Running && self.push.acked.is_some_and(|a| a.reached(self.run.running_since))
    }

    pub fn status(&self) -> PodStatus {
        let id = &self.workload.identity;
        PodStatus {
            namespace: id.namespace.clone(),
            name: id.pod.clone(),
            workload: id.workload.clone(),
            labels: id.labels.clone(),
            service_account: id.service_account.clone(),
            role: id.role,
            app: self.run.app.clone(),
            phase: self.run.phase,
            ready: self.ready(),
            restarts: self.run.restarts,
            message: self.run.message.clone(),
            created: self.run.created.clone(),
            proxy_addrs: self.run.proxy.clone(),
            app_addrs: self.run.app_addrs.clone(),
            pids: self.run.pids.clone(),
            acked: self.push.acked,
        }
    }
}

/// Where the mesh reaches each container port of a local pod: its sidecar's inbound listener,
/// else the app itself; for a gateway, the listener published for the port (so the mesh reaches
/// `istio-ingressgateway` as Istio's sidecars do). And the ports the sidecar intercepts. Pure.
pub fn destinations(
    proxy: &Addrs,
    app: &BTreeMap<u16, SocketAddr>,
    published: &BTreeMap<u16, SocketAddr>,
) -> (BTreeMap<u16, SocketAddr>, std::collections::BTreeSet<u16>) {
    let intercepted: std::collections::BTreeSet<u16> =
        proxy.keys().filter_map(|l| if let Listener::Inbound(p) = l { Some(*p) } else { None }).collect();
    let mut out = BTreeMap::new();
    for (port, addr) in published.iter().chain(app.iter()) {
        out.insert(*port, *addr);
    }
    for port in &intercepted {
        out.insert(*port, proxy[&Listener::Inbound(*port)]);
    }
    (out, intercepted)
}

pub struct Inner {
    /// The applied resources: where they are read and changes are written.
    pub config: Box<dyn ConfigSource>,
    pub pods: BTreeMap<String, Pod>,
    pub counter: u64,
    /// Every RequestAuthentication `jwksUri` the control plane has tried, by URI (`jwks.rs`).
    pub jwks: BTreeMap<String, crate::control_plane::jwks::Fetched>,
}

pub struct State {
    pub env: Env,
    /// The environment's settings, fixed while the control plane runs (`up` changes them only
    /// when it is not running).
    pub settings: Settings,
    /// Where proxies reach this control plane; the runner passes it to each proxy it starts.
    pub api: Api,
    /// What runs the workloads; `apply` asks it to admit Deployments.
    pub backend: Box<dyn Backend>,
    /// Who a proxy is, from its bearer token (the stand-in for a projected service-account
    /// token): good for its own pod's snapshot, certificate and spans only.
    pub credentials: Arc<dyn Credentials>,
    pub epoch: u64,
    pub inner: Mutex<Inner>,
    /// The config version proxies see: bumped by every change to the store or to a workload
    /// (what translation reads), and by nothing else.
    pub changes: watch::Sender<u64>,
    /// The counter the runner last reconciled: pods for every Deployment up to it exist.
    pub reconciled: watch::Sender<u64>,
    /// Bumped by what `status --wait` watches besides config changes: a proxy's
    /// acknowledgement, or a pod change no proxy sees (phase, restarts, pids).
    pub progress: watch::Sender<u64>,
    /// The world at one version, built once and shared by every proxy's translation.
    view: Mutex<Option<Arc<View>>>,
    /// The environment's root; signs each proxy's workload certificate.
    pub ca: crate::ca::Ca,
    /// How long a workload certificate lives (24 h, as Istio; `MESHRIG_WORKLOAD_CERT_TTL`
    /// seconds shortens it, to watch rotation).
    pub cert_ttl: std::time::Duration,
}

/// The API's address and token, as a proxy is started with them (`--control-plane` and the
/// `MESHRIG_PROXY_TOKEN` environment variable; the token never appears in a command line).
#[derive(Clone, Debug)]
pub struct Api {
    pub address: SocketAddr,
    pub token: String,
}

fn cert_ttl() -> std::time::Duration {
    std::env::var("MESHRIG_WORKLOAD_CERT_TTL")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s >= 2)
        .map(std::time::Duration::from_secs)
        .unwrap_or(crate::ca::WORKLOAD_TTL)
}

/// An immutable, indexed world at one version.
pub struct View {
    pub version: Version,
    pub world: World,
}

impl State {
    pub fn new(
        env: Env,
        settings: Settings,
        config: Box<dyn ConfigSource>,
        api: Api,
        backend: Box<dyn Backend>,
        ca: crate::ca::Ca,
    ) -> State {
        let epoch = loop {
            let e = fastrand::u64(1..);
            if e != 0 {
                break e;
            }
        };
        let credentials = backend.credentials();
        State {
            env,
            settings,
            api,
            backend,
            credentials,
            epoch,
            inner: Mutex::new(Inner { config, pods: BTreeMap::new(), counter: 1, jwks: BTreeMap::new() }),
            changes: watch::channel(1).0,
            reconciled: watch::channel(0).0,
            progress: watch::channel(0).0,
            view: Mutex::new(None),
            ca,
            cert_ttl: cert_ttl(),
        }
    }

    /// Changes the environment's saved settings (as saved now, which `up` may have changed
    /// since this control plane started) and saves them.
    pub fn settings_mut(&self, f: impl FnOnce(&mut Settings)) -> Result<Settings, String> {
        let mut s = self.env.settings().ok().flatten().unwrap_or_else(|| self.settings.clone());
        f(&mut s);
        self.env.save_settings(&s).map_err(|e| format!("save {}: {e}", self.env.settings_file().display()))?;
        Ok(s)
    }

    /// The identity of pod `key`, if the control plane knows it.
    pub fn pod_identity(&self, key: &str) -> Option<crate::snapshot::ProxyIdentity> {
        self.lock().pods.get(key).map(|p| p.workload.identity.clone())
    }

    /// The Secret `namespace/name`, if it is stored.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<crate::resources::core::Secret> {
        let key = crate::resources::ResourceKey::new(crate::resources::Kind::Secret, namespace, name);
        match self.lock().config.objects().get(&key) {
            Some(Resource::Secret(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The stored objects of `kind`, in a namespace and by name when given.
    pub fn list(&self, kind: crate::resources::Kind, namespace: Option<&str>, name: Option<&str>) -> Vec<Resource> {
        let inner = self.lock();
        inner
            .config
            .objects()
            .all()
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .filter(|(k, _)| namespace.is_none_or(|ns| !kind.namespaced() || k.namespace == ns))
            .filter(|(k, _)| name.is_none_or(|n| k.name == n))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Deletes the keys, all or nothing; a Namespace takes everything in it along (as
    /// Kubernetes' namespace deletion does). What happened to each key, and the version after.
    pub fn delete(
        &self,
        mut keys: Vec<crate::resources::ResourceKey>,
    ) -> Result<(Vec<crate::api::ResourceResult>, Version), crate::control_plane::config::WriteError> {
        use crate::resources::Kind;
        let mut inner = self.lock();
        let namespaces: Vec<String> = keys
            .iter()
            .filter(|k| k.kind == Kind::Namespace && inner.config.objects().namespace_exists(&k.name))
            .map(|k| k.name.clone())
            .collect();
        if !namespaces.is_empty() {
            let inside =
                inner.config.objects().all().keys().filter(|k| namespaces.contains(&k.namespace) && !keys.contains(k));
            let inside: Vec<crate::resources::ResourceKey> = inside.cloned().collect();
            // What is inside goes first, so the results read in the order things were removed.
            keys = inside.into_iter().chain(keys).collect();
        }
        let results = inner.config.delete(&keys)?;
        let version = if results.iter().any(|r| r.action == crate::api::Action::Deleted) {
            self.bump(&mut inner)
        } else {
            Version { epoch: self.epoch, counter: inner.counter }
        };
        Ok((results, version))
    }

    /// The version and every pod's status, as one consistent read.
    pub fn pods_status(&self) -> (Version, Vec<PodStatus>) {
        let inner = self.lock();
        (Version { epoch: self.epoch, counter: inner.counter }, inner.pods.values().map(|p| p.status()).collect())
    }

    /// Pod `key`'s proxy polls having applied `acked`: recorded (it may make the pod ready);
    /// the content hash it holds, when this control plane pushed that version's content.
    /// `None` when the pod is unknown.
    pub fn acknowledge(&self, key: &str, acked: Version) -> Option<Option<u64>> {
        let mut inner = self.lock();
        let pod = inner.pods.get_mut(key)?;
        if acked.epoch == self.epoch {
            pod.push.acked = Some(acked);
            self.progress.send_modify(|n| *n += 1);
        }
        Some(pod.push.pushed.and_then(|p| p.held_at(acked)))
    }

    /// Pod `key`'s proxy is being sent the content `hash` translated at `version`.
    pub fn record_push(&self, key: &str, version: Version, hash: u64) {
        if let Some(pod) = self.lock().pods.get_mut(key) {
            pod.push.pushed = Some(Pushed::next(pod.push.pushed, version, hash));
        }
    }

    /// A new credential for the proxy of pod `key` (the one before it stops working).
    /// The config source's objects changed elsewhere (its watch saw them): `f` makes the objects
    /// now from the ones held. Proxies get a new version when something changed.
    pub fn observe(
        &self,
        f: impl FnOnce(&crate::control_plane::config::Objects) -> crate::control_plane::config::Objects,
    ) -> Result<(), crate::control_plane::config::WriteError> {
        let mut inner = self.lock();
        let before = inner.config.objects().generation();
        let next = f(inner.config.objects());
        if next.generation() == before {
            return Ok(());
        }
        inner.config.observed(next)?;
        self.bump(&mut inner);
        Ok(())
    }

    /// The pods as the backend's workload source sees them now (Kubernetes' Pods), keyed
    /// `namespace/name`: new ones are added, gone ones removed, and a changed record replaces
    /// the one held (what a proxy acknowledged is kept). Proxies get a new version when a
    /// record they see changed.
    pub fn observe_pods(&self, now: BTreeMap<String, (Workload, Phase)>) {
        let mut inner = self.lock();
        let before = inner.pods.len();
        inner.pods.retain(|k, _| now.contains_key(k));
        let mut visible = inner.pods.len() != before;
        let mut progress = false;
        for (key, (workload, phase)) in now {
            match inner.pods.get_mut(&key) {
                Some(pod) => {
                    if pod.workload != workload {
                        pod.workload = workload;
                        visible = true;
                    }
                    if pod.run.phase != phase {
                        pod.run.phase = phase;
                        progress = true;
                    }
                }
                None => {
                    let mut pod = Pod::new(workload, None, String::new());
                    pod.run.phase = phase;
                    inner.pods.insert(key, pod);
                    visible = true;
                }
            }
        }
        if visible {
            self.bump(&mut inner);
        } else if progress {
            self.progress.send_modify(|n| *n += 1);
        }
    }

    /// The pod a proxy credential belongs to.
    pub async fn credential_owner(&self, token: &str) -> Option<String> {
        self.credentials.owner(token).await
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn version(&self) -> Version {
        Version { epoch: self.epoch, counter: *self.changes.borrow() }
    }

    /// Bumps the version; call with the lock held so the bump and the change are one step.
    pub fn bump(&self, inner: &mut Inner) -> Version {
        inner.counter += 1;
        self.changes.send_replace(inner.counter);
        Version { epoch: self.epoch, counter: inner.counter }
    }

    /// Settled at `target`: the runner has reconciled it, every pod is ready, and every running
    /// proxy has acknowledged the current config.
    pub fn settled(&self, target: u64) -> bool {
        let inner = self.lock();
        let current = Version { epoch: self.epoch, counter: inner.counter };
        *self.reconciled.borrow() >= target
            && inner.pods.values().all(|p| p.ready() && p.push.acked.is_some_and(|a| a.reached(current)))
            && Self::jwks_tried(&inner)
    }

    /// Forgets the `jwksUri`s no longer wanted; returns what is known of the others.
    pub fn jwks_retain(
        &self,
        wanted: &[(String, std::time::Duration)],
    ) -> BTreeMap<String, crate::control_plane::jwks::Fetched> {
        let mut inner = self.lock();
        inner.jwks.retain(|uri, _| wanted.iter().any(|(u, _)| u == uri));
        inner.jwks.clone()
    }

    /// The result of fetching `uri` at config version `counter`. New keys are a config change
    /// (proxies get them); anything else only wakes those waiting for the mesh to settle.
    pub fn record_jwks(&self, uri: &str, result: Result<String, String>, counter: u64) {
        let mut inner = self.lock();
        let old = inner.jwks.get(uri).and_then(|f| f.text.clone());
        let (text, error) = match result {
            Ok(text) => (Some(text), None),
            Err(e) => (old.clone(), Some(e)),
        };
        let changed = text != old;
        let fetched =
            crate::control_plane::jwks::Fetched { text, error, at: std::time::Instant::now(), at_counter: counter };
        inner.jwks.insert(uri.to_string(), fetched);
        if changed {
            self.bump(&mut inner);
        } else {
            self.progress.send_modify(|n| *n += 1);
        }
    }

    /// The world at the current version: built by the first caller after a change (cloning
    /// what translation reads under the lock, indexing it outside), then shared.
    pub fn view(&self) -> Arc<View> {
        let mut cache = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let current = *self.changes.borrow();
        if let Some(v) = cache.as_ref().filter(|v| v.version.counter == current) {
            return v.clone();
        }
        let inner = self.lock();
        let version = Version { epoch: self.epoch, counter: inner.counter };
        let resources: Vec<Resource> =
            inner.config.objects().all().values().filter(|r| translate::reads(r.kind())).cloned().collect();
        let workloads: Vec<Workload> = inner.pods.values().map(|p| p.workload.clone()).collect();
        let jwks = crate::control_plane::jwks::texts(&inner.jwks);
        drop(inner);
        let view = Arc::new(View { version, world: World::new(resources, workloads).with_jwks(&jwks) });
        *cache = Some(view.clone());
        view
    }

    /// Mutates one pod (if it still exists). The version moves only when the change is one
    /// proxies see (its workload record); anything else only wakes status waiters.
    pub fn update_pod(&self, key: &str, f: impl FnOnce(&mut Pod, Version)) {
        let mut inner = self.lock();
        let current = Version { epoch: self.epoch, counter: inner.counter };
        let next = Version { epoch: self.epoch, counter: inner.counter + 1 };
        let mut pids_changed = false;
        let mut visible = false;
        if let Some(pod) = inner.pods.get_mut(key) {
            let (pids, workload) = (pod.run.pids.clone(), pod.workload.clone());
            f(pod, next);
            pids_changed = pod.run.pids != pids;
            visible = pod.workload != workload;
            if !visible && pod.run.running_since == next {
                pod.run.running_since = current;
            }
        }
        if visible {
            self.bump(&mut inner);
        } else {
            self.progress.send_modify(|n| *n += 1);
        }
        drop(inner);
        // Only a change of pids is worth a write (and an fsync) of processes.json.
        if pids_changed {
            self.save_processes();
        }
    }

    /// Every `jwksUri` in the store has been tried against the current config: fetched, or failed
    /// with the pods as they are now (a failure before its Service's pods were ready does not count).
    fn jwks_tried(inner: &Inner) -> bool {
        inner.config.objects().all().values().all(|r| match r {
            Resource::RequestAuthentication(ra) => ra.spec.jwt_rules.iter().filter(|r| r.jwks.is_none()).all(|r| {
                r.jwks_uri.as_ref().is_none_or(|uri| {
                    inner.jwks.get(uri).is_some_and(|f| f.text.is_some() || f.at_counter >= inner.counter)
                })
            }),
            _ => true,
        })
    }

    /// Records every pid we started, so `down` can stop them even if we crash.
    pub fn save_processes(&self) {
        let inner = self.lock();
        let pids: Vec<u32> = inner.pods.values().flat_map(|p| p.run.pids.iter().copied()).collect();
        drop(inner);
        let record = Processes { control_plane: std::process::id(), pids };
        if let Err(e) = crate::env::write_json(&self.env.processes_file(), &record) {
            crate::net::log(&format!("cannot record pids: {e}"));
        }
    }
}

/// `processes.json`: what `down` kills.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Processes {
    pub control_plane: u32,
    pub pids: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::{destinations, Pushed};
    use crate::ready::{Addrs, Listener};
    use crate::snapshot::Version;
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_port_is_reached_at_the_sidecar_else_the_app_else_where_a_gateway_publishes_it() {
        let mut proxy = Addrs::new();
        proxy.insert(Listener::Admin, a(1));
        proxy.insert(Listener::Inbound(8080), a(2));
        let app = BTreeMap::from([(8080, a(3)), (9090, a(4))]);
        let published = BTreeMap::from([(8443, a(5)), (9090, a(6))]);
        let (to, intercepted) = destinations(&proxy, &app, &published);
        assert_eq!(to, BTreeMap::from([(8080, a(2)), (8443, a(5)), (9090, a(4))]));
        assert_eq!(intercepted.into_iter().collect::<Vec<_>>(), vec![8080]);
    }

    fn v(counter: u64) -> Version {
        Version { epoch: 7, counter }
    }

    #[test]
    fn the_content_a_proxy_holds_is_known_across_versions_that_did_not_change_it() {
        let p = Pushed::next(None, v(3), 0xaa);
        let p = Pushed::next(Some(p), v(5), 0xaa);
        assert_eq!((p.held_at(v(3)), p.held_at(v(4)), p.held_at(v(5))), (Some(0xaa), Some(0xaa), Some(0xaa)));
        assert_eq!(p.held_at(v(2)), None, "older than anything sent");
        assert_eq!(p.held_at(v(6)), None, "newer than anything sent");
        assert_eq!(p.held_at(Version { epoch: 8, counter: 4 }), None, "another control plane's version");
        let changed = Pushed::next(Some(p), v(6), 0xbb);
        assert_eq!((changed.held_at(v(5)), changed.held_at(v(6))), (None, Some(0xbb)));
    }
}
