//! `apply`, `get` and `delete` of an environment on the kind backend: straight to its cluster's
//! API server. `apply` validates every document with the same validators as the local backend
//! (and the cluster's validating webhook) first, so a mistake is named by file and line and
//! nothing is written; then it server-side applies each, as `kubectl apply --server-side`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};

use crate::api::{self, Action, Finding};
use crate::backend::kind::cluster::{api_resource, config, objects};
use crate::cli::kind_up;
use crate::env::Env;
use crate::resources::{Kind, Resource, ResourceKey};

/// `apply -f` on kind: all validated (`locate` places a finding in its file), then each applied,
/// then what the analyzers say of it (`origin` places a message in its file).
pub async fn apply(
    env: &Env,
    resources: Vec<Resource>,
    (locate, origin): (impl Fn(&Finding) -> String, impl Fn(&crate::analyze::Message) -> Option<String>),
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
    let keys: Vec<ResourceKey> = checked.iter().map(|(r, _)| r.key()).collect();
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
    if !dry_run {
        // What the analyzers say of what was just applied, as on the local backend.
        for mut m in crate::cli::analyze::after_cluster_apply(&client, &keys).await {
            m.origin = origin(&m);
            eprintln!("{m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `create namespace|secret` on kind: the object created, or `Unchanged` when it exists.
pub async fn create(env: &Env, r: &Resource) -> anyhow::Result<Action> {
    let client = kind_up::client(env).await?;
    objects::create(&client, &r.to_value(), "default").await.map_err(|e| anyhow!("create {e}"))
}

/// `label namespace` on kind: the namespace's labels edited by `edit`; whether they changed.
pub async fn label_namespace(
    env: &Env,
    name: &str,
    edit: impl FnOnce(BTreeMap<String, String>) -> anyhow::Result<BTreeMap<String, String>>,
) -> anyhow::Result<bool> {
    let client = kind_up::client(env).await?;
    let doc = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let before = objects::labels(&client, &doc, "").await.map_err(|e| anyhow!(e))?.ok_or_else(|| {
        crate::cli::exit::NotFound(format!("namespace {name:?} not found; `meshrig get namespaces` lists them"))
    })?;
    let after = edit(before.clone())?;
    objects::set_labels(&client, &doc, "", &before, &after).await.map_err(|e| anyhow!(e))
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
    pub labels: BTreeMap<String, String>,
    /// It has an `istio-proxy` container.
    pub sidecar: bool,
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
        sidecar: p.spec.as_ref().is_some_and(|s| s.containers.iter().any(|c| c.name == "istio-proxy")),
    }
}

/// `status` on kind: the cluster, the gateway's host ports, istiod, and the pods outside
/// Kubernetes' own namespaces. Exit 3 when the cluster does not answer.
pub async fn status(env: &Env, output: crate::cli::Output) -> anyhow::Result<ExitCode> {
    let settings = env.settings()?.unwrap_or_default();
    let cluster = crate::backend::kind::cluster_name(&env.name);
    let reached = match kind_up::client(env).await {
        Ok(client) => pods(&client, None).await,
        Err(e) => Err(e),
    };
    let pods = match reached {
        Ok(p) => p,
        Err(e) => {
            let reason = format!(
                "kind cluster {cluster} does not answer: {e:#} (`docker ps` shows its node; `meshrig up` starts it again)"
            );
            let v = serde_json::json!({"environment": env.name, "backend": "kind", "cluster": cluster, "running": false, "reason": reason});
            match output {
                crate::cli::Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                crate::cli::Output::Yaml => print!("{}", serde_yaml::to_string(&v)?),
                crate::cli::Output::Table => println!("environment {:?} is not running: {reason}", env.name),
            }
            return Ok(ExitCode::from(crate::cli::exit::NOT_RUNNING));
        }
    };
    let mesh: Vec<&PodRow> =
        pods.iter().filter(|p| !matches!(p.namespace.as_str(), "kube-system" | "local-path-storage")).collect();
    let istiod =
        mesh.iter().find(|p| p.namespace == "istio-system" && p.labels.get("app").is_some_and(|a| a == "istiod"));
    let istiod_ready =
        istiod.is_some_and(|p| p.status == "Running" && p.ready.split_once('/').is_some_and(|(a, b)| a == b));
    let gateway = serde_json::json!({"http": format!("127.0.0.1:{}", settings.http_port),
        "https": format!("127.0.0.1:{}", settings.https_port), "tcp": format!("127.0.0.1:{}", settings.tcp_port)});
    match output {
        crate::cli::Output::Json | crate::cli::Output::Yaml => {
            let rows: Vec<serde_json::Value> = mesh
                .iter()
                .map(|p| serde_json::json!({"namespace": p.namespace, "name": p.name, "ready": p.ready, "status": p.status, "restarts": p.restarts}))
                .collect();
            let v = serde_json::json!({"environment": env.name, "backend": "kind", "cluster": cluster, "running": true,
                "gateway": gateway, "control_plane": {"istiod_ready": istiod_ready}, "pods": rows});
            if output == crate::cli::Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", serde_yaml::to_string(&v)?);
            }
        }
        crate::cli::Output::Table => {
            println!("environment {:?} runs on kind cluster {cluster} (kubectl --context kind-{cluster})", env.name);
            println!(
                "  ingress gateway: http://127.0.0.1:{}  https://127.0.0.1:{}",
                settings.http_port, settings.https_port
            );
            println!("  istiod: {}", if istiod_ready { "ready" } else { "not ready" });
            let rows: Vec<Vec<String>> = mesh
                .iter()
                .map(|p| {
                    vec![
                        p.namespace.clone(),
                        p.name.clone(),
                        p.ready.clone(),
                        p.status.clone(),
                        p.restarts.to_string(),
                        crate::env::age(&p.created),
                    ]
                })
                .collect();
            print!("{}", crate::cli::term::table(&["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `logs POD [-c C] [--tail N] [-f]` on kind: the kubelet's log of the container, through the
/// API server (a pod by name, or the first of a Deployment: `deploy/NAME` or `NAME`).
pub async fn logs(
    env: &Env,
    pod: &str,
    namespace: &str,
    container: Option<&str>,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let client = kind_up::client(env).await?;
    let name = pod.strip_prefix("deploy/").or_else(|| pod.strip_prefix("pod/")).unwrap_or(pod);
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default()).await.map_err(|e| anyhow!("pods: {}", objects::reason(&e)))?;
    let names: Vec<String> = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let found = find_pod(list.items.iter(), name).ok_or_else(|| {
        crate::cli::exit::NotFound(format!(
            "no pod {name:?} in namespace {namespace}; pods there: {}",
            names.join(", ")
        ))
    })?;
    let chosen = container_of(found, container)?;
    let params = kube::api::LogParams {
        container: Some(chosen),
        tail_lines: tail.map(|n| n as i64),
        follow,
        ..kube::api::LogParams::default()
    };
    let pod = found.metadata.name.as_deref().unwrap_or(name);
    if !follow {
        let text = api.logs(pod, &params).await.map_err(|e| anyhow!("logs: {}", objects::reason(&e)))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    // Followed: each line as the kubelet sends it, until the container ends or Ctrl-C.
    use futures_util::{AsyncBufReadExt, StreamExt};
    use std::io::Write;
    let stream = api.log_stream(pod, &params).await.map_err(|e| anyhow!("logs: {}", objects::reason(&e)))?;
    let mut lines = stream.lines();
    loop {
        let line = tokio::select! {
            l = lines.next() => l,
            _ = crate::shutdown::signalled() => None,
        };
        let Some(line) = line else { break };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", line.map_err(|e| anyhow!("logs: {e}"))?)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `exec WORKLOAD [-c C] -- CMD` on kind: the command run in the pod's container through the
/// API server (as `kubectl exec`), its output printed and its exit code returned.
pub async fn exec(
    env: &Env,
    workload: &str,
    namespace: &str,
    container: Option<&str>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    use tokio::io::AsyncReadExt;
    let client = kind_up::client(env).await?;
    let name = workload
        .strip_prefix("deploy/")
        .or_else(|| workload.strip_prefix("deployment/"))
        .or_else(|| workload.strip_prefix("pod/"))
        .unwrap_or(workload);
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default()).await.map_err(|e| anyhow!("pods: {}", objects::reason(&e)))?;
    let running = |p: &&Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let found = list
        .items
        .iter()
        .filter(running)
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .or_else(|| {
            list.items.iter().filter(running).find(|p| {
                p.metadata.labels.as_ref().and_then(|l| l.get("app")).is_some_and(|a| a == name)
                    || p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("{name}-")))
            })
        })
        .ok_or_else(|| crate::cli::exit::NotFound(format!("no running pod of {name:?} in namespace {namespace}")))?;
    let pod = found.metadata.name.clone().unwrap_or_default();
    let chosen = container_of(found, container)?;
    let params = kube::api::AttachParams::default().container(chosen).stdin(false).stdout(true).stderr(true);
    let mut process = api
        .exec(&pod, command.to_vec(), &params)
        .await
        .map_err(|e| anyhow!("exec in {pod}: {}", objects::reason(&e)))?;
    let (mut stdout, mut stderr) = (process.stdout(), process.stderr());
    let status = process.take_status();
    let copy_out = async {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let copy_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let (out, err) = tokio::join!(copy_out, copy_err);
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    std::io::stderr().write_all(&err)?;
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    Ok(ExitCode::from(exit_code(status.as_ref())))
}

/// `describe pod NAME` on kind: the Pod as the API server has it, in kubectl's layout (the
/// containers with their image, ports, state and restarts; `istio-proxy` said to be meshrig's).
pub async fn describe(env: &Env, name: &str, namespace: &str) -> anyhow::Result<ExitCode> {
    let client = kind_up::client(env).await?;
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default()).await.map_err(|e| anyhow!("pods: {}", objects::reason(&e)))?;
    let name = name.strip_prefix("pod/").or_else(|| name.strip_prefix("deploy/")).unwrap_or(name);
    let found = find_pod(list.items.iter(), name).ok_or_else(|| {
        crate::cli::exit::NotFound(format!(
            "pod {name:?} not found in namespace {namespace:?}; `meshrig get pods -n {namespace}` lists them"
        ))
    })?;
    print!("{}", describe_text(found));
    Ok(ExitCode::SUCCESS)
}

/// The text of `describe pod` for a Pod from the API server. Pure.
pub fn describe_text(p: &Pod) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let field = |out: &mut String, indent: usize, name: &str, value: &str| {
        let width = (18 - indent.min(8)).max(name.len() + 2);
        let _ = writeln!(out, "{:indent$}{:<width$}{value}", "", format!("{name}:"));
    };
    let row = pod_row(p);
    field(&mut out, 0, "Name", &row.name);
    field(&mut out, 0, "Namespace", &row.namespace);
    let labels: Vec<String> = row.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(&mut out, 0, "Labels", &labels.join(&format!("\n{:18}", "")));
    let spec = p.spec.clone().unwrap_or_default();
    field(&mut out, 0, "Service Account", spec.service_account_name.as_deref().unwrap_or("default"));
    field(&mut out, 0, "Node", spec.node_name.as_deref().unwrap_or("<none>"));
    field(&mut out, 0, "Start Time", &row.created);
    field(&mut out, 0, "Status", &row.status);
    field(&mut out, 0, "IP", p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("<none>"));
    field(&mut out, 0, "Ready", &row.ready);
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    for (title, containers) in
        [("Init Containers", spec.init_containers.clone().unwrap_or_default()), ("Containers", spec.containers.clone())]
    {
        if containers.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for c in &containers {
            let _ = writeln!(out, "  {}:", c.name);
            field(&mut out, 4, "Image", c.image.as_deref().unwrap_or("<none>"));
            if c.name == "istio-proxy" || c.name == "istio-init" {
                let runs = if c.name == "istio-proxy" {
                    "meshrig's proxy, in place of Envoy"
                } else {
                    "meshrig capture-init (Istio's redirect, as nf_tables rules)"
                };
                field(&mut out, 4, "Runs", runs);
            }
            for port in c.ports.iter().flatten() {
                field(
                    &mut out,
                    4,
                    "Port",
                    &format!("{}/{}", port.container_port, port.protocol.as_deref().unwrap_or("TCP")),
                );
            }
            if let Some(s) = statuses.iter().find(|s| s.name == c.name) {
                let state = match s.state.as_ref() {
                    Some(st) if st.running.is_some() => "Running".to_string(),
                    Some(st) if st.waiting.is_some() => {
                        format!("Waiting ({})", st.waiting.as_ref().and_then(|w| w.reason.clone()).unwrap_or_default())
                    }
                    Some(st) if st.terminated.is_some() => format!(
                        "Terminated ({})",
                        st.terminated.as_ref().and_then(|t| t.reason.clone()).unwrap_or_default()
                    ),
                    _ => "Unknown".into(),
                };
                field(&mut out, 4, "State", &state);
                field(&mut out, 4, "Ready", &s.ready.to_string());
                field(&mut out, 4, "Restart Count", &s.restart_count.to_string());
            }
        }
    }
    let _ = writeln!(out, "Events:           <none> (`kubectl get events -n {}` lists them)", row.namespace);
    out
}

/// The exit code an exec's status says (kubectl's reading: `Success` is 0; a non-zero exit
/// is the `ExitCode` cause; anything else is 1). Pure.
pub fn exit_code(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> u8 {
    let Some(s) = status else { return 0 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref()?.parse::<u8>().ok())
        .unwrap_or(1)
}

/// The pod `name` names, as kubectl takes it: the pod of that name, else the first whose name is
/// `NAME-...` (a Deployment's). Pure.
fn find_pod<'a>(pods: impl Iterator<Item = &'a Pod> + Clone, name: &str) -> Option<&'a Pod> {
    let prefix = format!("{name}-");
    pods.clone()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .or_else(|| pods.clone().find(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix))))
}

/// The container `asked` for in `pod`, else its first that is not `istio-proxy` (kubectl's
/// default is the first; Istio's tasks mean the app's).
fn container_of(pod: &Pod, asked: Option<&str>) -> anyhow::Result<String> {
    let containers: Vec<String> = pod.spec.iter().flat_map(|s| s.containers.iter().map(|c| c.name.clone())).collect();
    match asked {
        Some(c) if containers.iter().any(|k| k == c) => Ok(c.to_string()),
        Some(c) => anyhow::bail!(
            "pod {} has no container {c:?}; its containers: {}",
            pod.metadata.name.as_deref().unwrap_or(""),
            containers.join(", ")
        ),
        None => Ok(containers.iter().find(|c| *c != "istio-proxy").or(containers.first()).cloned().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn describe_shows_an_injected_pods_containers_and_their_states() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ratings-v1-1", "namespace": "default", "labels": {"app": "ratings"}},
            "spec": {"serviceAccountName": "bookinfo-ratings",
                "initContainers": [{"name": "istio-init", "image": "meshrig:x"}],
                "containers": [{"name": "ratings", "image": "docker.io/istio/examples-bookinfo-ratings-v1:1.20.3",
                    "ports": [{"containerPort": 9080}]}, {"name": "istio-proxy", "image": "meshrig:x"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7", "containerStatuses": [
                {"name": "ratings", "ready": true, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}},
                {"name": "istio-proxy", "ready": false, "restartCount": 2, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let text = super::describe_text(&pod);
        for want in [
            "Name:             ratings-v1-1",
            "Service Account:  bookinfo-ratings",
            "IP:               10.244.0.7",
            "Ready:            1/2",
            "Init Containers:",
            "    Runs:         meshrig capture-init",
            "    Port:         9080/TCP",
            "    Runs:         meshrig's proxy, in place of Envoy",
            "    State:        Waiting (CrashLoopBackOff)",
            "    Restart Count: 2",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }

    #[test]
    fn an_execs_exit_code_is_read_as_kubectl_reads_it() {
        let failed = |causes: Vec<StatusCause>| Status {
            status: Some("Failure".into()),
            details: Some(StatusDetails { causes: Some(causes), ..StatusDetails::default() }),
            ..Status::default()
        };
        let cause = |reason: &str, message: &str| StatusCause {
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..StatusCause::default()
        };
        assert_eq!(super::exit_code(None), 0);
        assert_eq!(super::exit_code(Some(&Status { status: Some("Success".into()), ..Status::default() })), 0);
        assert_eq!(super::exit_code(Some(&failed(vec![cause("ExitCode", "7")]))), 7);
        assert_eq!(super::exit_code(Some(&failed(vec![cause("Other", "x")]))), 1);
        assert_eq!(super::exit_code(Some(&failed(vec![]))), 1);
    }
}
