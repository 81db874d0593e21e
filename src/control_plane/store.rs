//! The local backend's config source: the applied resources, persisted under the state dir
//! (write-then-rename), applied all or nothing: a change is written before it is made current.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::ResourceResult;
use crate::control_plane::config::{ConfigSource, Objects, WriteError};
use crate::env;
use crate::resources::{Resource, ResourceKey};

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

/// The local backend's config source: the applied resources in one JSON file under the state dir.
pub struct Store {
    path: PathBuf,
    objects: Objects,
}

/// The most the applied resources may take together (serialized), so the store, its file and
/// every `get` stay small enough to hold and send.
pub const MAX_BYTES: u64 = 32 << 20;

impl Store {
    pub fn load(path: PathBuf) -> Result<Store, Error> {
        let disk: OnDisk = match env::read_json(&path) {
            Ok(d) => d.unwrap_or_default(),
            Err(env::Error::Corrupt { source, .. }) => {
                return Err(Error::Damaged { path: path.display().to_string(), reason: source.to_string() })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Store { path, objects: Objects::new(disk.resources) })
    }

    /// Writes `next` and only then makes it current, so memory and disk never disagree.
    fn commit(&mut self, next: Objects) -> Result<(), WriteError> {
        let disk = OnDisk { resources: next.all().values().cloned().collect() };
        env::write_json(&self.path, &disk).map_err(|e| WriteError(e.to_string()))?;
        self.objects = next;
        Ok(())
    }
}

impl ConfigSource for Store {
    fn objects(&self) -> &Objects {
        &self.objects
    }

    fn apply(
        &mut self,
        batch: Vec<(Resource, Vec<String>)>,
        create_only: bool,
    ) -> Result<Vec<ResourceResult>, WriteError> {
        let (next, results) = self.objects.applied(batch, create_only);
        self.commit(next)?;
        Ok(results)
    }

    fn delete(&mut self, keys: &[ResourceKey]) -> Result<Vec<ResourceResult>, WriteError> {
        let (next, results) = self.objects.deleted(keys);
        self.commit(next)?;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Action;
    use crate::control_plane::config::tests::vs;

    #[test]
    fn what_is_applied_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let mut store = Store::load(path.clone()).unwrap();
        assert!(store.objects().namespace_exists("default"));
        store.apply(vec![(vs("/a"), vec![])], false).unwrap();
        let results = store.apply(vec![(vs("/b"), vec![])], false).unwrap();
        assert_eq!(results[0].action, Action::Configured);
        let key = vs("/b").key();
        let created = store.objects().get(&key).unwrap().meta().creation_timestamp.clone();

        let mut reloaded = Store::load(path.clone()).unwrap();
        let r = reloaded.objects().get(&key).expect("the applied resource is on disk");
        assert!(r.same_content(&vs("/b")));
        assert_eq!((r.meta().creation_timestamp.clone(), r.meta().generation), (created, Some(2)));
        reloaded.delete(std::slice::from_ref(&key)).unwrap();
        assert!(Store::load(path).unwrap().objects().get(&key).is_none(), "the delete is on disk");
    }

    #[test]
    fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose parent does not exist: the write fails.
        let mut store = Store::load(dir.path().join("missing/store.json")).unwrap();
        let before = store.objects().generation();
        assert!(store.apply(vec![(vs("/a"), vec![])], false).is_err());
        assert!(store.objects().get(&vs("/a").key()).is_none());
        assert_eq!(store.objects().generation(), before);
    }
}
