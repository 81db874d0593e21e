//! The local workload runner, a tiny kubelet: Deployments become pods, and a pod is a proxy
//! process (sidecar, gateway or plain forwarder) plus the built-in app, if it has one.
//!
//! Each pod has a supervisor task (an enum of phases and one step function would be overkill
//! for three phases: start, run, back off). A crashed process restarts the pod with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::api::Phase;
use crate::apps::{self, Workload};
use crate::control_plane::backoff::{backoff, crashes_after};
use crate::control_plane::credentials::PodTokens;
use crate::control_plane::state::{Pod, State};
use crate::env::Settings;
use crate::net::log;
use crate::ready::{self, Listener};
use crate::registry;
use crate::resources::core::Deployment;
use crate::resources::{Kind, Resource, ResourceKey};
use crate::snapshot::{ProxyIdentity, Role};

/// Everything needed to start one pod, decided from its Deployment and namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPlan {
    pub namespace: String,
    pub deployment: String,
    pub role: Role,
    pub app: Option<(apps::App, u16)>,
    /// The app container's `args`.
    pub app_args: Vec<String>,
    pub inbound_ports: Vec<u16>,
    pub port_names: BTreeMap<String, u16>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub publish: BTreeMap<u16, SocketAddr>,
    pub hash: String,
    /// Images meshrig does not know, run as the echo stand-in.
    pub stand_ins: Vec<String>,
    /// What `apply` warns about: container env the built-in app is not given.
    pub warnings: Vec<String>,
}

/// Variables that change how a program loads or runs (the dynamic loader's, the allocator's,
/// Rust's runtime, TLS roots, meshrig's own settings) rather than what an app does. On the local
/// backend a built-in app is meshrig's own binary, so they are never passed to it: on Kubernetes
/// a container's env reaches only that container, here it would reach meshrig.
pub fn changes_the_binary(name: &str) -> bool {
    const PREFIXES: [&str; 9] =
        ["LD_", "MESHRIG_", "RUST_", "MALLOC_", "GLIBC_", "GCONV_", "SSL_CERT_", "OPENSSL_", "AWS_LC_"];
    PREFIXES.iter().any(|p| name.to_ascii_uppercase().starts_with(p))
}

/// Istio's injection rules: the pod label `sidecar.istio.io/inject` wins, then the namespace
/// label `istio-injection`, then the pod annotation `sidecar.istio.io/inject` can opt out.
pub fn injected(
    ns_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
) -> bool {
    const KEY: &str = "sidecar.istio.io/inject";
    if ns_labels.get("istio-injection").map(String::as_str) == Some("disabled") {
        return false;
    }
    match pod_labels.get(KEY).map(String::as_str) {
        Some("false") => return false,
        Some("true") => return true,
        _ => {}
    }
    ns_labels.get("istio-injection").map(String::as_str) == Some("enabled")
        && pod_annotations.get(KEY).map(String::as_str) != Some("false")
}

