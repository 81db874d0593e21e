//! `up`, `down`, `status`: the environment's lifecycle.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::{self, ApplyRequest, PodStatus, Status};
use crate::cli::backend::Backend;
use crate::cli::term::{self, Step};
use crate::cli::Output;
use crate::env::{Env, Settings};
use crate::snapshot::Role;
use crate::{reaper, resources};

/// The manifests `up` applies: the ingress gateway and the sample apps, each under the name
/// `--apps` knows it by (`mesh` is always applied).
pub const MANIFESTS: [(&str, &str, &str); 5] = [
    ("mesh", "manifests/istio-system.yaml", include_str!("../../manifests/istio-system.yaml")),
    ("httpbin", "samples/httpbin/httpbin.yaml", include_str!("../../samples/httpbin/httpbin.yaml")),
    ("httpbin", "samples/curl/curl.yaml", include_str!("../../samples/curl/curl.yaml")),
    (
        "bookinfo",
        "samples/bookinfo/platform/kube/bookinfo.yaml",
        include_str!("../../samples/bookinfo/platform/kube/bookinfo.yaml"),
    ),
    (
        "bookinfo",
        "samples/bookinfo/networking/bookinfo-gateway.yaml",
        include_str!("../../samples/bookinfo/networking/bookinfo-gateway.yaml"),
    ),
];

/// The sample apps `up --apps` accepts.
pub const APPS: [&str; 2] = ["httpbin", "bookinfo"];

/// A free port for a gateway listener, below the range the OS hands out for `bind(0)` and
/// outgoing connections: the gateway binds it only when a Gateway server asks for it, and a
/// port from that range could meanwhile be taken by any connection on the machine.
fn free_port() -> anyhow::Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(10_000);
    if low + 100 < ephemeral_start {
        let mut rng = fastrand::Rng::new();
        if let Some(p) = (0..200).map(|_| rng.u16(low..ephemeral_start)).find(|p| port_free(*p)) {
            return Ok(p);
        }
    }
    Ok(TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.local_addr()?.port())
}

/// Can a listener bind 127.0.0.1:`port` right now?
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// The gateway port to use: `preferred` when free; when the user did not choose it (`fallback`),
/// the next free one of the following 19, else any free port; otherwise an error saying what to do.
fn choose_port(
    preferred: u16,
    fallback: bool,
    what: &str,
    flag: &str,
    free: impl Fn(u16) -> bool,
) -> anyhow::Result<u16> {
    if free(preferred) {
        return Ok(preferred);
    }
    if !fallback {
        bail!("port {preferred} for the gateway's {what} listener is in use on 127.0.0.1; free it or choose another with `meshrig up {flag} PORT` (0 picks a free one)");
    }
    let chosen = match (1..20).filter_map(|i| preferred.checked_add(i)).find(|p| free(*p)) {
        Some(p) => p,
        None => free_port()?,
    };
    eprintln!("{} port {preferred} for the gateway's {what} listener is in use; using {chosen} (`meshrig up {flag} PORT` chooses)", term::warn_mark());
    Ok(chosen)
}

/// The localhost ports `up` was asked to publish the gateway on (None: keep or default).
#[derive(Clone, Copy, Debug, Default)]
pub struct GatewayPorts {
    pub http: Option<u16>,
    pub https: Option<u16>,
    pub tcp: Option<u16>,
    /// The trace collector's Jaeger query API.
    pub tracing: Option<u16>,
    /// `--max-connections`: each proxy listener's connection limit.
    pub max_connections: Option<usize>,
}

/// What the local backend cannot isolate, said by `status` (and README, and lab 06).
const LOCAL_ISOLATION: &str =
    "on the local backend every app also listens on a loopback port of its own (app_addrs in \
`status -o json`); a program on this machine can call it directly, past its sidecar's mutual TLS and \
authorization policies (on Kubernetes a pod's network namespace leaves the sidecar the only way in)";

