//! Identity and mutual TLS, as istio.io's mTLS migration and authentication policy tasks walk
//! them: `foo` and `bar` with sidecars, `legacy` without.

use crate::scenarios::{https, served_certificate, Pki};
use crate::support::{get, sample, Mesh};

#[test]
fn strict_mtls_resets_a_client_without_a_sidecar_and_a_port_exception_lets_it_back() {
    crate::scenarios::mtls_migration_scenario(&Mesh::up(), &sample(""));
}

#[test]
fn the_authentication_policy_task_runs_on_our_samples() {
    crate::scenarios::authentication_policy_scenario(&Mesh::up(), &sample(""));
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
    let create = [
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
    ];
    let created = mesh.ok(&create);
    assert!(created.contains("secret/httpbin-credential created"), "{created}");
    let again = mesh.run(&create);
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

#[test]
fn a_secure_gateway_serves_simple_and_mutual_tls_from_secrets_and_picks_up_a_rotated_one() {
    crate::scenarios::secure_ingress_scenario(&Mesh::up(), &sample(""));
}

#[test]
fn cert_manager_certificates_from_self_signed_and_ca_issuers_serve_a_secure_gateway() {
    let mesh = Mesh::up();
    let applied = mesh.apply_yaml(
        "issuers.yaml",
        "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {name: selfsigned, namespace: istio-system}\nspec:\n  selfSigned: {}\n---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: example-ca, namespace: istio-system}\nspec:\n  isCA: true\n  commonName: example-ca\n  secretName: example-ca\n  privateKey: {algorithm: ECDSA, size: 256}\n  issuerRef: {name: selfsigned, kind: Issuer}\n---\napiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {name: example-ca-issuer, namespace: istio-system}\nspec:\n  ca: {secretName: example-ca}\n---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: httpbin, namespace: istio-system}\nspec:\n  secretName: httpbin-credential\n  dnsNames: [httpbin.example.com]\n  issuerRef: {name: example-ca-issuer}\n",
    );
    assert!(
        applied.contains("secret/example-ca created") && applied.contains("secret/httpbin-credential created"),
        "{applied}"
    );
    // Applying the same again issues nothing new.
    let again = mesh.ok(&["apply", "-f", "issuers.yaml"]);
    assert!(!again.contains("secret/"), "{again}");
    let secret: serde_json::Value =
        serde_json::from_str(&mesh.ok(&["get", "secret", "httpbin-credential", "-n", "istio-system", "-o", "json"]))
            .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["annotations"]["cert-manager.io/certificate-name"], "httpbin");
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.decode(secret["data"]["ca.crt"].as_str().unwrap()).unwrap();
    std::fs::write(mesh.work.path().join("ca.crt"), &ca).unwrap();
    let leaf = base64::engine::general_purpose::STANDARD.decode(secret["data"]["tls.crt"].as_str().unwrap()).unwrap();
    let info = meshrig::tls::describe(&String::from_utf8(leaf).unwrap()).unwrap();
    assert_eq!(info[0].dns, vec!["httpbin.example.com".to_string()]);
    assert!(info[0].issuer.contains("example-ca"), "{:?}", info[0]);

    mesh.apply_yaml(
        "gateway.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: httpbin-credential}\n    hosts: [httpbin.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin.example.com]\n  gateways: [mygateway]\n  http:\n  - route:\n    - destination: {port: {number: 8000}, host: httpbin}\n",
    );
    let port = mesh.status()["gateway"]["https"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    assert_eq!(https(&mesh, &port, "/status/418", &[]), ("418".into(), 0));

    // ACME needs the internet: refused with what to do instead. A ClusterIssuer whose CA Secret
    // is not in cert-manager's namespace issues nothing, and says so.
    std::fs::write(
        mesh.work.path().join("acme.yaml"),
        "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: letsencrypt}\nspec:\n  acme:\n    server: https://acme-v02.api.letsencrypt.org/directory\n",
    )
    .unwrap();
    let acme = mesh.run(&["apply", "-f", "acme.yaml"]);
    let said = crate::support::text(&acme);
    assert!(!acme.status.success() && said.contains("needs the internet") && said.contains("selfSigned"), "{said}");
    let pending = mesh.apply_yaml(
        "cluster.yaml",
        "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: corp-ca}\nspec:\n  ca: {secretName: corp-ca}\n---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: other, namespace: istio-system}\nspec:\n  secretName: other\n  dnsNames: [other.example.com]\n  issuerRef: {name: corp-ca, kind: ClusterIssuer}\n",
    );
    assert!(pending.contains("not issued yet") && pending.contains("cert-manager/corp-ca"), "{pending}");
}

/// An ES256 signer with its JWKS, standing in for istio.io's demo issuer.
struct JwtIssuer {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    jwks: String,
}

impl JwtIssuer {
    fn new() -> JwtIssuer {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
        use base64::Engine as _;
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = key.public_key().as_ref().to_vec();
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"demo","x":"{}","y":"{}"}}]}}"#,
            enc(&p[1..33]),
            enc(&p[33..65])
        );
        JwtIssuer { key, jwks }
    }
    fn token(&self, exp_in: i64) -> String {
        self.token_with(serde_json::json!({"exp": now() + exp_in}), r#"{"alg":"ES256","kid":"demo"}"#)
    }
    /// A token signed with the key, with these claims beside iss, sub and groups, and this header.
    fn token_with(&self, extra: serde_json::Value, header: &str) -> String {
        use base64::Engine as _;
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut claims = serde_json::json!({"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io", "groups": ["group1"]});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let signed = format!("{}.{}", enc(header.as_bytes()), enc(claims.to_string().as_bytes()));
        let sig = self.key.sign(&aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", enc(sig.as_ref()))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn request_authentication_at_the_gateway_answers_as_istios_authentication_policy_task() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    let issuer = JwtIssuer::new();
    let jwks = issuer.jwks.replace('"', "\\\"");
    mesh.apply_yaml(
        "jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: \"{jwks}\"\n    outputPayloadToHeader: x-jwt-payload\n"
        ),
    );
    let gw = mesh.gateway();
    let call = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
        crate::support::request(gw, "GET", "httpbin.example.com", path, &headers).unwrap()
    };
    let token = issuer.token(3600);
    assert_eq!(call("/headers", None).status, 200, "no token: accepted without an identity");
    let bad = call("/headers", Some("deadbeef"));
    assert_eq!(bad.status, 401, "{}", bad.body);
    assert!(bad.header("www-authenticate").is_some_and(|w| w.starts_with("Bearer realm=")));
    let ok = call("/headers", Some(&token));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.contains("X-Jwt-Payload") && !ok.body.contains("Authorization"),
        "the token is not forwarded: {}",
        ok.body
    );
    // Expired tokens are refused only past Envoy's 60 s of clock skew.
    assert_eq!(call("/headers", Some(&issuer.token(-30))).status, 200);
    let expired = call("/headers", Some(&issuer.token(-120)));
    assert_eq!((expired.status, expired.body.as_str()), (401, "Jwt is expired"));
    // Time claims as Envoy reads them: a fraction is dropped, anything but a number refused.
    let es256 = r#"{"alg":"ES256","kid":"demo"}"#;
    for (claims, header, text) in [
        (serde_json::json!({"exp": (now() - 86_400) as f64 + 0.5}), es256, "Jwt is expired"),
        (serde_json::json!({"exp": (now() - 86_400).to_string()}), es256, "Jwt payload [exp] field is not an integer"),
        (serde_json::json!({"exp": -1}), es256, "Jwt payload [exp] field is not a positive 64 bit integer"),
        (serde_json::json!({"nbf": "later"}), es256, "Jwt payload [nbf] field is not an integer"),
        (serde_json::json!({}), r#"{"alg":"none"}"#, "Jwt header [alg] is not supported"),
        (
            serde_json::json!({}),
            r#"{"alg":"ES256","kid":"unknown"}"#,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
    ] {
        let refused = call("/headers", Some(&issuer.token_with(claims.clone(), header)));
        assert_eq!((refused.status, refused.body.as_str()), (401, text), "{claims} {header}");
    }
    // Every token the request carries is verified: a forged one beside a good one is refused.
    let auth = format!("Bearer {token}");
    let both = crate::support::request(
        gw,
        "GET",
        "httpbin.example.com",
        "/headers?access_token=forged.by.me",
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!((both.status, both.body.as_str()), (401, "Jwt header is an invalid Base64url encoded"));

    // Require a token: DENY requests without a request principal, then only on /headers.
    let deny = |to: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: frontend-ingress\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n{to}"
        )
    };
    mesh.apply_yaml("deny.yaml", &deny(""));
    assert_eq!(call("/headers", None).status, 403);
    assert_eq!(call("/headers", Some(&token)).status, 200);
    mesh.apply_yaml("deny.yaml", &deny("    to:\n    - operation:\n        paths: [\"/headers\"]\n"));
    assert_eq!(call("/headers", None).status, 403);
    assert_eq!(call("/ip", None).status, 200);
    // A claim in an ALLOW rule.
    mesh.ok(&["delete", "authorizationpolicy", "frontend-ingress", "-n", "istio-system"]);
    mesh.apply_yaml(
        "groups.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: require-group\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@secure.istio.io/testing@secure.istio.io\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n",
    );
    assert_eq!(call("/ip", Some(&token)).status, 200);
    assert_eq!(call("/ip", None).status, 403);
    // A rule with audiences: a token for another audience gets Envoy's 403.
    mesh.apply_yaml(
        "jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: \"{jwks}\"\n    audiences: [httpbin]\n"
        ),
    );
    let other = call("/ip", Some(&issuer.token_with(serde_json::json!({"aud": "bookinfo"}), es256)));
    assert_eq!((other.status, other.body.as_str()), (403, "Audiences in Jwt are not allowed"));
    assert_eq!(call("/ip", Some(&issuer.token_with(serde_json::json!({"aud": ["x", "httpbin"]}), es256))).status, 200);
}

