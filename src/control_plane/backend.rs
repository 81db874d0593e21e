//! The seam between the control plane and what runs workloads. The API asks the backend
//! whether it can run a Deployment (admission) before anything is stored; the backend runs the
//! pods the store asks for and reports them into the state (the workload source). The local
//! backend (`backend/local.rs`) answers admission from its image table and injection rules,
//! naming the images it will run as the echo stand-in, and runs processes; a kind backend would
//! admit any image, leave running it to Kubernetes and report the Pods it sees.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control_plane::state::State;
use crate::resources::core::Deployment;

pub trait Backend: Send + Sync {
    /// Ok when this backend can run `deployment` in a namespace with `namespace_labels`, with
    /// what it will run differently; the error is what `apply` reports (field path first).
    fn admit(&self, deployment: &Deployment, namespace_labels: &BTreeMap<String, String>) -> Result<Admitted, String>;

    /// The most pods of all Deployments together it runs in one environment, if it has a bound.
    fn max_pods(&self) -> Option<u64>;

    /// Starts running the pods the store asks for, reporting each into `state` (the registry
    /// record, phases, readiness): the control plane's workload source.
    fn run(&self, state: Arc<State>);

    /// Who a proxy is, from its bearer token: the credential check the API runs.
    fn credentials(&self) -> Arc<dyn crate::control_plane::credentials::Credentials>;

    /// Whether the workload and config sources have read everything once: proxies are not
    /// served a config made from half of it (a backend that watches a cluster is not, until
    /// every watch has listed it).
    fn synced(&self) -> bool {
        true
    }
}

/// What a backend says of a Deployment it will run.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Images run as the echo stand-in.
    pub stand_ins: Vec<String>,
    /// Warnings for `apply`, field path first.
    pub warnings: Vec<String>,
}