/// Plans a Deployment's pods (pure). Errors are the same ones `apply` reports.
pub fn plan(d: &Deployment, ns_labels: &BTreeMap<String, String>, settings: &Settings) -> Result<PodPlan, String> {
    let namespace = d.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let t = &d.spec.template;
    let labels = t.metadata.labels.clone();
    let annotations = t.metadata.annotations.clone();
    let mut role = if injected(ns_labels, &labels, &annotations) { Role::Sidecar } else { Role::Plain };
    let mut app = None;
    let mut inbound: BTreeSet<u16> = BTreeSet::new();
    let mut port_names = BTreeMap::new();
    let mut env = Vec::new();
    let mut app_args = Vec::new();
    let mut stand_ins = Vec::new();
    let mut warnings = Vec::new();
    for (i, c) in t.spec.containers.iter().enumerate() {
        let image = c.image.as_deref().unwrap_or("");
        let workload =
            apps::resolve(image, &annotations).map_err(|e| format!("spec.template.spec.containers[{i}].image: {e}"))?;
        for p in &c.ports {
            inbound.insert(p.container_port);
            if let Some(n) = &p.name {
                port_names.insert(n.clone(), p.container_port);
            }
        }
        match workload {
            Workload::Gateway => role = Role::Gateway,
            Workload::Client => {}
            Workload::StandIn => {
                stand_ins.push(image.to_string());
                let ports: Vec<u16> = c.ports.iter().map(|p| p.container_port).collect();
                match app {
                    Some((apps::App::Echo, _)) => app_args.extend(ports.iter().map(u16::to_string)),
                    Some(_) if !ports.is_empty() => {
                        return Err(format!(
                            "spec.template.spec.containers[{i}]: only one app container per pod is supported locally"
                        ))
                    }
                    _ if ports.is_empty() => {}
                    _ => {
                        let config = apps::echo::Config::new(image, &labels, &annotations)
                            .map_err(|e| format!("spec.template.metadata.annotations: {e}"))?;
                        app = Some((apps::App::Echo, ports[0]));
                        app_args = ports.iter().map(u16::to_string).collect();
                        env.push((apps::echo::ENV.to_string(), serde_json::to_string(&config).unwrap_or_default()));
                    }
                }
            }
            Workload::App { app: a, port, env: image_env } => {
                if app.is_some() {
                    return Err(format!(
                        "spec.template.spec.containers[{i}]: only one app container per pod is supported locally"
                    ));
                }
                inbound.insert(port);
                app = Some((a, port));
                app_args = c.args.clone();
                if a == apps::App::TcpEcho {
                    apps::tcp_echo::parse_args(&app_args)
                        .map_err(|e| format!("spec.template.spec.containers[{i}].{e}"))?;
                }
                env.extend(image_env);
                for (j, e) in c.env.iter().enumerate() {
                    if changes_the_binary(&e.name) {
                        warnings.push(format!(
                            "spec.template.spec.containers[{i}].env[{j}].name: {} is not passed to the app: on the \
                             local backend the built-in app is meshrig's own binary, and {} would change how it runs",
                            e.name, e.name
                        ));
                        continue;
                    }
                    env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
                }
            }
        }
    }
    let mut publish = BTreeMap::new();
    if role == Role::Gateway && labels.get("istio").map(String::as_str) == Some("ingressgateway") {
        for port in [8080, 8443, 31400] {
            publish.insert(port, settings.gateway_address(port));
        }
    }
    let hash = fnv_hex(&format!("{}|{:?}|{}", serde_json::to_string(t).unwrap_or_default(), role, namespace));
    Ok(PodPlan {
        namespace,
        deployment: d.metadata.name.clone(),
        role,
        app,
        inbound_ports: inbound.into_iter().collect(),
        port_names,
        env,
        app_args,
        labels,
        service_account: t.spec.service_account_name.clone().unwrap_or_else(|| "default".into()),
        publish,
        hash,
        stand_ins,
        warnings,
    })
}

fn fnv_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| CHARS[fastrand::usize(..CHARS.len())] as char).collect()
}

struct Handle {
    stop: oneshot::Sender<()>,
}

