//! Gateway servers on ports other than 80/8080, 443/8443 and 31400: published on localhost,
//! shown by `apply` and `status`, and a warning when another program holds the address.

use std::net::{SocketAddr, TcpListener};

use crate::support::{get, Mesh};

fn gateway_on(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: extra-{port}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}
    hosts: [extra.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: extra-{port}}}
spec:
  hosts: [extra.example.com]
  gateways: [extra-{port}]
  http:
  - route:
    - destination: {{host: httpbin, port: {{number: 8000}}}}
"
    )
}

/// A port nothing listens on right now (≥ 1024, so it is published on the same number), from the
/// run's own range: one taken from `:0` could be a client's source port before the gateway binds it.
fn free_port() -> u16 {
    crate::support::ports()[0]
}

#[test]
fn a_gateway_server_on_another_port_is_published_shown_and_a_taken_one_is_a_warning() {
    let mesh = Mesh::up();
    let port = free_port();
    let out = mesh.apply_yaml("extra.yaml", &gateway_on(port));
    assert!(
        out.contains(&format!("the ingress gateway serves port {port} on http://127.0.0.1:{port}")),
        "apply says where the port went:\n{out}"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "extra.example.com", "/status/200").unwrap().status, 200);

    let status = mesh.status();
    let listening = status["gateway"]["listening"].as_array().unwrap();
    assert!(
        listening.iter().any(|l| l["port"] == port && l["address"] == format!("127.0.0.1:{port}")),
        "status lists the port: {listening:?}"
    );
    assert!(mesh.ok(&["status"]).contains(&format!("{port} → http://127.0.0.1:{port}")));

    // Another program holds the next one: apply says so, and what to do.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let file = mesh.work.path().join("taken.yaml");
    std::fs::write(&file, gateway_on(taken)).unwrap();
    let out = mesh.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("127.0.0.1:{taken} is in use by another program")) && out.contains("meshrig doctor"),
        "{out}"
    );
    // The first port keeps serving.
    assert_eq!(get(addr, "extra.example.com", "/status/200").unwrap().status, 200);
}
