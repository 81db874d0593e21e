//! The kind backend's control plane against the Kubernetes API server (kube-rs): the config
//! source is the cluster's objects as reflectors see them (`config.rs`), the workload source its
//! Pods (`workloads.rs`), a proxy's credential its projected ServiceAccount token checked by a
//! TokenReview (`tokens.rs`), and the mesh CA's root lives in a Secret (`ca.rs`). `Cluster` is
//! the control plane's `Backend` on Kubernetes: Kubernetes runs the pods, so admission only
//! warns and running is watching.

pub mod ca;
pub mod config;
pub mod istiod;
pub mod objects;
pub mod tokens;
pub mod workloads;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kube::discovery::ApiResource;

use crate::control_plane::backend::{Admitted, Backend};
use crate::control_plane::credentials::Credentials;
use crate::control_plane::state::State;
use crate::resources::core::Deployment;
use crate::resources::Kind;

/// Where the API server serves `kind` (its preferred apiVersion).
pub fn api_resource(kind: Kind) -> ApiResource {
    let api_version = kind.api_versions()[0];
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: api_version.to_string(),
        kind: kind.as_str().to_string(),
        plural: kind.plural().to_string(),
    }
}

/// A client for the API server: in a pod, its ServiceAccount; elsewhere, the kubeconfig
/// (`KUBECONFIG`, else `~/.kube/config`), as kubectl finds it.
pub async fn client() -> Result<kube::Client, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no Kubernetes API server to talk to: {e} (in a pod this needs its ServiceAccount; elsewhere a kubeconfig: `kind get kubeconfig --name meshrig-ENV`)")
    })?;
    kube::Client::try_from(config).map_err(|e| format!("a client for the API server: {e}"))
}

/// The control plane's backend on Kubernetes.
pub struct Cluster {
    pub client: kube::Client,
    tokens: Arc<tokens::TokenReviews>,
    /// Watches that have not listed everything once yet.
    unsynced: Arc<AtomicUsize>,
}

impl Cluster {
    pub fn new(client: kube::Client) -> Cluster {
        let tokens = Arc::new(tokens::TokenReviews::new(client.clone()));
        let unsynced = Arc::new(AtomicUsize::new(config::watched().len() + 1));
        Cluster { client, tokens, unsynced }
    }

    /// `Backend::synced` as a check that outlives the backend's move into the control plane:
    /// istiod's readiness asks it.
    pub fn synced_check(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let unsynced = self.unsynced.clone();
        Arc::new(move || unsynced.load(Ordering::SeqCst) == 0)
    }
}

/// Counts a watch as synced, once.
fn synced_once(unsynced: &AtomicUsize, done: &mut bool) {
    if !*done {
        *done = true;
        unsynced.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a reflector over `api` for as long as the control plane runs (`what` names it in the
/// log): after the first complete list, after each change and after each relist, `changed`
/// gets every object the store holds; the first complete list counts the watch as synced. A
/// kind the cluster does not serve (a 404 on the list: its CRD is not installed) holds nothing,
/// which counts as synced too; the watch keeps trying.
async fn reflect<K>(
    api: kube::Api<K>,
    writer: kube::runtime::reflector::store::Writer<K>,
    what: &str,
    unsynced: Arc<AtomicUsize>,
    mut changed: impl FnMut(Vec<Arc<K>>),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures_util::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let reader = writer.as_reader();
    let events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    futures_util::pin_mut!(events);
    let (mut failing, mut synced) = (false, false);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                if failing {
                    crate::net::log(&format!("watching {what} again"));
                    failing = false;
                }
                changed(reader.state());
                synced_once(&unsynced, &mut synced);
            }
            Ok(_) => {}
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                if !synced {
                    crate::net::log(&format!("the cluster serves no {what} (is its CRD installed?); none are read"));
                }
                synced_once(&unsynced, &mut synced);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => {
                if !failing {
                    crate::net::log(&format!("watching {what}: {e} (retrying)"));
                }
                failing = true;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

impl Backend for Cluster {
    /// Kubernetes runs any image: nothing is refused, nothing is a stand-in.
    fn admit(&self, _: &Deployment, _: &BTreeMap<String, String>) -> Result<Admitted, String> {
        Ok(Admitted::default())
    }

    fn max_pods(&self) -> Option<u64> {
        None
    }

    /// Kubernetes runs the pods; the control plane watches them and the cluster's config.
    fn run(&self, state: Arc<State>) {
        tokio::spawn(config::run(self.client.clone(), state.clone(), self.unsynced.clone()));
        tokio::spawn(workloads::run(self.client.clone(), state, self.unsynced.clone()));
    }

    fn credentials(&self) -> Arc<dyn Credentials> {
        self.tokens.clone()
    }

    /// True once every watch (each config kind, and Pods) has listed the cluster once.
    fn synced(&self) -> bool {
        self.unsynced.load(Ordering::SeqCst) == 0
    }
}

#[cfg(test)]
mod tests;
