//! The kubectl verbs Istio's tutorials type: `create namespace NAME` and
//! `label namespace NAME key=value [key-] [--overwrite]` (what `istio-injection=enabled` needs).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use crate::api::ApplyRequest;
use crate::cli::backend::Backend;
use crate::env::Env;
use crate::resources::{Kind, Resource};

/// One label argument: `key=value` sets, `key-` removes.
#[derive(Debug, PartialEq, Eq)]
pub enum LabelEdit {
    Set(String, String),
    Remove(String),
}

pub fn parse_label(arg: &str) -> anyhow::Result<LabelEdit> {
    if let Some((k, v)) = arg.split_once('=') {
        if k.is_empty() {
            bail!("label {arg:?} has no key; use key=value or key-");
        }
        return Ok(LabelEdit::Set(k.to_string(), v.to_string()));
    }
    match arg.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(LabelEdit::Remove(k.to_string())),
        _ => bail!("label {arg:?} is neither key=value nor key-"),
    }
}

/// The labels after `edits`; changing an existing value needs `overwrite`, as in kubectl.
pub fn edit_labels(
    mut labels: BTreeMap<String, String>,
    edits: &[LabelEdit],
    overwrite: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    for e in edits {
        match e {
            LabelEdit::Set(k, v) => {
                if let Some(old) = labels.get(k).filter(|old| *old != v) {
                    if !overwrite {
                        bail!("'{k}' already has a value ({old}), and --overwrite is false");
                    }
                }
                labels.insert(k.clone(), v.clone());
            }
            LabelEdit::Remove(k) => {
                labels.remove(k);
            }
        }
    }
    Ok(labels)
}

pub async fn create_namespace(env: &Env, name: &str) -> anyhow::Result<ExitCode> {
    let ns =
        Resource::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .map_err(|e| anyhow!(e))?;
    let client = Backend::local(env).client()?;
    let resp = client.apply(&ApplyRequest { resources: vec![ns], create_only: true, dry_run: false }).await?;
    if resp.results.iter().any(|r| r.action == crate::api::Action::Unchanged) {
        bail!("namespace {name:?} already exists");
    }
    println!("namespace/{name} created");
    Ok(ExitCode::SUCCESS)
}

pub async fn label_namespace(env: &Env, name: &str, labels: &[String], overwrite: bool) -> anyhow::Result<ExitCode> {
    let edits: Vec<LabelEdit> = labels.iter().map(|l| parse_label(l)).collect::<anyhow::Result<_>>()?;
    if edits.is_empty() {
        bail!("give at least one label: key=value to set, key- to remove");
    }
    let client = Backend::local(env).client()?;
    let mut found = client.list(Kind::Namespace, None, Some(name)).await?;
    let Some(mut ns) = found.pop() else { bail!("namespace {name:?} not found") };
    let meta = ns.meta_mut();
    meta.labels = edit_labels(std::mem::take(&mut meta.labels), &edits, overwrite)?;
    let resp = client.apply(&ApplyRequest { resources: vec![ns], create_only: false, dry_run: false }).await?;
    let action = resp.results.first().map(|r| r.action);
    println!(
        "namespace/{name} {}",
        if action == Some(crate::api::Action::Unchanged) { "not labeled" } else { "labeled" }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_edit_as_kubectl_does() {
        assert_eq!(
            parse_label("istio-injection=enabled").unwrap(),
            LabelEdit::Set("istio-injection".into(), "enabled".into())
        );
        assert_eq!(parse_label("istio-injection-").unwrap(), LabelEdit::Remove("istio-injection".into()));
        assert!(parse_label("=x").is_err() && parse_label("nothing").is_err());
        let start = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let e = edit_labels(start.clone(), &[LabelEdit::Set("a".into(), "2".into())], false).unwrap_err();
        assert!(e.to_string().contains("--overwrite"), "{e}");
        let done =
            edit_labels(start, &[LabelEdit::Set("a".into(), "2".into()), LabelEdit::Remove("b".into())], true).unwrap();
        assert_eq!(done["a"], "2");
    }
}
