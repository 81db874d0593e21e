//! `doctor`: what the local backend needs (or, `--backend kind`, the kind backend's preflight),
//! each result with a fix.

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{term, Output};
use crate::env::{Env, Settings};

#[derive(Serialize)]
struct Finding {
    check: String,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    which::which(program).ok()
}

/// `doctor --backend kind`: exit 3 when the backend cannot run, 1 for any other problem.
pub fn kind(env: &Env, output: Output) -> anyhow::Result<ExitCode> {
    let settings = env.settings()?.unwrap_or_else(Settings::default);
    // An environment whose cluster runs holds its ports itself: they are not a problem then.
    let mut checks = if settings.backend == crate::env::BackendKind::Kind {
        crate::cli::kind::preflight_tools()?
    } else {
        crate::cli::kind::preflight([settings.http_port, settings.https_port, settings.tcp_port])?
    };
    if settings.backend == crate::env::BackendKind::Kind {
        let cluster = crate::backend::kind::cluster_name(&env.name);
        let reached = tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
            crate::cli::kind_objects::pods(&crate::cli::kind_up::client(env).await?, Some("istio-system")).await
        });
        checks.push(match reached {
            Ok(pods) => {
                let ready = pods.iter().filter(|p| p.ready.split_once('/').is_some_and(|(a, b)| a == b)).count();
                crate::backend::kind::preflight::Finding {
                    check: "cluster".into(),
                    ok: ready == pods.len() && !pods.is_empty(),
                    detail: format!("{cluster}: {ready} of {} istio-system pods ready", pods.len()),
                    fix: (ready != pods.len() || pods.is_empty())
                        .then(|| format!("`kubectl --context kind-{cluster} get pods -n istio-system` shows them; `meshrig up` applies the mesh again")),
                    blocking: false,
                }
            }
            Err(e) => crate::backend::kind::preflight::Finding {
                check: "cluster".into(),
                ok: false,
                detail: format!("{cluster} does not answer: {e:#}"),
                fix: Some("`docker ps` shows its node container; `meshrig up` starts the cluster again, `meshrig down --purge` deletes it".into()),
                blocking: false,
            },
        });
    }
    let blocked = checks.iter().any(|c| c.blocking && !c.ok);
    let findings: Vec<Finding> =
        checks.into_iter().map(|c| Finding { check: c.check, ok: c.ok, detail: c.detail, fix: c.fix }).collect();
    let all_ok = print(&findings, output)?;
    Ok(match (blocked, all_ok) {
        (true, _) => ExitCode::from(crate::cli::exit::NOT_RUNNING),
        (false, true) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(1),
    })
}

pub fn run(env: &Env, output: Output) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    let settings = env.settings()?.unwrap_or_else(Settings::default);
    let recorded = env.control_plane().ok().flatten();
    // The lock is the truth: a control plane holds it for exactly as long as it lives.
    let alive = env.dir.exists() && crate::control_plane::lock::held(env);
    let running = recorded.is_some() && alive;
    match (&recorded, alive) {
        (Some(info), false) => findings.push(Finding {
            check: "control plane".into(),
            ok: false,
            detail: format!("recorded at {} (pid {}) but not running: it exited or was killed", info.address, info.pid),
            fix: Some("`meshrig up` starts it again from the applied resources".into()),
        }),
        (_, true) => findings.push(Finding {
            check: "control plane".into(),
            ok: true,
            detail: "running (it holds the environment's lock)".into(),
            fix: None,
        }),
        (None, false) => {}
    }

    match on_path("curl") {
        Some(p) => findings.push(Finding {
            check: "curl".into(),
            ok: true,
            detail: format!("found {}", p.display()),
            fix: None,
        }),
        None => findings.push(Finding {
            check: "curl".into(),
            ok: false,
            detail: "curl is not on PATH; `meshrig exec` runs the host's curl".into(),
            fix: Some("install curl (apt-get install curl, brew install curl)".into()),
        }),
    }

    for (what, port, flag, ours) in [
        ("gateway HTTP port", settings.http_port, "--http-port", "proxy"),
        ("gateway HTTPS port", settings.https_port, "--https-port", "proxy"),
        ("gateway TCP port", settings.tcp_port, "--tcp-port", "proxy"),
        ("tracing (Jaeger API) port", settings.tracing_port, "--tracing-port", "control-plane"),
    ] {
        let free = crate::cli::lifecycle::port_free(port);
        let holder = if free { None } else { crate::reaper::port_holder(port) };
        let role = holder.and_then(|pid| crate::reaper::role_in(pid, &env.dir));
        let who = |role: &str| {
            if role == "proxy" {
                "this environment's ingress gateway"
            } else {
                "this environment's control plane (its trace collector)"
            }
        };
        let (ok, detail) = match (free, holder, role.as_deref()) {
            (true, _, _) => (true, "free".to_string()),
            (false, Some(pid), Some(r)) if r == ours => (true, format!("in use by {} (pid {pid})", who(r))),
            (false, Some(pid), Some(r)) => {
                (false, format!("in use by {}, not the one that should hold it (pid {pid})", who(r)))
            }
            (false, Some(pid), None) => (false, format!("in use by another program: {}", crate::reaper::describe(pid))),
            // Cannot be told (another user's process): ours only if the environment runs.
            (false, None, _) if running => {
                (true, "in use (by this environment, as it is running; the holder cannot be read)".into())
            }
            (false, None, _) => (false, "in use by another program (it cannot be named: another user's?)".into()),
        };
        findings.push(Finding {
            check: format!("{what} {port}"),
            ok,
            detail,
            fix: (!ok).then(|| {
                format!("stop the program using port {port}, or `meshrig up {flag} PORT` (0 picks a free port)")
            }),
        });
    }

    // Prometheus is needed only by its addon: missing, it is a problem once the addon is on.
    let wanted = settings.addons.iter().any(|a| a == "prometheus");
    findings.push(match crate::addons::prometheus_binary() {
        Ok(path) => Finding {
            check: "prometheus (addon)".into(),
            ok: true,
            detail: format!("found {}", path.display()),
            fix: None,
        },
        Err(e) => Finding {
            check: "prometheus (addon)".into(),
            ok: !wanted,
            detail: if wanted {
                "the prometheus addon is enabled but its binary is missing".into()
            } else {
                "not installed; only `meshrig addons enable prometheus` needs it".into()
            },
            fix: Some(e),
        },
    });

    let writable =
        env.ensure_dirs().is_ok() && crate::env::write_atomic(&env.dir.join(".doctor"), b"ok", 0o600).is_ok();
    let _ = std::fs::remove_file(env.dir.join(".doctor"));
    findings.push(Finding {
        check: "state directory".into(),
        ok: writable,
        detail: env.dir.display().to_string(),
        fix: (!writable).then(|| "make it writable, or choose another with MESHRIG_STATE_DIR=/some/dir".into()),
    });

    let all_ok = print(&findings, output)?;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Prints the findings as `output` asks; whether all of them are fine.
fn print(findings: &[Finding], output: Output) -> anyhow::Result<bool> {
    let all_ok = findings.iter().all(|f| f.ok);
    match output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ok": all_ok, "checks": findings}))?)
        }
        Output::Yaml => print!("{}", serde_yaml::to_string(&serde_json::json!({"ok": all_ok, "checks": findings}))?),
        Output::Table => {
            for f in findings {
                let mark = term::result_mark(f.ok);
                println!("{mark} {}: {}", f.check, f.detail);
                if let Some(fix) = &f.fix {
                    println!("    fix: {fix}");
                }
            }
        }
    }
    Ok(all_ok)
}
