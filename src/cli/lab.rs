//! `lab list|show|start|next|reset|restore|check|hint|solution`, the baseline carried out, the
//! environment's addresses for lab texts and the learner's progress; `lab verify` is in `lab_verify`,
//! `lab watch` in `lab_watch`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::{self, ApplyRequest};
use crate::cli::{lifecycle, term, LabCommand, Output};
use crate::env::Env;
use crate::labs::check::{self, Outcome, Target};
use crate::labs::{self, Lab, Progress};
use crate::resources::parse::parse_documents;
use crate::resources::{Kind, Resource};

pub async fn run(env: &Env, cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::List { output } => list(env, output),
        LabCommand::Show { lab } => show(env, &current(env, lab)?).await,
        LabCommand::Watch { lab, wait } => {
            let lab = current(env, lab)?;
            crate::cli::lab_watch::run(env, &lab, Duration::from_secs(wait)).await
        }
        LabCommand::Start { lab } => start(env, &labs::find(&lab)?).await,
        LabCommand::Next => next(env).await,
        LabCommand::Reset { lab } => reset(env, &current(env, lab)?).await,
        LabCommand::Restore { file } => restore(env, file).await,
        LabCommand::Check { lab, wait, step, output } => {
            let lab = current(env, lab)?;
            check_cmd(env, &lab, Duration::from_secs(wait), step, output).await
        }
        LabCommand::Hint { lab, all } => hint(env, &current(env, lab)?, all),
        LabCommand::Solution { lab, apply, step } => {
            let lab = current(env, lab)?;
            let step = step_of(env, &lab, step)?;
            let steps = lab.spec.staged_steps();
            let which = if steps > 0 {
                format!("step {step} of {steps} of lab {}", lab.number)
            } else {
                format!("lab {}", lab.number)
            };
            if apply {
                let client = crate::cli::backend::Backend::for_env(env).client()?;
                apply_files(&client, &lab, &lab.spec.solved_files(step)).await?;
                write_answers(env, &lab, &lab.spec.step_solution(step))?;
                eprintln!("{} applied the solution of {which}; `meshrig lab check` checks it", term::pass_mark());
            } else {
                eprintln!("# the solution of {which}");
                for f in &lab.spec.step_solution(step) {
                    println!("# labs/{}/{f}", lab.dir);
                    print!("{}", lab.file(f).unwrap_or(""));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Verify { labs: ids, in_order, wait, jobs, junit, output } => {
            let wait = Duration::from_secs(wait);
            if in_order {
                crate::cli::lab_verify::run_in_order(&ids, wait, junit.as_deref(), output).await
            } else {
                crate::cli::lab_verify::run(&ids, wait, jobs, junit.as_deref(), output).await
            }
        }
    }
}

/// The solution's answer files (a PromQL query: not applied, read by a check) written into the
/// learner's workspace; a file the learner changed is kept beside as `NAME.bak-TIMESTAMP`.
fn write_answers(env: &Env, lab: &Lab, files: &[String]) -> anyhow::Result<()> {
    let dir = workspace(env, lab);
    let stamp = crate::env::timestamp().replace(':', "");
    for f in files.iter().filter(|f| !is_manifest(f)) {
        let name = f.rsplit('/').next().unwrap_or(f);
        if replace_keeping(&dir, name, lab.file(f).unwrap_or(""), &stamp, true)? {
            eprintln!("{} wrote the solution's {} into {}", term::pass_mark(), name, dir.display());
        }
    }
    Ok(())
}

/// Writes `text` to `dir/name` unless the file already says exactly that; a different file there
/// is kept beside as `NAME.bak-STAMP` when `backup` is set. Returns whether it wrote.
fn replace_keeping(dir: &Path, name: &str, text: &str, stamp: &str, backup: bool) -> anyhow::Result<bool> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing == text => return Ok(false),
        Ok(_) if backup => {
            let kept = dir.join(format!("{name}.bak-{stamp}"));
            std::fs::rename(&path, &kept).with_context(|| format!("keep {} as {}", path.display(), kept.display()))?;
            eprintln!("{} your {} is kept as {}", term::pass_mark(), path.display(), kept.display());
        }
        _ => {}
    }
    write_file(&path, text)?;
    Ok(true)
}

