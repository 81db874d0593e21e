//! The applied resources, persisted under the state dir (write-then-rename), applied all or
//! nothing: a batch is checked in full before anything changes, in memory or on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{Action, ResourceResult};
use crate::env;
use crate::resources::{Kind, Resource, ResourceKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Persist(#[from] env::Error),
}

#[derive(Default, Serialize, Deserialize)]
struct OnDisk {
    resources: Vec<Resource>,
}

pub struct Store {
    path: PathBuf,
    objects: BTreeMap<ResourceKey, Resource>,
}

/// Namespaces that exist in every cluster.
pub const BUILTIN_NAMESPACES: [&str; 2] = ["default", "kube-system"];

impl Store {
    pub fn load(path: PathBuf) -> Result<Store, Error> {
        let disk: OnDisk = env::read_json(&path)?.unwrap_or_default();
        let mut objects = BTreeMap::new();
        for r in disk.resources {
            objects.insert(r.key(), r);
        }
        let mut store = Store { path, objects };
        for ns in BUILTIN_NAMESPACES {
            let key = ResourceKey { kind: Kind::Namespace, namespace: String::new(), name: ns.into() };
            if !store.objects.contains_key(&key) {
                let r = Resource::from_value(
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .expect("a namespace object");
                store.insert_new(r);
            }
        }
        Ok(store)
    }

    pub fn objects(&self) -> &BTreeMap<ResourceKey, Resource> {
        &self.objects
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&Resource> {
        self.objects.get(key)
    }

    fn insert_new(&mut self, mut r: Resource) {
        let meta = r.meta_mut();
        meta.creation_timestamp = Some(env::rfc3339_now());
        meta.uid = Some(env::random_hex(16).unwrap_or_default());
        meta.generation = Some(1);
        self.objects.insert(r.key(), r);
    }

    /// What applying `r` would do, without doing it.
    pub fn plan(&self, r: &Resource, create_only: bool) -> Action {
        match self.objects.get(&r.key()) {
            None => Action::Created,
            Some(_) if create_only => Action::Unchanged,
            Some(old) if old.same_content(r) => Action::Unchanged,
            Some(_) => Action::Configured,
        }
    }

    /// Applies a batch that was already validated; persists before returning. On a persist
    /// failure the in-memory state is rolled back, so memory and disk never disagree.
    pub fn apply(
        &mut self,
        batch: Vec<(Resource, Vec<String>)>,
        create_only: bool,
    ) -> Result<Vec<ResourceResult>, Error> {
        let before = self.objects.clone();
        let mut results = Vec::new();
        for (mut r, warnings) in batch {
            let key = r.key();
            let action = self.plan(&r, create_only);
            match action {
                Action::Created => self.insert_new(r),
                Action::Configured => {
                    let old = self.objects.get(&key).expect("planned as configured").meta().clone();
                    let meta = r.meta_mut();
                    meta.creation_timestamp = old.creation_timestamp;
                    meta.uid = old.uid;
                    meta.generation = Some(old.generation.unwrap_or(1) + 1);
                    self.objects.insert(key.clone(), r);
                }
                _ => {}
            }
            results.push(ResourceResult { key, action, warnings });
        }
        if let Err(e) = self.save() {
            self.objects = before;
            return Err(e);
        }
        Ok(results)
    }

    /// Deletes; deleting a Namespace deletes what is in it, as Kubernetes does.
    pub fn delete(&mut self, keys: &[ResourceKey]) -> Result<Vec<ResourceResult>, Error> {
        let before = self.objects.clone();
        let mut results = Vec::new();
        for key in keys {
            let action = if self.objects.remove(key).is_some() { Action::Deleted } else { Action::NotFound };
            if key.kind == Kind::Namespace && action == Action::Deleted {
                self.objects.retain(|k, _| k.namespace != key.name);
            }
            results.push(ResourceResult { key: key.clone(), action, warnings: vec![] });
        }
        if let Err(e) = self.save() {
            self.objects = before;
            return Err(e);
        }
        Ok(results)
    }

    fn save(&self) -> Result<(), Error> {
        let disk = OnDisk { resources: self.objects.values().cloned().collect() };
        env::write_json(&self.path, &disk)?;
        Ok(())
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&ResourceKey { kind: Kind::Namespace, namespace: String::new(), name: ns.into() })
    }
}
