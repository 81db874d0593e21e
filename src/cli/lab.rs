//! `lab list|start|next|reset|restore|check|hint|solution`; `lab verify` is in `lab_verify`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::{self, ApplyRequest};
use crate::cli::{lifecycle, term, LabCommand, Output};
use crate::env::Env;
use crate::labs::check::{self, Outcome, Target};
use crate::labs::{self, Lab, Progress};
use crate::ready::Listener;
use crate::resources::parse::parse_documents;
use crate::resources::{Kind, Resource};
use crate::snapshot::Role;

pub async fn run(env: &Env, cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::List => list(env),
        LabCommand::Start { lab } => start(env, &labs::find(&lab)?).await,
        LabCommand::Next => next(env).await,
        LabCommand::Reset { lab } => reset(env, &current(env, lab)?).await,
        LabCommand::Restore { file } => restore(env, file).await,
        LabCommand::Check { lab, wait, step, output } => {
            let lab = current(env, lab)?;
            check_cmd(env, &lab, Duration::from_secs(wait), step, output).await
        }
        LabCommand::Hint { lab, all } => hint(env, &current(env, lab)?, all),
        LabCommand::Solution { lab, apply } => {
            let lab = current(env, lab)?;
            if apply {
                let client = crate::cli::backend::Backend::local(env).client()?;
                apply_files(&client, &lab, &lab.spec.solution).await?;
                eprintln!("{} applied the solution of lab {}", term::pass_mark(), lab.number);
            } else {
                for f in &lab.spec.solution {
                    println!("# labs/{}/{f}", lab.dir);
                    print!("{}", lab.file(f).unwrap_or(""));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Verify { labs: ids, wait, jobs, junit, output } => {
            crate::cli::lab_verify::run(&ids, Duration::from_secs(wait), jobs, junit.as_deref(), output).await
        }
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

fn list(env: &Env) -> anyhow::Result<ExitCode> {
    let p = progress(env);
    for lab in labs::all()? {
        let mark = if p.passed.contains(&lab.number) {
            term::result_mark(true)
        } else if p.current.as_deref() == Some(&lab.number) {
            "→".into()
        } else {
            " ".into()
        };
        println!("{mark} {}  {:<28} {}", lab.number, lab.spec.title, lab.spec.summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn workspace(lab: &Lab) -> PathBuf {
    let base = std::env::var_os("MESHRIG_LABS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("meshrig-labs"));
    base.join(&lab.dir)
}

/// Brings the mesh to the lab's baseline: its namespaces exist, every resource of the kinds it
/// owns is gone (in every namespace), its manifests are applied and every proxy is synced.
/// Returns what was removed.
pub async fn baseline(client: &api::Client, lab: &Lab) -> anyhow::Result<Vec<Resource>> {
    let base = &lab.spec.baseline;
    let mut removed = Vec::new();
    for k in &base.owns {
        let kind =
            Kind::from_user(k).with_context(|| format!("lab {}: unknown kind {k:?} in baseline.owns", lab.number))?;
        removed.extend(client.list(kind, None, None).await?);
    }
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
    for m in &base.manifests {
        let text = labs::manifest(m).with_context(|| format!("manifest {m} is not built in"))?;
        resources.extend(parse_documents(&format!("samples/{m}"), text)?.into_iter().map(|d| d.resource));
    }
    for f in &base.files {
        let text = lab.file(f).with_context(|| format!("labs/{}/{f} is missing", lab.dir))?;
        for doc in parse_documents(&format!("labs/{}/{f}", lab.dir), text)? {
            let mut r = doc.resource;
            r.set_default_namespace(&base.namespace);
            resources.push(r);
        }
    }
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

/// Is this lab file a manifest (applied), rather than an answer a check reads (a query)?
pub fn is_manifest(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
}

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
        "{} lab {} owns {}: removed {} resource(s) that were in the mesh:",
        term::warn_mark(),
        lab.number,
        lab.spec.baseline.owns.join(", "),
        removed.len()
    );
    for r in removed {
        eprintln!("    {}", r.key());
    }
    eprintln!("  saved in {}; `meshrig lab restore` applies them again", path.display());
    Ok(())
}

/// The README with this environment's real addresses.
fn rendered_readme(env: &Env, lab: &Lab) -> anyhow::Result<String> {
    let s = env.settings()?.unwrap_or_default();
    let vars = labs::Vars {
        gateway: format!("http://127.0.0.1:{}", s.http_port),
        gateway_address: format!("127.0.0.1:{}", s.http_port),
        workspace: workspace(lab).display().to_string(),
    };
    labs::render(lab.readme(), &vars).map_err(anyhow::Error::msg)
}

/// The learner's files as the lab gives them: starting files and the rendered README.
fn starting_files(env: &Env, lab: &Lab) -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<(String, String)> =
        lab.spec.start.iter().map(|f| (f.clone(), lab.file(f).unwrap_or("").to_string())).collect();
    files.push(("README.md".into(), rendered_readme(env, lab)?));
    Ok(files)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

async fn start(env: &Env, lab: &Lab) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::local(env).client()?;
    let removed = baseline(&client, lab).await?;
    save_removed(env, lab, &removed)?;
    let dir = workspace(lab);
    for (f, text) in starting_files(env, lab)? {
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
    println!("Read README.md, edit the files, apply them:   meshrig apply -f {}", dir.display());
    println!("then check your work:                          meshrig lab check");
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
    let client = crate::cli::backend::Backend::local(env).client()?;
    let removed = baseline(&client, lab).await?;
    save_removed(env, lab, &removed)?;
    let dir = workspace(lab);
    let stamp = crate::env::timestamp().replace(':', "");
    for (f, text) in starting_files(env, lab)? {
        let path = dir.join(&f);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == text => continue,
            Ok(_) if f != "README.md" => {
                let backup = dir.join(format!("{f}.bak-{stamp}"));
                std::fs::rename(&path, &backup)
                    .with_context(|| format!("keep {} as {}", path.display(), backup.display()))?;
                eprintln!("{} your {} is kept as {}", term::pass_mark(), path.display(), backup.display());
            }
            _ => {}
        }
        write_file(&path, &text)?;
        eprintln!("{} restored {}", term::pass_mark(), path.display());
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
    let client = crate::cli::backend::Backend::local(env).client()?;
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

/// Where a lab's checks send requests: the gateway's published port 80 (and its admin listener
/// for the reasons behind its answers), or a workload's outbound listener.
pub async fn target(client: &api::Client, env: &Env) -> anyhow::Result<Target> {
    let s = env.settings()?.unwrap_or_default();
    let status = client.status().await?;
    let gateway_admin = status
        .pods
        .iter()
        .find(|p| p.role == Role::Gateway && p.namespace == "istio-system")
        .and_then(|p| p.proxy_addrs.get(&Listener::Admin).copied());
    let mut workloads = std::collections::BTreeMap::new();
    let mut trace_services = std::collections::BTreeMap::new();
    for p in status.pods.iter().filter(|p| p.ready) {
        if let Some(outbound) = p.proxy_addrs.get(&Listener::Outbound) {
            let key = format!("{}/{}", p.namespace, p.workload);
            // As the proxies name themselves in spans: the `app` label, else the workload.
            let app = p.labels.get("app").unwrap_or(&p.workload);
            trace_services.entry(key.clone()).or_insert(format!("{app}.{}", p.namespace));
            workloads.entry(key).or_insert(*outbound);
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
        admins: status.pods.iter().filter_map(|p| p.proxy_addrs.get(&Listener::Admin).copied()).collect(),
        prometheus: status
            .control_plane
            .addons
            .iter()
            .find(|a| a.name == "prometheus" && a.ready)
            .and_then(|a| a.address),
        answers: check::Answers::None,
    })
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
    let step = match step {
        Some(n) if steps == 0 || n == 0 || n > steps => {
            anyhow::bail!("lab {} has no step {n} to check (its checks belong to steps 1 to {steps})", lab.number)
        }
        Some(n) => n,
        None => progress(env).step.get(&lab.number).copied().unwrap_or(1).clamp(1, steps.max(1)),
    };
    let checks = lab.spec.checks_for(step);
    let client = crate::cli::backend::Backend::local(env).client()?;
    // Checks judge the config in force: wait (bounded) until every proxy runs it. If that does
    // not happen, the checks still run and say what they see.
    client.wait_settled(None, Duration::from_secs(10)).await?;
    let mut target = target(&client, env).await?;
    target.answers = check::Answers::Dir(workspace(lab));
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
    let outcomes = check::run_all(
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
                print_outcome(o);
            }
        },
    )
    .await;
    let step_passed = outcomes.iter().all(|o| o.passed);
    // A lab of steps is passed when its last step is; a passed step moves the learner on.
    let passed = step_passed && step >= steps;
    if step_passed && step < steps {
        let mut p = progress(env);
        p.step.insert(lab.number.clone(), step + 1);
        save_progress(env, &p)?;
    }
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
            println!("Lab {}: all {} checks passed", lab.number, outcomes.len());
        } else {
            println!("Lab {}: {failed} of {} checks failed", lab.number, outcomes.len());
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
    if passed {
        let mut p = progress(env);
        if !p.passed.contains(&lab.number) {
            p.passed.push(lab.number.clone());
        }
        save_progress(env, &p)?;
    }
    Ok(if step_passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
