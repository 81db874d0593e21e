//! `lab list|start|check|hint|solution|verify`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
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
        LabCommand::List => list(env),
        LabCommand::Start { lab } => start(env, &labs::find(&lab)?).await,
        LabCommand::Check { lab, wait, output } => {
            let lab = current(env, lab)?;
            check_cmd(env, &lab, Duration::from_secs(wait), output).await
        }
        LabCommand::Hint { lab } => {
            let lab = current(env, lab)?;
            for (i, h) in lab.spec.hints.iter().enumerate() {
                println!("hint {}: {h}", i + 1);
            }
            Ok(ExitCode::SUCCESS)
        }
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
        LabCommand::Verify { labs: ids, wait } => verify(env, &ids, Duration::from_secs(wait)).await,
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

/// Brings the environment to the lab's starting point: other labs' traffic config removed,
/// the lab's apps present, every proxy synced.
async fn setup(client: &api::Client, lab: &Lab) -> anyhow::Result<()> {
    let ns = &lab.spec.setup.namespace;
    let mut keys = Vec::new();
    for k in &lab.spec.setup.clean {
        let kind =
            Kind::from_user(k).with_context(|| format!("lab {}: unknown kind {k:?} in setup.clean", lab.number))?;
        keys.extend(client.list(kind, Some(ns), None).await?.iter().map(Resource::key));
    }
    if !keys.is_empty() {
        client.delete(keys).await?;
    }
    let mut resources = Vec::new();
    for m in &lab.spec.setup.manifests {
        let text = labs::manifest(m).with_context(|| format!("manifest {m} is not built in"))?;
        resources.extend(parse_documents(&format!("samples/{m}"), text)?.into_iter().map(|d| d.resource));
    }
    if !resources.is_empty() {
        client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?;
    }
    lifecycle::wait_ready(client, None, Duration::from_secs(60)).await?;
    Ok(())
}

async fn apply_files(client: &api::Client, lab: &Lab, files: &[String]) -> anyhow::Result<()> {
    let mut resources = Vec::new();
    for f in files {
        let text = lab.file(f).with_context(|| format!("labs/{}/{f} is missing", lab.dir))?;
        resources.extend(parse_documents(&format!("labs/{}/{f}", lab.dir), text)?.into_iter().map(|d| d.resource));
    }
    let resp = client.apply(&ApplyRequest { resources, create_only: false, dry_run: false }).await?;
    lifecycle::wait_ready(client, Some(resp.version), Duration::from_secs(60)).await?;
    Ok(())
}

async fn start(env: &Env, lab: &Lab) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::local(env).client()?;
    setup(&client, lab).await?;
    let dir = workspace(lab);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    for f in lab.spec.start.iter().map(String::as_str).chain(["README.md"]) {
        let path = dir.join(f);
        if path.exists() {
            continue; // never overwrite the learner's work
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, lab.file(f).unwrap_or(""))?;
        written.push(path.display().to_string());
    }
    let mut p = progress(env);
    p.current = Some(lab.number.clone());
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

fn target(env: &Env) -> anyhow::Result<Target> {
    let s = env.settings()?.unwrap_or_default();
    Ok(Target { gateway: SocketAddr::from((Ipv4Addr::LOCALHOST, s.http_port)) })
}

/// Runs every check of a lab (after waiting for the proxies to run the current config).
async fn run_checks(env: &Env, lab: &Lab, wait: Duration) -> anyhow::Result<Vec<Outcome>> {
    let client = crate::cli::backend::Backend::local(env).client()?;
    // Checks judge the config in force: wait (bounded) until every proxy runs it. If that does
    // not happen, the checks still run and say what they see.
    client.wait_settled(None, Duration::from_secs(10)).await?;
    let target = target(env)?;
    let mut out = Vec::new();
    for c in &lab.spec.checks {
        out.push(check::run(c, &target, wait).await);
    }
    Ok(out)
}

fn print_outcomes(lab: &Lab, outcomes: &[Outcome]) {
    let heading =
        format!("lab {} {} — {}", lab.number, lab.dir.split_once('-').map(|(_, s)| s).unwrap_or(""), lab.spec.title);
    println!("{heading}");
    println!("{}", "-".repeat(heading.chars().count()));
    for o in outcomes {
        if o.passed {
            println!("{} {}", term::result_mark(true), o.title);
        } else {
            println!("{} {}", term::result_mark(false), o.title);
            println!("    saw {}; expected {}", o.saw, o.expected);
            println!("    hint: {}", o.hint);
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if failed == 0 {
        println!("Lab {}: all {} checks passed", lab.number, outcomes.len());
    } else {
        println!("Lab {}: {failed} of {} checks failed", lab.number, outcomes.len());
    }
}

async fn check_cmd(env: &Env, lab: &Lab, wait: Duration, output: Output) -> anyhow::Result<ExitCode> {
    let outcomes = run_checks(env, lab, wait).await?;
    let passed = outcomes.iter().all(|o| o.passed);
    match output {
        Output::Table => print_outcomes(lab, &outcomes),
        _ => crate::cli::print_data(
            output,
            &serde_json::json!({"lab": lab.number, "passed": passed, "checks": outcomes}),
        )?,
    }
    if passed {
        let mut p = progress(env);
        if !p.passed.contains(&lab.number) {
            p.passed.push(lab.number.clone());
        }
        save_progress(env, &p)?;
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Every lab must fail on its starting files and pass with its solution.
async fn verify(env: &Env, ids: &[String], wait: Duration) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::local(env).client()?;
    let labs =
        if ids.is_empty() { labs::all()? } else { ids.iter().map(|i| labs::find(i)).collect::<Result<_, _>>()? };
    let mut verified = 0;
    for lab in &labs {
        setup(&client, lab).await?;
        apply_files(&client, lab, &lab.spec.start).await?;
        // After the sync the starting config is in force, so a short wait is enough to see it fail.
        let start = run_checks(env, lab, Duration::from_secs(2).min(wait)).await?;
        let start_failed = start.iter().filter(|o| !o.passed).count();
        setup(&client, lab).await?;
        apply_files(&client, lab, &lab.spec.solution).await?;
        let solved = run_checks(env, lab, wait).await?;
        let solved_failed: Vec<&Outcome> = solved.iter().filter(|o| !o.passed).collect();
        setup(&client, lab).await?;
        let ok = start_failed > 0 && solved_failed.is_empty();
        verified += usize::from(ok);
        let mark = term::result_mark(ok);
        println!(
            "{mark} lab {} {}: starting files fail {start_failed} of {} checks; solution passes {} of {}",
            lab.number,
            lab.spec.title,
            start.len(),
            solved.len() - solved_failed.len(),
            solved.len()
        );
        if start_failed == 0 {
            println!("    the starting files already pass every check: the lab teaches nothing");
        }
        for o in solved_failed {
            println!("    solution fails {:?}: saw {}; expected {}", o.id, o.saw, o.expected);
        }
    }
    println!("{verified} of {} labs verified", labs.len());
    Ok(if verified == labs.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
