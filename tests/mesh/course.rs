//! The course as a learner walks it: labs in order in one environment, with the real binary.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{text, Mesh};

/// The labs this run can walk: all of them when CI names Prometheus (MESHRIG_PROMETHEUS), else
/// those that do not need it (plain `cargo test` needs nothing outside the repository).
fn walkable(mesh: &Mesh) -> Vec<serde_json::Value> {
    let out = mesh.ok(&["lab", "list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let labs_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let prometheus = crate::support::tool("MESHRIG_PROMETHEUS", "the labs that need Prometheus").is_some();
    v["labs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            prometheus
                || !std::fs::read_to_string(labs_dir.join(l["dir"].as_str().unwrap()).join("lab.yaml"))
                    .unwrap()
                    .contains("addons: [prometheus]")
        })
        .cloned()
        .collect()
}

/// Where `lab start N` wrote the lab's files.
fn workspace(mesh: &Mesh, n: &str) -> std::path::PathBuf {
    let base = mesh.work.path().join("meshrig-labs");
    let dir = std::fs::read_dir(&base).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with(n));
    dir.unwrap_or_else(|| panic!("no folder for lab {n} in {}", base.display())).path()
}

fn code(mesh: &Mesh, args: &[&str]) -> Option<i32> {
    mesh.run(args).status.code()
}

