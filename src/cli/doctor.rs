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
    let running = env.control_plane().ok().flatten().is_some();

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
