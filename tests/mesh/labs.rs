//! Lab 01 end to end, the way a learner and an instructor use it.

use crate::support::{get, text, Mesh};

#[test]
fn lab01_fails_on_starting_files_passes_with_solution_and_down_leaves_nothing() {
    let mesh = Mesh::up();
    assert!(mesh.up_output.contains("meshrig is up"), "{}", mesh.up_output);

    // The instructor's path: the whole course in one command (it leaves the lab's baseline).
    let verify = mesh.ok(&["lab", "verify"]);
    assert!(verify.contains("1 of 1 labs verified"), "{verify}");

    // The learner's path: start, apply the starting files, check (fails), apply the solution, check (passes).
    mesh.ok(&["lab", "start", "1"]);
    let start = mesh.work.path().join("meshrig-labs/01-ingress-gateway/gateway.yaml");
    assert!(start.is_file(), "lab start writes the starting files");
    mesh.ok(&["apply", "-f", start.to_str().unwrap()]);
    let failed = mesh.run(&["lab", "check", "--wait", "2"]);
    assert_eq!(failed.status.code(), Some(1), "starting files must fail:\n{}", text(&failed));
    let out = text(&failed);
    assert!(out.contains("× GET /status/200 for httpbin.example.com answers 200"), "{out}");
    assert!(out.contains("saw 404 from GET"), "the failure says what it saw:\n{out}");
    assert!(out.contains("hint:"), "{out}");

    let solution =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/01-ingress-gateway/solution/gateway.yaml");
    mesh.ok(&["apply", "-f", solution.to_str().unwrap()]);
    let passed = mesh.ok(&["lab", "check", "1"]);
    assert!(passed.contains("Lab 01: all 4 checks passed"), "{passed}");
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
