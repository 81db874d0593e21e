//! up, status, down, and what survives a crash.

use crate::support::{get, text, Mesh};

#[test]
fn up_twice_is_harmless_and_status_reports_every_pod() {
    let mesh = Mesh::up();
    let again = mesh.ok(&["up"]);
    assert!(again.contains("control plane running"), "{again}");
    let status = mesh.status();
    let pods = status["pods"].as_array().unwrap();
    let names: Vec<&str> = pods.iter().map(|p| p["workload"].as_str().unwrap()).collect();
    for w in ["istio-ingressgateway", "httpbin", "curl"] {
        assert!(names.contains(&w), "{w} missing from {names:?}");
    }
    assert!(pods.iter().all(|p| p["ready"] == true), "{status}");
    // The control plane's API answers only with the environment's token.
    let api: std::net::SocketAddr = status["control_plane"]["address"].as_str().unwrap().parse().unwrap();
    let denied = get(api, "localhost", "/v1/status").unwrap();
    assert_eq!(denied.status, 401, "{}", denied.body);
    let mode = std::fs::metadata(mesh.state.path().join("token")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let doctor = mesh.run(&["doctor"]);
    assert!(text(&doctor).contains("state directory"), "{}", text(&doctor));
}

/// Lab 01's solution applied and served, then the control plane killed (`kill -9`); the
/// gateway's address.
fn serve_lab01_then_kill_the_control_plane(mesh: &Mesh) -> std::net::SocketAddr {
    let solution =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/01-ingress-gateway/solution/gateway.yaml");
    mesh.ok(&["apply", "--wait", "-f", solution.to_str().unwrap()]);
    let gateway = mesh.gateway();
    let cp = mesh.status()["control_plane"]["pid"].as_u64().unwrap();
    assert!(std::process::Command::new("kill").args(["-9", &cp.to_string()]).status().unwrap().success());
    gateway
}

#[test]
fn a_control_plane_crash_loses_no_applied_config() {
    let mesh = Mesh::up();
    let gateway = serve_lab01_then_kill_the_control_plane(&mesh);
    // The proxies keep serving their last config while the control plane is gone.
    assert_eq!(get(gateway, "httpbin.example.com", "/status/200").unwrap().status, 200);
    // `up` restarts it from the persisted store; routing still works afterwards.
    let up = mesh.ok(&["up"]);
    assert!(up.contains("control plane started"), "{up}");
    let vs = mesh.ok(&["get", "virtualservice", "httpbin", "-o", "yaml"]);
    assert!(vs.contains("prefix: /status"), "{vs}");
    assert_eq!(get(mesh.gateway(), "httpbin.example.com", "/delay/0").unwrap().status, 200);
    assert_eq!(get(mesh.gateway(), "httpbin.example.com", "/headers").unwrap().status, 404);
}

#[test]
fn a_control_plane_told_to_stop_exits_at_once_and_its_pods_keep_serving() {
    let mesh = Mesh::up();
    let solution =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/01-ingress-gateway/solution/gateway.yaml");
    mesh.ok(&["apply", "--wait", "-f", solution.to_str().unwrap()]);
    let gateway = mesh.gateway();
    let cp = mesh.status()["control_plane"]["pid"].as_u64().unwrap() as u32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(cp as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    // It handles the signal (its log says so) and exits; nothing has to kill it.
    crate::support::within(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(20),
        "the control plane exits on SIGTERM",
        || (!crate::support::alive(cp)).then_some(()).ok_or(format!("pid {cp} still alive")),
    );
    let log = std::fs::read_to_string(mesh.state.path().join("logs/control-plane.log")).unwrap_or_default();
    assert!(log.contains("stopping: the API no longer accepts"), "{log}");
    // The pods serve on; `up` takes them over with everything that was applied.
    assert_eq!(get(gateway, "httpbin.example.com", "/status/200").unwrap().status, 200);
    let up = mesh.ok(&["up"]);
    assert!(up.contains("control plane started"), "{up}");
    assert_eq!(get(mesh.gateway(), "httpbin.example.com", "/delay/0").unwrap().status, 200);
}

#[test]
fn a_gateway_that_cannot_bind_its_port_is_not_synced_and_binds_once_the_port_is_free() {
    let mesh = Mesh::up();
    let gw = mesh.gateway();
    // No Gateway server yet, so the port is free; another program takes it.
    let blocker = std::net::TcpListener::bind(gw).expect("the gateway port is free until a Gateway asks for it");
    let rules = mesh.work.path().join("gw.yaml");
    std::fs::write(
        &rules,
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gw}
spec:
  hosts: ['*']
  gateways: [gw]
  http: [{route: [{destination: {host: httpbin}}]}]
",
    )
    .unwrap();
    mesh.ok(&["apply", "-f", rules.to_str().unwrap()]);
    // Twice, over more than any fixed grace period: the gateway never claims the config it
    // cannot serve, however long it is left.
    for seconds in ["3", "4"] {
        let out = mesh.run(&["up", "--timeout", seconds]);
        assert!(!out.status.success(), "a gateway that cannot listen must not count as synced:\n{}", text(&out));
    }
    drop(blocker);
    mesh.ok(&["up", "--timeout", "30"]);
    assert_eq!(get(gw, "any.example", "/status/200").unwrap().status, 200);
}

#[test]
fn a_damaged_store_stops_up_before_it_touches_the_serving_mesh() {
    let mesh = Mesh::up();
    let gateway = serve_lab01_then_kill_the_control_plane(&mesh);
    let store = crate::support::find_file(mesh.state.path(), "store.json").expect("the store is on disk");
    std::fs::write(&store, "{\"resources\": [").unwrap();

    let out = mesh.run(&["up"]);
    let msg = crate::support::text(&out);
    assert_eq!(out.status.code(), Some(5), "{msg}");
    assert!(msg.contains("is damaged") && msg.contains(".damaged && meshrig up"), "says what to do:\n{msg}");
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "{\"resources\": [", "the damaged file is kept");
    assert_eq!(
        get(gateway, "httpbin.example.com", "/status/200").unwrap().status,
        200,
        "the pods that served still serve"
    );

    // Recovery as the message says.
    std::fs::rename(&store, store.with_extension("json.damaged")).unwrap();
    mesh.ok(&["up"]);
    assert!(mesh.status()["pods"].as_array().unwrap().iter().all(|p| p["ready"] == true));
    let log = crate::support::find_file(mesh.state.path(), "control-plane.log").unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("cannot record pids"), "the pid file is written without a race:\n{log}");
}

