//! What the kind backend needs on this machine, each problem with its fix: `kind` (and
//! `kubectl`, optional: meshrig talks to the API itself) on PATH; a Docker daemon that answers
//! (bollard, `DOCKER_HOST` honoured, the API version negotiated), with its version, memory and
//! image store; the environment's host ports free. `doctor --backend kind` prints it, and `up
//! --backend kind` starts with it.

use std::time::Duration;

use serde::Serialize;

/// One check's result.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The backend cannot run at all while this fails.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub blocking: bool,
}

impl Finding {
    fn ok(check: &str, detail: String) -> Finding {
        Finding { check: check.into(), ok: true, detail, fix: None, blocking: false }
    }

    fn problem(check: &str, detail: String, fix: &str, blocking: bool) -> Finding {
        Finding { check: check.into(), ok: false, detail, fix: Some(fix.into()), blocking }
    }
}

/// Below this much memory for the Docker daemon, a cluster with Bookinfo and the addons is
/// likely to be evicted.
pub const MIN_MEMORY: i64 = 4 << 30;

/// What the daemon said about itself, as far as the checks read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Daemon {
    pub version: String,
    pub api_version: String,
    pub mem_total: Option<i64>,
    pub driver: String,
    /// `driver-type` of the storage driver's status: `io.containerd.snapshotter.v1` when the
    /// containerd image store is on.
    pub driver_type: Option<String>,
}

/// Judges what the daemon said (pure).
pub fn judge_daemon(d: &Daemon) -> Vec<Finding> {
    let mut out = vec![Finding::ok("docker", format!("Docker {} (API {})", d.version, d.api_version))];
    match d.mem_total {
        Some(m) if m < MIN_MEMORY => out.push(Finding::problem(
            "docker memory",
            format!("{:.1} GiB for containers; a cluster with Bookinfo and the addons wants at least 4", gib(m)),
            "give Docker more memory (Docker Desktop: Settings > Resources), or run fewer apps (`--apps httpbin`)",
            false,
        )),
        Some(m) => out.push(Finding::ok("docker memory", format!("{:.1} GiB", gib(m)))),
        None => {}
    }
    let containerd = d.driver_type.as_deref() == Some("io.containerd.snapshotter.v1");
    out.push(Finding::ok(
        "docker image store",
        if containerd {
            format!(
                "containerd ({}): `kind load docker-image` fails there (kind#3795); meshrig loads its image with \
                 `kind load image-archive`, which does not use it",
                d.driver
            )
        } else {
            format!("classic ({})", d.driver)
        },
    ));
    out
}

fn gib(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Asks the daemon `DOCKER_HOST` (or the default socket) names, within `within`.
pub async fn daemon(within: Duration) -> Result<Daemon, String> {
    let ask = async {
        let docker = bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        let docker = docker.negotiate_version().await.map_err(|e| e.to_string())?;
        let v = docker.version().await.map_err(|e| e.to_string())?;
        let info = docker.info().await.map_err(|e| e.to_string())?;
        let driver_type = info
            .driver_status
            .iter()
            .flatten()
            .find(|kv| kv.first().map(String::as_str) == Some("driver-type"))
            .and_then(|kv| kv.get(1).cloned());
        Ok(Daemon {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            mem_total: info.mem_total,
            driver: info.driver.unwrap_or_default(),
            driver_type,
        })
    };
    tokio::time::timeout(within, ask).await.map_err(|_| format!("no answer within {within:?}"))?
}

/// Every check, in the order printed.
pub async fn run(ports: &[(&str, u16)], port_free: impl Fn(u16) -> bool) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(match which::which("kind") {
        Ok(p) => Finding::ok("kind", format!("found {}", p.display())),
        Err(_) => Finding::problem(
            "kind",
            "kind is not on PATH; it creates the cluster".into(),
            "install kind v0.27 or later (https://kind.sigs.k8s.io/docs/user/quick-start/#installation), e.g. \
             `go install sigs.k8s.io/kind@v0.27.0`",
            true,
        ),
    });
    out.push(match which::which("kubectl") {
        Ok(p) => Finding::ok("kubectl", format!("found {} (optional: meshrig talks to the API itself)", p.display())),
        Err(_) => Finding::ok("kubectl", "not on PATH (optional: meshrig talks to the API itself)".into()),
    });
    match daemon(Duration::from_secs(5)).await {
        Ok(d) => out.extend(judge_daemon(&d)),
        Err(e) => {
            let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
            out.push(Finding::problem(
                "docker",
                format!("the Docker daemon at {host} does not answer: {e}"),
                "start Docker (`sudo systemctl start docker`, or Docker Desktop), or point DOCKER_HOST at a running \
                 daemon; your user needs access to its socket (the docker group)",
                true,
            ));
        }
    }
    for (what, port) in ports {
        out.push(if port_free(*port) {
            Finding::ok(&format!("{what} {port}"), "free".into())
        } else {
            Finding::problem(
                &format!("{what} {port}"),
                "in use by another program; kind publishes the gateway there".into(),
                "stop the program using it, or `meshrig up --backend kind` with another port (--http-port, \
                 --https-port, --tcp-port)",
                false,
            )
        });
    }
    out
}