#[test]
fn a_jwks_uri_in_the_mesh_is_fetched_by_the_control_plane_and_the_issuer_sample_mints_tokens() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    mesh.ok(&["apply", "-f", sample("curl/curl.yaml").to_str().unwrap(), "--wait"]);
    mesh.ok(&["apply", "-n", "istio-system", "-f", sample("jwt-issuer/jwt-issuer.yaml").to_str().unwrap(), "--wait"]);
    let ra = |extra: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n  - issuer: testing@meshrig.local\n    jwksUri: http://jwt-issuer.istio-system.svc.cluster.local:8000/jwks.json\n{extra}"
        )
    };
    mesh.apply_yaml("jwt.yaml", &ra(""));
    let mint = |sub: &str| {
        let url = format!("http://jwt-issuer.istio-system:8000/token?sub={sub}&groups=group1");
        let out = mesh.run(&["exec", "curl", "--", "curl", "-s", &url]);
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(token.split('.').count(), 3, "a token from the issuer: {}", crate::support::text(&out));
        token
    };
    let (alice, bob) = (mint("alice"), mint("bob"));
    let gw = mesh.gateway();
    let call = |headers: &[(&str, &str)]| {
        crate::support::request(gw, "GET", "httpbin.example.com", "/headers", headers).unwrap()
    };
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(call(&[("Authorization", &bearer(&alice))]).status, 200, "the fetched keys verify the issuer's token");
    let bad = call(&[("Authorization", "Bearer deadbeef")]);
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    );
    mesh.apply_yaml(
        "alice.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: only-alice\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@meshrig.local/alice\"]\n",
    );
    assert_eq!(call(&[("Authorization", &bearer(&alice))]).status, 200);
    assert_eq!(call(&[("Authorization", &bearer(&bob))]).status, 403);
    assert_eq!(call(&[]).status, 403);

    // The token in a cookie: only the rule's own location is read.
    mesh.apply_yaml("jwt.yaml", &ra("    fromCookies: [session]\n"));
    assert_eq!(call(&[("Authorization", &bearer(&alice))]).status, 403, "a cookie rule ignores Authorization");
    assert_eq!(call(&[("Cookie", &format!("theme=dark; session={alice}"))]).status, 200);

    // Keys nobody serves: `--wait` still returns, and every token is refused as under istiod's
    // stand-in key set (kid `abc`): the issuer's tokens name another kid.
    let gone = ra("")
        .replace("jwt-issuer.istio-system.svc.cluster.local:8000", "jwt-issuer.istio-system.svc.cluster.local:9999");
    mesh.apply_yaml("jwt.yaml", &gone);
    let refused = call(&[("Authorization", &bearer(&alice))]);
    assert_eq!((refused.status, refused.body.as_str()), (401, "Jwks doesn't have key to match kid or alg from Jwt"));
}

