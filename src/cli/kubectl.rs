//! The kubectl verbs Istio's tutorials type: `create namespace NAME`,
//! `label namespace NAME key=value [key-] [--overwrite]` (what `istio-injection=enabled` needs)
//! and `describe pod NAME`.

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
    let unchanged = match Backend::for_env(env) {
        Backend::Kind(_) => crate::cli::kind_objects::create(env, &ns).await? == crate::api::Action::Unchanged,
        local => {
            let client = local.client()?;
            let resp = client.apply(&ApplyRequest { resources: vec![ns], create_only: true, dry_run: false }).await?;
            resp.results.iter().any(|r| r.action == crate::api::Action::Unchanged)
        }
    };
    if unchanged {
        bail!("namespace {name:?} already exists");
    }
    println!("namespace/{name} created");
    Ok(ExitCode::SUCCESS)
}

/// The Secret `create secret` describes: its name, namespace and object (files read, a TLS
/// pair checked as kubectl checks it).
pub fn secret_from(kind: &crate::cli::SecretKind) -> anyhow::Result<(String, Option<String>, Resource)> {
    use crate::cli::SecretKind;
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()));
    let (name, namespace, type_, data) = match kind {
        SecretKind::Tls { name, cert, key, namespace } => {
            let (c, k) = (read(cert)?, read(key)?);
            let (ct, kt) = (String::from_utf8_lossy(&c), String::from_utf8_lossy(&k));
            crate::tls::certified_key(&ct, &kt)
                .map_err(|e| anyhow!("{} and {} are not a TLS pair: {e}", cert.display(), key.display()))?;
            let data = BTreeMap::from([("tls.crt".to_string(), c), ("tls.key".to_string(), k)]);
            (name, namespace, "kubernetes.io/tls".to_string(), data)
        }
        SecretKind::Generic { name, from_file, from_literal, type_, namespace } => {
            let mut data = BTreeMap::new();
            for f in from_file {
                let (key, path) = match f.split_once('=') {
                    Some((k, p)) => (k.to_string(), std::path::PathBuf::from(p)),
                    None => {
                        let p = std::path::PathBuf::from(f);
                        let k = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        (k, p)
                    }
                };
                data.insert(key, read(&path)?);
            }
            for l in from_literal {
                let (k, v) = l.split_once('=').ok_or_else(|| anyhow!("--from-literal {l:?}: use KEY=VALUE"))?;
                data.insert(k.to_string(), v.as_bytes().to_vec());
            }
            if data.is_empty() {
                bail!("give the Secret's contents: --from-file=[KEY=]FILE or --from-literal=KEY=VALUE");
            }
            (name, namespace, type_.clone().unwrap_or_else(|| "Opaque".into()), data)
        }
    };
    use base64::Engine as _;
    let encoded: BTreeMap<String, String> =
        data.into_iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v))).collect();
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = serde_json::json!(ns);
    }
    let secret = Resource::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": type_, "data": encoded,
    }))
    .map_err(|e| anyhow!(e))?;
    Ok((name.clone(), namespace.clone(), secret))
}

/// `create secret ...`: stores the Secret, refusing one that exists (as kubectl create).
pub async fn create_secret(
    env: &Env,
    name: &str,
    namespace: Option<&str>,
    mut secret: Resource,
) -> anyhow::Result<ExitCode> {
    secret.set_default_namespace(namespace.unwrap_or("default"));
    let unchanged = match Backend::for_env(env) {
        Backend::Kind(_) => crate::cli::kind_objects::create(env, &secret).await? == crate::api::Action::Unchanged,
        local => {
            let client = local.client()?;
            let resp =
                client.apply(&ApplyRequest { resources: vec![secret], create_only: true, dry_run: false }).await?;
            resp.results.iter().any(|r| r.action == crate::api::Action::Unchanged)
        }
    };
    if unchanged {
        bail!("secrets {name:?} already exists (`meshrig delete secret {name}` first, or `meshrig apply -f` a changed one)");
    }
    println!("secret/{name} created");
    Ok(ExitCode::SUCCESS)
}

