//! `apply`, `get` and `delete` of an environment on the kind backend: straight to its cluster's
//! API server. `apply` validates every document with the same validators as the local backend
//! (and the cluster's validating webhook) first, so a mistake is named by file and line and
//! nothing is written; then it server-side applies each, as `kubectl apply --server-side`.

use std::process::ExitCode;

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};

use crate::api::{self, Action, Finding};
use crate::backend::kind::cluster::{api_resource, config, objects};
use crate::cli::kind_up;
use crate::env::Env;
use crate::resources::{Kind, Resource, ResourceKey};

/// `apply -f` on kind: all validated, then each applied.
pub async fn apply(
    env: &Env,
    resources: Vec<Resource>,
    locate: impl Fn(&Finding) -> String,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    for mut r in resources {
        r.set_default_namespace("default");
        match crate::validate::validate(&r) {
            Ok(mut warnings) => {
                warnings.extend(crate::validate::unenforced(&r));
                checked.push((r, warnings));
            }
            Err(es) => errors.extend(es.iter().map(|e| Finding::new(Some(r.key()), e))),
        }
    }
    if !errors.is_empty() {
        let located: Vec<String> = errors.iter().map(&locate).collect();
        return Err(api::Error::Status {
            status: 422,
            message: format!("nothing was applied:\n  {}", located.join("\n  ")),
            findings: errors,
        }
        .into());
    }
    let client = kind_up::client(env).await?;
    for (r, warnings) in checked {
        for w in &warnings {
            eprintln!("Warning: {}", locate(&Finding::new(Some(r.key()), w)));
        }
        let name = format!("{}/{}", r.kind().as_str().to_lowercase(), r.name());
        if dry_run {
            println!("{name} validated (dry run: nothing sent to the cluster)");
            continue;
        }
        let action = objects::apply(&client, &r.to_value(), "default").await.map_err(|e| anyhow!("apply {e}"))?;
        println!("{name} {}", action.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

/// `delete` on kind.
pub async fn delete(env: &Env, keys: Vec<ResourceKey>) -> anyhow::Result<ExitCode> {
    let client = kind_up::client(env).await?;
    let mut missing = false;
    for key in keys {
        let ar = api_resource(key.kind);
        let doc = serde_json::json!({"apiVersion": ar.api_version, "kind": ar.kind,
            "metadata": {"name": key.name, "namespace": key.namespace}});
        match objects::delete(&client, &doc, "default").await.map_err(|e| anyhow!("delete {e}"))? {
            Action::NotFound => {
                missing = true;
                eprintln!("error: {} {:?} not found", key.kind.as_str(), key.name);
            }
            a => println!("{}/{} {}", key.kind.as_str().to_lowercase(), key.name, a.as_str()),
        }
    }
    Ok(if missing { ExitCode::from(crate::cli::exit::NOT_FOUND) } else { ExitCode::SUCCESS })
}

/// The cluster's objects of `kind` (one namespace or all; one name or all), as meshrig's types;
/// an object meshrig cannot read is left out with a warning.
pub async fn list(
    client: &kube::Client,
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<Resource>> {
    let ar = api_resource(kind);
    let api: Api<DynamicObject> = match namespace.filter(|_| kind.namespaced()) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let objects = match name {
        Some(n) => {
            api.get_opt(n).await.map_err(|e| anyhow!("{}: {}", ar.plural, objects::reason(&e)))?.into_iter().collect()
        }
        None => {
            api.list(&ListParams::default()).await.map_err(|e| anyhow!("{}: {}", ar.plural, objects::reason(&e)))?.items
        }
    };
    let mut out = Vec::new();
    for o in objects {
        match config::parse(kind, &o) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!(
                "Warning: {} {}/{} is not shown: {e}",
                ar.kind,
                o.metadata.namespace.as_deref().unwrap_or(""),
                o.metadata.name.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(out)
}

/// The cluster's Pods, as `get pods` shows them: namespace, name, READY (containers), STATUS,
/// RESTARTS, AGE, and its labels (for selectors).
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub ready: String,
    pub status: String,
    pub restarts: i32,
    pub created: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

pub async fn pods(client: &kube::Client, namespace: Option<&str>) -> anyhow::Result<Vec<PodRow>> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api.list(&ListParams::default()).await.map_err(|e| anyhow!("pods: {}", objects::reason(&e)))?;
    Ok(list.items.iter().map(pod_row).collect())
}

/// One Pod as a row, as kubectl reads it. Pure.
pub fn pod_row(p: &Pod) -> PodRow {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = statuses.iter().filter(|c| c.ready).count();
    let waiting = statuses.iter().find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    PodRow {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        ready: format!("{ready}/{total}"),
        status: if p.metadata.deletion_timestamp.is_some() { "Terminating".into() } else { waiting.unwrap_or(phase) },
        restarts: statuses.iter().map(|c| c.restart_count).sum(),
        created: p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
    }
}
