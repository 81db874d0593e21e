//! The config source: the applied resources the control plane reads, and where the changes it
//! accepts are written. `Objects` is one immutable version of them (cheap to clone, so plans are
//! made outside the state lock) with the API server's write semantics as pure functions; the
//! `ConfigSource` trait is what the control plane holds. The file store (`store.rs`) is the
//! local backend's source; `Memory` serves the in-process test tier; on Kubernetes the source is
//! the API server's objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{Action, ResourceResult};
use crate::env;
use crate::resources::{Kind, Resource, ResourceKey};

/// A change the source could not keep. Nothing of it was applied, in memory or anywhere else.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

/// Where the control plane's applied resources come from and go to.
pub trait ConfigSource: Send {
    /// The resources as they are now.
    fn objects(&self) -> &Objects;
    /// Applies a batch already validated and admitted: all of it or none.
    fn apply(
        &mut self,
        batch: Vec<(Resource, Vec<String>)>,
        create_only: bool,
    ) -> Result<Vec<ResourceResult>, WriteError>;
    /// Deletes `keys` (a Namespace takes what is in it along): all or none.
    fn delete(&mut self, keys: &[ResourceKey]) -> Result<Vec<ResourceResult>, WriteError>;
    /// Takes in `objects` as the source's own watch saw them, changed by another writer (the
    /// API server's objects on Kubernetes). A source that is the only writer of its objects
    /// refuses.
    fn observed(&mut self, objects: Objects) -> Result<(), WriteError> {
        drop(objects);
        Err(WriteError("this config source has no other writer to observe".into()))
    }
}

/// Namespaces that exist in every cluster.
pub const BUILTIN_NAMESPACES: [&str; 2] = ["default", "kube-system"];

/// The applied resources at one version. Cloning shares them until one side changes.
#[derive(Clone, Default)]
pub struct Objects {
    map: Arc<BTreeMap<ResourceKey, Resource>>,
    /// Bumped by every change, so a plan made on a clone knows whether it still holds.
    generation: u64,
}

impl Objects {
    /// `resources` as a cluster holds them: with the built-in namespaces.
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Objects {
        let mut objects =
            Objects { map: Arc::new(resources.into_iter().map(|r| (r.key(), r)).collect()), generation: 0 };
        for ns in BUILTIN_NAMESPACES {
            if !objects.namespace_exists(ns) {
                let r = Resource::from_value(
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .expect("a namespace object");
                objects.insert_new(r);
            }
        }
        objects
    }

    pub fn all(&self) -> &BTreeMap<ResourceKey, Resource> {
        &self.map
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&Resource> {
        self.map.get(key)
    }

    /// Changes so far (a clone taken at generation N is current while this is still N).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.map.contains_key(&ResourceKey { kind: Kind::Namespace, namespace: String::new(), name: ns.into() })
    }

    /// These objects with every object of `kind` replaced by `resources` (what a watch of that
    /// kind holds), their server-set metadata kept as given; the generation moves only when
    /// something changed.
    pub fn with_kind(&self, kind: Kind, resources: Vec<Resource>) -> Objects {
        let wanted: BTreeMap<ResourceKey, Resource> = resources.into_iter().map(|r| (r.key(), r)).collect();
        let have: BTreeMap<&ResourceKey, &Resource> = self.map.iter().filter(|(k, _)| k.kind == kind).collect();
        if have.len() == wanted.len() && wanted.iter().all(|(k, r)| have.get(k).is_some_and(|h| *h == r)) {
            return self.clone();
        }
        let mut next = self.clone();
        let map = Arc::make_mut(&mut next.map);
        map.retain(|k, _| k.kind != kind);
        map.extend(wanted);
        next.generation += 1;
        next
    }

    /// What applying `r` would do, without doing it.
    pub fn plan(&self, r: &Resource, create_only: bool) -> Action {
        match self.map.get(&r.key()) {
            None => Action::Created,
            Some(_) if create_only => Action::Unchanged,
            Some(old) if old.same_content(r) => Action::Unchanged,
            Some(_) => Action::Configured,
        }
    }

    fn insert_new(&mut self, mut r: Resource) {
        let meta = r.meta_mut();
        meta.creation_timestamp = Some(env::rfc3339_now());
        meta.uid = Some(env::random_hex(16).unwrap_or_default());
        meta.generation = Some(1);
        Arc::make_mut(&mut self.map).insert(r.key(), r);
    }

    /// The objects once `batch` is applied, as the API server applies: a new object gets its
    /// creation time, uid and generation 1; a changed one keeps the first two and its
    /// generation moves on; an unchanged one (or any existing one, `create_only`) stays.
    pub fn applied(&self, batch: Vec<(Resource, Vec<String>)>, create_only: bool) -> (Objects, Vec<ResourceResult>) {
        let mut next = self.clone();
        let mut results = Vec::new();
        for (mut r, warnings) in batch {
            let key = r.key();
            let action = next.plan(&r, create_only);
            match action {
                Action::Created => next.insert_new(r),
                Action::Configured => {
                    let old = next.map.get(&key).expect("planned as configured").meta().clone();
                    let meta = r.meta_mut();
                    meta.creation_timestamp = old.creation_timestamp;
                    meta.uid = old.uid;
                    meta.generation = Some(old.generation.unwrap_or(1) + 1);
                    Arc::make_mut(&mut next.map).insert(key.clone(), r);
                }
                _ => {}
            }
            results.push(ResourceResult { key, action, warnings });
        }
        next.generation += 1;
        (next, results)
    }

    /// The objects once `keys` are deleted; deleting a Namespace deletes what is in it, as
    /// Kubernetes does.
    pub fn deleted(&self, keys: &[ResourceKey]) -> (Objects, Vec<ResourceResult>) {
        let mut next = self.clone();
        let mut results = Vec::new();
        for key in keys {
            let map = Arc::make_mut(&mut next.map);
            let action = if map.remove(key).is_some() { Action::Deleted } else { Action::NotFound };
            if key.kind == Kind::Namespace && action == Action::Deleted {
                map.retain(|k, _| k.namespace != key.name);
            }
            results.push(ResourceResult { key: key.clone(), action, warnings: vec![] });
        }
        next.generation += 1;
        (next, results)
    }
}

/// A config source held in memory only: the in-process test tier's.
pub struct Memory(Objects);

impl Default for Memory {
    /// The built-in namespaces only.
    fn default() -> Memory {
        Memory::new([])
    }
}

impl Memory {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Memory {
        Memory(Objects::new(resources))
    }
}

impl ConfigSource for Memory {
    fn observed(&mut self, objects: Objects) -> Result<(), WriteError> {
        self.0 = objects;
        Ok(())
    }

