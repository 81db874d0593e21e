//! `lab verify`: each lab in a scratch environment of its own (own state dir, own ports, removed
//! afterwards), so the learner's environment and files are never touched; labs run in parallel
//! up to `--jobs`. `lab verify --in-order` walks the course as a learner does instead: one
//! scratch environment, the labs in order, each step failing before its solution and passing
//! after it. Results as lines, JSON/YAML, and JUnit XML for an instructor's CI.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::cli::backend::Backend;
use crate::cli::lab::{apply_files, baseline, print_outcome, target};
use crate::cli::{term, Output};
use crate::env::Env;
use crate::labs::check::{self, Outcome};
use crate::labs::{self, Lab};

/// Checks on the starting files are judged after the config is synced, so a short retry is
/// enough to see them fail.
const START_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct LabResult {
    pub lab: String,
    pub title: String,
    pub verified: bool,
    /// What is wrong with the lab, one sentence each.
    pub problems: Vec<String>,
    /// The checks on the starting files (all but guards must fail).
    pub start: Vec<Outcome>,
    /// The checks with the solution applied (all must pass).
    pub solution: Vec<Outcome>,
    pub seconds: f64,
}

impl LabResult {
    fn could_not_run(lab: &Lab, e: &anyhow::Error) -> LabResult {
        LabResult {
            lab: lab.number.clone(),
            title: lab.spec.title.clone(),
            verified: false,
            problems: vec![format!("could not run: {e:#}")],
            start: vec![],
            solution: vec![],
            seconds: 0.0,
        }
    }
}

/// A mesh of its own for one lab: started with the real binary, stopped and removed on drop.
struct Scratch {
    env: Env,
}

