//! `doctor`: what the local backend needs, each result with a fix.

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
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
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

    for (what, port, flag) in [
        ("gateway HTTP port", settings.http_port, "--http-port"),
        ("gateway HTTPS port", settings.https_port, "--https-port"),
        ("gateway TCP port", settings.tcp_port, "--tcp-port"),
        ("tracing (Jaeger API) port", settings.tracing_port, "--tracing-port"),
    ] {
        let free = crate::cli::lifecycle::port_free(port);
        let ok = free || running;
        findings.push(Finding {
            check: format!("{what} {port}"),
            ok,
            detail: if free {
                "free".into()
            } else if running {
                "in use (by this environment's gateway, if it is up)".into()
            } else {
                "in use by another program".into()
            },
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

    let all_ok = findings.iter().all(|f| f.ok);
    match output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ok": all_ok, "checks": findings}))?)
        }
        Output::Yaml => print!("{}", serde_yaml::to_string(&serde_json::json!({"ok": all_ok, "checks": findings}))?),
        Output::Table => {
            for f in &findings {
                let mark = term::result_mark(f.ok);
                println!("{mark} {}: {}", f.check, f.detail);
                if let Some(fix) = &f.fix {
                    println!("    fix: {fix}");
                }
            }
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