    fn objects(&self) -> &Objects {
        &self.0
    }

    fn apply(
        &mut self,
        batch: Vec<(Resource, Vec<String>)>,
        create_only: bool,
    ) -> Result<Vec<ResourceResult>, WriteError> {
        let (next, results) = self.0.applied(batch, create_only);
        self.0 = next;
        Ok(results)
    }

    fn delete(&mut self, keys: &[ResourceKey]) -> Result<Vec<ResourceResult>, WriteError> {
        let (next, results) = self.0.deleted(keys);
        self.0 = next;
        Ok(results)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::parse::parse_documents;

    pub(crate) fn vs(prefix: &str) -> Resource {
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

    fn actions(r: Vec<ResourceResult>) -> Vec<Action> {
        r.into_iter().map(|r| r.action).collect()
    }

    #[test]
    fn applies_as_the_api_server_does() {
        let mut source = Memory::new([]);
        assert!(source.objects().namespace_exists("default") && source.objects().namespace_exists("kube-system"));
        assert_eq!(actions(source.apply(vec![(vs("/a"), vec![])], false).unwrap()), vec![Action::Created]);
        let key = vs("/a").key();
        let first = source.objects().get(&key).unwrap().meta().clone();
        assert_eq!(first.generation, Some(1));
        assert!(first.uid.is_some() && first.creation_timestamp.is_some());
        assert_eq!(actions(source.apply(vec![(vs("/a"), vec![])], false).unwrap()), vec![Action::Unchanged]);
        assert_eq!(actions(source.apply(vec![(vs("/b"), vec![])], true).unwrap()), vec![Action::Unchanged]);
        assert_eq!(actions(source.apply(vec![(vs("/b"), vec![])], false).unwrap()), vec![Action::Configured]);
        let now = source.objects().get(&key).unwrap();
        assert!(now.same_content(&vs("/b")));
        assert_eq!(now.meta().generation, Some(2));
        assert_eq!((&now.meta().uid, &now.meta().creation_timestamp), (&first.uid, &first.creation_timestamp));
    }

    #[test]
    fn a_plan_on_a_clone_knows_when_it_is_stale() {
        let mut source = Memory::new([]);
        let seen = source.objects().clone();
        source.apply(vec![(vs("/a"), vec![])], false).unwrap();
        assert_ne!(seen.generation(), source.objects().generation());
        assert!(seen.get(&vs("/a").key()).is_none(), "the clone does not see the later change");
    }

    #[test]
    fn deleting_a_namespace_deletes_what_is_in_it() {
        let mut source = Memory::new([vs("/a")]);
        let ns = ResourceKey { kind: Kind::Namespace, namespace: String::new(), name: "default".into() };
        let results = source.delete(&[ns, vs("/a").key()]).unwrap();
        assert_eq!(actions(results), vec![Action::Deleted, Action::NotFound]);
        assert!(source.objects().get(&vs("/a").key()).is_none());
    }
}
