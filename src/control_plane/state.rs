//! The control plane's shared state: the store, the pods the runner runs, and the version
//! counter every change bumps (proxies long-poll on it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::api::PodStatus;
use crate::control_plane::store::Store;
use crate::env::{Env, Settings};
use crate::snapshot::{ProxyIdentity, Version};

/// A pod as the runner and the translator see it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub identity: ProxyIdentity,
    pub app: Option<String>,
    /// Container port numbers by name (for named targetPorts).
    pub port_names: BTreeMap<String, u16>,
    pub template_hash: String,
    pub phase: String,
    /// The version at which the pod's listeners were registered; ready once its proxy acked it.
    pub running_since: Version,
    pub restarts: u32,
    pub message: Option<String>,
    pub created: String,
    pub proxy_addrs: BTreeMap<String, SocketAddr>,
    pub app_addrs: BTreeMap<String, SocketAddr>,
    /// Gateway: container port → the localhost address its listener is published on.
    pub published: BTreeMap<u16, SocketAddr>,
    pub pids: Vec<u32>,
    pub acked: Option<Version>,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.identity.namespace, self.identity.pod)
    }

    /// Its processes have started and announced their listeners.
    pub fn running(&self) -> bool {
        self.phase == "Running"
    }

    pub fn ready(&self) -> bool {
        self.running() && self.acked.is_some_and(|a| a.reached(self.running_since))
    }

    /// Where traffic for container `port` goes: the sidecar's inbound listener when the pod
    /// has one, otherwise the app itself; for a gateway, the listener published for the port
    /// (so the mesh reaches `istio-ingressgateway` as Istio's sidecars do).
    pub fn endpoint(&self, port: u16) -> Option<SocketAddr> {
        self.proxy_addrs
            .get(&format!("inbound:{port}"))
            .or_else(|| self.app_addrs.get(&port.to_string()))
            .or_else(|| self.published.get(&port))
            .copied()
    }

    pub fn status(&self) -> PodStatus {
        PodStatus {
            namespace: self.identity.namespace.clone(),
            name: self.identity.pod.clone(),
            workload: self.identity.workload.clone(),
            labels: self.identity.labels.clone(),
            service_account: self.identity.service_account.clone(),
            role: self.identity.role,
            app: self.app.clone(),
            phase: self.phase.clone(),
            ready: self.ready(),
            restarts: self.restarts,
            message: self.message.clone(),
            created: self.created.clone(),
            proxy_addrs: self.proxy_addrs.clone(),
            app_addrs: self.app_addrs.clone(),
            pids: self.pids.clone(),
            acked: self.acked,
        }
    }
}

pub struct Inner {
    pub store: Store,
    pub pods: BTreeMap<String, Pod>,
    pub counter: u64,
}

pub struct State {
    pub env: Env,
    /// The environment's settings, fixed while the control plane runs (`up` changes them only
    /// when it is not running).
    pub settings: Settings,
    pub epoch: u64,
    pub inner: Mutex<Inner>,
    /// The current version counter; every change to the store or the pods bumps it.
    pub changes: watch::Sender<u64>,
    /// The counter the runner last reconciled: pods for every Deployment up to it exist.
    pub reconciled: watch::Sender<u64>,
    /// Bumped whenever a proxy acknowledges a snapshot (no config changes with it).
    pub acks: watch::Sender<u64>,
}

impl State {
    pub fn new(env: Env, settings: Settings, store: Store) -> State {
        let epoch = loop {
            let e = fastrand::u64(1..);
            if e != 0 {
                break e;
            }
        };
        State {
            env,
            settings,
            epoch,
            inner: Mutex::new(Inner { store, pods: BTreeMap::new(), counter: 1 }),
            changes: watch::channel(1).0,
            reconciled: watch::channel(0).0,
            acks: watch::channel(0).0,
        }
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
            && inner.pods.values().all(|p| p.ready() && p.acked.is_some_and(|a| a.reached(current)))
    }

    /// Mutates one pod (if it still exists) and bumps the version.
    pub fn update_pod(&self, key: &str, f: impl FnOnce(&mut Pod, Version)) {
        let mut inner = self.lock();
        let next = Version { epoch: self.epoch, counter: inner.counter + 1 };
        let mut pids_changed = false;
        if let Some(pod) = inner.pods.get_mut(key) {
            let before = pod.pids.clone();
            f(pod, next);
            pids_changed = pod.pids != before;
            self.bump(&mut inner);
        }
        drop(inner);
        // Only a change of pids is worth a write (and an fsync) of processes.json.
        if pids_changed {
            self.save_processes();
        }
    }

    /// Records every pid we started, so `down` can stop them even if we crash.
    pub fn save_processes(&self) {
        let inner = self.lock();
        let pids: Vec<u32> = inner.pods.values().flat_map(|p| p.pids.iter().copied()).collect();
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