/// The step the learner is on (1 in a lab of one final state).
pub fn current_step(env: &Env, lab: &Lab) -> u32 {
    progress(env).step.get(&lab.number).copied().unwrap_or(1).clamp(1, lab.spec.staged_steps().max(1))
}

/// The step `lab check` and `lab solution` work on: the one asked for (checked against the
/// lab), else the one the learner is on (1 in a lab of one final state).
fn step_of(env: &Env, lab: &Lab, asked: Option<u32>) -> anyhow::Result<u32> {
    let steps = lab.spec.staged_steps();
    match asked {
        Some(n) if steps == 0 || n == 0 || n > steps => {
            let has = if steps == 0 {
                "its checks judge one final state".to_string()
            } else {
                format!("its checks belong to steps 1 to {steps}")
            };
            Err(crate::cli::exit::Usage(format!("lab {} has no step {n} ({has})", lab.number)).into())
        }
        Some(n) => Ok(n),
        None => Ok(current_step(env, lab)),
    }
}

fn progress(env: &Env) -> Progress {
    crate::env::read_json(&env.labs_file()).ok().flatten().unwrap_or_default()
}

fn save_progress(env: &Env, p: &Progress) -> anyhow::Result<()> {
    env.ensure_dirs()?;
    crate::env::write_json(&env.labs_file(), p)?;
    Ok(())
}

fn current(env: &Env, id: Option<String>) -> anyhow::Result<Lab> {
    match id.or(progress(env).current) {
        Some(id) => Ok(labs::find(&id)?),
        None => bail!("no lab started yet: `meshrig lab start 1`, or name the lab (`meshrig lab check 1`)"),
    }
}

#[derive(serde::Serialize)]
struct ListRow {
    lab: String,
    dir: String,
    title: String,
    summary: String,
    passed: bool,
    current: bool,
    /// In a lab of steps: the step the learner is on (and of how many).
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<u32>,
}

