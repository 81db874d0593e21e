//! Egress: `meshConfig.outboundTrafficPolicy` (ALLOW_ANY passes unknown hosts through,
//! REGISTRY_ONLY answers them 502) and ServiceEntry adding hosts to the registry.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;

use crate::support::Mesh;

/// A server outside the mesh on loopback: answers every request `200 external`.
fn external_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                // One request per connection: read the head, answer, close.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nexternal");
            });
        }
    });
    addr
}

fn mesh_config(mesh: &Mesh, mode: &str) {
    let file = mesh.work.path().join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: {mode}
"
        ),
    )
    .unwrap();
    mesh.ok(&["apply", "-f", file.to_str().unwrap(), "--wait"]);
}

#[test]
fn registry_only_answers_unknown_hosts_502_and_allow_any_passes_them_through() {
    let mesh = Mesh::up();
    let external = format!("http://{}/", external_server());
    assert_eq!(mesh.http_code("curl", "default", &external), "200", "ALLOW_ANY is Istio's default");

    mesh_config(&mesh, "REGISTRY_ONLY");
    assert_eq!(mesh.http_code("curl", "default", &external), "502", "an unknown host is black-holed");
    assert_eq!(
        mesh.http_code("curl", "default", "http://httpbin:8000/status/200"),
        "200",
        "a Service is in the registry"
    );

    mesh_config(&mesh, "ALLOW_ANY");
    assert_eq!(mesh.http_code("curl", "default", &external), "200");

    // A typo in the mode is refused with the field and what is allowed; nothing changes.
    let file = mesh.work.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n\
         data:\n  mesh: |-\n    outboundTrafficPolicy:\n      mode: REGISTRY\n",
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", file.to_str().unwrap()]);
    let text = crate::support::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("outboundTrafficPolicy.mode") && text.contains("REGISTRY_ONLY"), "{text}");
    assert_eq!(mesh.http_code("curl", "default", &external), "200");
}

#[test]
fn a_service_entry_adds_a_host_that_routes_like_a_service_under_registry_only() {
    let mesh = Mesh::up();
    let external = external_server();
    mesh_config(&mesh, "REGISTRY_ONLY");
    let rules = mesh.work.path().join("entries.yaml");
    std::fs::write(
        &rules,
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external-static}}
spec:
  hosts: [external.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external-none}}
spec:
  hosts: [localhost]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: external}}
spec:
  hosts: [external.example.com]
  http:
  - match: [{{uri: {{prefix: /blocked}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: external.example.com}}}}]
  - route: [{{destination: {{host: external.example.com}}}}]
",
            port = external.port()
        ),
    )
    .unwrap();
    let out = mesh.ok(&["apply", "-f", rules.to_str().unwrap(), "--wait"]);
    assert!(!out.contains("not enforced"), "every field used here is enforced:\n{out}");
    assert_eq!(mesh.http_code("curl", "default", "http://external.example.com/"), "200", "STATIC endpoints");
    assert_eq!(
        mesh.http_code("curl", "default", "http://external.example.com/blocked"),
        "418",
        "a VirtualService applies"
    );
    let none = format!("http://localhost:{}/", external.port());
    assert_eq!(mesh.http_code("curl", "default", &none), "200", "resolution NONE goes where the client asked");
    // The same address under a name the registry does not have is still black-holed.
    let raw = format!("http://127.0.0.1:{}/", external.port());
    assert_eq!(mesh.http_code("curl", "default", &raw), "502");
    let clusters = mesh.ok(&["proxy-config", "clusters", "curl"]);
    let row = clusters.lines().find(|l| l.starts_with("external.example.com")).unwrap_or_else(|| panic!("{clusters}"));
    assert!(row.contains("STATIC") && row.contains("OUTBOUND"), "{row}");
}
