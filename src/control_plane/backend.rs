//! The seam between the control plane's API and what runs workloads. The API asks the backend
//! whether it can run a Deployment (admission) before anything is stored; the local backend
//! answers from its image table and injection rules (`runner::plan`), naming the images it
//! will run as the echo stand-in. A kind backend would
//! admit any image and leave running it to Kubernetes.

use std::collections::BTreeMap;

use crate::control_plane::runner;
use crate::env::Settings;
use crate::resources::core::Deployment;

pub trait Backend: Send + Sync {
    /// Ok when this backend can run `deployment` in a namespace with `namespace_labels`, with
    /// what it will run differently; the error is what `apply` reports (field path first).
    fn admit(&self, deployment: &Deployment, namespace_labels: &BTreeMap<String, String>) -> Result<Admitted, String>;
}

/// What a backend says of a Deployment it will run.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Images run as the echo stand-in.
    pub stand_ins: Vec<String>,
    /// Warnings for `apply`, field path first.
    pub warnings: Vec<String>,
}

/// Processes on loopback: only the images meshrig has built-in apps for.
pub struct Local {
    pub settings: Settings,
}

/// Each local pod is two processes on this machine: a bound keeps a typo from forking thousands.
pub const MAX_REPLICAS: u32 = 1000;
/// Pods of all Deployments together, in one environment.
pub const MAX_PODS: u64 = 2000;

impl Backend for Local {
    fn admit(&self, deployment: &Deployment, namespace_labels: &BTreeMap<String, String>) -> Result<Admitted, String> {
        if deployment.replicas() > MAX_REPLICAS {
            return Err(format!(
                "spec.replicas: {} is more than the local backend runs ({MAX_REPLICAS} per Deployment; each pod is \
                 processes on this machine)",
                deployment.replicas()
            ));
        }
        runner::plan(deployment, namespace_labels, &self.settings)
            .map(|p| Admitted { stand_ins: p.stand_ins, warnings: p.warnings })
    }
}
