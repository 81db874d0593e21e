//! Identity and mutual TLS, as istio.io's mTLS migration and authentication policy tasks walk
//! them: `foo` and `bar` with sidecars, `legacy` without.

use crate::support::{get, sample, Mesh};

#[test]
fn strict_mtls_resets_a_client_without_a_sidecar_and_a_port_exception_lets_it_back() {
    crate::scenarios::mtls_migration_scenario(&Mesh::up(), &sample(""));
}

#[test]
fn a_plaintext_destination_rule_to_a_strict_server_gets_503_and_the_gateway_still_reaches_it() {
    let mesh = Mesh::up();
    mesh.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    // The ingress gateway originates mTLS to httpbin's sidecar like any sidecar.
    let gw = mesh.gateway();
    assert_eq!(get(gw, "httpbin.example.com", "/status/418").unwrap().status, 418);
    assert_eq!(mesh.http_code("curl", "default", "http://httpbin:8000/status/200"), "200");
    // istio.io's common problem: a DestinationRule that disables TLS to a STRICT server.
    mesh.apply_yaml(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n",
    );
    assert_eq!(mesh.http_code("curl", "default", "http://httpbin:8000/status/200"), "503");
    let body = mesh.ok(&["exec", "curl", "--", "curl", "-s", "http://httpbin:8000/status/200"]);
    assert!(body.contains("upstream connect error or disconnect/reset before headers"), "{body}");
}

/// The serial number of a proxy's workload certificate, from its admin `/certs`.
fn serial(admin: std::net::SocketAddr) -> String {
    let certs: serde_json::Value = serde_json::from_str(&get(admin, "localhost", "/certs").unwrap().body).unwrap();
    certs["certificates"][0]["cert_chain"][0]["serial_number"].as_str().unwrap().to_string()
}