/// Reconciles forever: after every change, pods match the Deployments.
pub async fn run(state: Arc<State>, tokens: Arc<PodTokens>) {
    let mut handles: HashMap<String, Handle> = HashMap::new();
    let mut rx = state.changes.subscribe();
    loop {
        let seen = *rx.borrow_and_update();
        reconcile(&state, &tokens, &mut handles);
        state.reconciled.send_replace(seen);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn reconcile(state: &Arc<State>, tokens: &Arc<PodTokens>, handles: &mut HashMap<String, Handle>) {
    let settings = &state.settings;
    let mut inner = state.lock();
    // Desired: (namespace, deployment, hash) → (plan, replicas).
    let mut desired: BTreeMap<(String, String), (PodPlan, u32)> = BTreeMap::new();
    for r in inner.config.objects().all().values() {
        let Resource::Deployment(d) = r else { continue };
        let ns = d.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let ns_labels = match inner.config.objects().get(&ResourceKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: ns.clone(),
        }) {
            Some(n) => n.meta().labels.clone(),
            None => continue,
        };
        match plan(d, &ns_labels, settings) {
            Ok(p) => {
                desired.insert((ns, d.metadata.name.clone()), (p, d.replicas()));
            }
            Err(e) => log(&format!("deployment {ns}/{}: {e}", d.metadata.name)),
        }
    }
    let mut changed = false;
    // Stop pods whose deployment is gone, changed, or scaled down.
    let mut kept: BTreeMap<(String, String), u32> = BTreeMap::new();
    let keys: Vec<String> = inner.pods.keys().cloned().collect();
    for key in keys {
        let pod = &inner.pods[&key];
        let id = (pod.workload.identity.namespace.clone(), pod.workload.identity.workload.clone());
        let keep = match desired.get(&id) {
            Some((p, replicas)) if p.hash == pod.run.template_hash => {
                let n = kept.entry(id).or_default();
                *n += 1;
                *n <= *replicas
            }
            _ => false,
        };
        if !keep {
            if let Some(h) = handles.remove(&key) {
                let _ = h.stop.send(());
            }
            inner.pods.remove(&key);
            tokens.revoke(&key);
            changed = true;
        }
    }
    // Start what is missing.
    for (id, (p, replicas)) in &desired {
        let have = kept.get(id).copied().unwrap_or(0);
        for _ in have..*replicas {
            let name = format!("{}-{}-{}", p.deployment, p.hash, random_suffix());
            let mut workload = registry::Workload::new(ProxyIdentity {
                namespace: p.namespace.clone(),
                pod: name.clone(),
                workload: p.deployment.clone(),
                labels: p.labels.clone(),
                service_account: p.service_account.clone(),
                role: p.role,
            });
            workload.port_names = p.port_names.clone();
            let mut pod = Pod::new(workload, p.app.map(|(a, _)| a.name().to_string()), p.hash.clone());
            pod.run.published = p.publish.clone();
            pod.set_listeners(None, None);
            let key = pod.key();
            inner.pods.insert(key.clone(), pod);
            let (stop, stop_rx) = oneshot::channel();
            tokio::spawn(supervise(state.clone(), tokens.clone(), key.clone(), p.clone(), stop_rx));
            handles.insert(key, Handle { stop });
            changed = true;
        }
    }
    if changed {
        state.bump(&mut inner);
    }
}

/// Runs one pod until it is stopped, restarting it with backoff when a process exits.
async fn supervise(
    state: Arc<State>,
    tokens: Arc<PodTokens>,
    key: String,
    plan: PodPlan,
    mut stop: oneshot::Receiver<()>,
) {
    let mut restarts = 0u32;
    let mut crashes = 0u32;
    loop {
        state.update_pod(&key, |p, _| p.set_phase(Phase::Starting));
        let started = tokio::select! {
            r = start(&state, &tokens, &key, &plan) => r,
            _ = &mut stop => return,
        };
        let mut ran = Duration::ZERO;
        let message = match started {
            Ok(mut procs) => {
                let running = std::time::Instant::now();
                let pids: Vec<u32> = procs.iter().filter_map(|(_, c)| c.id()).collect();
                state.update_pod(&key, |p, v| {
                    p.set_phase(Phase::Running);
                    p.run.running_since = v;
                    p.run.pids = pids;
                    p.run.message = None;
                });
                let exited = wait_any(&mut procs);
                tokio::select! {
                    msg = exited => {
                        ran = running.elapsed();
                        msg
                    }
                    _ = &mut stop => {
                        // The pod left the registry before `stop` was sent, so proxies stop
                        // routing to it; its own proxy drains what is in flight.
                        terminate_all(&mut procs).await;
                        return;
                    }
                }
            }
            Err(e) => e,
        };
        restarts += 1;
        crashes = crashes_after(crashes, ran);
        let backoff = backoff(crashes);
        log(&format!("pod {key}: {message}; restarting in {backoff:?}"));
        state.update_pod(&key, |p, _| {
            p.set_phase(Phase::CrashLoopBackOff);
            p.run.restarts = restarts;
            p.run.message = Some(message.clone());
            p.run.pids.clear();
        });
        // A real backoff between restarts (CrashLoopBackOff), not a readiness wait.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
    }
}

type Procs = Vec<(&'static str, Child)>;

async fn wait_any(procs: &mut Procs) -> String {
    let waits = procs.iter_mut().map(|(name, child)| {
        let name = *name;
        Box::pin(async move {
            let status = child.wait().await;
            format!("{name} exited ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))
        })
    });
    futures_select_all(waits.collect()).await
}

/// The first of several futures to finish (a minimal `select_all`).
async fn futures_select_all<F: std::future::Future<Output = String> + Unpin>(mut futs: Vec<F>) -> String {
    if futs.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Stops a pod as the kubelet does: SIGTERM to every process, SIGKILL for what is still running
/// after the proxy's drain time (and a second to exit).
async fn terminate_all(procs: &mut Procs) {
    for (_, child) in procs.iter_mut() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + crate::proxy::drain::DRAIN_TIME + Duration::from_secs(1);
    for (_, child) in procs.iter_mut() {
        if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

async fn kill_all(procs: &mut Procs) {
    for (_, child) in procs.iter_mut() {
        let _ = child.start_kill();
    }
    for (_, child) in procs.iter_mut() {
        let _ = child.wait().await;
    }
}

/// Starts the pod's proxy, then its app (whose HTTP_PROXY points at the proxy), reading each
/// one's readiness line.
async fn start(state: &State, tokens: &PodTokens, key: &str, plan: &PodPlan) -> Result<Procs, String> {
    let mut procs: Procs = Vec::new();
    let pod_name = key.split_once('/').map(|(_, n)| n).unwrap_or(key).to_string();
    let exe = meshrig_exe()?;
    let log = |container: &str| state.env.logs_dir().join(format!("{}.{pod_name}.{container}.log", plan.namespace));

    let mut proxy = Command::new(&exe);
    proxy.arg("--state-dir").arg(&state.env.dir).args([
        "proxy",
        "--role",
        plan.role.as_str(),
        "--namespace",
        &plan.namespace,
        "--pod",
        &pod_name,
        "--control-plane",
        &state.api.address.to_string(),
    ]);
    // The proxy's own credential, not the environment's token: it can fetch only this pod's
    // snapshot and certificate.
    proxy.env(crate::proxy::TOKEN_ENV, tokens.issue(key));
    proxy.args(["--max-connections", &state.settings.max_connections.to_string()]);
    for p in &plan.inbound_ports {
        proxy.args(["--inbound-port", &p.to_string()]);
    }
    for (port, addr) in &plan.publish {
        proxy.args(["--publish", &format!("{port}={addr}")]);
    }
    let (child, addrs) = spawn(proxy, &log("istio-proxy")).await.map_err(|e| format!("proxy: {e}"))?;
    procs.push(("istio-proxy", child));
    state.update_pod(key, |p, _| p.set_listeners(Some(addrs.clone()), None));

    if let Some((app, port)) = plan.app {
        let outbound = addrs.get(&Listener::Outbound).map(|a| format!("http://{a}")).unwrap_or_default();
        let mut cmd = Command::new(&exe);
        cmd.arg("--state-dir").arg(&state.env.dir).args(["app", app.name(), "--container-port", &port.to_string()]);
        if !plan.app_args.is_empty() {
            cmd.arg("--").args(&plan.app_args);
        }
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        cmd.env("HOSTNAME", &pod_name).env("POD_NAME", &pod_name).env("POD_NAMESPACE", &plan.namespace);
        cmd.env("HTTP_PROXY", &outbound).env("http_proxy", &outbound).env_remove("NO_PROXY").env_remove("no_proxy");
        match spawn(cmd, &log(app.name())).await {
            Ok((child, app_addrs)) => {
                procs.push(("app", child));
                let app_addrs = app_addrs
                    .into_iter()
                    .filter_map(|(l, a)| if let Listener::App(p) = l { Some((p, a)) } else { None })
                    .collect();
                state.update_pod(key, |p, _| p.set_listeners(None, Some(app_addrs)));
            }
            Err(e) => {
                kill_all(&mut procs).await;
                return Err(format!("{}: {e}", app.name()));
            }
        }
    }
    Ok(procs)
}

/// The binary to start children from. When meshrig was rebuilt or upgraded while running,
/// Linux reports the old inode as `<path> (deleted)`; the path itself holds the new binary.
fn meshrig_exe() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the meshrig binary: {e}"))?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(path) => path.into(),
        None => exe,
    })
}

/// Spawns a child with stderr to its log file, and waits (bounded) for its readiness line.
async fn spawn(mut cmd: Command, log: &std::path::Path) -> Result<(Child, ready::Addrs), String> {
    let file = crate::env::open_log(log).map_err(|e| format!("open {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(err)).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    let addrs = match first {
        Ok(Ok(Some(line))) => ready::parse(&line).ok_or_else(|| format!("unexpected first line {line:?}"))?,
        Ok(Ok(None)) => {
            let status = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("exited before it was ready ({status}); see {}", log.display()));
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            let _ = child.start_kill();
            return Err(format!("not ready after 20s; see {}", log.display()));
        }
    };
    // Anything printed later goes to the log; keep draining so the child never blocks.
    let mut out = tokio::fs::File::from_std(file);
    tokio::spawn(async move {
        let mut rest = lines.into_inner();
        let _ = tokio::io::copy(&mut rest, &mut out).await;
    });
    Ok((child, addrs))
}

#[cfg(test)]
mod tests {
    use super::injected;
    use std::collections::BTreeMap;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn injection_follows_istio() {
        let enabled = m(&[("istio-injection", "enabled")]);
        let none = m(&[]);
        assert!(injected(&enabled, &none, &none));
        assert!(!injected(&none, &none, &none));
        assert!(injected(&none, &m(&[("sidecar.istio.io/inject", "true")]), &none));
        assert!(!injected(&enabled, &m(&[("sidecar.istio.io/inject", "false")]), &none));
        assert!(!injected(&enabled, &none, &m(&[("sidecar.istio.io/inject", "false")])));
        assert!(!injected(&m(&[("istio-injection", "disabled")]), &m(&[("sidecar.istio.io/inject", "true")]), &none));
    }
}
