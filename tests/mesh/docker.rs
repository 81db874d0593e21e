//! meshrig's image, for real: `image save` writes the archive, a private Docker daemon (started
//! by the test on its own socket and data directory, as root) loads it with `docker load`, and
//! `docker run` of that image runs the binary, a built-in app and a sidecar fed by a control
//! plane on this machine. Needs root, `dockerd` and `docker` (Debian's docker.io); without them
//! it is skipped with the reason, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{get, text, within, Mesh};

/// A Docker daemon of the test's own; stopped (with its containers) when dropped.
pub(crate) struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    pub(crate) fn socket(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.socket()).args(args);
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self.docker(args).output().map_err(|e| format!("docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("`docker {}` failed: {}", args.join(" "), text(&out)))
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(ids) = self.run(&["ps", "-aq"]) {
            for id in ids.split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

/// Why this machine cannot run the test, if it cannot.
pub(crate) fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref().ok() != Some("0") {
        return Some("not root: a Docker daemon needs it".into());
    }
    for tool in ["dockerd", "docker"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed (Debian's docker.io; .ci/run installs it)"));
        }
    }
    None
}

/// dockerd on a private socket and data root: no bridge and no iptables rules of its own
/// (containers use the host's network), the vfs storage driver (it works in any filesystem).
pub(crate) fn start_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .args(["--host", &format!("unix://{}", p("docker.sock"))])
        .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("dockerd.pid")])
        .args(["--bridge", "none", "--iptables=false", "--ip6tables=false", "--storage-driver", "vfs"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start dockerd");
    let daemon = Daemon { dir, child };
    within(Duration::from_secs(60), Duration::from_millis(200), "the test's Docker daemon answers", || {
        daemon.run(&["version", "--format", "{{.Server.Version}}"]).map_err(|e| format!("{e}\n{}", daemon.log()))
    });
    daemon
}

/// `docker run` of `args`, attached, until its first stdout line says READY (30 s at most):
/// the container's client process and that line.
fn run_ready(daemon: &Daemon, args: &[&str], what: &str) -> (Child, String) {
    let mut cmd = daemon.docker(&["run", "--rm", "--network", "host"]);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("docker run {what}: {e}"));
    let line = crate::support::ready_line(&mut child, &format!("{what} in Docker"), || daemon.log());
    (child, line)
}

/// The address a READY line announces for `listener` (`"admin"`, or a container port).
fn announced(line: &str, listener: &str) -> std::net::SocketAddr {
    let json: serde_json::Value = serde_json::from_str(line.trim().trim_start_matches("READY").trim()).unwrap();
    json[listener].as_str().unwrap_or_else(|| panic!("{listener} in {line}")).parse().unwrap()
}

#[test]
fn the_image_of_this_binary_loads_into_docker_and_runs_an_app_and_a_sidecar() {
    if let Some(why) = cannot_run() {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
            panic!("the Docker test cannot run under CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_meshrig");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("meshrig.tar");
    let out = Command::new(bin).args(["image", "save", "-o", archive.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "image save: {}", text(&out));
    let tag = String::from_utf8_lossy(&out.stdout).rsplit(": ").next().unwrap().trim().to_string();
    assert!(tag.starts_with("docker.io/library/meshrig:"), "{tag}");

    let daemon = start_daemon();
    let loaded = daemon.run(&["load", "-i", archive.to_str().unwrap()]).unwrap();
    let short = tag.trim_start_matches("docker.io/library/");
    assert!(loaded.contains(short), "docker load names the image: {loaded}");

    // The kind backend's preflight sees the daemon through DOCKER_HOST, and one that is not there.
    let doctor = |host: &str| {
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(bin)
            .args(["--state-dir", state.path().to_str().unwrap(), "doctor", "--backend", "kind", "-o", "json"])
            .env("DOCKER_HOST", host)
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        let docker = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == "docker").unwrap().clone();
        (out.status.code(), docker, report)
    };
    let (_, docker, report) = doctor(&daemon.socket());
    assert_eq!(docker["ok"], true, "{report:#}");
    let server = daemon.run(&["version", "--format", "{{.Server.Version}}"]).unwrap();
    assert!(docker["detail"].as_str().unwrap().contains(server.trim()), "{docker}");
    let (code, docker, report) = doctor("unix:///nonexistent/docker.sock");
    assert_eq!((code, &docker["ok"]), (Some(3), &serde_json::json!(false)), "{report:#}");
    assert!(docker["fix"].as_str().unwrap().contains("DOCKER_HOST"), "{docker}");

    // The binary runs in the image, with nothing but what the layer holds.
    let version = daemon.run(&["run", "--rm", "--network", "none", short, "--version"]).unwrap();
    assert!(version.starts_with("meshrig "), "{version}");
    eprintln!("docker: {} loaded; in it: {}", short, version.trim());

    // A built-in app from the image, on the host's network.
    let (mut app, line) = run_ready(
        &daemon,
        &[short, "app", "httpbin", "--container-port", "8080", "--listen", "127.0.0.1:0"],
        "httpbin",
    );
    let addr = announced(&line, "8080");
    let reply = get(addr, "httpbin", "/get").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let _ = app.kill();

    // A sidecar from the image, fed by a control plane on this machine: it gets its config and
    // its certificate, and says it is ready.
    let mesh = Mesh::up();
    let pod = mesh.pod("httpbin");
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mesh.state.path().join("control-plane.json")).unwrap()).unwrap();
    let token = std::fs::read_to_string(mesh.state.path().join("token")).unwrap();
    let token_file = work.path().join("istio-token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let mount = format!("{}:/var/run/secrets/tokens", work.path().display());
    let (mut proxy, line) = run_ready(
        &daemon,
        &[
            "-v",
            &mount,
            short,
            "proxy",
            "--role=sidecar",
            "--namespace=default",
            &format!("--pod={pod}"),
            "--inbound-port=8080",
            &format!("--control-plane={}", cp["address"].as_str().unwrap()),
            "--token-file=/var/run/secrets/tokens/istio-token",
        ],
        "the sidecar",
    );
    let admin = announced(&line, "admin");
    within(Duration::from_secs(20), Duration::from_millis(100), "the sidecar in Docker has its config", || {
        match get(admin, "localhost", "/ready") {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, r.body)),
            Err(e) => Err(e.to_string()),
        }
    });
    let _ = proxy.kill();
}
