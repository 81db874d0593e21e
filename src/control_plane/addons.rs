//! Runs the enabled addons as children of the control plane: Prometheus with a generated
//! configuration under `STATE/addons/prometheus/`, its targets file rewritten within a second
//! as pods come and go, restarted with backoff when it exits, stopped when disabled. Which
//! addons are enabled is kept in the environment's settings, so a restarted control plane
//! starts them again (and a crashed one's Prometheus is found and stopped by the reaper,
//! since its `--config.file` lies in the state directory).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::addons;
use crate::api::AddonStatus;
use crate::control_plane::backoff::{backoff, crashes_after};
use crate::control_plane::state::State;
use crate::net::log;

/// How long a started Prometheus has to answer `/-/ready`.
const READY_WITHIN: Duration = Duration::from_secs(60);

struct Running {
    status: Arc<Mutex<AddonStatus>>,
    stop: oneshot::Sender<()>,
}

#[derive(Default)]
pub struct Addons {
    running: Mutex<HashMap<String, Running>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Addons {
    /// Every addon's status (enabled ones only).
    pub fn statuses(&self) -> Vec<AddonStatus> {
        let mut all: Vec<AddonStatus> = lock(&self.running).values().map(|r| lock(&r.status).clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Starts `name` (and records it as enabled); its status, or why it cannot run.
    pub fn enable(&self, state: &Arc<State>, name: &str) -> Result<AddonStatus, String> {
        if !addons::NAMES.contains(&name) {
            return Err(format!("unknown addon {name:?}; meshrig has: {}", addons::NAMES.join(", ")));
        }
        if let Some(r) = lock(&self.running).get(name) {
            return Ok(lock(&r.status).clone());
        }
        let binary = addons::prometheus_binary()?;
        let settings = state.settings_mut(|s| {
            if !s.addons.iter().any(|a| a == name) {
                s.addons.push(name.to_string());
            }
        })?;
        let dir = state.env.dir.join("addons").join(name);
        std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let status = Arc::new(Mutex::new(AddonStatus {
            name: name.to_string(),
            address: None,
            ready: false,
            pid: None,
            restarts: 0,
            message: Some("starting".into()),
        }));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(supervise(state.clone(), binary, dir, settings.prometheus_port, status.clone(), stopped));
        let now = lock(&status).clone();
        lock(&self.running).insert(name.to_string(), Running { status, stop });
        Ok(now)
    }

    /// Stops `name` and records it as disabled.
    pub fn disable(&self, state: &Arc<State>, name: &str) -> Result<(), String> {
        if !addons::NAMES.contains(&name) {
            return Err(format!("unknown addon {name:?}; meshrig has: {}", addons::NAMES.join(", ")));
        }
        state.settings_mut(|s| s.addons.retain(|a| a != name))?;
        if let Some(r) = lock(&self.running).remove(name) {
            let _ = r.stop.send(());
        }
        Ok(())
    }
}

/// 127.0.0.1:`port` when free, else any free port (said in the log; `status` shows it).
fn own_address(port: u16) -> SocketAddr {
    let wanted = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpListener::bind(wanted) {
        Ok(_) => wanted,
        Err(e) => {
            let free = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .and_then(|l| l.local_addr())
                .unwrap_or(wanted);
            log(&format!("prometheus: port {port} is taken ({e}); using {free}"));
            free
        }
    }
}

/// Writes `path` whole or not at all (a reader never sees half a file).
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// The targets file's text for the pods as they are now.
fn targets_text(state: &State) -> String {
    let pods: Vec<crate::api::PodStatus> = state.lock().pods.values().map(|p| p.status()).collect();
    serde_json::to_string_pretty(&addons::targets(&pods)).unwrap_or_else(|_| "[]".into())
}

fn start(binary: &std::path::Path, dir: &std::path::Path, address: SocketAddr, state: &State) -> Result<Child, String> {
    let log_path = state.env.logs_dir().join("addon.prometheus.log");
    let file = crate::env::open_log(&log_path).map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    Command::new(binary)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg("--storage.tsdb.retention.time=2d")
        .arg("--storage.tsdb.retention.size=512MB")
        .arg(format!("--web.listen-address={address}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(file))
        .stderr(std::process::Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))
}

/// Does Prometheus at `address` answer `/-/ready` with 200?
async fn is_ready(client: &crate::net::HttpClient, address: SocketAddr) -> bool {
    matches!(
        crate::net::get(client, &format!("http://{address}/-/ready"), Duration::from_secs(2)).await,
        Ok((http::StatusCode::OK, _))
    )
}

async fn supervise(
    state: Arc<State>,
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    status: Arc<Mutex<AddonStatus>>,
    mut stop: oneshot::Receiver<()>,
) {
    let config = dir.join("prometheus.yml");
    let targets = dir.join("targets.json");
    let client = crate::net::client();
    let mut crashes = 0u32;
    let mut written;
    loop {
        // Chosen at each start: another program (or environment) may have taken the port.
        let address = own_address(port);
        lock(&status).address = Some(address);
        // The configuration and the targets as they are now, before Prometheus first reads them.
        written = targets_text(&state);
        let message = match write_atomically(&config, &addons::prometheus_config(&targets, address))
            .and_then(|_| write_atomically(&targets, &written))
            .map_err(|e| format!("write {}: {e}", dir.display()))
            .and_then(|_| start(&binary, &dir, address, &state))
        {
            Err(e) => e,
            Ok(mut child) => {
                {
                    let mut s = lock(&status);
                    s.pid = child.id();
                    s.message = Some("starting".into());
                }
                let began = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let exited = loop {
                    tokio::select! {
                        r = child.wait() => break r,
                        _ = &mut stop => {
                            stop_child(&mut child).await;
                            return;
                        }
                        _ = tick.tick() => {}
                    }
                    // Targets follow the pods.
                    let now = targets_text(&state);
                    if now != written {
                        match write_atomically(&targets, &now) {
                            Ok(()) => written = now,
                            Err(e) => log(&format!("prometheus: write {}: {e}", targets.display())),
                        }
                    }
                    let ready = lock(&status).ready;
                    if !ready && is_ready(&client, address).await {
                        let mut s = lock(&status);
                        s.ready = true;
                        s.message = None;
                        log(&format!("prometheus: ready on http://{address}"));
                    } else if !ready && began.elapsed() > READY_WITHIN {
                        lock(&status).message =
                            Some(format!("not ready after {READY_WITHIN:?}; see its log, addon.prometheus.log"));
                    }
                };
                crashes = crashes_after(crashes, began.elapsed());
                format!(
                    "exited ({}); its log is addon.prometheus.log",
                    exited.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                )
            }
        };
        let wait = backoff(crashes.max(1));
        log(&format!("prometheus: {message}; restarting in {wait:?}"));
        {
            let mut s = lock(&status);
            s.ready = false;
            s.pid = None;
            s.restarts += 1;
            s.message = Some(message);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return,
        }
    }
}

/// SIGTERM (Prometheus closes its database cleanly), then SIGKILL after 5 s.
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}