fn list(env: &Env, output: Output) -> anyhow::Result<ExitCode> {
    let p = progress(env);
    let all = labs::all()?;
    let rows: Vec<ListRow> = all
        .iter()
        .map(|lab| {
            let steps = lab.spec.staged_steps();
            let current = p.current.as_deref() == Some(&lab.number);
            ListRow {
                lab: lab.number.clone(),
                dir: lab.dir.clone(),
                title: lab.spec.title.clone(),
                summary: lab.spec.summary.clone(),
                passed: p.passed.contains(&lab.number),
                current,
                step: (steps > 0 && current).then(|| p.step.get(&lab.number).copied().unwrap_or(1)),
                steps: (steps > 0).then_some(steps),
            }
        })
        .collect();
    let done = rows.iter().filter(|r| r.passed).count();
    if output != Output::Table {
        let data = serde_json::json!({"done": done, "total": rows.len(), "current": p.current, "labs": rows});
        crate::cli::print_data(output, &data)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        let mark = if r.passed {
            term::result_mark(true)
        } else if r.current {
            "→".into()
        } else {
            " ".into()
        };
        let at = match (r.step, r.steps) {
            (Some(step), Some(steps)) if !r.passed => format!("  (step {step} of {steps})"),
            _ => String::new(),
        };
        println!("{mark} {}  {:<28} {}{at}", r.lab, r.title, r.summary);
    }
    println!();
    println!("{done} of {} done", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// Where the learner's copy of the lab is: where `lab start` wrote it (remembered), else
/// `$MESHRIG_LABS_DIR/NN-slug` or `./meshrig-labs/NN-slug`.
pub fn workspace(env: &Env, lab: &Lab) -> PathBuf {
    if let Some(dir) = std::env::var_os("MESHRIG_LABS_DIR") {
        return PathBuf::from(dir).join(&lab.dir);
    }
    if let Some(dir) = progress(env).workspaces.get(&lab.number) {
        return dir.clone();
    }
    PathBuf::from("meshrig-labs").join(&lab.dir)
}

/// Where `lab start` writes a lab's files: `$MESHRIG_LABS_DIR` or `./meshrig-labs`, absolute.
fn new_workspace(lab: &Lab) -> PathBuf {
    let base = std::env::var_os("MESHRIG_LABS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("meshrig-labs"));
    let dir = base.join(&lab.dir);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Brings the mesh to the lab's baseline (`labs::baseline`): its namespaces exist, mesh config
/// and the course's objects it does not start from are gone (in every namespace), its manifests
/// are applied and every proxy is synced. Returns what was removed.
pub async fn baseline(client: &api::Client, lab: &Lab) -> anyhow::Result<Vec<Resource>> {
    let base = &lab.spec.baseline;
    let course = labs::baseline::course_objects(&labs::all()?);
    let mut existing = Vec::new();
    for kind in labs::baseline::kinds_to_list(lab, &course) {
        existing.extend(client.list(kind, None, None).await?);
    }
    let removed = labs::baseline::to_remove(lab, &course, &existing);
    if !removed.is_empty() {
        client.delete(removed.iter().map(Resource::key).collect()).await?;
    }
    let existing: Vec<String> =
        client.list(Kind::Namespace, None, None).await?.iter().map(|n| n.name().to_string()).collect();
    let mut text = String::new();
    for ns in base.namespaces.iter().filter(|ns| !existing.contains(ns)) {
        text.push_str(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n"));
    }
    let mut resources: Vec<Resource> =
        parse_documents("lab baseline", &text)?.into_iter().map(|d| d.resource).collect();
    resources.extend(labs::baseline::resources(lab).map_err(anyhow::Error::msg)?);
    let version = if resources.is_empty() {
        None
    } else {
        Some(client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?.version)
    };
    lifecycle::wait_ready(client, version, Duration::from_secs(60)).await?;
    if !base.addons.is_empty() {
        crate::cli::addons::enable_all(client, &base.addons)
            .await
            .with_context(|| format!("lab {} needs the {} addon", lab.number, base.addons.join(", ")))?;
    }
    Ok(removed)
}

pub use crate::labs::is_manifest;

pub async fn apply_files(client: &api::Client, lab: &Lab, files: &[String]) -> anyhow::Result<()> {
    let mut resources = Vec::new();
    for f in files.iter().filter(|f| is_manifest(f)) {
        let text = lab.file(f).with_context(|| format!("labs/{}/{f} is missing", lab.dir))?;
        for doc in parse_documents(&format!("labs/{}/{f}", lab.dir), text)? {
            let mut r = doc.resource;
            r.set_default_namespace(&lab.spec.baseline.namespace);
            resources.push(r);
        }
    }
    let resp = client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?;
    lifecycle::wait_ready(client, Some(resp.version), Duration::from_secs(60)).await?;
    Ok(())
}

/// Where `lab start` and `lab reset` save what they removed.
fn removed_dir(env: &Env) -> PathBuf {
    env.dir.join("labs").join("removed")
}

/// Saves removed resources as one YAML file `meshrig apply -f` (or `lab restore`) reads, and
/// says what was removed and how to get it back.
fn save_removed(env: &Env, lab: &Lab, removed: &[Resource]) -> anyhow::Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let dir = removed_dir(env);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let stamp = crate::env::timestamp().replace(':', "");
    let path = dir.join(format!("{stamp}-lab{}.yaml", lab.number));
    let mut text = format!("# Removed by `meshrig lab` for lab {} ({}).\n", lab.number, lab.spec.title);
    for r in removed {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(r)?);
    }
    crate::env::write_atomic(&path, text.as_bytes(), 0o600)?;
    eprintln!(
        "{} lab {} starts without the mesh config and lab objects it does not use: removed {} resource(s):",
        term::warn_mark(),
        lab.number,
        removed.len()
    );
    for r in removed {
        eprintln!("    {}", r.key());
    }
    eprintln!("  saved in {}; `meshrig lab restore` applies them again", path.display());
    Ok(())
}

/// This environment's addresses for a lab's texts: from its settings, and from the running
/// control plane when it answers (the Prometheus addon's and the trace collector's real ports).
pub async fn vars(env: &Env, lab: &Lab) -> labs::Vars {
    let s = env.settings().ok().flatten().unwrap_or_default();
    let status = match crate::cli::backend::Backend::for_env(env).client() {
        Ok(c) => tokio::time::timeout(Duration::from_secs(3), c.status()).await.ok().and_then(Result::ok),
        Err(_) => None,
    };
    let prometheus = status
        .as_ref()
        .and_then(|st| st.control_plane.addons.iter().find(|a| a.name == "prometheus").and_then(|a| a.address))
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("127.0.0.1:{}", s.prometheus_port));
    let jaeger = status
        .as_ref()
        .and_then(|st| st.control_plane.tracing)
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("127.0.0.1:{}", s.tracing_port));
    labs::Vars {
        gateway: format!("http://127.0.0.1:{}", s.http_port),
        gateway_address: format!("127.0.0.1:{}", s.http_port),
        http_port: s.http_port.to_string(),
        gateway_https: format!("https://127.0.0.1:{}", s.https_port),
        https_port: s.https_port.to_string(),
        gateway_tcp: format!("127.0.0.1:{}", s.tcp_port),
        prometheus: format!("http://{prometheus}"),
        jaeger: format!("http://{jaeger}"),
        dashboard: format!("http://127.0.0.1:{}", crate::cli::addons::DASHBOARD_PORT),
        workspace: workspace(env, lab).display().to_string(),
    }
}

/// The README with this environment's real addresses.
async fn rendered_readme(env: &Env, lab: &Lab) -> anyhow::Result<String> {
    labs::render(lab.readme(), &vars(env, lab).await).map_err(anyhow::Error::msg)
}

/// `lab show`: the lab's text in the terminal, rendered with this environment's addresses.
async fn show(env: &Env, lab: &Lab) -> anyhow::Result<ExitCode> {
    let text = rendered_readme(env, lab).await?;
    let color = term::color(term::Stream::Stdout);
    for line in text.lines() {
        if color && line.starts_with('#') {
            println!("\x1b[1m{}\x1b[0m", line.trim_start_matches('#').trim());
        } else {
            println!("{line}");
        }
    }
    let steps = lab.spec.staged_steps();
    let p = progress(env);
    println!();
    if p.current.as_deref() != Some(&lab.number) {
        println!("Start it with `meshrig lab start {}`.", lab.number);
    } else if steps > 0 {
        let step = p.step.get(&lab.number).copied().unwrap_or(1);
        println!("You are on step {step} of {steps}; your files are in {}.", workspace(env, lab).display());
    } else {
        println!("Your files are in {}.", workspace(env, lab).display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The learner's files as the lab gives them: starting files and the README, rendered with this
/// environment's addresses.
async fn starting_files(env: &Env, lab: &Lab) -> anyhow::Result<Vec<(String, String)>> {
    let vars = vars(env, lab).await;
    let mut files = Vec::new();
    for f in &lab.spec.start {
        let text =
            labs::render(lab.file(f).unwrap_or(""), &vars).map_err(|e| anyhow::anyhow!("labs/{}/{f}: {e}", lab.dir))?;
        files.push((f.clone(), text));
    }
    files.push(("README.md".into(), rendered_readme(env, lab).await?));
    Ok(files)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

async fn start(env: &Env, lab: &Lab) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let removed = baseline(&client, lab).await?;
    save_removed(env, lab, &removed)?;
    let dir = new_workspace(lab);
    let mut p = progress(env);
    p.workspaces.insert(lab.number.clone(), dir.clone());
    save_progress(env, &p)?;
    for (f, text) in starting_files(env, lab).await? {
        let path = dir.join(&f);
        // Never overwrite the learner's work (`lab reset` does, keeping a backup); the README is
        // the lab's, rendered with this environment's addresses.
        if !path.exists() || f == "README.md" {
            write_file(&path, &text)?;
        }
    }
    let mut p = progress(env);
    p.current = Some(lab.number.clone());
    p.step.remove(&lab.number);
    save_progress(env, &p)?;
    println!("lab {} — {}", lab.number, lab.spec.title);
    println!("{}", lab.spec.summary);
    println!();
    for (i, step) in lab.spec.steps.iter().enumerate() {
        println!("{}. {}: {}", i + 1, step.title, step.text);
    }
    println!();
    println!("Your files are in {}:", dir.display());
    for f in lab.spec.start.iter().chain([&"README.md".to_string()]) {
        println!("  {}", dir.join(f).display());
    }
    println!();
    println!("Read it here:                                  meshrig lab show");
    if lab.spec.start.iter().any(|f| is_manifest(f)) {
        println!("Edit the files, apply them:                    meshrig apply -f {}", dir.display());
        println!("then check your work:                          meshrig lab check");
    } else {
        println!("Edit the files (nothing to apply), then check: meshrig lab check");
    }
    println!("or apply and check on every save:              meshrig lab watch");
    Ok(ExitCode::SUCCESS)
}

async fn next(env: &Env) -> anyhow::Result<ExitCode> {
    let all = labs::all()?;
    let p = progress(env);
    let next = match &p.current {
        Some(cur) => all.iter().skip_while(|l| &l.number != cur).nth(1),
        None => all.iter().find(|l| !p.passed.contains(&l.number)),
    };
    match next {
        Some(lab) => start(env, lab).await,
        None => {
            eprintln!("{} that was the last lab; `meshrig lab list` shows your progress", term::pass_mark());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The mesh back at the lab's baseline, the starting files back as the lab gave them; an edited
/// file is kept beside as `NAME.bak-TIMESTAMP`.
async fn reset(env: &Env, lab: &Lab) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let removed = baseline(&client, lab).await?;
    save_removed(env, lab, &removed)?;
    let dir = workspace(env, lab);
    let stamp = crate::env::timestamp().replace(':', "");
    for (f, text) in starting_files(env, lab).await? {
        // The README is the lab's, not the learner's: it is rewritten without a backup.
        if replace_keeping(&dir, &f, &text, &stamp, f != "README.md")? {
            eprintln!("{} restored {}", term::pass_mark(), dir.join(&f).display());
        }
    }
    let mut p = progress(env);
    p.current = Some(lab.number.clone());
    p.step.remove(&lab.number);
    save_progress(env, &p)?;
    eprintln!("{} lab {} is back at its start; `meshrig lab check` runs its checks", term::pass_mark(), lab.number);
    Ok(ExitCode::SUCCESS)
}

async fn restore(env: &Env, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = match file {
        Some(f) => f,
        None => {
            let dir = removed_dir(env);
            let mut saved: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                        .collect()
                })
                .unwrap_or_default();
            saved.sort();
            match saved.pop() {
                Some(p) => p,
                None => bail!("nothing to restore: no lab has removed anything in this environment"),
            }
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let resources: Vec<Resource> =
        parse_documents(&path.display().to_string(), &text)?.into_iter().map(|d| d.resource).collect();
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let resp = client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?;
    for r in &resp.results {
        eprintln!("{} {} {}", term::pass_mark(), r.key, r.action.as_str());
    }
    lifecycle::wait_ready(&client, Some(resp.version), Duration::from_secs(60)).await?;
    eprintln!("{} restored {} resource(s) from {}", term::pass_mark(), resp.results.len(), path.display());
    Ok(ExitCode::SUCCESS)
}

fn hint(env: &Env, lab: &Lab, all: bool) -> anyhow::Result<ExitCode> {
    let hints = &lab.spec.hints;
    if hints.is_empty() {
        println!("lab {} has no hints; `meshrig lab solution` shows the solution", lab.number);
        return Ok(ExitCode::SUCCESS);
    }
    let mut p = progress(env);
    let shown = p.hints_shown.get(&lab.number).copied().unwrap_or(0);
    let upto = if all { hints.len() } else { (shown + 1).min(hints.len()) };
    let from = if all { 0 } else { upto - 1 };
    for (i, h) in hints.iter().enumerate().take(upto).skip(from) {
        println!("hint {} of {}: {h}", i + 1, hints.len());
    }
    if upto < hints.len() {
        eprintln!("`meshrig lab hint` again for the next one");
    } else {
        eprintln!("that was the last hint; `meshrig lab solution` shows the solution");
    }
    p.hints_shown.insert(lab.number.clone(), upto.max(shown));
    save_progress(env, &p)?;
    Ok(ExitCode::SUCCESS)
}

/// Where a lab's checks send requests (the backend's probe target).
pub async fn target(client: &api::Client, env: &Env) -> anyhow::Result<Target> {
    crate::cli::backend::Backend::for_env(env).probe_target(client).await
}

/// Every mesh config object, for `advise`.
pub async fn mesh_config(client: &api::Client) -> Vec<Resource> {
    let mut resources = Vec::new();
    for kind in Kind::ALL.iter().copied().filter(|k| labs::baseline::is_mesh_config(*k)) {
        resources.extend(client.list(kind, None, None).await.unwrap_or_default());
    }
    resources
}

/// A failed check's hint looks at the learner's resources first (`labs::advice`): what that
/// finds comes before the check's own hint.
pub fn advise(lab: &Lab, resources: &[Resource], o: &mut Outcome) {
    if o.passed || o.skipped {
        return;
    }
    if let Some(first) = labs::advice::advise(lab, &o.saw, resources).first() {
        o.hint = format!("{first}. If that is not it: {}", o.hint);
    }
}

/// Saves what a check of `step` proved: a passed step moves the learner on; a lab of steps is
/// passed when its last step is. Returns whether the lab is now passed.
pub fn record(env: &Env, lab: &Lab, step: u32, step_passed: bool) -> anyhow::Result<bool> {
    let steps = lab.spec.staged_steps();
    let mut p = progress(env);
    if step_passed && step < steps {
        p.step.insert(lab.number.clone(), step + 1);
    }
    let passed = step_passed && step >= steps;
    if passed && !p.passed.contains(&lab.number) {
        p.passed.push(lab.number.clone());
    }
    save_progress(env, &p)?;
    Ok(passed)
}

/// After a passed lab: how far the learner is, and the command that goes on.
pub fn what_next(env: &Env, lab: &Lab) -> anyhow::Result<String> {
    let p = progress(env);
    let all = labs::all()?;
    let done = all.iter().filter(|l| p.passed.contains(&l.number)).count();
    Ok(match all.iter().skip_while(|l| l.number != lab.number).nth(1) {
        Some(next) => format!(
            "{done} of {} labs done. Next: `meshrig lab next` starts lab {} ({}).",
            all.len(),
            next.number,
            next.spec.title
        ),
        None => format!("{done} of {} labs done: that was the last lab.", all.len()),
    })
}

/// `1 check`, `4 checks`.
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `1 of 4 checks failed, 3 not judged (they need the failed one to pass first)`: counts that
/// add up, a check that was never judged not counted as failed.
pub fn failure_summary(outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| !o.passed && !o.skipped).count();
    let skipped = outcomes.iter().filter(|o| o.skipped).count();
    let mut line = format!("{failed} of {} failed", count(outcomes.len(), "check"));
    if skipped > 0 {
        line.push_str(&format!(", {skipped} not judged (they need the failed ones to pass first)"));
    }
    line
}

/// Prints one outcome as it is known (stdout, for people).
pub fn print_outcome(o: &Outcome) {
    if o.passed {
        println!("{} {}", term::result_mark(true), o.title);
        return;
    }
    if o.skipped {
        println!("· {}", o.title);
        println!("    {}", o.saw);
        return;
    }
    println!("{} {}", term::result_mark(false), o.title);
    println!("    saw      {}", o.saw);
    println!("    expected {}", o.expected);
    if let Some(reason) = &o.mesh_reason {
        println!("    mesh     {reason}");
    }
    println!("    hint     {}", o.hint);
}

async fn check_cmd(
    env: &Env,
    lab: &Lab,
    wait: Duration,
    step: Option<u32>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let steps = lab.spec.staged_steps();
    let step = step_of(env, lab, step)?;
    let checks = lab.spec.checks_for(step);
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    // Checks judge the config in force: wait (bounded) until every proxy runs it. If that does
    // not happen, the checks still run and say what they see.
    client.wait_settled(None, Duration::from_secs(10)).await?;
    let mut target = target(&client, env).await?;
    target.answers = check::Answers::Dir(workspace(env, lab));
    let people = output == Output::Table;
    if people {
        let heading = format!(
            "lab {} {} — {}",
            lab.number,
            lab.dir.split_once('-').map(|(_, s)| s).unwrap_or(""),
            lab.spec.title
        );
        println!("{heading}");
        println!("{}", "-".repeat(heading.chars().count()));
        if steps > 0 {
            let title = lab.spec.steps.get(step as usize - 1).map(|s| s.title.as_str()).unwrap_or("");
            println!("step {step} of {steps}: {title}");
        }
    }
    let spinner = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let config = mesh_config(&client).await;
    let mut outcomes = check::run_all(
        &checks,
        &target,
        wait,
        |c| {
            if people {
                *spinner.borrow_mut() = Some(term::spinner(&c.title));
            }
        },
        |c, n, seen| {
            if let Some(s) = spinner.borrow().as_ref() {
                s.set_message(format!("{} (attempt {n}: {seen}; retrying)", c.title));
            }
        },
        |o| {
            if let Some(s) = spinner.borrow_mut().take() {
                s.finish_and_clear();
            }
            if people {
                let mut o = o.clone();
                advise(lab, &config, &mut o);
                print_outcome(&o);
            }
        },
    )
    .await;
    for o in outcomes.iter_mut() {
        advise(lab, &config, o);
    }
    let step_passed = outcomes.iter().all(|o| o.passed);
    let passed = record(env, lab, step, step_passed)?;
    // When something failed, what the analyzer finds in the lab's namespace often says why.
    let analysis: Vec<String> = if step_passed {
        Vec::new()
    } else {
        crate::cli::analyze::findings(&client, &lab.spec.baseline.namespace)
            .await
            .iter()
            .map(|m| m.to_string())
            .collect()
    };
    if people {
        if !analysis.is_empty() {
            println!("The analyzer also finds (meshrig analyze):");
            for line in &analysis {
                println!("    {line}");
            }
        }
        let failed = outcomes.iter().filter(|o| !o.passed).count();
        if failed == 0 && step < steps {
            let next =
                lab.spec.steps.get(step as usize).map(|s| format!("{}: {}", s.title, s.text)).unwrap_or_default();
            println!("Lab {}: step {step} of {steps} passed. Next, step {}: {next}", lab.number, step + 1);
        } else if failed == 0 {
            println!("Lab {}: {} passed", lab.number, count(outcomes.len(), "check"));
        } else {
            println!("Lab {}: {}", lab.number, failure_summary(&outcomes));
        }
    } else {
        let data = serde_json::json!({
            "lab": lab.number,
            "step": if steps > 0 { Some(step) } else { None },
            "passed": passed,
            "stepPassed": step_passed,
            "checks": outcomes,
            "analysis": analysis,
        });
        crate::cli::print_data(output, &data)?;
    }
    if passed && people {
        println!("{}", what_next(env, lab)?);
    }
    Ok(if step_passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
