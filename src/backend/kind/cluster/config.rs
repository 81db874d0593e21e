//! The config source on Kubernetes: the objects translation reads, as one reflector per kind
//! keeps them from the API server (list, then watch from its resourceVersion; relisting when the
//! watch has expired). The control plane writes nothing here: `meshrig apply` server-side
//! applies to the API server, the validating webhook refuses what the local backend would, and
//! the change comes back through the watch.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::runtime::reflector;

use crate::api::ResourceResult;
use crate::control_plane::config::{ConfigSource, Objects, WriteError};
use crate::control_plane::state::State;
use crate::net;
use crate::resources::{Kind, Resource, ResourceKey};

/// The kinds the control plane watches: what translation reads, and Namespaces (their labels).
pub fn watched() -> Vec<Kind> {
    Kind::ALL.iter().copied().filter(|k| *k == Kind::Namespace || crate::translate::reads(*k)).collect()
}

/// The objects the watches hold.
pub struct Watched(Objects);

impl Watched {
    pub fn new() -> Watched {
        Watched(Objects::new([]))
    }
}

impl Default for Watched {
    fn default() -> Watched {
        Watched::new()
    }
}

const WRITES: &str = "on the kind backend the cluster's objects are written to the API server (`meshrig apply` or `kubectl apply`), not through the control plane";

impl ConfigSource for Watched {
    fn objects(&self) -> &Objects {
        &self.0
    }

    fn apply(&mut self, _: Vec<(Resource, Vec<String>)>, _: bool) -> Result<Vec<ResourceResult>, WriteError> {
        Err(WriteError(WRITES.into()))
    }

    fn delete(&mut self, _: &[ResourceKey]) -> Result<Vec<ResourceResult>, WriteError> {
        Err(WriteError(WRITES.into()))
    }

    fn observed(&mut self, objects: Objects) -> Result<(), WriteError> {
        self.0 = objects;
        Ok(())
    }
}

/// An object as the API server sends it, as meshrig's strict type (list items may come without
/// their apiVersion and kind).
pub fn parse(kind: Kind, object: &DynamicObject) -> Result<Resource, String> {
    let mut v = serde_json::to_value(object).map_err(|e| e.to_string())?;
    let ar = super::api_resource(kind);
    if v.get("apiVersion").is_none_or(|a| a.is_null()) {
        v["apiVersion"] = ar.api_version.into();
    }
    if v.get("kind").is_none_or(|k| k.is_null()) {
        v["kind"] = ar.kind.into();
    }
    Resource::from_value(v)
}

/// Watches every kind in `watched()` for as long as the control plane runs, keeping `state`'s
/// config as the cluster's.
pub async fn run(client: kube::Client, state: Arc<State>, unsynced: Arc<AtomicUsize>) {
    let all: Vec<_> = watched()
        .into_iter()
        .map(|k| tokio::spawn(watch(client.clone(), state.clone(), k, unsynced.clone())))
        .collect();
    for w in all {
        let _ = w.await;
    }
}

async fn watch(client: kube::Client, state: Arc<State>, kind: Kind, unsynced: Arc<AtomicUsize>) {
    let ar = super::api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let writer = reflector::store::Writer::new(ar.clone());
    super::reflect(api, writer, &ar.plural, unsynced, |objects| {
        let mut resources = Vec::new();
        for object in objects {
            match parse(kind, &object) {
                Ok(r) => resources.push(r),
                Err(e) => net::log(&format!(
                    "config: skipping {} {}/{}: {e}",
                    ar.kind,
                    object.metadata.namespace.as_deref().unwrap_or(""),
                    object.metadata.name.as_deref().unwrap_or("")
                )),
            }
        }
        if let Err(e) = state.observe(|objects| objects.with_kind(kind, resources)) {
            net::log(&format!("config: {e}"));
        }
    })
    .await;
}