#[test]
fn a_learner_walking_the_course_in_order_passes_every_step_with_lab_solution_apply() {
    let mesh = Mesh::up();
    for lab in walkable(&mesh) {
        let n = lab["lab"].as_str().unwrap();
        let started = mesh.ok(&["lab", "start", n]);
        let status = mesh.status();
        // What earlier labs left is gone when the next starts: lab 05's routes and its flaky
        // ratings, lab 07's allow-nothing.
        match n {
            "07" => {
                assert_eq!(
                    code(&mesh, &["get", "deploy", "ratings-faulty"]),
                    Some(6),
                    "lab 05's ratings-faulty is gone"
                );
                assert_eq!(code(&mesh, &["get", "vs", "reviews"]), Some(6), "lab 05's routes are gone");
            }
            "08" => {
                assert_eq!(code(&mesh, &["get", "ap", "allow-nothing"]), Some(6), "lab 07's policy is gone");
                // The README's curl goes to this environment's HTTPS port, and its `get` works.
                let https = status["gateway"]["https"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
                let readme = std::fs::read_to_string(workspace(&mesh, n).join("README.md")).unwrap();
                let pin =
                    format!("--resolve httpbin.example.com:{https}:127.0.0.1 https://httpbin.example.com:{https}/");
                assert!(readme.contains(&pin), "lab 08's curl names this environment's port {https}:\n{readme}");
                let both = mesh.ok(&["get", "issuers,certificates", "-n", "istio-system"]);
                assert!(both.contains("example-ca-issuer") && both.contains("example-ca"), "{both}");
            }
            "11" => assert!(!started.contains("apply -f"), "lab 11 has nothing to apply:\n{started}"),
            "13" => assert_eq!(code(&mesh, &["get", "vs", "ratings"]), Some(0), "lab 13's 80/20 release is in place"),
            _ => {}
        }
        if n == "02" {
            // A route applied to the wrong namespace: the hint names it before guessing.
            mesh.ok(&["create", "namespace", "elsewhere"]);
            let solution =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/02-request-routing/solution/reviews.yaml");
            mesh.ok(&["apply", "-n", "elsewhere", "-f", solution.to_str().unwrap()]);
            let out = mesh.run(&["lab", "check", "--wait", "1", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let o = &v["checks"][0];
            assert!(o["hint"].as_str().unwrap().contains("is in namespace \"elsewhere\""), "{o}");
        }
        if n == "04" {
            // A failing page check shows the page's title and text, not `<!DOCTYPE html>`.
            let out = mesh.run(&["lab", "check", "--wait", "1", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let saw = v["checks"][0]["saw"].as_str().unwrap();
            assert!(saw.contains("a page titled \"Simple Bookstore App\"") && !saw.contains("DOCTYPE"), "{saw}");
        }
        let steps = lab["steps"].as_u64().unwrap_or(1);
        for step in 1..=steps {
            let applied = mesh.ok(&["lab", "solution", "--apply"]);
            if lab["steps"].is_u64() {
                assert!(applied.contains(&format!("step {step} of {steps}")), "lab {n}: {applied}");
            }
            let out = mesh.run(&["lab", "check", "--wait", "20", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("lab {n} step {step}: {e}\n{}", text(&out)));
            assert_eq!(v["stepPassed"], true, "lab {n} step {step}: every check passes with its solution:\n{v:#}");
        }
    }
    let v: serde_json::Value = serde_json::from_str(mesh.ok(&["lab", "list", "-o", "json"]).trim_end()).unwrap();
    assert_eq!(v["done"].as_u64().unwrap() as usize, walkable(&mesh).len(), "{v}");
}

#[test]
fn lab_verify_in_order_walks_the_course_in_one_environment() {
    let mesh = Mesh::up();
    let labs: Vec<String> = walkable(&mesh).iter().map(|l| l["lab"].as_str().unwrap().to_string()).collect();
    let scratch = tempfile::tempdir().unwrap();
    let mut args = vec!["lab", "verify", "--in-order", "-o", "json"];
    args.extend(labs.iter().map(String::as_str));
    let out = mesh.cmd(&args).env("TMPDIR", scratch.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)));
    assert!(out.status.success(), "{v:#}");
    assert_eq!((v["verified"].as_u64(), v["inOrder"].as_bool()), (Some(labs.len() as u64), Some(true)), "{v:#}");
    // Each step was judged before its solution too: lab 03's three steps, each failing first.
    let lab3 = v["labs"].as_array().unwrap().iter().find(|l| l["lab"] == "03").unwrap();
    assert_eq!(lab3["start"].as_array().unwrap().len(), 3, "{lab3}");
    assert!(lab3["start"].as_array().unwrap().iter().all(|o| o["passed"] == false), "{lab3}");
    assert!(std::fs::read_dir(scratch.path()).unwrap().next().is_none(), "the scratch environment is removed");
}

/// Lines a child prints, read on a thread, waited for with a deadline.
struct Lines(mpsc::Receiver<String>, String);

impl Lines {
    fn until(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while !self.1.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => {
                    self.1.push_str(&l);
                    self.1.push('\n');
                }
                Err(_) => panic!("no {what:?} within {limit:?}; saw:\n{}", self.1),
            }
        }
        std::mem::take(&mut self.1)
    }
}

#[test]
fn lab_show_list_and_watch_work_from_any_directory() {
    let mesh = Mesh::up();
    let v: serde_json::Value = serde_json::from_str(mesh.ok(&["lab", "list", "-o", "json"]).trim_end()).unwrap();
    assert_eq!((v["done"].as_u64(), v["total"].as_u64()), (Some(0), Some(13)), "{v}");
    assert_eq!(code(&mesh, &["lab", "start", "99"]), Some(6), "an unknown lab is not found (6)");
    mesh.ok(&["lab", "start", "1"]);
    assert_eq!(code(&mesh, &["lab", "solution", "--step", "9"]), Some(2), "lab 01 has no steps to name: usage (2)");

    // From another directory: the workspace is where `lab start` wrote it.
    let elsewhere = tempfile::tempdir().unwrap();
    let show = mesh.cmd(&["lab", "show"]).current_dir(elsewhere.path()).output().unwrap();
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    assert!(shown.contains(&format!("http://{}/status/200", mesh.gateway())), "rendered addresses:\n{shown}");
    let workspace = mesh.work.path().join("meshrig-labs/01-ingress-gateway");
    assert!(shown.contains(&workspace.display().to_string()), "it says where the files are:\n{shown}");

    // `lab watch`: applies the learner's files, checks, and again on every save.
    let mut child = mesh
        .cmd(&["lab", "watch", "--wait", "3"])
        .current_dir(elsewhere.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut lines = Lines(rx, String::new());
    let first = lines.until("Edit and save a file", Duration::from_secs(60));
    assert!(first.contains("applied 2 resources") && first.contains("× GET /status/200"), "{first}");
    assert!(first.contains("Lab 01: 1 of 4 checks failed, 3 not judged"), "counts that add up:\n{first}");
    let solution =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/01-ingress-gateway/solution/gateway.yaml");
    std::fs::copy(solution, workspace.join("gateway.yaml")).unwrap();
    let second = lines.until("Edit and save a file", Duration::from_secs(60));
    assert!(second.contains("Lab 01: 4 checks passed"), "{second}");
    assert!(second.contains("1 of 13 labs done. Next: `meshrig lab next` starts lab 02"), "{second}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C leaves cleanly: {status}");

    let v: serde_json::Value = serde_json::from_str(mesh.ok(&["lab", "list", "-o", "json"]).trim_end()).unwrap();
    assert_eq!(v["done"].as_u64(), Some(1), "{v}");
    assert!(mesh.ok(&["lab", "list"]).contains("1 of 13 done"));
}

#[test]
fn kubectl_forms_exit_codes_graph_window_and_status_schemes() {
    let mesh = Mesh::up();
    let both = mesh.ok(&["get", "svc,deploy"]);
    assert!(both.contains("httpbin") && both.matches("NAME").count() == 2, "a table per kind:\n{both}");
    assert!(mesh.ok(&["get", "deploy/httpbin"]).contains("httpbin"));
    assert_eq!(code(&mesh, &["get", "vs", "nope"]), Some(6), "not found is 6");
    assert_eq!(code(&mesh, &["delete", "vs", "nope"]), Some(6), "not found is 6");
    assert_eq!(code(&mesh, &["logs", "nope"]), Some(6), "not found is 6");
    assert_eq!(code(&mesh, &["get", "nokind"]), Some(2), "an unknown kind is a usage error");
    let graph = mesh.run(&["graph", "--window", "1s"]);
    assert!(text(&graph).contains("measuring the next 1s"), "it says it waits:\n{}", text(&graph));
    let status = mesh.ok(&["status"]);
    assert!(status.contains("https://127.0.0.1:"), "the HTTPS port with its scheme:\n{status}");
}

/// `doctor -o json`'s finding for the gateway's HTTP port.
fn doctor_http_port(mesh: &Mesh) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&mesh.run(&["doctor", "-o", "json"]).stdout).unwrap();
    let found =
        v["checks"].as_array().unwrap().iter().find(|c| c["check"].as_str().unwrap().starts_with("gateway HTTP port"));
    found.unwrap_or_else(|| panic!("no HTTP port finding: {v}")).clone()
}

#[test]
fn doctor_names_who_holds_a_port_and_concurrent_ups_share_one_control_plane() {
    let mesh = Mesh::up();
    // The gateway binds its HTTP port once a Gateway server asks for port 80.
    let gateway = crate::support::sample("httpbin/httpbin-gateway.yaml");
    mesh.ok(&["apply", "--wait", "-f", gateway.to_str().unwrap()]);
    let http = doctor_http_port(&mesh);
    assert_eq!(http["ok"], true, "{http}");
    assert!(http["detail"].as_str().unwrap().contains("this environment's ingress gateway (pid"), "{http}");
    mesh.ok(&["down"]);
    let port: u16 = http["check"].as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let http = doctor_http_port(&mesh);
    assert_eq!(http["ok"], false, "{http}");
    let detail = http["detail"].as_str().unwrap();
    assert!(detail.contains("another program") && detail.contains(&format!("(pid {})", std::process::id())), "{http}");
    drop(squatter);

    // Two `up`s at once in a fresh environment: both succeed, one control plane.
    let fresh = Mesh {
        state: tempfile::tempdir().unwrap(),
        work: tempfile::tempdir().unwrap(),
        up_output: String::new(),
        netns: None,
    };
    let args = [vec!["up".to_string()], crate::support::port_args(), vec!["--apps".into(), "none".into()]].concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = fresh.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let b = fresh.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "both ups succeed:\n{}\n---\n{}", text(&a), text(&b));
    let cps = crate::support::env_processes(fresh.state.path()).iter().filter(|p| p.contains(" control-plane")).count();
    assert_eq!(cps, 1, "{:?}", crate::support::env_processes(fresh.state.path()));
}
