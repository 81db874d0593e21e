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