#[test]
fn workload_certificates_name_the_service_account_and_are_renewed_without_dropping_requests() {
    // Certificates of 4 s, renewed every 2 s.
    let mesh = Mesh::up_with_env(&[("MESHRIG_WORKLOAD_CERT_TTL", "4")]);
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    let pod = mesh.pod("httpbin");
    let table = mesh.ok(&["proxy-config", "secret", &pod]);
    assert!(table.contains("RESOURCE NAME") && table.contains("Cert Chain"), "{table}");
    assert!(table.contains("spiffe://cluster.local/ns/default/sa/httpbin"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&mesh.ok(&["proxy-config", "secret", &pod, "-o", "json"])).unwrap();
    assert_eq!(
        json["certificates"][0]["cert_chain"][0]["subject_alt_names"][0]["uri"],
        "spiffe://cluster.local/ns/default/sa/httpbin"
    );
    // The key never leaves the proxy: not in its config, not in its certificates.
    for path in ["/config_dump", "/certs"] {
        let body = get(mesh.admin("httpbin"), "localhost", path).unwrap().body;
        assert!(!body.contains("PRIVATE KEY"), "{path}");
    }

    // Requests through the gateway (mTLS to httpbin's sidecar, on kept-alive connections and
    // new ones) all succeed while both sides renew several times, past the first certificates'
    // expiry.
    let (gw, admin) = (mesh.gateway(), mesh.admin("httpbin"));
    let first = serial(admin);
    let mut seen = vec![first.clone()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut requests = 0;
    while seen.len() < 4 {
        assert!(std::time::Instant::now() < deadline, "renewed only {} times in 30 s", seen.len() - 1);
        let reply = get(gw, "httpbin.example.com", "/status/200").unwrap();
        assert_eq!(reply.status, 200, "request {requests}: {}", reply.body);
        requests += 1;
        let now = serial(admin);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    assert!(requests > 10, "{requests}");
}

#[test]
fn a_proxy_credential_reaches_its_own_snapshot_and_certificate_only() {
    let mesh = Mesh::up();
    let (api, _) = mesh.api();
    // The environment's token is not what proxies run with: each has its own.
    let pid = mesh.status()["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "httpbin").unwrap()["pids"][0]
        .as_u64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let token = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"MESHRIG_PROXY_TOKEN="))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .expect("the proxy has a credential");
    assert_ne!(token, mesh.api().1);
    let pod = mesh.pod("httpbin");
    let call = |method: &str, path: &str, body: &str| {
        let auth = format!("Bearer {token}");
        crate::support::request_with_body(api, method, "cp", path, &[("authorization", &auth)], body).unwrap()
    };
    let own = call("GET", &format!("/v1/snapshot?namespace=default&pod={pod}&epoch=0&counter=0"), "");
    assert_eq!(own.status, 200, "{}", own.body);
    let other = mesh.pod("curl");
    let theirs = call("GET", &format!("/v1/snapshot?namespace=default&pod={other}&epoch=0&counter=0"), "");
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    let listing = call("GET", "/v1/resources?kind=Service", "");
    assert_eq!(listing.status, 403, "{}", listing.body);
    // A CSR for someone else's identity is refused.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names =
        vec![rcgen::SanType::URI("spiffe://cluster.local/ns/istio-system/sa/istiod".to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let body = serde_json::json!({ "csr": csr }).to_string();
    let refused = call("POST", "/v1/certificates", &body);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("may only ask for its own identity"), "{}", refused.body);
}

#[test]
fn secrets_are_created_as_kubectl_does_and_the_analyzer_finds_a_gateways_credential() {
    let mesh = Mesh::up();
    let dir = mesh.work.path();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["httpbin.example.com".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let created = mesh.ok(&[
        "create",
        "secret",
        "tls",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--cert",
        "tls.crt",
        "--key",
        "tls.key",
    ]);
    assert!(created.contains("secret/httpbin-credential created"), "{created}");
    let again = mesh.run(&[
        "create",
        "secret",
        "tls",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--cert",
        "tls.crt",
        "--key",
        "tls.key",
    ]);
    assert!(!again.status.success() && crate::support::text(&again).contains("already exists"));
    let swapped = mesh.run(&["create", "secret", "tls", "x", "--cert", "tls.key", "--key", "tls.crt"]);
    assert!(!swapped.status.success() && crate::support::text(&swapped).contains("not a TLS pair"));
    mesh.ok(&[
        "create",
        "secret",
        "generic",
        "httpbin-credential-cacert",
        "-n",
        "istio-system",
        "--from-file=ca.crt=tls.crt",
    ]);
    let listed = mesh.ok(&["get", "secrets", "-n", "istio-system"]);
    let row = listed.lines().find(|l| l.starts_with("httpbin-credential ")).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("kubernetes.io/tls") && row.split_whitespace().nth(2) == Some("2"), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("httpbin-credential-cacert ") && l.contains("Opaque")), "{listed}");

    // The analyzer looks for a Gateway's credentialName where the gateway's pods run.
    let gateway = |credential: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: secure\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [httpbin.example.com]\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n"
        )
    };
    std::fs::write(dir.join("gw.yaml"), gateway("httpbin-credential")).unwrap();
    let found = mesh.run(&["analyze", "-f", "gw.yaml"]);
    assert!(!crate::support::text(&found).contains("credentialName not found"), "{}", crate::support::text(&found));
    std::fs::write(dir.join("gw.yaml"), gateway("nope")).unwrap();
    let missing = mesh.run(&["analyze", "-f", "gw.yaml"]);
    assert!(crate::support::text(&missing).contains("Referenced credentialName not found: \"nope\""));

    // A Secret whose data is not base64 is refused at its line, and nothing is stored.
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\ndata:\n  token: not*base64\n",
    )
    .unwrap();
    let bad = mesh.run(&["apply", "-f", "bad.yaml"]);
    let said = crate::support::text(&bad);
    assert!(!bad.status.success() && said.contains("bad.yaml:6") && said.contains("is not base64"), "{said}");
}
