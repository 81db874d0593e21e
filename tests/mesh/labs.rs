//! Lab 01 end to end, the way a learner and an instructor use it.

use std::path::{Path, PathBuf};

use crate::support::{get, text, Mesh};

fn lab01(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/01-ingress-gateway").join(rel)
}

/// `lab check -o json` as data; the exit code is returned beside.
fn check_json(mesh: &Mesh, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["lab", "check", "-o", "json"];
    all.extend_from_slice(args);
    let out = mesh.run(&all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("lab check -o json: {e}\n{}", text(&out)));
    (out.status.code(), v)
}

fn outcome<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id} in {v}"))
}

#[test]
fn lab01_fails_on_starting_files_passes_with_solution_and_down_leaves_nothing() {
    let mesh = Mesh::up();
    assert!(mesh.up_output.contains("meshrig is up"), "{}", mesh.up_output);

    // The learner's path: start, apply the starting files, check (fails), apply the solution, check (passes).
    mesh.ok(&["lab", "start", "1"]);
    let dir = mesh.work.path().join("meshrig-labs/01-ingress-gateway");
    let start = dir.join("gateway.yaml");
    assert!(start.is_file(), "lab start writes the starting files");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("http://{}/status/200", mesh.gateway())),
        "the README names this environment's gateway address:\n{readme}"
    );
    mesh.ok(&["apply", "-f", start.to_str().unwrap()]);
    let failed = mesh.run(&["lab", "check", "--wait", "2"]);
    assert_eq!(failed.status.code(), Some(1), "starting files must fail:\n{}", text(&failed));
    let out = text(&failed);
    assert!(out.contains("× GET /status/200 for httpbin.example.com answers 200"), "{out}");
    assert!(out.contains("saw      status 404, empty body from GET"), "the failure says what it saw:\n{out}");
    assert!(out.contains("mesh     "), "the failure gives the gateway's reason:\n{out}");
    assert!(out.contains("hint     The gateway has no route for httpbin.example.com"), "the 404 hint:\n{out}");
    assert!(
        out.contains("· GET /headers") && out.contains("not judged yet"),
        "checks that need status-200 wait:\n{out}"
    );
    assert!(
        out.contains("Lab 01: 1 of 4 checks failed, 3 not judged"),
        "the counts add up: one failed, three wait for it:\n{out}"
    );

    mesh.ok(&["apply", "-f", lab01("solution/gateway.yaml").to_str().unwrap()]);
    let passed = mesh.ok(&["lab", "check", "1"]);
    assert!(passed.contains("Lab 01: 4 checks passed"), "{passed}");
    assert!(passed.contains("Next: `meshrig lab next` starts lab 02"), "a passed lab says what to run next:\n{passed}");
    let gw = mesh.gateway();
    assert_eq!(get(gw, "httpbin.example.com", "/status/418").unwrap().status, 418);
    assert_eq!(get(gw, "httpbin.example.com", "/get").unwrap().status, 404);
    assert!(mesh.ok(&["lab", "list"]).contains("√ 01"));

    let addrs = mesh.listening_addrs();
    assert!(crate::support::ours_listening(mesh.gateway(), mesh.state.path()), "the check below can see our listeners");
    let pids = mesh.pids();
    assert!(pids.len() >= 5, "control plane, three proxies and httpbin: {pids:?}");
    mesh.ok(&["down"]);
    let left = crate::support::env_processes(mesh.state.path());
    assert!(left.is_empty(), "processes left after down: {left:?}");
    for a in addrs {
        assert!(!crate::support::ours_listening(a, mesh.state.path()), "{a} still listens after down");
    }
    for p in pids {
        assert!(!crate::support::alive(p), "process {p} still runs after down");
    }
    // And up works again, with the learner's applied config restored.
    mesh.ok(&["up"]);
    assert_eq!(get(mesh.gateway(), "httpbin.example.com", "/status/200").unwrap().status, 200);
}

