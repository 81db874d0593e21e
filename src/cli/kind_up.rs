//! `meshrig up --backend kind` for real, and `down` of a kind environment. `up`: the preflight,
//! the cluster (`kind create cluster` with the rendered config, unless it exists: `up` again
//! reuses it), its kubeconfig kept in the environment's state dir, meshrig's image loaded
//! (`kind load image-archive`), every manifest server-side applied, then a wait — meshrig's own,
//! since `kind create cluster --wait` exits 0 on a timeout — for the nodes and the mesh's
//! Deployments, each step said as it ends. `down` takes the mesh out of the cluster and keeps
//! the cluster (and what the user applied); `down --purge` deletes the cluster.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use crate::api::Action;
use crate::backend::kind::cluster::objects;
use crate::backend::kind::render::{Plan, Rendered};
use crate::backend::kind::{self};
use crate::cli::term::{self, Step};
use crate::env::{BackendKind, Env};

/// How long `up` waits for the nodes and the mesh's Deployments (a first pull of the addons'
/// images takes a while); `MESHRIG_KIND_WAIT` seconds changes it.
fn wait_limit() -> Duration {
    std::env::var("MESHRIG_KIND_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(600))
}

/// The environment's kubeconfig for its cluster (written by `up`).
pub fn kubeconfig_path(env: &Env) -> std::path::PathBuf {
    env.dir.join("kubeconfig")
}

/// A client for the environment's cluster, from the kubeconfig `up` kept.
pub async fn client(env: &Env) -> anyhow::Result<kube::Client> {
    let path = kubeconfig_path(env);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("read {} (`meshrig up --backend kind` writes it when it creates the cluster)", path.display())
    })?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| anyhow!("a client for the cluster: {e}"))
}

/// Runs `kind ARGS`, its output kept in the environment's `logs/kind.log`; the error names the
/// command and the end of what it said.
fn kind_cmd(env: &Env, args: &[&str]) -> anyhow::Result<String> {
    let log_path = env.logs_dir().join("kind.log");
    let out = Command::new("kind").args(args).stdin(Stdio::null()).output().map_err(|e| {
        anyhow!("run `kind {}`: {e} (is kind installed? `meshrig doctor --backend kind`)", args.join(" "))
    })?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).ok();
    if let Some(f) = log.as_mut() {
        use std::io::Write;
        let _ = writeln!(f, "$ kind {}", args.join(" "));
        let _ = f.write_all(&out.stdout);
        let _ = f.write_all(&out.stderr);
    }
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = said.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "`kind {}` failed ({}):\n{}\n(all of it in {})",
            args.join(" "),
            out.status,
            tail.join("\n"),
            log_path.display()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `up --backend kind`.
