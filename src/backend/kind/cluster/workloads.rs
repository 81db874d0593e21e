//! The workload source on Kubernetes: the cluster's Pods, as a reflector keeps them, as the
//! registry's records (`pods::workload`) and phases (`pods::phase`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector;

use crate::backend::kind::pods;
use crate::control_plane::state::State;
use crate::net;

/// Watches every Pod for as long as the control plane runs, keeping `state`'s pods as the
/// cluster's.
pub async fn run(client: kube::Client, state: Arc<State>, unsynced: Arc<AtomicUsize>) {
    let api: Api<Pod> = Api::all(client);
    let (_, writer) = reflector::store();
    super::reflect(api, writer, "pods", unsynced, |pods| {
        let mut now = BTreeMap::new();
        for pod in pods {
            let Ok(json) = serde_json::to_value(&*pod) else { continue };
            match pods::workload(&json) {
                Ok(w) => {
                    now.insert(w.key(), (w, pods::phase(&json)));
                }
                Err(e) => net::log(&format!(
                    "workloads: pod {}/{}: {e}",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                )),
            }
        }
        state.observe_pods(now);
    })
    .await;
}