#[test]
fn one_control_plane_per_environment_and_a_hung_one_is_reported_not_waited_for() {
    let mesh = Mesh::up();
    let cp = mesh.status()["control_plane"]["pid"].as_u64().unwrap().to_string();
    let before = mesh.status()["pods"].as_array().unwrap().len();

    // Without the token file, `up` must not start a second control plane beside the first.
    let token = crate::support::find_file(mesh.state.path(), "token").unwrap();
    let saved = std::fs::read(&token).unwrap();
    std::fs::remove_file(&token).unwrap();
    let out = mesh.run(&["up"]);
    let msg = crate::support::text(&out);
    assert!(!out.status.success() && msg.contains("holds this environment") && msg.contains("meshrig down"), "{msg}");
    std::fs::write(&token, saved).unwrap();
    assert_eq!(mesh.status()["control_plane"]["pid"].as_u64().unwrap().to_string(), cp, "still the one");
    assert_eq!(mesh.status()["pods"].as_array().unwrap().len(), before, "no second set of pods");

    // A hung control plane: commands answer within their timeout and say what to do.
    assert!(std::process::Command::new("kill").args(["-STOP", &cp]).status().unwrap().success());
    let out = mesh.cmd(&["status", "-o", "json"]).env("MESHRIG_API_TIMEOUT_MS", "1000").output().unwrap();
    // Hung, with its files gone: `up` still does not start a second control plane.
    let saved = std::fs::read(&token).unwrap();
    for name in ["token", "control-plane.lock"] {
        if let Some(f) = crate::support::find_file(mesh.state.path(), name) {
            std::fs::remove_file(f).unwrap();
        }
    }
    let second = mesh.cmd(&["up"]).env("MESHRIG_API_TIMEOUT_MS", "1000").output().unwrap();
    std::fs::write(&token, saved).unwrap();
    let _ = std::process::Command::new("kill").args(["-CONT", &cp]).status();
    assert!(!second.status.success(), "{}", crate::support::text(&second));
    assert_eq!(out.status.code(), Some(5), "{}", crate::support::text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["running"].as_bool(), v["answering"].as_bool()), (Some(true), Some(false)));
    assert!(
        v["reason"].as_str().unwrap().contains("may be hung") && v["reason"].as_str().unwrap().contains("meshrig down"),
        "{v}"
    );
    mesh.ok(&["status"]);
    assert_eq!(mesh.status()["control_plane"]["pid"].as_u64().unwrap().to_string(), cp, "still the one");
}

#[test]
fn doctor_tells_a_dead_control_plane_apart_from_a_running_one() {
    let mesh = Mesh::up();
    let ok = mesh.run(&["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    let cp =
        |v: &serde_json::Value| v["checks"].as_array().unwrap().iter().find(|c| c["check"] == "control plane").cloned();
    assert_eq!(cp(&v).unwrap()["ok"], true, "{v}");
    let pid = mesh.status()["control_plane"]["pid"].as_u64().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    // SIGKILL is delivered at once, but the process (and its lock) goes a moment later.
    let (limit, every) = (std::time::Duration::from_secs(5), std::time::Duration::from_millis(20));
    crate::support::within(limit, every, "the control plane gone after SIGKILL", || {
        (!crate::support::alive(pid.parse().unwrap())).then_some(()).ok_or_else(|| format!("pid {pid} alive"))
    });
    let dead = mesh.run(&["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&dead.stdout).unwrap();
    let finding = cp(&v).unwrap();
    assert_eq!(finding["ok"], false, "{v}");
    assert!(finding["fix"].as_str().unwrap().contains("meshrig up"), "{finding}");
    assert_eq!(dead.status.code(), Some(1));
}
