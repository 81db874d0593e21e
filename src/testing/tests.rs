//! Push, routing and mTLS across a control plane and two sidecars in this process.

use super::*;

const HTTPBIN: &str = "
apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
";

/// An httpbin pod and a client pod, in a mesh that knows httpbin's Service.
async fn two_pods(dir: &Path) -> (Mesh, Pod, Pod) {
    let mesh = Mesh::start(dir).await;
    mesh.apply(HTTPBIN).await.expect("the Service applies");
    let httpbin =
        mesh.sidecar("default", "httpbin-1", &[("app", "httpbin")], 8080, crate::apps::httpbin::router()).await;
    let client = mesh.sidecar("default", "sleep-1", &[("app", "sleep")], 80, axum::Router::new()).await;
    (mesh, httpbin, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_is_pushed_to_the_sidecar_and_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mesh, _httpbin, client) = two_pods(dir.path()).await;
    let http = client.client();
    let (status, body) = get(&http, "http://httpbin.default:8000/status/200").await;
    assert_eq!(status, 200, "{body}");

    // A fault for /status: the client's sidecar answers it once the control plane has pushed.
    mesh.apply(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - match: [{uri: {prefix: /status}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: httpbin}}]
  - route: [{destination: {host: httpbin}}]
",
    )
    .await
    .expect("the VirtualService applies");
    mesh.settled().await;
    assert_eq!(get(&http, "http://httpbin.default:8000/status/200").await, (418, "fault filter abort".into()));
    assert_eq!(get(&http, "http://httpbin.default:8000/get").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_strict_mtls_the_mesh_still_answers_and_a_plaintext_client_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (mesh, httpbin, client) = two_pods(dir.path()).await;
    mesh.apply(
        "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
",
    )
    .await
    .expect("the PeerAuthentication applies");
    mesh.settled().await;
    // Through the client's sidecar: auto mTLS, and httpbin sees the caller's certificate.
    let (status, body) = get(&client.client(), "http://httpbin.default:8000/headers").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("spiffe://cluster.local/ns/default/sa/default"), "{body}");
    // Straight at httpbin's inbound listener, in plaintext: reset, no answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let (status, error) = get(&plain, &format!("http://{}/headers", httpbin.inbound(8080))).await;
    assert_eq!(status, 0, "a plaintext client gets no answer under STRICT: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_at_every_call_and_the_control_plane_is_reached_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(dir.path()).await;
    let name = format!("localhost:{}", mesh.control_plane.address.port());
    let address = crate::net::resolve(&name, Duration::from_secs(5)).await.expect("localhost resolves");
    assert_eq!(address.port(), mesh.control_plane.address.port());
    assert!(crate::net::resolve("istiod.istio-system.svc", Duration::ZERO).await.unwrap_err().contains("HOST:PORT"));

    let file = dir.path().join("istio-token");
    std::fs::write(&file, format!("{}\n", mesh.control_plane.token)).unwrap();
    let client = crate::api::Client::with_token_file(address, file.clone());
    let namespaces = |c: &crate::api::Client| {
        let c = c.clone();
        async move { c.list(crate::resources::Kind::Namespace, None, None).await }
    };
    assert!(namespaces(&client).await.is_ok());
    // The kubelet rotates the token in place: the next call reads the new one.
    std::fs::write(&file, "not-the-token").unwrap();
    match namespaces(&client).await {
        Err(crate::api::Error::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("a wrong token is refused: {other:?}"),
    }
    std::fs::remove_file(&file).unwrap();
    let missing = namespaces(&client).await.unwrap_err().to_string();
    assert!(missing.contains("istio-token"), "{missing}");
}
