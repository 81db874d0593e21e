//! Transparent capture, for real: a pod's network namespace made by the test, its redirect
//! installed by `meshrig capture-init` as the injected `istio-init` does (istio-iptables'
//! chains as nf_tables rules: inbound to 15006, outbound to 15001, the proxy's own uid 1337
//! left alone), a sidecar started with `--capture` as uid 1337, and clients that know nothing
//! of the proxy. Needs root, `ip netns`, `setpriv` and `curl`; without them it is skipped with
//! the reason, except under CI, where it fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{text, within, Mesh};

/// The namespaces and veth the test made; removed when dropped (their processes are killed).
struct Net {
    pod: String,
    peer: String,
    children: Vec<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(text(&out))
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), text(&out)))
    }
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref().ok() != Some("0") {
        return Some("not root: network namespaces and netfilter rules need it".into());
    }
    for tool in ["ip", "setpriv", "curl"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed (.ci/run installs it)"));
        }
    }
    None
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(tool)).find(|p| p.exists())
}

/// The pod's redirect, installed by `meshrig capture-init` (what the injected `istio-init`
/// runs) in the namespace `ns`: nf_tables rules over netlink, no iptables binary.
fn capture_init(ns: &str) -> Result<(), String> {
    sh(&["ip", "netns", "exec", ns, env!("CARGO_BIN_EXE_meshrig"), "capture-init", "--proxy-uid", "1337"]).map(|_| ())
}

