//! The local backend's control-plane side: admission (only the images meshrig has built-in apps
//! for, within bounds on replicas and pods) and the runner (`runner.rs`: Deployments → pods →
//! processes on this machine). Its CLI side is `cli/backend.rs`'s `Local`.

pub mod runner;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control_plane::backend::{Admitted, Backend};
use crate::control_plane::credentials::{Credentials, PodTokens};
use crate::control_plane::state::State;
use crate::env::Settings;
use crate::resources::core::Deployment;

/// Processes on loopback: only the images meshrig has built-in apps for. Each pod's proxy gets
/// a token of its own (`tokens`), issued when the runner starts it and revoked when it goes.
pub struct Local {
    pub settings: Settings,
    pub tokens: Arc<PodTokens>,
}

impl Local {
    pub fn new(settings: Settings) -> Local {
        Local { settings, tokens: Arc::new(PodTokens::default()) }
    }
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

    fn max_pods(&self) -> Option<u64> {
        Some(MAX_PODS)
    }

    fn run(&self, state: Arc<State>) {
        tokio::spawn(runner::run(state, self.tokens.clone()));
    }

    fn credentials(&self) -> Arc<dyn Credentials> {
        self.tokens.clone()
    }
}