/// Every file under `dir`, with its bytes (for "left as it was").
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.starts_with(dir.join("logs")) {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn lab_verify_runs_in_scratch_environments_and_leaves_the_learners_as_it_was() {
    let mesh = Mesh::up();
    // A learner mid-lab: started, edited files, something of their own applied.
    mesh.ok(&["lab", "start", "1"]);
    let start = mesh.work.path().join("meshrig-labs/01-ingress-gateway/gateway.yaml");
    let edited = std::fs::read_to_string(&start).unwrap().replace("- route:", "- name: mine\n    route:");
    std::fs::write(&start, &edited).unwrap();
    mesh.ok(&["apply", "-f", start.to_str().unwrap()]);
    let before_state = files(mesh.state.path());
    let before_work = files(mesh.work.path());
    let before_pids = mesh.pids();

    let scratch_tmp = tempfile::tempdir().unwrap();
    let junit = mesh.work.path().join("junit.xml");
    let mut args = vec!["lab", "verify", "--junit", junit.to_str().unwrap(), "-o", "json"];
    // Labs that need Prometheus run when CI names it (MESHRIG_PROMETHEUS); plain `cargo test`
    // needs nothing outside the repository, so it names the other labs.
    let labs_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let mut without_prometheus: Vec<String> = std::fs::read_dir(&labs_dir)
        .unwrap()
        .flatten()
        .filter(|d| !std::fs::read_to_string(d.path().join("lab.yaml")).unwrap().contains("addons: [prometheus]"))
        .map(|d| d.file_name().to_string_lossy()[..2].to_string())
        .collect();
    without_prometheus.sort();
    if crate::support::tool("MESHRIG_PROMETHEUS", "verifying the labs that need Prometheus").is_none() {
        args.extend(without_prometheus.iter().map(String::as_str));
    }
    let out = mesh.cmd(&args).env("TMPDIR", scratch_tmp.path()).output().unwrap();
    assert!(out.status.success(), "lab verify:\n{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], v["total"], "{v}");
    let lab = &v["labs"][0];
    assert_eq!(lab["lab"], "01");
    assert!(lab["start"].as_array().unwrap().iter().all(|o| o["passed"] == false), "{lab}");
    assert!(lab["solution"].as_array().unwrap().iter().all(|o| o["passed"] == true), "{lab}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testsuite name=\"lab 01 Ingress gateway\" tests=\"8\" failures=\"0\""), "{xml}");

    // The learner's environment is as it was: state files byte for byte, lab files, processes.
    let after_work: Vec<_> = files(mesh.work.path()).into_iter().filter(|(p, _)| p != &junit).collect();
    assert_eq!(files(mesh.state.path()), before_state, "the learner's state dir changed");
    assert_eq!(after_work, before_work, "the learner's lab files changed");
    assert_eq!(mesh.pids(), before_pids, "the learner's processes changed");
    let (_, v) = check_json(&mesh, &["--wait", "1"]);
    assert_eq!(outcome(&v, "status-200")["passed"], false, "the learner's own (unbound) config is still in force");
    // And the scratch environments are gone.
    let left: Vec<_> = std::fs::read_dir(scratch_tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch environments left behind: {left:?}");
}

#[test]
fn lab01_classic_mistakes_get_their_own_hint_and_the_meshs_reason_and_reset_restore_and_hints_work() {
    let mesh = Mesh::up();
    // Something another lab (or the learner) left in another namespace: lab 01 owns Gateways.
    let leftover = mesh.work.path().join("leftover.yaml");
    std::fs::write(
        &leftover,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: catch-all, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n",
    )
    .unwrap();
    mesh.ok(&["apply", "-f", leftover.to_str().unwrap()]);
    let started = mesh.ok(&["lab", "start", "1"]);
    assert!(
        started.contains("removed 1 resource(s)") && started.contains("Gateway istio-system/catch-all"),
        "{started}"
    );
    assert!(started.contains("`meshrig lab restore`"), "{started}");
    assert!(mesh.ok(&["get", "gateways", "-A"]).contains("No resources found"), "the leftover is gone");

    let solution = std::fs::read_to_string(lab01("solution/gateway.yaml")).unwrap();
    let dir = mesh.work.path().join("meshrig-labs/01-ingress-gateway");
    let mistake = |name: &str, from: &str, to: &str| -> (Option<i32>, serde_json::Value) {
        assert!(solution.contains(from), "the solution has {from:?}");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, solution.replace(from, to)).unwrap();
        mesh.ok(&["apply", "-f", path.to_str().unwrap()]);
        check_json(&mesh, &["--wait", "1"])
    };

    // 1. The VirtualService does not name the gateway.
    let (code, v) = mistake("no-gateways", "  gateways:\n  - httpbin-gateway\n", "");
    assert_eq!(code, Some(1));
    let o = outcome(&v, "status-200");
    assert_eq!(o["passed"], false, "{v}");
    assert!(o["hint"].as_str().unwrap().contains("gateways: [httpbin-gateway]"), "{o}");
    let reason = o["mesh_reason"].as_str().unwrap_or_else(|| panic!("no mesh reason: {o}"));
    assert!(reason.contains("has no routes") && reason.contains("[response flags NR]"), "{reason}");

    // 2. The destination host is wrong.
    let (_, v) = mistake("wrong-host", "host: httpbin\n", "host: httpbinn\n");
    let o = outcome(&v, "status-200");
    assert!(o["saw"].as_str().unwrap().starts_with("status 503"), "{o}");
    assert!(o["hint"].as_str().unwrap().contains("`destination.host` must name"), "{o}");
    let reason = o["mesh_reason"].as_str().unwrap_or_else(|| panic!("no mesh reason: {o}"));
    assert!(reason.contains("does not exist") && reason.contains("NC"), "{reason}");
    let analysis = v["analysis"].as_array().unwrap_or_else(|| panic!("no analysis: {v}"));
    assert!(
        analysis.iter().any(|l| l.as_str().unwrap().ends_with("Referenced host not found: \"httpbinn\"")),
        "the analyzer explains the failure too: {v}"
    );

    // 3. A catch-all host lets every host in.
    let catch_all = solution.replace("- httpbin.example.com", "- \"*\"");
    let path = dir.join("catch-all.yaml");
    std::fs::write(&path, catch_all).unwrap();
    mesh.ok(&["apply", "-f", path.to_str().unwrap()]);
    let (_, v) = check_json(&mesh, &["--wait", "1"]);
    assert_eq!(outcome(&v, "status-200")["passed"], true, "{v}");
    let o = outcome(&v, "other-host-404");
    assert_eq!(o["passed"], false, "{v}");
    assert!(o["hint"].as_str().unwrap().contains("catches every host"), "{o}");
    let reason = o["mesh_reason"].as_str().unwrap_or_else(|| panic!("no mesh reason: {o}"));
    assert!(reason.contains("route default/") && reason.contains("the app answered 200"), "{reason}");

    // Hints come one at a time; --all gives them all.
    let h1 = mesh.ok(&["lab", "hint"]);
    assert!(h1.contains("hint 1 of 3") && !h1.contains("hint 2 of 3"), "{h1}");
    let h2 = mesh.ok(&["lab", "hint"]);
    assert!(h2.contains("hint 2 of 3") && !h2.contains("hint 1 of 3"), "{h2}");
    let all = mesh.ok(&["lab", "hint", "--all"]);
    assert!(all.contains("hint 1 of 3") && all.contains("hint 3 of 3"), "{all}");

    // Reset: the mesh back at the baseline (saying what it removed), the edited file kept aside.
    let start = dir.join("gateway.yaml");
    std::fs::write(&start, "# my edits\n").unwrap();
    let reset = mesh.ok(&["lab", "reset"]);
    assert!(reset.contains("Gateway default/httpbin-gateway"), "{reset}");
    assert!(reset.contains("is kept as"), "{reset}");
    assert_eq!(std::fs::read_to_string(&start).unwrap(), std::fs::read_to_string(lab01("gateway.yaml")).unwrap());
    let backup = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("gateway.yaml.bak-"))
        .expect("a backup of the edited file");
    assert_eq!(std::fs::read_to_string(backup.path()).unwrap(), "# my edits\n");
    assert_eq!(
        get(mesh.gateway(), "httpbin.example.com", "/status/200").map(|r| r.status).unwrap_or(0),
        0,
        "nothing listens on the gateway's port 80 after the reset"
    );

    // Restore brings back what the reset removed (the newest saved set).
    mesh.ok(&["lab", "restore"]);
    assert_eq!(get(mesh.gateway(), "other.example.com", "/status/200").unwrap().status, 200, "the catch-all is back");
}