/// A TLS server outside the mesh that answers every request with `body` (the destination a
/// PASSTHROUGH server hands TLS to: the client's handshake ends here, not at the gateway),
/// requiring a client certificate from `client_ca` if given.
fn tls_backend(cert_pem: &str, key_pem: &str, client_ca: Option<&str>, body: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let certs = meshrig::tls::certs_from_pem(cert_pem).unwrap();
    let key = meshrig::tls::key_from_pem(key_pem).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(meshrig::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in meshrig::tls::certs_from_pem(ca).unwrap() {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                meshrig::tls::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let mut buf = [0u8; 4096];
                if tls.read(&mut buf).unwrap_or(0) > 0 {
                    let reply =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = tls.write_all(reply.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    addr
}

#[test]
fn a_passthrough_server_hands_tls_to_its_destination_by_sni_beside_a_terminating_one() {
    let mesh = Mesh::up();
    let dir = mesh.work.path();
    let pki = Pki::new();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ca.crt", &pki.ca.pem());
    let (nginx_cert, nginx_key) = pki.issue("nginx.example.com");
    let backend = tls_backend(&nginx_cert, &nginx_key, None, "served by the backend itself");
    let (cert, key) = pki.issue("httpbin.example.com");
    write("httpbin.crt", &cert);
    write("httpbin.key", &key);
    mesh.ok(&[
        "create",
        "secret",
        "tls",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--cert",
        "httpbin.crt",
        "--key",
        "httpbin.key",
    ]);
    let applied = mesh.apply_yaml(
        "passthrough.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: nginx\nspec:\n  hosts: [my-nginx.example.internal]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 443, name: tls, protocol: TLS}}\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{tls: {}}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    tls: {{mode: PASSTHROUGH}}\n    hosts: [nginx.example.com]\n  - port: {{number: 443, name: https-httpbin, protocol: HTTPS}}\n    tls: {{mode: SIMPLE, credentialName: httpbin-credential}}\n    hosts: [httpbin.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: nginx\nspec:\n  hosts: [nginx.example.com]\n  gateways: [mygateway]\n  tls:\n  - match:\n    - port: 443\n      sniHosts: [nginx.example.com]\n    route:\n    - destination:\n        host: my-nginx.example.internal\n        port: {{number: 443}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin.example.com]\n  gateways: [mygateway]\n  http:\n  - route:\n    - destination: {{port: {{number: 8000}}, host: httpbin}}\n",
            backend.port()
        ),
    );
    assert!(!applied.contains("not served") && !applied.contains("not enforced"), "{applied}");
    let port = mesh.status()["gateway"]["https"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The backend's own certificate reaches the client: the gateway did not terminate TLS.
    assert_eq!(
        served_certificate(addr, "nginx.example.com", &pki.ca.pem()),
        meshrig::tls::certs_from_pem(&nginx_cert).unwrap()[0].to_vec()
    );
    let resolve = format!("nginx.example.com:{port}:127.0.0.1");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", "ca.crt", "--resolve", &resolve, &format!("https://nginx.example.com:{port}/")])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "served by the backend itself", "{}", crate::support::text(&out));
    // The other host on the same port is terminated by the gateway and routed as HTTP.
    assert_eq!(https(&mesh, &port, "/status/418", &[]), ("418".into(), 0));
    // A name no server takes gets no handshake.
    let resolve = format!("other.example.com:{port}:127.0.0.1");
    let out = std::process::Command::new("curl")
        .args(["-s", "-k", "--resolve", &resolve, &format!("https://other.example.com:{port}/")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown SNI is refused");
}

#[test]
fn istio_mutual_and_optional_mutual_gateway_servers_ask_for_the_right_client_certificates() {
    let mesh = Mesh::up();
    let dir = mesh.work.path();
    let pki = Pki::new();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    // A client certificate from the mesh's own root, as a sidecar would present.
    let ca = meshrig::ca::Ca::load_or_create(&mesh.state.path().join("ca")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let id = "spiffe://cluster.local/ns/default/sa/curl";
    write("mesh.crt", &ca.sign_workload(&csr, id, std::time::Duration::from_secs(3600)).unwrap());
    write("mesh.key", &key.serialize_pem());
    let (other_cert, other_key) = pki.issue("client.example.com");
    write("other.crt", &other_cert);
    write("other.key", &other_key);
    let (cert, server_key) = pki.issue("httpbin.example.com");
    write("ca.crt", &pki.ca.pem());
    write("httpbin.crt", &cert);
    write("httpbin.key", &server_key);
    mesh.ok(&[
        "create",
        "secret",
        "generic",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--from-file=tls.crt=httpbin.crt",
        "--from-file=tls.key=httpbin.key",
        "--from-file=ca.crt=ca.crt",
    ]);
    let gateway = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    tls: {tls}\n    hosts: [httpbin.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin.example.com]\n  gateways: [mygateway]\n  http:\n  - route:\n    - destination: {{port: {{number: 8000}}, host: httpbin}}\n"
        )
    };
    let port = mesh.status()["gateway"]["https"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    let with = |files: Option<(&str, &str)>| {
        let mut extra = vec![];
        if let Some((c, k)) = files {
            extra = vec!["--cert", c, "--key", k];
        }
        https(&mesh, &port, "/status/418", &extra)
    };

    let applied = mesh.apply_yaml("gateway.yaml", &gateway("{mode: ISTIO_MUTUAL}"));
    assert!(!applied.contains("not served"), "{applied}");
    // The gateway presents its workload certificate (a SPIFFE name, no DNS name): trust the
    // mesh root and skip the name check, as a sidecar does.
    std::fs::write(dir.join("ca.crt"), ca.root_pem()).unwrap();
    let insecure = |files: Option<(&str, &str)>| {
        let resolve = format!("httpbin.example.com:{port}:127.0.0.1");
        let mut args = vec!["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", &resolve];
        if let Some((c, k)) = files {
            args.extend(["--cert", c, "--key", k]);
        }
        let url = format!("https://httpbin.example.com:{port}/status/418");
        args.push(&url);
        let out = std::process::Command::new("curl").args(&args).current_dir(dir).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(insecure(Some(("mesh.crt", "mesh.key"))), "418", "a certificate from the mesh's root");
    assert_eq!(insecure(None), "000", "no client certificate");
    assert_eq!(insecure(Some(("other.crt", "other.key"))), "000", "a certificate from another root");

    write("ca.crt", &pki.ca.pem());
    mesh.apply_yaml("gateway.yaml", &gateway("{mode: OPTIONAL_MUTUAL, credentialName: httpbin-credential}"));
    assert_eq!(with(None), ("418".into(), 0), "OPTIONAL_MUTUAL: no certificate is fine");
    let (client_cert, client_key) = pki.issue("client.example.com");
    write("client.crt", &client_cert);
    write("client.key", &client_key);
    assert_eq!(with(Some(("client.crt", "client.key"))), ("418".into(), 0));
    assert_eq!(with(Some(("mesh.crt", "mesh.key"))).0, "000", "a certificate the CA did not sign is refused");
}

#[test]
fn destination_rules_originate_simple_and_mutual_tls_with_their_own_files() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", sample("curl/curl.yaml").to_str().unwrap(), "--wait"]);
    let dir = mesh.work.path();
    let pki = Pki::new();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca = file("ca.crt", &pki.ca.pem());
    let (cert, key) = pki.issue("secure.example.internal");
    let simple = tls_backend(&cert, &key, None, "simple backend");
    let mutual = tls_backend(&cert, &key, Some(&pki.ca.pem()), "mutual backend");
    let (client_cert, client_key) = pki.issue("curl.example.internal");
    let (client_cert, client_key) = (file("client.crt", &client_cert), file("client.key", &client_key));
    // Each backend behind a ServiceEntry: port 80 (HTTP) for the app, routed to port 443.
    let entry = |name: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}.example.internal]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  - {{number: 443, name: https, protocol: HTTPS}}\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{https: {port}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}.example.internal]\n  http:\n  - route:\n    - destination:\n        host: {name}.example.internal\n        port: {{number: 443}}\n"
        )
    };
    let rule = |name: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n  host: {name}.example.internal\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      tls:\n{tls}"
        )
    };
    let fetch = |name: &str| {
        let url = format!("http://{name}.example.internal/");
        let out = mesh.run(&["exec", "curl", "--", "curl", "-s", "-w", " %{http_code}", &url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    mesh.apply_yaml(
        "entries.yaml",
        &format!("{}---\n{}", entry("simple", simple.port()), entry("mutual", mutual.port())),
    );
    assert!(fetch("simple").ends_with(" 503"), "plaintext to a TLS server fails");
    let applied = mesh.apply_yaml(
        "simple.yaml",
        &rule(
            "simple",
            &format!("        mode: SIMPLE\n        sni: secure.example.internal\n        caCertificates: {ca}\n"),
        ),
    );
    assert!(!applied.contains("not enforced"), "{applied}");
    assert_eq!(fetch("simple"), "simple backend 200", "SIMPLE: TLS from the sidecar, plain HTTP from the app");
    mesh.apply_yaml(
        "simple.yaml",
        &rule("simple", &format!("        mode: SIMPLE\n        sni: secure.example.internal\n        caCertificates: {ca}\n        subjectAltNames: [someone-else.example.com]\n")),
    );
    assert!(fetch("simple").ends_with(" 503"), "a server whose certificate names no accepted SAN is refused");
    mesh.apply_yaml("simple.yaml", &rule("simple", "        mode: SIMPLE\n        insecureSkipVerify: true\n"));
    assert_eq!(fetch("simple"), "simple backend 200", "insecureSkipVerify checks nothing");

    let mutual_tls = |with_cert: bool| {
        let cert = if with_cert {
            format!("        clientCertificate: {client_cert}\n        privateKey: {client_key}\n")
        } else {
            String::new()
        };
        let mode = if with_cert { "MUTUAL" } else { "SIMPLE" };
        rule(
            "mutual",
            &format!(
                "        mode: {mode}\n        sni: secure.example.internal\n        caCertificates: {ca}\n{cert}"
            ),
        )
    };
    mesh.apply_yaml("mutual.yaml", &mutual_tls(false));
    assert!(fetch("mutual").ends_with(" 503"), "no client certificate");
    mesh.apply_yaml("mutual.yaml", &mutual_tls(true));
    assert_eq!(fetch("mutual"), "mutual backend 200");
    // A file that cannot be read fails the handshakes, and apply still takes the rule.
    mesh.apply_yaml("mutual.yaml", &mutual_tls(true).replace(&ca, "/nonexistent/ca.crt"));
    assert!(fetch("mutual").ends_with(" 503"));
}
