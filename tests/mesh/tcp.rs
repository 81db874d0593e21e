//! TCP routes: Istio's TCP traffic shifting task through the gateway's TCP listener (port
//! 31400), the tcp-echo sample behind sidecars, connections split by weight.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::{sum, Mesh};

const ECHO: &str = "apiVersion: v1
kind: Service
metadata: {name: tcp-echo, labels: {app: tcp-echo}}
spec:
  ports: [{name: tcp, port: 9000}, {name: tcp-other, port: 9001}]
  selector: {app: tcp-echo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo-v1}
spec:
  selector: {matchLabels: {app: tcp-echo, version: v1}}
  template:
    metadata: {labels: {app: tcp-echo, version: v1}}
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.3
        args: ['9000,9001,9002', one]
        ports: [{containerPort: 9000}, {containerPort: 9001}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo-v2}
spec:
  selector: {matchLabels: {app: tcp-echo, version: v2}}
  template:
    metadata: {labels: {app: tcp-echo, version: v2}}
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.3
        args: ['9000,9001,9002', two]
        ports: [{containerPort: 9000}, {containerPort: 9001}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

fn routes(v1: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo}}
spec:
  hosts: ['*']
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}, weight: {}}}
",
        100 - v1
    )
}

/// One connection: a line out, the echoed line back.
fn echo(addr: SocketAddr, line: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("the gateway accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut back = String::new();
    BufReader::new(s).read_line(&mut back).unwrap();
    back
}

fn apply(mesh: &Mesh, name: &str, yaml: &str) -> String {
    mesh.apply_yaml(name, yaml)
}

#[test]
fn tcp_routes_through_the_gateway_split_connections_by_weight() {
    let mesh = Mesh::up();
    apply(&mesh, "echo.yaml", ECHO);
    let out = apply(&mesh, "routes.yaml", &routes(100));
    assert!(!out.contains("spec.tcp"), "gateway tcp routes are enforced:\n{out}");
    let gateway: SocketAddr = mesh.status()["gateway"]["tcp"].as_str().unwrap().parse().unwrap();
    for _ in 0..10 {
        assert_eq!(echo(gateway, "hello"), "one hello\n", "all connections to v1");
    }
    // Istio's TCP metrics, from the gateway (source) and tcp-echo's sidecar (destination): a
    // connection is counted closed, with its bytes, once either side has ended it.
    let (gateway_admin, echo_admin) =
        (mesh.admin_in("istio-system", "istio-ingressgateway"), mesh.admin("tcp-echo-v1"));
    let v1 =
        ["destination_workload=\"tcp-echo-v1\"", "destination_service_name=\"tcp-echo\"", "request_protocol=\"tcp\""];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sum(gateway_admin, "istio_tcp_connections_closed_total", &v1) < 10.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (admin, reporter) in [(gateway_admin, "reporter=\"source\""), (echo_admin, "reporter=\"destination\"")] {
        let want: Vec<&str> = v1.iter().copied().chain([reporter]).collect();
        assert_eq!(sum(admin, "istio_tcp_connections_opened_total", &want), 10.0, "{reporter}");
        if reporter.contains("source") {
            assert_eq!(sum(admin, "istio_tcp_connections_closed_total", &want), 10.0);
            assert_eq!(sum(admin, "istio_tcp_received_bytes_total", &want), 60.0, "10 x `hello\\n`");
            assert_eq!(sum(admin, "istio_tcp_sent_bytes_total", &want), 100.0, "10 x `one hello\\n`");
        }
    }

    // A Telemetry's labels on TCP metrics read the connection: its port on each side, and
    // whether it came in over mutual TLS (the gateway's client does not; its hop to tcp-echo does).
    apply(
        &mesh,
        "tcp-labels.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: TCP_OPENED_CONNECTIONS}
      tagOverrides:
        destination_port: {value: string(destination.port)}
        mtls: {value: string(connection.mtls)}
",
    );
    assert_eq!(echo(gateway, "labels"), "one labels\n");
    let labelled = |admin, want: &[&str]| {
        let want: Vec<&str> = v1.iter().chain(want).copied().collect();
        crate::support::within(Duration::from_secs(10), Duration::from_millis(50), "the labelled connection", || {
            let n = sum(admin, "istio_tcp_connections_opened_total", &want);
            (n == 1.0)
                .then_some(())
                .ok_or_else(|| format!("{:#?}", crate::support::series(admin, "istio_tcp_connections_opened_total")))
        })
    };
    labelled(gateway_admin, &["reporter=\"source\"", "destination_port=\"31400\"", "mtls=\"false\""]);
    labelled(echo_admin, &["reporter=\"destination\"", "destination_port=\"9000\"", "mtls=\"true\""]);

    apply(&mesh, "routes.yaml", &routes(80));
    let n = 50;
    let v1 = (0..n).filter(|_| echo(gateway, "world") == "one world\n").count();
    // 80% of 50 is 40 (sd 2.8): 4 sd either way, and v2 seen at least once.
    assert!((29..n).contains(&v1), "{v1} of {n} connections went to v1 with weights 80/20");
}

/// One tunnel through a sidecar's outbound listener, as a local app opens it: CONNECT, then a
/// line out and the echoed line back.
fn tunnel(outbound: SocketAddr, target: &str, line: &str) -> String {
    let mut s = TcpStream::connect_timeout(&outbound, Duration::from_secs(5)).expect("the sidecar accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    if !status.starts_with("HTTP/1.1 200") {
        return status;
    }
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    reader.get_mut().write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut back = String::new();
    reader.read_line(&mut back).unwrap();
    back
}

#[test]
fn a_sidecar_tunnels_tcp_by_the_meshs_tcp_rules() {
    let mesh = Mesh::up();
    apply(&mesh, "echo.yaml", ECHO);
    let status = mesh.status();
    let curl = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "curl").unwrap();
    let outbound: SocketAddr = curl["proxy_addrs"]["outbound"].as_str().unwrap().parse().unwrap();
    // Without rules, the service's endpoints share the connections.
    let seen: std::collections::BTreeSet<String> = (0..30).map(|_| tunnel(outbound, "tcp-echo:9000", "hi")).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["one hi\n", "two hi\n"]);

    apply(
        &mesh,
        "mesh.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo-mesh}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
",
    );
    for _ in 0..10 {
        assert_eq!(tunnel(outbound, "tcp-echo.default.svc.cluster.local:9000", "hi"), "two hi\n");
    }
    assert!(tunnel(outbound, "tcp-echo:9001", "hi").ends_with("hi\n"), "another TCP port, default route");
}
