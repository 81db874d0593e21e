//! The seam between the commands and where the mesh runs: find the control plane, start it,
//! stop everything, and reach what runs: a pod's proxy admin and outbound listener, its
//! containers' logs, a command run as if inside it, and where lab checks send (the probe's
//! target). `Local` (processes on loopback, found through the environment's state dir and
//! /proc) is the only backend today; a kind backend is another variant with the same
//! operations, and the commands above do not change.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::api;
use crate::env::Env;
use crate::labs::check::{Answers, Target};
use crate::snapshot::Role;
use crate::{ready, reaper};

pub enum Backend<'a> {
    /// Processes on this machine's loopback.
    Local(&'a Env),
    /// A kind cluster: `apply`, `get`, `delete` go to its API server (`cli/kind_objects.rs`);
    /// the commands that read the control plane's own API are not built for it yet.
    Kind(&'a Env),
}

impl<'a> Backend<'a> {
    /// The environment's backend, as its settings say (an environment not yet brought up
    /// gets the default, `local`).
    pub fn for_env(env: &'a Env) -> Backend<'a> {
        let kind = env.settings().ok().flatten().map(|s| s.backend).unwrap_or_default();
        match kind {
            crate::env::BackendKind::Local => Backend::Local(env),
            crate::env::BackendKind::Kind => Backend::Kind(env),
        }
    }

    fn env(&self) -> &'a Env {
        match self {
            Backend::Local(env) | Backend::Kind(env) => env,
        }
    }

    /// What the kind backend says to a command that needs the control plane's own API.
    fn not_on_kind(env: &Env) -> api::Error {
        let cluster = crate::backend::kind::cluster_name(&env.name);
        api::Error::NotOnThisBackend(format!(
            "environment {:?} runs on kind cluster {cluster}, where this command is not built yet (meshrig's apply, get \
             and delete are); `kubectl --context kind-{cluster}` reaches everything in the cluster",
            env.name
        ))
    }

    /// A pod's proxy admin listener, as this machine reaches it.
    pub fn admin(&self, pod: &api::PodStatus) -> Option<SocketAddr> {
        pod.proxy_addrs.get(&ready::Listener::Admin).copied()
    }

    /// Every pod's proxy admin listener (for the metrics of the whole mesh).
    pub fn admins(&self, status: &api::Status) -> Vec<SocketAddr> {
        status.pods.iter().filter_map(|p| self.admin(p)).collect()
    }

    /// Where a pod's own traffic goes out through its proxy (an HTTP proxy, as its apps use).
    pub fn outbound(&self, pod: &api::PodStatus) -> Option<SocketAddr> {
        pod.proxy_addrs.get(&ready::Listener::Outbound).copied()
    }

    /// The log file of one of a pod's containers (`istio-proxy` or the app's).
    pub fn log_file(&self, pod: &api::PodStatus, container: &str) -> PathBuf {
        let env = self.env();
        env.logs_dir().join(format!("{}.{}.{container}.log", pod.namespace, pod.name))
    }

    /// Runs `program args` as if inside `pod`: here, the host's program with the pod's proxy as
    /// its HTTP proxy and the pod's name as `HOSTNAME`.
    pub fn exec(&self, pod: &api::PodStatus, program: &str, args: &[String]) -> anyhow::Result<ExitCode> {
        let proxy = self.outbound(pod).ok_or_else(|| anyhow::anyhow!("pod {} has no outbound listener", pod.name))?;
        let url = format!("http://{proxy}");
        let status = std::process::Command::new(program)
            .args(args)
            .env("http_proxy", &url)
            .env("HTTP_PROXY", &url)
            .env("HOSTNAME", &pod.name)
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run {program:?}: {e}"))?;
        Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
    }

    /// Where lab checks reach the mesh: the gateway's published ports (and its admin, for the
    /// reasons behind its answers), each workload's outbound listener, every admin, the trace
    /// collector and Prometheus.
    pub async fn probe_target(&self, client: &api::Client) -> anyhow::Result<Target> {
        let env = self.env();
        let s = env.settings()?.unwrap_or_default();
        let status = client.status().await?;
        let gateway_admin = status
            .pods
            .iter()
            .find(|p| p.role == Role::Gateway && p.namespace == "istio-system")
            .and_then(|p| self.admin(p));
        let mut workloads = std::collections::BTreeMap::new();
        let mut trace_services = std::collections::BTreeMap::new();
        for p in status.pods.iter().filter(|p| p.ready) {
            if let Some(outbound) = self.outbound(p) {
                let key = format!("{}/{}", p.namespace, p.workload);
                // As the proxies name themselves in spans: the `app` label, else the workload.
                let app = p.labels.get("app").unwrap_or(&p.workload);
                trace_services.entry(key.clone()).or_insert(format!("{app}.{}", p.namespace));
                workloads.entry(key).or_insert(outbound);
            }
        }
        Ok(Target {
            gateway: SocketAddr::from((Ipv4Addr::LOCALHOST, s.http_port)),
            gateway_admin,
            workloads,
            trace_services,
            gateway_https: SocketAddr::from((Ipv4Addr::LOCALHOST, s.https_port)),
            api: Some(client.clone()),
            tracing: status.control_plane.tracing,
            admins: self.admins(&status),
            prometheus: status
                .control_plane
                .addons
                .iter()
                .find(|a| a.name == "prometheus" && a.ready)
                .and_then(|a| a.address),
            answers: Answers::None,
        })
    }

    /// The running control plane's client (NotRunning when the environment is down).
    pub fn client(&self) -> Result<api::Client, api::Error> {
        match self {
            Backend::Local(env) => api::Client::for_env(env),
            Backend::Kind(env) => Err(Self::not_on_kind(env)),
        }
    }

    /// The running control plane's client, starting one when none runs; and whether it was started.
    pub async fn ensure_running(&self) -> anyhow::Result<(api::Client, bool)> {
        let env = match self {
            Backend::Local(env) => env,
            Backend::Kind(env) => return Err(Self::not_on_kind(env).into()),
        };
        let reached = self.client();
        if let Ok(client) = &reached {
            if client.ready().await {
                return Ok((client.clone(), false));
            }
        }
        if crate::control_plane::lock::held(env) {
            // Another `up` may be starting it this very moment: give it what is left of the time
            // a start takes (a control plane that has been up a while and does not answer is hung,
            // and is not waited for).
            if let Some(client) = self.wait_ready(self.wait_for_a_starter()).await {
                return Ok((client, false));
            }
            let reached = self.client();
            let why = match reached {
                Err(e) => e.to_string(),
                Ok(_) => "it does not answer: it may be hung or still starting".into(),
            };
            bail!(
                "a control plane holds this environment ({}) but cannot be used: {why}; `meshrig down` stops it, \
                 then `meshrig up` starts a new one",
                env.dir.display()
            );
        }
        let exe = std::env::current_exe().context("cannot find the meshrig binary")?;
        let log_path = env.logs_dir().join("control-plane.log");
        let log = crate::env::open_log(&log_path).with_context(|| format!("open {}", log_path.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--state-dir").arg(&env.dir).arg("control-plane");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        // Its own process group: the control plane and everything it starts outlive this command
        // and do not get the terminal's Ctrl-C.
        cmd.process_group(0);
        let mut child = cmd.spawn().context("start the control plane")?;
        let stdout = child.stdout.take().expect("piped");
        let line = tokio::time::timeout(Duration::from_secs(20), BufReader::new(stdout).lines().next_line()).await;
        let addrs = match line {
            Ok(Ok(Some(l))) => ready::parse(&l),
            _ => None,
        };
        let Some(addrs) = addrs else {
            // Lost a race with another `up`: its control plane took the lock; use it.
            if crate::control_plane::lock::held(env) {
                if let Some(client) = self.wait_ready(Duration::from_secs(20)).await {
                    return Ok((client, false));
                }
            }
            bail!("the control plane did not start; see {}", log_path.display());
        };
        let client = api::Client::new(addrs[&ready::Listener::Api], env.read_token()?);
        Ok((client, true))
    }

    /// How long to wait for a control plane that holds the lock but does not answer: the time a
    /// start takes while it has not recorded itself yet (another `up` is starting it), none once
    /// it has (a recorded control plane that does not answer is hung, and is not waited for).
    fn wait_for_a_starter(&self) -> Duration {
        let env = self.env();
        let recorded = matches!(env.control_plane(), Ok(Some(info)) if reaper::belongs(info.pid, &env.dir));
        if recorded {
            Duration::ZERO
        } else {
            Duration::from_secs(20)
        }
    }

    /// Waits (bounded) for a control plane someone else is starting to answer.
    async fn wait_ready(&self, within: Duration) -> Option<api::Client> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(client) = self.client() {
                if client.ready().await {
                    return Some(client);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every process of the environment (the control plane first, so nothing restarts a
    /// pod meanwhile); how many were stopped.
    pub fn stop(&self) -> usize {
        let Backend::Local(env) = self else { return 0 };
        let mut control_planes = Vec::new();
        if let Ok(Some(info)) = env.control_plane() {
            control_planes.push(info.pid);
        }
        if let Ok(Some(p)) = crate::env::read_json::<crate::control_plane::state::Processes>(&env.processes_file()) {
            control_planes.push(p.control_plane);
        }
        control_planes.retain(|p| reaper::belongs(*p, &env.dir));
        control_planes.dedup();
        let mut stopped = reaper::stop(&control_planes, Duration::from_secs(3)).len();
        // Then everything else of this environment, until a sweep finds nothing (pids recorded in
        // files are only trusted when the process really is this environment's).
        for _ in 0..5 {
            let mut pids = reaper::environment_pids(&env.dir);
            if let Ok(Some(p)) = crate::env::read_json::<crate::control_plane::state::Processes>(&env.processes_file())
            {
                pids.extend(p.pids.into_iter().filter(|p| reaper::belongs(*p, &env.dir)));
            }
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                break;
            }
            stopped += reaper::stop(&pids, Duration::from_secs(3)).len();
        }
        let _ = std::fs::remove_file(env.control_plane_file());
        let _ = std::fs::remove_file(env.processes_file());
        stopped
    }
}
