//! The proxy's watch on the control plane: a long poll that returns a full snapshot whenever
//! this proxy's config changes, or `unchanged` with a new version when a change elsewhere left
//! this proxy's config as it was. The version sent back in the next poll is the acknowledgement.
//! When the control plane is gone the proxy keeps serving its last snapshot and retries. The
//! control plane's address and token are given at start: a proxy never reads the state dir.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, Push};
use crate::net::log;
use crate::proxy::Shared;
use crate::snapshot::{Role, Version};

/// How long a gateway waits for its listeners before it polls again without acknowledging.
const BIND_WAIT: Duration = Duration::from_secs(2);

pub async fn run(shared: Arc<Shared>, client: api::Client, namespace: String, pod: String) {
    let mut acked = Version::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let path =
            format!("/v1/snapshot?namespace={namespace}&pod={pod}&epoch={}&counter={}", acked.epoch, acked.counter);
        // The control plane holds a poll for up to 30 s before it answers anyway.
        let result = client.get_held::<Push>(&path, Duration::from_secs(30)).await;
        match result {
            Ok(Push::Unchanged(version)) => {
                // The control plane found our config current at `version`: acknowledge it.
                backoff = Duration::from_millis(100);
                acked = version;
            }
            Ok(Push::Snapshot(snapshot)) => {
                backoff = Duration::from_millis(100);
                let snapshot = Arc::unwrap_or_clone(snapshot);
                if snapshot.version != acked || !shared.has_config() {
                    let version = snapshot.version;
                    let gateway = snapshot.proxy.role == Role::Gateway;
                    shared.install(snapshot);
                    let serving = !gateway || {
                        // A gateway acknowledges (by polling again with the version) only once
                        // its listeners are bound; otherwise it polls with the old version, gets
                        // the snapshot again and binds again.
                        let mut bound = shared.listeners_bound.subscribe();
                        let waited = tokio::time::timeout(BIND_WAIT, bound.wait_for(|v| *v == version)).await;
                        waited.is_ok()
                    };
                    if serving {
                        acked = version;
                    }
                }
            }
            Err(e) => {
                log(&format!("watch: {e}; retrying in {backoff:?}"));
                // A real backoff between reconnects, not a wait for readiness.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
