//! `meshrig analyze`: istioctl's analyzers over what is applied (and files not applied yet),
//! in istioctl's line format and exit code; and the analyzer's warnings `apply` prints.

use std::process::ExitCode;

use anyhow::bail;

use crate::analyze::{self, Item, Level, Message};
use crate::api;
use crate::cli::Output;
use crate::env::Env;
use crate::resources::Kind;
use crate::snapshot::Role;
use crate::validate;

/// istioctl's exit code when analyzers found issues at or above the failure threshold.
pub const ISSUES_FOUND: u8 = 79;

/// The kinds the analyzers read.
const KINDS: [Kind; 7] = [
    Kind::Namespace,
    Kind::Service,
    Kind::ServiceEntry,
    Kind::Gateway,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Secret,
];

/// What is applied, with `files` laid over it (a file's resource replaces the applied one with
/// the same key), and the pods.
async fn inputs(client: &api::Client, files: Vec<Item>) -> anyhow::Result<(Vec<Item>, Vec<analyze::Pod>)> {
    let mut items = files;
    for kind in KINDS {
        for r in client.list(kind, None, None).await? {
            if !items.iter().any(|i| i.resource.key() == r.key()) {
                items.push(Item { resource: r, origin: None, invalid: vec![] });
            }
        }
    }
    let pods = client
        .status()
        .await?
        .pods
        .into_iter()
        .map(|p| analyze::Pod {
            namespace: p.namespace,
            name: p.name,
            labels: p.labels,
            sidecar: p.role == Role::Sidecar,
        })
        .collect();
    Ok((items, pods))
}

/// `inputs`, read from a kind environment's cluster.
pub async fn cluster_inputs(client: &kube::Client, files: Vec<Item>) -> anyhow::Result<(Vec<Item>, Vec<analyze::Pod>)> {
    let mut items = files;
    for kind in KINDS {
        for r in crate::cli::kind_objects::list(client, kind, None, None).await? {
            if !items.iter().any(|i| i.resource.key() == r.key()) {
                items.push(Item { resource: r, origin: None, invalid: vec![] });
            }
        }
    }
    let pods = crate::cli::kind_objects::pods(client, None)
        .await?
        .into_iter()
        .map(|p| analyze::Pod { namespace: p.namespace, name: p.name, labels: p.labels, sidecar: p.sidecar })
        .collect();
    Ok((items, pods))
}

/// The analyzer's Warnings and Errors about what was just applied to a kind environment's
/// cluster (as `after_apply`).
pub async fn after_cluster_apply(client: &kube::Client, applied: &[crate::resources::ResourceKey]) -> Vec<Message> {
    let Ok((items, pods)) = cluster_inputs(client, Vec::new()).await else { return Vec::new() };
    about(analyze::analyze(&items, &pods), applied)
}

/// The Warnings and Errors among `messages` that are about one of `applied`.
fn about(messages: Vec<Message>, applied: &[crate::resources::ResourceKey]) -> Vec<Message> {
    messages
        .into_iter()
        .filter(|m| m.level >= Level::Warning)
        .filter(|m| {
            applied.iter().any(|k| {
                k.kind.as_str() == m.kind && k.name == m.name && (k.namespace == m.namespace || !k.kind.namespaced())
            })
        })
        .collect()
}

pub struct Options {
    pub files: Vec<String>,
    pub recursive: bool,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: Output,
    pub failure_threshold: String,
    pub output_threshold: String,
}

pub async fn run(env: &Env, o: Options) -> anyhow::Result<ExitCode> {
    let level = |s: &str, flag: &str| {
        Level::parse(s).ok_or_else(|| anyhow::anyhow!("{flag} {s:?}: use Error, Warning or Info"))
    };
    let failure = level(&o.failure_threshold, "--failure-threshold")?;
    let shown = level(&o.output_threshold, "--output-threshold")?;
    let namespace = o.namespace.clone().unwrap_or_else(|| "default".into());
    let mut files = Vec::new();
    if !o.files.is_empty() {
        for d in crate::cli::resource::load(&o.files, o.recursive)? {
            let mut resource = d.resource.clone();
            resource.set_default_namespace(&namespace);
            let invalid = validate::validate(&resource).err().unwrap_or_default();
            // An invalid resource is placed at its first bad field's line, as `apply` places it.
            let field = invalid.first().and_then(|e| e.split_once(": ")).map_or("", |(f, _)| f);
            files.push(Item { resource, origin: Some(format!("{}:{}", d.file, d.line_of(field))), invalid });
        }
        if files.is_empty() {
            bail!("no resources found in {}", o.files.join(", "));
        }
    }
    let (items, pods) = match crate::cli::backend::Backend::for_env(env) {
        crate::cli::backend::Backend::Kind(_) => {
            cluster_inputs(&crate::cli::kind_up::client(env).await?, files).await?
        }
        local => inputs(&local.client()?, files).await?,
    };
    let scope = if o.all_namespaces { None } else { Some(namespace.as_str()) };
    let messages: Vec<Message> = analyze::in_namespace(analyze::analyze(&items, &pods), scope)
        .into_iter()
        .filter(|m| m.level >= shown)
        .collect();
    let failed = messages.iter().any(|m| m.level >= failure);
    let what = match scope {
        Some(n) => format!("namespace: {n}"),
        None => "all namespaces".to_string(),
    };
    match o.output {
        Output::Json | Output::Yaml => {
            let list: Vec<serde_json::Value> = messages.iter().map(json).collect();
            if matches!(o.output, Output::Json) {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", serde_yaml::to_string(&list)?);
            }
        }
        Output::Table => {
            for m in &messages {
                println!("{m}");
            }
            if messages.is_empty() {
                eprintln!("\u{2714} No validation issues found when analyzing {what}.");
            }
        }
    }
    if failed {
        eprintln!("Error: Analyzers found issues when analyzing {what}.");
        eprintln!("See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.");
        return Ok(ExitCode::from(ISSUES_FOUND));
    }
    Ok(ExitCode::SUCCESS)
}

/// istioctl's JSON for one message.
fn json(m: &Message) -> serde_json::Value {
    let origin = match &m.origin {
        Some(o) => format!("{} {o}", m.resource()),
        None => m.resource(),
    };
    serde_json::json!({
        "code": m.code,
        "documentationUrl": format!("https://istio.io/latest/docs/reference/config/analysis/{}/?ref=istioctl", m.code.to_lowercase()),
        "level": m.level.to_string(),
        "message": m.text,
        "origin": origin,
        "reference": m.resource(),
    })
}

/// The analyzer's Warnings and Errors about the resources an apply just stored, for `apply` to
/// print (best effort: an analyzer that cannot run says nothing).
pub async fn after_apply(client: &api::Client, applied: &[crate::resources::ResourceKey]) -> Vec<Message> {
    let Ok((items, pods)) = inputs(client, Vec::new()).await else { return Vec::new() };
    about(analyze::analyze(&items, &pods), applied)
}

/// The analyzer's Warnings and Errors in `namespace`, for `lab check` to show beside failures.
pub async fn findings(client: &api::Client, namespace: &str) -> Vec<Message> {
    let Ok((items, pods)) = inputs(client, Vec::new()).await else { return Vec::new() };
    analyze::in_namespace(analyze::analyze(&items, &pods), Some(namespace))
        .into_iter()
        .filter(|m| m.level >= Level::Warning)
        .collect()
}