pub fn up(
    env: &Env,
    plan: &Plan,
    (apps, app_manifests): (&[String], Vec<Rendered>),
    addons: &[String],
    addon_manifests: Vec<Rendered>,
) -> anyhow::Result<ExitCode> {
    env.ensure_dirs()?;
    let cluster = kind::cluster_name(&env.name);
    let exists =
        which::which("kind").is_ok() && kind_cmd(env, &["get", "clusters"])?.lines().any(|l| l.trim() == cluster);
    // A cluster that runs holds the environment's ports itself: they are checked only before
    // it is made.
    let findings = if exists {
        crate::cli::kind::preflight_tools()?
    } else {
        crate::cli::kind::preflight([plan.http_port, plan.https_port, plan.tcp_port])?
    };
    let blocking: Vec<_> = findings.iter().filter(|f| !f.ok && f.blocking).collect();
    for f in findings.iter().filter(|f| !f.ok) {
        eprintln!("{} {}: {}", if f.blocking { term::fail_mark() } else { term::warn_mark() }, f.check, f.detail);
        if let Some(fix) = &f.fix {
            eprintln!("    fix: {fix}");
        }
    }
    if !blocking.is_empty() {
        eprintln!("the kind backend cannot run here yet; `meshrig doctor --backend kind` checks again");
        return Ok(ExitCode::from(crate::cli::exit::NOT_RUNNING));
    }

    let started = Instant::now();
    if exists {
        eprintln!("{} cluster {cluster} exists: reusing it", term::pass_mark());
    } else {
        let step = Step::start(&format!("creating cluster {cluster} (kind, node {})", short_image(kind::NODE_IMAGE)));
        let config = crate::backend::kind::render::cluster_config(plan)?;
        let config_path = env.dir.join("kind-config.yaml");
        std::fs::write(&config_path, &config.text).with_context(|| format!("write {}", config_path.display()))?;
        let path = config_path.to_string_lossy().into_owned();
        match kind_cmd(env, &["create", "cluster", "--name", &cluster, "--config", &path]) {
            Ok(_) => step.done(&format!("cluster {cluster} created ({})", since(started))),
            Err(e) => {
                step.failed(&format!("cluster {cluster} was not created"));
                return Err(e);
            }
        }
    }
    let kubeconfig = kind_cmd(env, &["get", "kubeconfig", "--name", &cluster])?;
    crate::env::write_atomic(&kubeconfig_path(env), kubeconfig.as_bytes(), 0o600)
        .map_err(|e| anyhow!("write {}: {e}", kubeconfig_path(env).display()))?;

    let step = Step::start(&format!("loading meshrig's image {} into the cluster", plan.image));
    let at = Instant::now();
    let binary = std::env::current_exe().context("find meshrig's own binary")?;
    let (_, archive) = kind::image::save(&binary).map_err(|e| anyhow!("image save: {e}"))?;
    let archive_path = env.dir.join("image.tar");
    std::fs::write(&archive_path, &archive).with_context(|| format!("write {}", archive_path.display()))?;
    let loaded = kind_cmd(env, &["load", "image-archive", &archive_path.to_string_lossy(), "--name", &cluster]);
    let _ = std::fs::remove_file(&archive_path);
    match loaded {
        Ok(_) => {
            step.done(&format!("image {} loaded ({:.1} MB, {})", plan.image, archive.len() as f64 / 1e6, since(at)))
        }
        Err(e) => {
            step.failed("the image was not loaded");
            return Err(e);
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let manifests: Vec<Rendered> =
        crate::backend::kind::render::manifests(plan)?.into_iter().chain(addon_manifests).collect();
    let client = runtime.block_on(client(env))?;
    apply_and_wait(&runtime, &client, &cluster, "the mesh", &manifests)?;
    // The sample apps after the mesh is ready: their pods are injected by istiod's webhook.
    if !app_manifests.is_empty() {
        apply_and_wait(&runtime, &client, &cluster, &format!("the sample apps ({})", apps.join(", ")), &app_manifests)?;
    }

    let mut settings = env.settings()?.unwrap_or_default();
    settings.backend = BackendKind::Kind;
    settings.http_port = plan.http_port;
    settings.https_port = plan.https_port;
    settings.tcp_port = plan.tcp_port;
    settings.sample_images = plan.sample_images;
    settings.apps = apps.to_vec();
    for a in addons {
        if !settings.addons.contains(a) {
            settings.addons.push(a.clone());
        }
    }
    env.save_settings(&settings)?;
    eprintln!("{} environment {:?} runs on kind cluster {cluster} ({})", term::pass_mark(), env.name, since(started));
    eprintln!("  ingress gateway: http://127.0.0.1:{}  https://127.0.0.1:{}", plan.http_port, plan.https_port);
    if apps.iter().any(|a| a == "bookinfo") {
        eprintln!("  Bookinfo:  http://127.0.0.1:{}/productpage", plan.http_port);
    }
    eprintln!("  kubectl:   kubectl --context kind-{cluster} get pods -A");
    // The data, on stdout for scripts: `GATEWAY=$(meshrig up --backend kind)`.
    println!("http://127.0.0.1:{}", plan.http_port);
    Ok(ExitCode::SUCCESS)
}

/// Server-side applies every document of `manifests` (`what` names them), then waits for the
/// node and the Deployments among them, each said as a step.
fn apply_and_wait(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    cluster: &str,
    what: &str,
    manifests: &[Rendered],
) -> anyhow::Result<()> {
    runtime.block_on(apply_and_wait_async(client, cluster, what, manifests))
}

/// `apply_and_wait`, on the caller's runtime.
pub async fn apply_and_wait_async(
    client: &kube::Client,
    cluster: &str,
    what: &str,
    manifests: &[Rendered],
) -> anyhow::Result<()> {
    let step = Step::start(&format!("applying {what} (server-side apply)"));
    let at = Instant::now();
    let mut counts = [0usize; 3];
    for doc in manifests.iter().flat_map(|r| &r.documents) {
        match objects::apply(client, doc, "default").await {
            Ok(Action::Created) => counts[0] += 1,
            Ok(Action::Configured) => counts[1] += 1,
            Ok(_) => counts[2] += 1,
            Err(e) => {
                step.failed(&format!("{what} was not applied"));
                bail!("apply {e}");
            }
        }
    }
    step.done(&format!(
        "{what}: {} objects applied: {} created, {} configured, {} unchanged ({})",
        counts.iter().sum::<usize>(),
        counts[0],
        counts[1],
        counts[2],
        since(at)
    ));
    let deployments: Vec<(String, String)> = manifests
        .iter()
        .flat_map(|r| &r.documents)
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            (ns, d["metadata"]["name"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let step = Step::start(&format!("waiting for {what}"));
    let at = Instant::now();
    let spinner = term::spinner("waiting for the node");
    let waited = wait_ready(client, &deployments, wait_limit(), |m| spinner.set_message(m.to_string())).await;
    spinner.finish_and_clear();
    match waited {
        Ok(()) => {
            step.done(&format!("{what}: {} Deployments available ({})", deployments.len(), since(at)));
            Ok(())
        }
        Err(e) => {
            step.failed(&format!("{what} did not become ready"));
            bail!("{e}\n(`kubectl --context kind-{cluster} get pods -A` shows every pod; `meshrig up` again picks up where this stopped)");
        }
    }
}

/// `addons enable NAME...` on kind: the addons' manifests applied and waited for, and
/// remembered (a later `up` applies them again).
pub async fn enable_addons(env: &Env, names: &[String]) -> anyhow::Result<ExitCode> {
    let plan = crate::cli::kind::plan(env, &crate::cli::lifecycle::GatewayPorts::default(), None)?;
    let manifests = crate::backend::kind::render::addons(&plan, names)?;
    let client = client(env).await?;
    let cluster = kind::cluster_name(&env.name);
    apply_and_wait_async(&client, &cluster, &format!("addons ({})", names.join(", ")), &manifests).await?;
    let mut settings = env.settings()?.unwrap_or_default();
    for n in names {
        if !settings.addons.contains(n) {
            settings.addons.push(n.clone());
        }
        println!("{} {n} ready: `meshrig dashboard {n}` opens it", term::result_mark(true));
    }
    env.save_settings(&settings)?;
    Ok(ExitCode::SUCCESS)
}

/// `addons disable NAME...` on kind: the addons' objects deleted, and forgotten.
pub async fn disable_addons(env: &Env, names: &[String]) -> anyhow::Result<ExitCode> {
    let plan = crate::cli::kind::plan(env, &crate::cli::lifecycle::GatewayPorts::default(), None)?;
    let manifests = crate::backend::kind::render::addons(&plan, names)?;
    let client = client(env).await?;
    for doc in manifests.iter().flat_map(|r| &r.documents) {
        objects::delete(&client, doc, "default").await.map_err(|e| anyhow!("delete {e}"))?;
    }
    let mut settings = env.settings()?.unwrap_or_default();
    settings.addons.retain(|a| !names.contains(a));
    env.save_settings(&settings)?;
    for n in names {
        println!("{} {n} removed from the cluster", term::result_mark(true));
    }
    Ok(ExitCode::SUCCESS)
}

fn short_image(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

fn since(at: Instant) -> String {
    format!("{:.1} s", at.elapsed().as_secs_f64())
}

/// Waits until a node is Ready and every Deployment in `deployments` (namespace, name) has all
/// its replicas available; `say` is told what is being waited on. The error names what was not
/// ready and what its pods say.
pub async fn wait_ready(
    client: &kube::Client,
    deployments: &[(String, String)],
    limit: Duration,
    say: impl Fn(&str),
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last;
    loop {
        last = match nodes.list(&ListParams::default()).await {
            Ok(list) if list.items.iter().any(node_ready) => break,
            Ok(list) if list.items.is_empty() => "no node has registered yet".to_string(),
            Ok(_) => "the node is not Ready yet".to_string(),
            Err(e) => format!("the API server: {e}"),
        };
        say(&last);
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("not ready within {} s: {last}", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (ns, name) in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        loop {
            last = match api.get_opt(name).await {
                Ok(Some(d)) if available(&d) => break,
                Ok(Some(d)) => {
                    let s = d.status.unwrap_or_default();
                    format!(
                        "deployment {ns}/{name}: {}/{} available",
                        s.available_replicas.unwrap_or(0),
                        d.spec.and_then(|s| s.replicas).unwrap_or(1)
                    )
                }
                Ok(None) => format!("deployment {ns}/{name} does not exist"),
                Err(e) => format!("the API server: {e}"),
            };
            say(&last);
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not ready within {} s: {last}", limit.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every replica the Deployment asks for is available. Pure.
pub fn available(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let have = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    have >= want
}

/// `down` of a kind environment: the mesh's own objects (every manifest `up` applied, but not
/// the namespaces, so what the user applied stays) are deleted and the cluster kept; with
/// `purge`, the cluster is deleted and the environment's state with it.
pub fn down(env: &Env, plan: &Plan, purge: bool) -> anyhow::Result<ExitCode> {
    let cluster = kind::cluster_name(&env.name);
    if purge {
        let step = Step::start(&format!("deleting cluster {cluster}"));
        kind_cmd(env, &["delete", "cluster", "--name", &cluster])?;
        step.done(&format!("cluster {cluster} deleted"));
        if env.dir.exists() {
            std::fs::remove_dir_all(&env.dir).with_context(|| format!("remove {}", env.dir.display()))?;
        }
        eprintln!("{} removed {}", term::pass_mark(), env.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let client = runtime.block_on(client(env))?;
    let manifests = crate::backend::kind::render::manifests(plan)?;
    let mut deleted = 0;
    // Deployments first (the proxies go before the control plane's permissions do).
    let mut docs: Vec<&serde_json::Value> = manifests
        .iter()
        .flat_map(|r| &r.documents)
        .filter(|d| d["kind"] != "Namespace" && d["kind"] != "CustomResourceDefinition")
        .collect();
    docs.sort_by_key(|d| d["kind"] != "Deployment");
    for doc in docs {
        if runtime.block_on(objects::delete(&client, doc, "default")).map_err(|e| anyhow!("delete {e}"))?
            == Action::Deleted
        {
            deleted += 1;
        }
    }
    eprintln!(
        "{} the mesh is out of cluster {cluster} ({deleted} objects deleted); the cluster, Istio's CRDs and what you applied are kept: \
         `meshrig up --backend kind` brings the mesh back, `meshrig down --purge` deletes the cluster",
        term::pass_mark()
    );
    Ok(ExitCode::SUCCESS)
}

/// `addons list` on kind: each addon the kind backend has, as its Deployment in istio-system
/// says (ready, starting, or not installed), with its image and how to open it.
pub async fn list_addons(env: &Env, output: crate::cli::Output) -> anyhow::Result<ExitCode> {
    let client = client(env).await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "istio-system");
    let mut rows = Vec::new();
    for (name, image) in crate::backend::kind::render::ADDONS {
        let d = deployments.get_opt(name).await.map_err(|e| anyhow!("deployment {name}: {}", objects::reason(&e)))?;
        let state = match &d {
            Some(d) if available(d) => "ready",
            Some(_) => "starting",
            None => "disabled",
        };
        rows.push((name, state, image));
    }
    if output != crate::cli::Output::Table {
        let data: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, state, image)| serde_json::json!({"name": name, "state": state, "image": image}))
            .collect();
        crate::cli::print_data(output, &data)?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, state, image)| {
            let how = if *state == "disabled" {
                format!("`meshrig addons enable {name}` installs it")
            } else {
                format!("`meshrig dashboard {name}` opens it")
            };
            vec![name.to_string(), state.to_string(), image.to_string(), how]
        })
        .collect();
    print!("{}", term::table(&["NAME", "STATE", "IMAGE", "MESSAGE"], &table));
    Ok(ExitCode::SUCCESS)
}