#[test]
fn lab03_is_judged_step_by_step_by_counting_pages() {
    let mesh = Mesh::up();
    mesh.ok(&["lab", "start", "3"]);
    let lab03 = |rel: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/03-traffic-shifting").join(rel);
    // On the starting file (all v1), step 1 fails and says what it counted.
    let (code, v) = check_json(&mesh, &["--wait", "1"]);
    assert_eq!((code, v["step"].as_u64()), (Some(1), Some(1)), "{v}");
    let saw = outcome(&v, "v3-20")["saw"].as_str().unwrap().to_string();
    assert!(saw.starts_with("0 of 300 answers (0%)") && saw.contains("would pass"), "{saw}");

    // The canary passes step 1 and moves the learner to step 2.
    mesh.ok(&["apply", "-f", lab03("solution/80-20.yaml").to_str().unwrap()]);
    let (code, v) = check_json(&mesh, &[]);
    assert_eq!((code, v["stepPassed"].as_bool(), v["passed"].as_bool()), (Some(0), Some(true), Some(false)), "{v}");
    // Step 2 now: the 80/20 split is not half and half.
    let (code, v) = check_json(&mesh, &["--wait", "1"]);
    assert_eq!((code, v["step"].as_u64()), (Some(1), Some(2)), "{v}");
    mesh.ok(&["apply", "-f", lab03("solution/50-50.yaml").to_str().unwrap()]);
    assert_eq!(check_json(&mesh, &[]).0, Some(0));
    mesh.ok(&["apply", "-f", lab03("solution/v3.yaml").to_str().unwrap()]);
    let (code, v) = check_json(&mesh, &[]);
    assert_eq!((code, v["passed"].as_bool()), (Some(0), Some(true)), "the last step passes the lab: {v}");
    assert!(mesh.ok(&["lab", "list"]).contains("√ 03"));
    // An earlier step can be checked again on demand.
    assert_eq!(check_json(&mesh, &["--step", "1", "--wait", "1"]).0, Some(1), "all-v3 is no 20% canary");
}