/// Two namespaces joined by a veth: the pod (10.77.0.2, Istio's rules, a route to the
/// Services' cluster IPs 10.96.0.0/16) and a peer outside the mesh (10.77.0.1).
fn make_net() -> Result<Net, String> {
    let tag = format!("{}", std::process::id() % 100_000);
    let net = Net { pod: format!("mr-pod-{tag}"), peer: format!("mr-peer-{tag}"), children: vec![] };
    let (vp, vq) = (format!("mrp{tag}"), format!("mrq{tag}"));
    sh(&["ip", "netns", "add", &net.pod])?;
    sh(&["ip", "netns", "add", &net.peer])?;
    sh(&["ip", "link", "add", &vp, "type", "veth", "peer", "name", &vq])?;
    sh(&["ip", "link", "set", &vp, "netns", &net.pod])?;
    sh(&["ip", "link", "set", &vq, "netns", &net.peer])?;
    for (ns, dev, addr) in [(&net.pod, &vp, "10.77.0.2/24"), (&net.peer, &vq, "10.77.0.1/24")] {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    sh(&["ip", "-n", &net.pod, "route", "add", "10.96.0.0/16", "dev", &vp])?;
    capture_init(&net.pod)?;
    Ok(net)
}

/// Starts `cmd` and waits (at most 30 s) for its readiness line on stdout (`READY {...}`).
fn start_ready(mut cmd: Command, what: &str, log: &std::path::Path) -> Child {
    cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(log).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    crate::support::ready_line(&mut child, what, || std::fs::read_to_string(log).unwrap_or_default());
    child
}

/// `curl` run in namespace `ns`: the status code and body.
fn curl_in(ns: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = Command::new(all[0]).args(&all[1..]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn a_captured_sidecar_routes_by_original_destination_in_a_network_namespace() {
    if let Some(why) = cannot_run() {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
            panic!("the capture test cannot run under CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let mut net = make_net().expect("the test's network namespaces");
    eprintln!("capture: namespaces {} and {} made", net.pod, net.peer);
    let bin = env!("CARGO_BIN_EXE_meshrig");
    let logs = tempfile::tempdir().unwrap();

    // The mesh runs inside the pod's namespace (on its loopback, which the rules leave alone).
    let mesh = Mesh::up_in(Some(&net.pod), &[]);
    mesh.apply_yaml(
        "deny-status.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-status\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/status/*\"]\n",
    );
    // tcp-echo with a cluster IP, as Kubernetes gives every Service one.
    mesh.apply_yaml(
        "tcp-echo.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: tcp, port: 9000}]
  selector: {app: tcp-echo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  template:
    metadata: {labels: {app: tcp-echo}}
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.3
        args: ['9000', one]
        ports: [{containerPort: 9000}]
",
    );
    let pod = mesh.pod("httpbin");
    let cp = std::fs::read_to_string(mesh.state.path().join("control-plane.json")).expect("control-plane.json");
    let cp: serde_json::Value = serde_json::from_str(&cp).unwrap();
    let cp = cp["address"].as_str().expect("address").to_string();
    let token = std::fs::read_to_string(mesh.state.path().join("token")).expect("the environment's token");

    // httpbin's sidecar again, captured: on Istio's ports, as uid 1337, fed by the same control
    // plane. Its state directory is its own (uid 1337 cannot read the environment's).
    let proxy_state = tempfile::tempdir().unwrap();
    sh(&["chown", "1337:1337", proxy_state.path().to_str().unwrap()]).unwrap();
    let mut proxy = Command::new("ip");
    proxy.args(["netns", "exec", &net.pod, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", bin]);
    proxy.args(["--state-dir", proxy_state.path().to_str().unwrap(), "proxy", "--role", "sidecar"]);
    proxy.args(["--namespace", "default", "--pod", &pod, "--inbound-port", "8080", "--control-plane", &cp]);
    proxy.arg("--capture").env("MESHRIG_PROXY_TOKEN", token.trim());
    let proxy_log = logs.path().join("captured-proxy.log");
    net.children.push(start_ready(proxy, "the captured sidecar", &proxy_log));
    within(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the captured sidecar has its config",
        || match curl_in(&net.pod, &["http://127.0.0.1:15000/ready"]) {
            (200, _) => Ok(()),
            seen => Err(format!("{seen:?}\n{}", std::fs::read_to_string(&proxy_log).unwrap_or_default())),
        },
    );
    // A server of the pod's that no Service names, on every address (port 7070), and one outside
    // the mesh, in the peer namespace (10.77.0.1:9000).
    let mut app = Command::new("ip");
    app.args([
        "netns",
        "exec",
        &net.pod,
        bin,
        "app",
        "httpbin",
        "--container-port",
        "7070",
        "--listen",
        "0.0.0.0:7070",
    ]);
    net.children.push(start_ready(app, "the pod's unnamed server", &logs.path().join("unnamed.log")));
    let mut outside = Command::new("ip");
    outside.args(["netns", "exec", &net.peer, bin, "app", "httpbin", "--container-port", "9000"]);
    outside.args(["--listen", "10.77.0.1:9000"]);
    net.children.push(start_ready(outside, "the server outside the mesh", &logs.path().join("outside.log")));

    // Inbound, by the port the client dialled: the pod's address, port 8080, goes to 15006 and
    // through httpbin's inbound config (its AuthorizationPolicy applies), then to the app.
    let (code, body) = curl_in(&net.peer, &["http://10.77.0.2:8080/get"]);
    assert_eq!(code, 200, "inbound to the pod's port 8080: {body}");
    let (code, body) = curl_in(&net.peer, &["http://10.77.0.2:8080/status/200"]);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"), "httpbin's policy, inbound");
    // A port no Service names passes through to the app on localhost (InboundPassthroughCluster).
    let (code, body) = curl_in(&net.peer, &["http://10.77.0.2:7070/get"]);
    assert_eq!(code, 200, "inbound passthrough to port 7070: {body}");

    // Outbound, by original destination: a Service's cluster IP and port, its host in Host (no
    // port there: the listener is chosen by the port dialled, 8000, as Envoy's is).
    let (code, body) =
        curl_in(&net.pod, &["-H", "Host: httpbin.default.svc.cluster.local", "http://10.96.0.10:8000/headers"]);
    assert_eq!(code, 200, "outbound to httpbin's cluster IP: {body}");
    assert!(body.contains("X-Forwarded-Client-Cert"), "it went over the mesh's mTLS to httpbin: {body}");
    // A host the mesh does not know goes where the app dialled (the name resolves nowhere).
    let (code, body) = curl_in(&net.pod, &["-H", "Host: nowhere.invalid", "http://10.77.0.1:9000/get"]);
    assert_eq!(code, 200, "outbound passthrough to the original destination: {body}");

    // Raw TCP to a Service's cluster IP and TCP port: relayed by the mesh to tcp-echo.
    let echo = Command::new("ip")
        .args(["netns", "exec", &net.pod, "timeout", "5", "bash", "-c"])
        .arg("exec 3<>/dev/tcp/10.96.0.20/9000; echo world >&3; read -r line <&3; echo \"$line\"")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&echo.stdout).trim(), "one world", "tcp-echo by cluster IP: {}", text(&echo));

    // The captured proxy counted what it handled: inbound to httpbin, and the passthrough.
    let (_, stats) = curl_in(&net.pod, &["http://127.0.0.1:15090/stats/prometheus"]);
    let count = |needle: &[&str]| {
        stats.lines().filter(|l| l.starts_with("istio_requests_total") && needle.iter().all(|n| l.contains(n))).count()
    };
    assert!(count(&["reporter=\"destination\"", "response_code=\"403\""]) > 0, "{stats}");
    assert!(count(&["reporter=\"source\"", "destination_service_name=\"httpbin\""]) > 0, "{stats}");
    assert!(count(&["PassthroughCluster"]) > 0, "{stats}");
    let tcp = stats.lines().filter(|l| {
        l.starts_with("istio_tcp_connections_opened_total")
            && l.contains("reporter=\"source\"")
            && l.contains("destination_service_name=\"tcp-echo\"")
    });
    assert!(tcp.count() > 0, "{stats}");
    eprintln!("capture: every check passed");
    drop(mesh);
}
