//! `lab watch`: apply the learner's files and check them again on every save (rustlings' watch),
//! the result on one screen that is redrawn; Ctrl-C leaves cleanly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::api::ApplyRequest;
use crate::cli::{lab, lifecycle, term};
use crate::env::Env;
use crate::labs::check::{self, Outcome};
use crate::labs::Lab;
use crate::resources::Resource;

/// How often the files are looked at (a poll: no watcher dependency, and it sees editors that
/// replace a file as well as those that write it in place).
const POLL: Duration = Duration::from_millis(300);

/// What the learner's files look like on disk: name, size and modification time of each.
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn stamp(dir: &Path) -> Stamp {
    let mut out: Stamp = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    meta.is_file().then(|| (e.path(), meta.len(), meta.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One round: apply the workspace's manifests, wait for the proxies, run the step's checks.
/// Returns the screen's lines and whether the lab (or the step) passed.
async fn round(env: &Env, lab: &Lab, dir: &Path, wait: Duration) -> anyhow::Result<(Vec<String>, bool)> {
    let mut lines = Vec::new();
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let docs = match crate::cli::resource::load(&[dir.display().to_string()], false) {
        Ok(d) => d,
        Err(e) => {
            lines.push(format!("{} your files do not load, so nothing was applied:", term::fail_mark()));
            lines.push(format!("    {e:#}"));
            return Ok((lines, false));
        }
    };
    if !docs.is_empty() {
        let resources: Vec<Resource> = docs
            .into_iter()
            .map(|d| {
                let mut r = d.resource;
                r.set_default_namespace(&lab.spec.baseline.namespace);
                r
            })
            .collect();
        match client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await {
            Ok(resp) => {
                let changed = resp.results.iter().filter(|r| r.action != crate::api::Action::Unchanged).count();
                lines.push(format!(
                    "{} applied {} ({changed} changed)",
                    term::pass_mark(),
                    lab::count(resp.results.len(), "resource")
                ));
                lifecycle::wait_ready(&client, Some(resp.version), Duration::from_secs(30)).await?;
            }
            Err(e) => {
                lines.push(format!("{} the mesh refused your files, so nothing was applied:", term::fail_mark()));
                lines.push(format!("    {e:#}"));
                return Ok((lines, false));
            }
        }
    }
    let steps = lab.spec.staged_steps();
    let step = crate::cli::lab::current_step(env, lab);
    if steps > 0 {
        let title = lab.spec.steps.get(step as usize - 1).map(|s| s.title.as_str()).unwrap_or("");
        lines.push(format!("step {step} of {steps}: {title}"));
    }
    let mut target = lab::target(&client, env).await?;
    target.answers = check::Answers::Dir(dir.to_path_buf());
    let config = lab::mesh_config(&client).await;
    let mut outcomes = check::run_all(&lab.spec.checks_for(step), &target, wait, |_| {}, |_, _, _| {}, |_| {}).await;
    for o in outcomes.iter_mut() {
        lab::advise(lab, &config, o);
    }
    lines.extend(outcomes.iter().flat_map(outcome_lines));
    let step_passed = outcomes.iter().all(|o| o.passed);
    let passed = lab::record(env, lab, step, step_passed)?;
    if passed {
        lines.push(format!("Lab {}: {} passed", lab.number, lab::count(outcomes.len(), "check")));
        lines.push(lab::what_next(env, lab)?);
    } else if step_passed {
        let next = lab.spec.steps.get(step as usize).map(|s| format!("{}: {}", s.title, s.text)).unwrap_or_default();
        lines.push(format!("Step {step} of {steps} passed. Next, step {}: {next}", step + 1));
    } else {
        lines.push(format!("Lab {}: {}", lab.number, lab::failure_summary(&outcomes)));
    }
    Ok((lines, passed))
}

fn outcome_lines(o: &Outcome) -> Vec<String> {
    if o.passed {
        return vec![format!("{} {}", term::result_mark(true), o.title)];
    }
    if o.skipped {
        return vec![format!("· {}", o.title), format!("    {}", o.saw)];
    }
    let mut v = vec![
        format!("{} {}", term::result_mark(false), o.title),
        format!("    saw      {}", o.saw),
        format!("    expected {}", o.expected),
    ];
    if let Some(r) = &o.mesh_reason {
        v.push(format!("    mesh     {r}"));
    }
    v.push(format!("    hint     {}", o.hint));
    v
}

pub async fn run(env: &Env, lab: &Lab, wait: Duration) -> anyhow::Result<ExitCode> {
    let dir = lab::workspace(env, lab);
    if !dir.is_dir() {
        anyhow::bail!(
            "lab {}'s files are not at {}: `meshrig lab start {}` writes them (or set MESHRIG_LABS_DIR)",
            lab.number,
            dir.display(),
            lab.number
        );
    }
    let screen = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = Stamp::new();
    loop {
        let now = stamp(&dir);
        if now != seen {
            seen = now;
            let (lines, _) = round(env, lab, &dir, wait).await?;
            // The round took a while: a save during it is seen on the next look.
            if screen {
                print!("\x1b[2J\x1b[H");
            } else {
                println!("---");
            }
            println!("lab {} — {} (watching {})", lab.number, lab.spec.title, dir.display());
            println!();
            for l in &lines {
                println!("{l}");
            }
            println!();
            println!("Edit and save a file to apply and check again; Ctrl-C stops.");
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("stopped watching lab {}; `meshrig lab check` checks once", lab.number);
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