pub async fn up(
    env: &Env,
    ports: GatewayPorts,
    apps: Option<Vec<String>>,
    addons: &[String],
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    if let Some(bad) = apps.iter().flatten().find(|a| !APPS.contains(&a.as_str()) && a.as_str() != "none") {
        bail!("unknown app {bad:?} for --apps; choose from {} (or none)", APPS.join(", "));
    }
    if let Some(bad) = addons.iter().find(|a| !crate::addons::NAMES.contains(&a.as_str())) {
        bail!("unknown addon {bad:?} for --addons; choose from {}", crate::addons::NAMES.join(", "));
    }
    if !addons.is_empty() {
        // Said before anything starts, so a missing binary costs nothing.
        crate::addons::prometheus_binary().map_err(|e| anyhow::anyhow!("--addons prometheus: {e}"))?;
    }
    env.ensure_dirs()?;
    eprintln!("meshrig up: environment {:?} ({})", env.name, env.dir.display());
    let running = Backend::for_env(env).client().ok();
    let running = match running {
        Some(c) if c.ready().await => Some(c),
        _ => None,
    };
    let first_up = !env.exists();
    let mut settings = env.settings()?.unwrap_or_default();
    // After a control-plane crash our own gateway may still hold the ports; the new control
    // plane replaces it, so only someone else's listener is a conflict.
    let ours_running = running.is_some() || !reaper::environment_pids(&env.dir).is_empty();
    let mut changed_while_running = false;
    for (current, asked, what, flag) in [
        (&mut settings.http_port, ports.http, "HTTP", "--http-port"),
        (&mut settings.https_port, ports.https, "HTTPS", "--https-port"),
        (&mut settings.tcp_port, ports.tcp, "TCP", "--tcp-port"),
        (&mut settings.tracing_port, ports.tracing, "tracing (Jaeger API)", "--tracing-port"),
    ] {
        if running.is_some() {
            changed_while_running |= asked.is_some_and(|p| p != *current);
            continue;
        }
        if let Some(p) = asked {
            *current = p;
        }
        if *current == 0 {
            *current = free_port()?;
        }
        if !ours_running {
            let fallback = first_up && asked.is_none();
            *current = choose_port(*current, fallback, what, flag, port_free)?;
        }
    }
    if let Some(apps) = apps {
        settings.apps = apps.into_iter().filter(|a| a != "none").collect();
    }
    match ports.max_connections {
        Some(0) => bail!("--max-connections must be at least 1"),
        Some(n) if running.is_some() && n != settings.max_connections => changed_while_running = true,
        Some(n) => settings.max_connections = n,
        None => {}
    }
    if running.is_none() || env.settings()?.is_some_and(|saved| saved.apps != settings.apps) {
        env.save_settings(&settings)?;
    } else if changed_while_running {
        eprintln!(
            "{} the environment is running with HTTP port {}, HTTPS port {}, TCP port {} and at most {} connections per \
             proxy listener; `meshrig down` first to change them",
            term::warn_mark(),
            settings.http_port,
            settings.https_port,
            settings.tcp_port,
            settings.max_connections
        );
    }

    if running.is_none() {
        check_store(env)?;
    }
    let step = Step::start("control plane");
    let (client, started) = match Backend::for_env(env).ensure_running().await {
        Ok(c) => c,
        Err(e) => {
            step.failed("control plane");
            return Err(e);
        }
    };
    step.done(&format!("control plane {} ({})", if started { "started" } else { "running" }, client.address()));

    let step = Step::start("ingress gateway and sample apps");
    let mut resources = Vec::new();
    for (_, file, text) in
        MANIFESTS.iter().filter(|(app, _, _)| *app == "mesh" || settings.apps.iter().any(|a| a == app))
    {
        for doc in resources::parse::parse_documents(file, text)? {
            resources.push(doc.resource);
        }
    }
    let applied = client.apply(&ApplyRequest { resources, create_only: !first_up, dry_run: false }).await?;
    let created = applied.results.iter().filter(|r| r.action == api::Action::Created).count();
    step.done(&format!("ingress gateway and sample apps ({created} created)"));

    let step = Step::start("waiting for pods");
    let status = client.wait_settled(Some(applied.version), Duration::from_secs(timeout)).await?;
    if !status.settled {
        step.failed("pods not ready");
        eprint!("{}", pods_table(&status));
        bail!(
            "pods were not ready after {timeout}s; `meshrig status` shows them and {} has their logs",
            env.logs_dir().display()
        );
    }
    step.done(&format!("{} pods ready", status.pods.len()));
    let mut addons_now = status.control_plane.addons.clone();
    if !addons.is_empty() {
        let step = Step::start("addons");
        match crate::cli::addons::enable_all(&client, addons).await {
            Ok(started) => {
                step.done(&format!("addons ready ({})", addons.join(", ")));
                addons_now.retain(|a| !started.iter().any(|s| s.name == a.name));
                addons_now.extend(started);
            }
            Err(e) => {
                step.failed("addons");
                return Err(e);
            }
        }
    }
    eprintln!();
    eprintln!("meshrig is up.");
    eprintln!("  ingress gateway: http://127.0.0.1:{} (Gateway servers on port 80 or 8080)", settings.http_port);
    eprintln!("                   tcp 127.0.0.1:{} (Gateway TCP servers on port 31400)", settings.tcp_port);
    let others: Vec<GatewayPort> = gateway_ports(&Backend::for_env(env), &status)
        .await
        .into_iter()
        .filter(|p| !matches!(p.container_port, 8080 | 8443 | 31400))
        .collect();
    if !others.is_empty() {
        eprintln!("                   other Gateway ports: {}", ports_line(&others));
    }
    if settings.apps.iter().any(|a| a == "bookinfo") {
        eprintln!("  Bookinfo:  http://127.0.0.1:{}/productpage", settings.http_port);
    }
    if let Some(tracing) = status.control_plane.tracing {
        let service =
            if settings.apps.iter().any(|a| a == "bookinfo") { "productpage.default" } else { "httpbin.default" };
        eprintln!("  traces (Jaeger API): http://{tracing}/jaeger/api/traces?service={service}");
    }
    for addon in &addons_now {
        eprintln!("  {}", crate::cli::addons::prometheus_hint(addon));
    }
    if settings.apps.iter().any(|a| a == "httpbin") {
        eprintln!("  try:  meshrig exec curl -- curl -s http://httpbin:8000/headers");
    }
    eprintln!("  or start the first lab:  meshrig lab start 1");
    // The data, on stdout for scripts: `GATEWAY=$(meshrig up)`.
    println!("http://127.0.0.1:{}", settings.http_port);
    Ok(ExitCode::SUCCESS)
}

