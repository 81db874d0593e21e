//! Draining: a proxy told to stop (SIGTERM, as Kubernetes does on every rollout) finishes what
//! is in flight before it exits.

use std::time::Duration;

use crate::support::{get, sample, within, Mesh};

#[test]
fn a_request_in_flight_through_the_gateway_completes_when_the_gateway_gets_sigterm() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "--wait", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap()]);
    let gw = mesh.gateway();
    assert_eq!(get(gw, "httpbin.example.com", "/status/200").unwrap().status, 200);
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "istio-ingressgateway").unwrap();
    let pid = pod["pids"][0].as_u64().unwrap() as i32;
    let admin = mesh.admin("istio-ingressgateway");

    // A slow request, in flight: the gateway's upstream to httpbin shows it active.
    let slow = std::thread::spawn(move || get(gw, "httpbin.example.com", "/delay/2"));
    within(Duration::from_secs(10), Duration::from_millis(20), "the request in flight at the gateway", || {
        let clusters = get(admin, "localhost", "/clusters").map(|r| r.body).unwrap_or_default();
        clusters.lines().any(|l| l.contains("httpbin") && l.ends_with("rq_active::1")).then_some(()).ok_or(clusters)
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let answer = slow.join().unwrap().expect("an answer, not a cut connection");
    assert_eq!(answer.status, 200, "the request in flight completes: {}", answer.body);
    // And the gateway then exits (the runner starts a new one).
    within(Duration::from_secs(10), Duration::from_millis(50), "the draining gateway exits", || {
        (!crate::support::alive(pid as u32)).then_some(()).ok_or(format!("pid {pid} still alive"))
    });
}

#[test]
fn a_request_in_flight_to_a_pod_being_deleted_is_answered() {
    let mesh = Mesh::up();
    let admin = mesh.admin("curl");
    let call = mesh.cmd(&[
        "exec",
        "curl",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://httpbin:8000/delay/2",
    ]);
    let slow = std::thread::spawn(move || {
        let mut call = call;
        call.output().unwrap()
    });
    within(Duration::from_secs(10), Duration::from_millis(20), "the call in flight at curl's sidecar", || {
        let clusters = get(admin, "localhost", "/clusters").map(|r| r.body).unwrap_or_default();
        clusters.lines().any(|l| l.contains("httpbin") && l.ends_with("rq_active::1")).then_some(()).ok_or(clusters)
    });
    // The pod is stopped as the kubelet does: its sidecar and httpbin both get SIGTERM and finish
    // what is in flight.
    mesh.ok(&["delete", "deployment", "httpbin"]);
    let out = slow.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", crate::support::text(&out));
}