impl Scratch {
    async fn up(name: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir()
            .join(format!("meshrig-verify-{name}-{}", crate::env::random_hex(4).unwrap_or_default()));
        let scratch = Scratch { env: Env::resolve("verify", Some(dir.clone()))? };
        let exe = std::env::current_exe().context("cannot find the meshrig binary")?;
        let out = tokio::process::Command::new(exe)
            .arg("--state-dir")
            .arg(&dir)
            .args([
                "up",
                "--http-port",
                "0",
                "--https-port",
                "0",
                "--tcp-port",
                "0",
                "--tracing-port",
                "0",
                "--apps",
                "none",
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .context("start a scratch environment")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            bail!(
                "the scratch environment did not come up ({}): {}",
                out.status,
                tail[tail.len().saturating_sub(3)..].join(" / ")
            );
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        Backend::for_env(&self.env).stop();
        let _ = std::fs::remove_dir_all(&self.env.dir);
    }
}

/// The answer files (not manifests) a check reads, as the learner would have them: the
/// starting ones, replaced by the solution's of the same name.
fn answers(lab: &Lab, start: &[String], solution: &[String]) -> check::Answers {
    let mut files = std::collections::BTreeMap::new();
    for f in start.iter().chain(solution).filter(|f| !crate::cli::lab::is_manifest(f)) {
        if let Some(text) = lab.file(f) {
            let name = f.rsplit('/').next().unwrap_or(f);
            files.insert(name.to_string(), text.to_string());
        }
    }
    check::Answers::Files(files)
}

/// Runs one lab: starting files, then the solution, each on the lab's baseline.
async fn verify_lab(lab: &Lab, wait: Duration, bar: &indicatif::ProgressBar) -> anyhow::Result<LabResult> {
    let started = Instant::now();
    let title = format!("lab {} {}", lab.number, lab.spec.title);
    bar.set_message(format!("{title}: starting a scratch environment"));
    let scratch = Scratch::up(&lab.number).await?;
    let client = Backend::for_env(&scratch.env).client()?;
    bar.set_message(format!("{title}: checks on the starting files"));
    baseline(&client, lab).await?;
    apply_files(&client, lab, &lab.spec.start).await?;
    let mut target = target(&client, &scratch.env).await?;
    target.answers = answers(lab, &lab.spec.start, &[]);
    let start = check::run_all(&lab.spec.checks, &target, START_WAIT.min(wait), |_| {}, |_, _, _| {}, |_| {}).await;
    let steps = lab.spec.staged_steps();
    let mut solution = Vec::new();
    if steps == 0 {
        bar.set_message(format!("{title}: checks with the solution"));
        baseline(&client, lab).await?;
        apply_files(&client, lab, &lab.spec.solution).await?;
        target.answers = answers(lab, &lab.spec.start, &lab.spec.solution);
        solution = check::run_all(&lab.spec.checks, &target, wait, |_| {}, |_, _, _| {}, |_| {}).await;
    } else {
        // A lab of steps: each step's solution, on the starting files, passes that step's checks.
        for step in 1..=steps {
            bar.set_message(format!("{title}: checks of step {step} with its solution"));
            let files = lab.spec.step_solution(step);
            baseline(&client, lab).await?;
            apply_files(&client, lab, &lab.spec.start).await?;
            apply_files(&client, lab, &files).await?;
            target.answers = answers(lab, &lab.spec.start, &files);
            let checks = lab.spec.checks_for(step);
            solution.extend(check::run_all(&checks, &target, wait, |_| {}, |_, _, _| {}, |_| {}).await);
        }
    }
    drop(scratch);
    let problems = problems(&start, &solution, false);
    Ok(LabResult {
        lab: lab.number.clone(),
        title: lab.spec.title.clone(),
        verified: problems.is_empty(),
        problems,
        start,
        solution,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What makes a lab fail verification (pure).
/// In order (`in_order`), a step's checks are first judged with the step before solved, where a
/// `kept:` check may pass.
pub fn problems(start: &[Outcome], solution: &[Outcome], in_order: bool) -> Vec<String> {
    let mut out = Vec::new();
    for o in start.iter().filter(|o| o.passed && !o.guard && !(in_order && o.kept)) {
        out.push(if in_order {
            format!(
                "check {:?} passes before its step's solution (on the starting files, or with the step before \
                 solved), so the step does not teach it: change the files, or mark it `kept:` (the step before \
                 built it) or `guard:` with the reason it may pass",
                o.id
            )
        } else {
            format!(
                "check {:?} passes on the starting files, so the lab does not teach it: change the starting files, \
                 or mark it `guard:` with the reason it may pass",
                o.id
            )
        });
    }
    for o in solution.iter().filter(|o| !o.passed) {
        let mut p = format!("the solution fails check {:?}: saw {}; expected {}", o.id, o.saw, o.expected);
        if let Some(r) = &o.mesh_reason {
            p.push_str(&format!(" (mesh: {r})"));
        }
        out.push(p);
    }
    out
}

/// The labs named (all when none is), in course order as given.
fn chosen(ids: &[String]) -> anyhow::Result<Vec<Lab>> {
    Ok(if ids.is_empty() { labs::all()? } else { ids.iter().map(|i| labs::find(i)).collect::<Result<_, _>>()? })
}

/// Progress on stderr only for people at a terminal.
fn bars_shown(people: bool) -> bool {
    people && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

pub async fn run(
    ids: &[String],
    wait: Duration,
    jobs: usize,
    junit: Option<&Path>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let labs = chosen(ids)?;
    let people = output == Output::Table;
    let bars = indicatif::MultiProgress::new();
    if !bars_shown(people) {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, lab) in labs.iter().cloned().enumerate() {
        let slots = slots.clone();
        let bar = bars.add(indicatif::ProgressBar::new_spinner());
        bar.set_message(format!("lab {} {}: waiting", lab.number, lab.spec.title));
        set.spawn(async move {
            let _slot = slots.acquire_owned().await;
            bar.enable_steady_tick(Duration::from_millis(120));
            let result = match verify_lab(&lab, wait, &bar).await {
                Ok(r) => r,
                Err(e) => LabResult::could_not_run(&lab, &e),
            };
            bar.finish_and_clear();
            (i, result)
        });
    }
    let mut results: Vec<(usize, LabResult)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.context("a lab's verification panicked")?;
        if people {
            bars.suspend(|| print_result(&r));
        }
        results.push((i, r));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<LabResult> = results.into_iter().map(|(_, r)| r).collect();
    report(&results, junit, output, false)
}

/// The summary line, the JUnit file and the data (the per-lab lines are printed as labs end).
fn report(results: &[LabResult], junit: Option<&Path>, output: Output, in_order: bool) -> anyhow::Result<ExitCode> {
    let verified = results.iter().filter(|r| r.verified).count();
    if let Some(path) = junit {
        write_junit(path, results)?;
        eprintln!("{} wrote {}", term::pass_mark(), path.display());
    }
    if output == Output::Table {
        let how = if in_order { " in order, in one environment" } else { "" };
        println!("{verified} of {} labs verified{how}", results.len());
    } else {
        crate::cli::print_data(
            output,
            &serde_json::json!({"verified": verified, "total": results.len(), "inOrder": in_order, "labs": results}),
        )?;
    }
    Ok(if verified == results.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `lab verify --in-order`: the course as a learner walks it, in one scratch environment. Each
/// lab starts as `lab start` starts it (on whatever the lab before left); in each step the
/// checks are judged first as the learner finds them (the starting files applied, or the step
/// before solved), then after `lab solution --apply` for that step.
pub async fn run_in_order(
    ids: &[String],
    wait: Duration,
    junit: Option<&Path>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let labs = chosen(ids)?;
    let people = output == Output::Table;
    let bar = indicatif::ProgressBar::new_spinner();
    if !bars_shown(people) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("starting a scratch environment");
    let scratch = Scratch::up("in-order").await?;
    let client = Backend::for_env(&scratch.env).client()?;
    let mut results = Vec::new();
    for lab in &labs {
        let result = match walk_lab(&client, &scratch.env, lab, wait, &bar).await {
            Ok(r) => r,
            Err(e) => LabResult::could_not_run(lab, &e),
        };
        if people {
            bar.suspend(|| print_result(&result));
        }
        results.push(result);
    }
    bar.finish_and_clear();
    drop(scratch);
    report(&results, junit, output, true)
}

/// One lab of the walk: `lab start`, then per step: judged as found, solved, judged again.
async fn walk_lab(
    client: &crate::api::Client,
    env: &Env,
    lab: &Lab,
    wait: Duration,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<LabResult> {
    let started = Instant::now();
    let title = format!("lab {} {}", lab.number, lab.spec.title);
    bar.set_message(format!("{title}: lab start"));
    baseline(client, lab).await?;
    let mut target = target(client, env).await?;
    let steps = lab.spec.staged_steps().max(1);
    let (mut start, mut solution) = (Vec::new(), Vec::new());
    let mut answers_now = answers(lab, &lab.spec.start, &[]);
    for step in 1..=steps {
        let checks = lab.spec.checks_for(step);
        if step == 1 {
            bar.set_message(format!("{title}: the starting files applied"));
            apply_files(client, lab, &lab.spec.start).await?;
        }
        bar.set_message(format!("{title}: step {step} before its solution"));
        target.answers = answers_now;
        start.extend(check::run_all(&checks, &target, START_WAIT.min(wait), |_| {}, |_, _, _| {}, |_| {}).await);
        bar.set_message(format!("{title}: step {step} with `lab solution --apply`"));
        apply_files(client, lab, &lab.spec.solved_files(step)).await?;
        answers_now = answers(lab, &lab.spec.start, &lab.spec.step_solution(step));
        target.answers = answers_now.clone();
        solution.extend(check::run_all(&checks, &target, wait, |_| {}, |_, _, _| {}, |_| {}).await);
    }
    let problems = problems(&start, &solution, true);
    Ok(LabResult {
        lab: lab.number.clone(),
        title: lab.spec.title.clone(),
        verified: problems.is_empty(),
        problems,
        start,
        solution,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn print_result(r: &LabResult) {
    let start_failed = r.start.iter().filter(|o| !o.passed).count();
    let solved = r.solution.iter().filter(|o| o.passed).count();
    println!(
        "{} lab {} {}: starting files fail {start_failed} of {} checks; solution passes {solved} of {} ({:.1}s)",
        term::result_mark(r.verified),
        r.lab,
        r.title,
        r.start.len(),
        r.solution.len(),
        r.seconds
    );
    for p in &r.problems {
        println!("    {p}");
    }
    if !r.verified {
        for o in r.solution.iter().filter(|o| !o.passed) {
            print_outcome(o);
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML as CI systems read it: one testsuite per lab, one testcase per check and phase.
pub fn junit(results: &[LabResult]) -> String {
    let mut cases_total = 0;
    let mut failures_total = 0;
    let mut suites = String::new();
    for r in results {
        let mut cases = String::new();
        let mut failures = 0;
        let mut case = |class: &str, name: &str, seconds: f64, failure: Option<String>| {
            cases.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{seconds:.3}\"",
                xml_escape(class),
                xml_escape(name)
            ));
            match failure {
                Some(msg) => {
                    failures += 1;
                    let first = msg.lines().next().unwrap_or("").to_string();
                    cases.push_str(&format!(
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml_escape(&first),
                        xml_escape(&msg)
                    ));
                }
                None => cases.push_str("/>\n"),
            }
        };
        let class = format!("lab{}", r.lab);
        if r.start.is_empty() && r.solution.is_empty() {
            case(&class, "environment", 0.0, Some(r.problems.join("\n")));
        }
        for o in &r.start {
            let failure = (o.passed && !o.guard)
                .then(|| format!("passes on the starting files, so the lab does not teach it: {}", o.saw));
            case(
                &format!("{class}.start"),
                &format!("{} fails on the starting files", o.id),
                o.millis as f64 / 1000.0,
                failure,
            );
        }
        for o in &r.solution {
            let failure = (!o.passed).then(|| {
                let mut m = format!("saw {}; expected {}", o.saw, o.expected);
                if let Some(reason) = &o.mesh_reason {
                    m.push_str(&format!("\nmesh: {reason}"));
                }
                m
            });
            case(&format!("{class}.solution"), &format!("{}: {}", o.id, o.title), o.millis as f64 / 1000.0, failure);
        }
        let tests = cases.matches("<testcase ").count();
        cases_total += tests;
        failures_total += failures;
        suites.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">\n{cases}  </testsuite>\n",
            xml_escape(&format!("lab {} {}", r.lab, r.title)),
            r.seconds
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"meshrig lab verify\" tests=\"{cases_total}\" failures=\"{failures_total}\">\n{suites}</testsuites>\n"
    )
}

fn write_junit(path: &Path, results: &[LabResult]) -> anyhow::Result<()> {
    let path: PathBuf = path.to_path_buf();
    std::fs::write(&path, junit(results)).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, passed: bool, guard: bool) -> Outcome {
        Outcome {
            id: id.into(),
            title: format!("{id} <title>"),
            passed,
            skipped: false,
            guard,
            kept: false,
            saw: "status 404 & more".into(),
            expected: "status 200".into(),
            hint: String::new(),
            mesh_reason: Some("no route".into()),
            request_id: String::new(),
            attempts: 1,
            millis: 1500,
        }
    }

    #[test]
    fn a_lab_must_fail_what_it_teaches_and_pass_with_its_solution() {
        let start = [outcome("a", false, false), outcome("b", true, true)];
        let solution = [outcome("a", true, false), outcome("b", true, true)];
        assert!(problems(&start, &solution, false).is_empty(), "a passing guard is allowed");
        let start = [outcome("a", true, false)];
        assert!(problems(&start, &solution[..1], false)[0].contains("passes on the starting files"));
        let solution = [outcome("a", false, false)];
        let mut kept = outcome("k", true, false);
        kept.kept = true;
        assert!(
            problems(std::slice::from_ref(&kept), &[], true).is_empty(),
            "in order, a kept check may pass before its step"
        );
        assert!(
            problems(&[kept], &[], false)[0].contains("passes on the starting files"),
            "but not on the starting files"
        );
        let p = problems(&[outcome("a", false, false)], &solution, false);
        assert!(p[0].contains("the solution fails check \"a\"") && p[0].contains("(mesh: no route)"), "{p:?}");
    }

    #[test]
    fn junit_counts_and_escapes() {
        let r = LabResult {
            lab: "01".into(),
            title: "Ingress & gateway".into(),
            verified: false,
            problems: vec![],
            start: vec![outcome("a", false, false)],
            solution: vec![outcome("a", false, false)],
            seconds: 3.0,
        };
        let xml = junit(&[r]);
        assert!(xml.contains("<testsuites name=\"meshrig lab verify\" tests=\"2\" failures=\"1\">"), "{xml}");
        assert!(xml.contains("name=\"lab 01 Ingress &amp; gateway\" tests=\"2\" failures=\"1\""));
        assert!(xml.contains("<failure message=\"saw status 404 &amp; more; expected status 200\">"));
        assert!(xml.contains("classname=\"lab01.start\" name=\"a fails on the starting files\" time=\"1.500\"/>"));
        assert!(!xml.contains("<title>"));
    }
}