/// Before a control plane starts (and stops what an earlier one left running): the store must
/// read back, or nothing is touched. A store that vanished while pods were recorded is said.
fn check_store(env: &Env) -> anyhow::Result<()> {
    let path = env.store_file();
    if !path.exists() {
        let recorded = crate::env::read_json::<crate::control_plane::state::Processes>(&env.processes_file())
            .ok()
            .flatten()
            .is_some_and(|p| !p.pids.is_empty());
        if recorded {
            eprintln!(
                "{} {} is missing although this environment ran pods: the applied resources are gone; \
                 starting with none (restore the file and run `meshrig up` again to get them back)",
                term::warn_mark(),
                path.display()
            );
        }
        return Ok(());
    }
    crate::control_plane::store::Store::load(path)?;
    Ok(())
}

/// The pods as a table: one function for `status` and for `up` when pods are not ready.
fn pods_table(status: &Status) -> String {
    let rows: Vec<Vec<String>> = status
        .pods
        .iter()
        .map(|p| {
            let synced = match p.acked {
                Some(a) if a.reached(status.control_plane.version) => "SYNCED",
                Some(_) => "STALE",
                None => "-",
            };
            vec![
                p.namespace.clone(),
                p.name.clone(),
                p.ready_column(),
                p.phase.to_string(),
                p.restarts.to_string(),
                p.role.as_str().into(),
                synced.into(),
                crate::env::age(&p.created),
                p.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    term::table(&["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "PROXY", "CONFIG", "AGE", "MESSAGE"], &rows)
}

pub fn down(env: &Env, purge: bool) -> anyhow::Result<ExitCode> {
    let stopped = Backend::for_env(env).stop();
    eprintln!("{} stopped {stopped} process(es) of environment {:?}", term::pass_mark(), env.name);
    if purge {
        if env.dir.exists() {
            std::fs::remove_dir_all(&env.dir).with_context(|| format!("remove {}", env.dir.display()))?;
        }
        eprintln!("{} removed {}", term::pass_mark(), env.dir.display());
    } else if env.dir.exists() {
        eprintln!(
            "  applied resources are kept in {}; `meshrig up` restores them, `meshrig down --purge` deletes them",
            env.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One listener of the ingress gateway: the Gateway server port, the container port, where it
/// is published.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct GatewayPort {
    pub port: u16,
    pub container_port: u16,
    pub address: SocketAddr,
}

/// Parses the gateway admin's `/listeners` (`0.0.0.0_8080::127.0.0.1:41175` per line).
pub fn parse_listeners(text: &str) -> Vec<GatewayPort> {
    text.lines()
        .filter_map(|l| {
            let (name, addr) = l.split_once("::")?;
            let container_port: u16 = name.rsplit_once('_')?.1.parse().ok()?;
            let port = match container_port {
                8080 => 80,
                8443 => 443,
                p => p,
            };
            Some(GatewayPort { port, container_port, address: addr.parse().ok()? })
        })
        .collect()
}

/// The ports the ingress gateway listens on now, asked of the gateway itself.
pub async fn gateway_ports(backend: &Backend<'_>, status: &Status) -> Vec<GatewayPort> {
    let admin = status
        .pods
        .iter()
        .find(|p| {
            p.role == crate::snapshot::Role::Gateway && p.labels.get("istio").is_some_and(|v| v == "ingressgateway")
        })
        .and_then(|p| backend.admin(p));
    let Some(admin) = admin else { return vec![] };
    match crate::net::get(&crate::net::client(), &format!("http://{admin}/listeners"), Duration::from_secs(2)).await {
        Ok((_, body)) => parse_listeners(&String::from_utf8_lossy(&body)),
        Err(_) => vec![],
    }
}

/// `80 → http://127.0.0.1:8080   443 → https://127.0.0.1:8443   31400 → tcp 127.0.0.1:31400`.
fn ports_line(ports: &[GatewayPort]) -> String {
    ports
        .iter()
        .map(|p| {
            let scheme = match p.port {
                31400 => "tcp ",
                443 => "https://",
                _ => "http://",
            };
            format!("{} → {scheme}{}", p.port, p.address)
        })
        .collect::<Vec<_>>()
        .join("   ")
}

/// The environment's status; when it is not running, a report that says so (valid JSON or
/// YAML with `-o`) and exit code 3, not an error.
pub async fn status(env: &Env, output: Output) -> anyhow::Result<ExitCode> {
    if let Backend::Kind(_) = Backend::for_env(env) {
        return crate::cli::kind_objects::status(env, output).await;
    }
    let reached = match Backend::for_env(env).client() {
        Ok(client) => client.status().await,
        Err(e) => Err(e),
    };
    let status = match reached {
        Ok(s) => s,
        Err(e) => {
            let reason = e.to_string();
            // Not running (3), or running but not answering (5: hung, unreachable).
            let code = crate::cli::exit::code_for(&anyhow::Error::new(e));
            let running = code != crate::cli::exit::NOT_RUNNING;
            let v = serde_json::json!({"environment": env.name, "running": running, "answering": false, "state_dir": env.dir, "reason": reason});
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                Output::Yaml => print!("{}", serde_yaml::to_string(&v)?),
                Output::Table if running => println!("environment {:?} does not answer: {reason}", env.name),
                Output::Table => println!("environment {:?} is not running: {reason}", env.name),
            }
            return Ok(ExitCode::from(code));
        }
    };
    let settings = env.settings()?.unwrap_or_else(Settings::default);
    let listening = gateway_ports(&Backend::for_env(env), &status).await;
    match output {
        Output::Json | Output::Yaml => {
            let v = serde_json::json!({"environment": env.name, "running": true, "state_dir": env.dir, "gateway": {"http": format!("127.0.0.1:{}", settings.http_port), "https": format!("127.0.0.1:{}", settings.https_port), "tcp": format!("127.0.0.1:{}", settings.tcp_port), "listening": listening}, "control_plane": status.control_plane, "pods": status.pods, "isolation": LOCAL_ISOLATION});
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", serde_yaml::to_string(&v)?);
            }
        }
        Output::Table => {
            println!(
                "control plane   {}   pid {}   config version {}",
                status.control_plane.address.map(|a| a.to_string()).unwrap_or_default(),
                status.control_plane.pid,
                status.control_plane.version
            );
            println!(
                "ingress gateway http://127.0.0.1:{}   https://127.0.0.1:{}   tcp 127.0.0.1:{}",
                settings.http_port, settings.https_port, settings.tcp_port
            );
            if let Some(tracing) = status.control_plane.tracing {
                println!("traces          http://{tracing}/jaeger/api/traces?service=SERVICE (Jaeger's query API)");
            }
            for addon in &status.control_plane.addons {
                let address = addon.address.map(|a| format!("http://{a}")).unwrap_or_default();
                let state = if addon.ready {
                    String::new()
                } else {
                    format!("   not ready: {}", addon.message.as_deref().unwrap_or("starting"))
                };
                println!("{:<15} {address}{state}", addon.name);
            }
            if listening.is_empty() {
                println!(
                    "gateway ports   none yet: apply a Gateway (a port without a Gateway server refuses connections)"
                );
            } else {
                println!("gateway ports   {}", ports_line(&listening));
            }
            println!();
            print!("{}", pods_table(&status));
            println!("\nnote: {LOCAL_ISOLATION}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the environment is settled at `version` (every pod the store asks for is ready
/// and every proxy runs the current config); the error names the pods still waiting.
pub async fn wait_ready(
    client: &api::Client,
    version: Option<crate::snapshot::Version>,
    timeout: Duration,
) -> anyhow::Result<Status> {
    let status = client.wait_settled(version, timeout).await?;
    if status.settled {
        return Ok(status);
    }
    let waiting: Vec<String> = status
        .pods
        .iter()
        .filter(|p| !p.ready)
        .map(|p| {
            format!("{} ({}{})", p.key(), p.phase, p.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())
        })
        .collect();
    if !waiting.is_empty() {
        bail!("not ready after {}s: {}; `meshrig status` shows every pod", timeout.as_secs(), waiting.join(", "));
    }
    // Every pod runs: some proxy has not acknowledged the config yet.
    let behind = |p: &&PodStatus| match (version, p.acked) {
        (Some(target), Some(acked)) => !acked.reached(target),
        _ => true,
    };
    let lagging: Vec<&PodStatus> = status.pods.iter().filter(|p| p.role != Role::Plain).filter(behind).collect();
    let gateway = lagging.iter().any(|p| p.role == Role::Gateway);
    bail!(
        "not ready after {}s: the proxies of {} had not applied the latest config{}; `meshrig status` shows every pod",
        timeout.as_secs(),
        if lagging.is_empty() {
            "some pods".to_string()
        } else {
            lagging.iter().map(|p| p.key()).collect::<Vec<_>>().join(", ")
        },
        if gateway {
            " (a gateway applies a config once every port its Gateways ask for is listening: is another program using one? `meshrig doctor` finds it)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::{choose_port, parse_listeners, ports_line};

    #[test]
    fn a_busy_default_port_falls_back_but_a_chosen_one_is_an_error() {
        let busy = |p: u16| p != 8080 && p != 8081;
        assert_eq!(choose_port(8080, true, "HTTP", "--http-port", busy).unwrap(), 8082);
        assert_eq!(choose_port(9000, false, "HTTP", "--http-port", busy).unwrap(), 9000);
        let err = choose_port(8080, false, "HTTP", "--http-port", busy).unwrap_err().to_string();
        assert!(err.contains("port 8080") && err.contains("--http-port"), "{err}");
    }

    #[test]
    fn gateway_listeners_read_back_with_the_server_port() {
        let ports = parse_listeners("0.0.0.0_8080::127.0.0.1:18080\n0.0.0.0_9000::127.0.0.1:9000\nnoise\n");
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].port, ports[0].container_port), (80, 8080));
        assert_eq!(ports[1].address, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(ports_line(&ports), "80 → http://127.0.0.1:18080   9000 → http://127.0.0.1:9000");
        let tls = parse_listeners("0.0.0.0_8443::127.0.0.1:18443\n0.0.0.0_31400::127.0.0.1:31400\n");
        assert_eq!(
            ports_line(&tls),
            "443 → https://127.0.0.1:18443   31400 → tcp 127.0.0.1:31400",
            "each with its scheme"
        );
    }
}
