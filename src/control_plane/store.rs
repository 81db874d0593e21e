//! The applied resources, persisted under the state dir (write-then-rename), applied all or
//! nothing: a batch is checked in full before anything changes, in memory or on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{Action, ResourceResult};
use crate::env;
use crate::resources::{Kind, Resource, ResourceKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Persist(#[from] env::Error),
    /// The applied resources cannot be read back. Nothing running is touched; the file is kept.
    #[error(
        "{path} (the applied resources) is damaged: {reason}. Nothing was started or stopped and the \
         file is kept as it is. Repair it, or set it aside to start with no applied resources: \
         mv {path} {path}.damaged && meshrig up"
    )]
    Damaged { path: String, reason: String },
}

#[derive(Default, Serialize, Deserialize)]
struct OnDisk {
    resources: Vec<Resource>,
}

/// Cloning is cheap (the objects are shared until one side changes them): `apply` plans against a
/// clone outside the state lock.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    objects: Arc<BTreeMap<ResourceKey, Resource>>,
    /// Bumped by every change, so a plan made on a clone knows whether it still holds.
    generation: u64,
}

/// The most the applied resources may take together (serialized), so the store, its file and
/// every `get` stay small enough to hold and send.
pub const MAX_BYTES: u64 = 32 << 20;

/// Namespaces that exist in every cluster.
pub const BUILTIN_NAMESPACES: [&str; 2] = ["default", "kube-system"];

impl Store {
    pub fn load(path: PathBuf) -> Result<Store, Error> {
        let disk: OnDisk = match env::read_json(&path) {
            Ok(d) => d.unwrap_or_default(),
            Err(env::Error::Corrupt { source, .. }) => {
                return Err(Error::Damaged { path: path.display().to_string(), reason: source.to_string() })
            }
            Err(e) => return Err(e.into()),
        };
        let mut objects = BTreeMap::new();
        for r in disk.resources {
            objects.insert(r.key(), r);
        }
        let mut store = Store { path, objects: Arc::new(objects), generation: 0 };
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

    /// Changes so far (a clone taken at generation N is current while this is still N).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn insert_new(&mut self, mut r: Resource) {
        let meta = r.meta_mut();
        meta.creation_timestamp = Some(env::rfc3339_now());
        meta.uid = Some(env::random_hex(16).unwrap_or_default());
        meta.generation = Some(1);
        Arc::make_mut(&mut self.objects).insert(r.key(), r);
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
                    Arc::make_mut(&mut self.objects).insert(key.clone(), r);
                }
                _ => {}
            }
            results.push(ResourceResult { key, action, warnings });
        }
        if let Err(e) = self.save() {
            self.objects = before;
            return Err(e);
        }
        self.generation += 1;
        Ok(results)
    }

    /// Deletes; deleting a Namespace deletes what is in it, as Kubernetes does.
    pub fn delete(&mut self, keys: &[ResourceKey]) -> Result<Vec<ResourceResult>, Error> {
        let before = self.objects.clone();
        let mut results = Vec::new();
        for key in keys {
            let objects = Arc::make_mut(&mut self.objects);
            let action = if objects.remove(key).is_some() { Action::Deleted } else { Action::NotFound };
            if key.kind == Kind::Namespace && action == Action::Deleted {
                objects.retain(|k, _| k.namespace != key.name);
            }
            results.push(ResourceResult { key: key.clone(), action, warnings: vec![] });
        }
        if let Err(e) = self.save() {
            self.objects = before;
            return Err(e);
        }
        self.generation += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse::parse_documents;

    fn vs(prefix: &str) -> Resource {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin]
  http: [{{match: [{{uri: {{prefix: {prefix}}}}}], route: [{{destination: {{host: httpbin}}}}]}}]
"
        );
        parse_documents("t.yaml", &yaml).unwrap().remove(0).resource
    }

    #[test]
    fn answers_created_configured_unchanged_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let mut store = Store::load(path.clone()).unwrap();
        assert!(store.namespace_exists("default"));
        let actions = |r: Vec<ResourceResult>| r.into_iter().map(|r| r.action).collect::<Vec<_>>();
        assert_eq!(actions(store.apply(vec![(vs("/a"), vec![])], false).unwrap()), vec![Action::Created]);
        assert_eq!(actions(store.apply(vec![(vs("/a"), vec![])], false).unwrap()), vec![Action::Unchanged]);
        assert_eq!(
            actions(store.apply(vec![(vs("/b"), vec![])], true).unwrap()),
            vec![Action::Unchanged],
            "create-only"
        );
        assert_eq!(actions(store.apply(vec![(vs("/b"), vec![])], false).unwrap()), vec![Action::Configured]);
        let key = vs("/b").key();
        let created = store.get(&key).unwrap().meta().creation_timestamp.clone();
        assert_eq!(store.get(&key).unwrap().meta().generation, Some(2));

        let reloaded = Store::load(path).unwrap();
        let r = reloaded.get(&key).expect("the applied resource is on disk");
        assert!(r.same_content(&vs("/b")));
        assert_eq!(r.meta().creation_timestamp, created);
    }

    #[test]
    fn deleting_a_namespace_deletes_what_is_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::load(dir.path().join("store.json")).unwrap();
        store.apply(vec![(vs("/a"), vec![])], false).unwrap();
        let ns = ResourceKey { kind: Kind::Namespace, namespace: String::new(), name: "default".into() };
        let results = store.delete(&[ns, vs("/a").key()]).unwrap();
        assert_eq!(results[0].action, Action::Deleted);
        assert_eq!(results[1].action, Action::NotFound, "already gone with its namespace");
        assert!(store.get(&vs("/a").key()).is_none());
    }

    #[test]
    fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose parent does not exist: the write fails.
        let mut store = Store::load(dir.path().join("missing/store.json")).unwrap();
        assert!(store.apply(vec![(vs("/a"), vec![])], false).is_err());
        assert!(store.get(&vs("/a").key()).is_none());
    }
}