pub async fn label_namespace(env: &Env, name: &str, labels: &[String], overwrite: bool) -> anyhow::Result<ExitCode> {
    let edits: Vec<LabelEdit> = labels.iter().map(|l| parse_label(l)).collect::<anyhow::Result<_>>()?;
    if edits.is_empty() {
        bail!("give at least one label: key=value to set, key- to remove");
    }
    if let Backend::Kind(_) = Backend::for_env(env) {
        let changed =
            crate::cli::kind_objects::label_namespace(env, name, |l| edit_labels(l, &edits, overwrite)).await?;
        println!("namespace/{name} {}", if changed { "labeled" } else { "not labeled" });
        return Ok(ExitCode::SUCCESS);
    }
    let client = Backend::for_env(env).client()?;
    let mut found = client.list(Kind::Namespace, None, Some(name)).await?;
    let Some(mut ns) = found.pop() else {
        return Err(crate::cli::exit::NotFound(format!(
            "namespace {name:?} not found; `meshrig get namespaces` lists them"
        ))
        .into());
    };
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

/// `describe pod NAME`: the pod as kubectl describes it, with meshrig's truth for each
/// container (the app and the `istio-proxy` sidecar meshrig runs in place of Envoy).
pub async fn describe(env: &Env, kind: &str, name: &str, namespace: &str) -> anyhow::Result<ExitCode> {
    if !matches!(kind.to_ascii_lowercase().as_str(), "pod" | "pods" | "po") {
        bail!("`describe` shows pods so far (`meshrig describe pod NAME`); `meshrig get {kind} NAME -o yaml` shows any object");
    }
    if let Backend::Kind(_) = Backend::for_env(env) {
        return crate::cli::kind_objects::describe(env, name, namespace).await;
    }
    let client = Backend::for_env(env).client()?;
    let status = client.status().await?;
    let pod = status
        .pods
        .iter()
        .filter(|p| p.namespace == namespace)
        .find(|p| p.name == name || p.workload == name)
        .ok_or_else(|| {
            crate::cli::exit::NotFound(format!(
                "pod {name:?} not found in namespace {namespace:?}; `meshrig get pods -n {namespace}` lists them"
            ))
        })?;
    let deployment = client.list(Kind::Deployment, Some(namespace), Some(&pod.workload)).await?;
    let containers = match deployment.first() {
        Some(Resource::Deployment(d)) => d.spec.template.spec.containers.clone(),
        _ => vec![],
    };
    print!("{}", describe_text(pod, &containers, status.control_plane.version));
    Ok(ExitCode::SUCCESS)
}

/// The text of `describe pod` (pure).
pub fn describe_text(
    pod: &crate::api::PodStatus,
    containers: &[crate::resources::core::Container],
    current: crate::snapshot::Version,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let field = |out: &mut String, indent: usize, name: &str, value: &str| {
        let width = (18 - indent.min(8)).max(name.len() + 2);
        let _ = writeln!(out, "{:indent$}{:<width$}{value}", "", format!("{name}:"));
    };
    field(&mut out, 0, "Name", &pod.name);
    field(&mut out, 0, "Namespace", &pod.namespace);
    let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(&mut out, 0, "Labels", &labels.join(&format!("\n{:18}", "")));
    field(&mut out, 0, "Service Account", &pod.service_account);
    field(&mut out, 0, "Start Time", &pod.created);
    field(&mut out, 0, "Status", &pod.phase.to_string());
    field(&mut out, 0, "Ready", &pod.ready_column());
    let _ = writeln!(out, "Containers:");
    let running = |ok: bool| if ok { "Running" } else { "Waiting" };
    let proxy = |out: &mut String, name: &str, image: &str| {
        let _ = writeln!(out, "  {name}:");
        field(out, 4, "Image", image);
        field(out, 4, "Runs", "meshrig's proxy, in place of Envoy");
        for (listener, addr) in &pod.proxy_addrs {
            field(out, 4, "Listener", &format!("{listener} {addr}"));
        }
        let sync = match pod.acked {
            Some(a) if a.reached(current) => format!("SYNCED (version {a})"),
            Some(a) => format!("STALE (runs version {a}; current {current})"),
            None => "no config yet".into(),
        };
        field(out, 4, "Config", &sync);
        field(out, 4, "State", running(pod.ready));
    };
    let gateway = pod.role == crate::snapshot::Role::Gateway;
    for c in containers {
        if gateway {
            proxy(&mut out, &c.name, c.image.as_deref().unwrap_or("auto"));
            continue;
        }
        let _ = writeln!(out, "  {}:", c.name);
        field(&mut out, 4, "Image", c.image.as_deref().unwrap_or("<none>"));
        let app =
            pod.app.as_deref().map(|a| format!("meshrig's built-in {a}")).unwrap_or_else(|| "idle (no app)".into());
        field(&mut out, 4, "Runs", &app);
        for p in &c.ports {
            let at = pod.app_addrs.get(&p.container_port).map(|a| format!(" (listening on {a})")).unwrap_or_default();
            field(&mut out, 4, "Port", &format!("{}/{}{at}", p.container_port, p.protocol.as_deref().unwrap_or("TCP")));
        }
        field(&mut out, 4, "State", running(pod.phase == crate::api::Phase::Running));
        field(&mut out, 4, "Restart Count", &pod.restarts.to_string());
    }
    if pod.role == crate::snapshot::Role::Sidecar {
        proxy(&mut out, "istio-proxy", "meshrig proxy (in place of docker.io/istio/proxyv2)");
    }
    let _ = writeln!(out, "Events:           {}", pod.message.as_deref().unwrap_or("<none>"));
    out
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
