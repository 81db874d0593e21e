//! Identity and mutual TLS, as istio.io's mTLS migration and authentication policy tasks walk
//! them: `foo` and `bar` with sidecars, `legacy` without.

use crate::support::{get, requests_total, sample, Mesh};

fn setup() -> Mesh {
    let mesh = Mesh::up();
    for ns in ["foo", "bar", "legacy"] {
        mesh.ok(&["create", "namespace", ns]);
    }
    mesh.ok(&["label", "namespace", "foo", "istio-injection=enabled"]);
    mesh.ok(&["label", "namespace", "bar", "istio-injection=enabled"]);
    let (httpbin, curl) = (sample("httpbin/httpbin.yaml"), sample("curl/curl.yaml"));
    for ns in ["foo", "bar"] {
        mesh.ok(&["apply", "-n", ns, "-f", httpbin.to_str().unwrap()]);
        mesh.ok(&["apply", "-n", ns, "-f", curl.to_str().unwrap()]);
    }
    mesh.ok(&["apply", "-n", "legacy", "-f", curl.to_str().unwrap(), "--wait"]);
    mesh
}

/// `exec curl.FROM -- curl http://httpbin.TO:8000/ip`: the code curl printed and its exit code.
fn call(mesh: &Mesh, from: &str, to: &str) -> (String, i32) {
    let url = format!("http://httpbin.{to}:8000/ip");
    let out = mesh.run(&["exec", "-n", from, "curl", "--", "curl", &url, "-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
}

fn every_pair(mesh: &Mesh) -> Vec<String> {
    let mut out = vec![];
    for from in ["foo", "bar", "legacy"] {
        for to in ["foo", "bar"] {
            let (code, exit) = call(mesh, from, to);
            out.push(format!("curl.{from} to httpbin.{to}: {code} (exit {exit})"));
        }
    }
    out
}

#[test]
fn strict_mtls_resets_a_client_without_a_sidecar_and_a_port_exception_lets_it_back() {
    let mesh = setup();
    let all_ok: Vec<String> = ["foo", "bar", "legacy"]
        .iter()
        .flat_map(|f| ["foo", "bar"].map(|t| format!("curl.{f} to httpbin.{t}: 200 (exit 0)")))
        .collect();
    assert_eq!(every_pair(&mesh), all_ok, "PERMISSIVE (no policy): everyone gets through");

    // Sidecar to sidecar is mutual TLS: httpbin sees the client's certificate in XFCC.
    let headers = mesh.ok(&["exec", "-n", "foo", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(
        headers.contains("By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=")
            && headers.contains(r#";Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/curl""#),
        "{headers}"
    );
    let legacy = mesh.ok(&["exec", "-n", "legacy", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(!legacy.contains("X-Forwarded-Client-Cert"), "{legacy}");

    // The server side reports who called over mTLS.
    let admin = mesh.admin_in("foo", "httpbin");
    let series = requests_total(admin);
    let mtls = series.iter().any(|(l, _)| {
        l.contains(r#"reporter="destination""#)
            && l.contains(r#"source_principal="spiffe://cluster.local/ns/foo/sa/curl""#)
            && l.contains(r#"destination_principal="spiffe://cluster.local/ns/foo/sa/httpbin""#)
            && l.contains(r#"connection_security_policy="mutual_tls""#)
    });
    let plain = series.iter().any(|(l, _)| {
        l.contains(r#"reporter="destination""#)
            && l.contains(r#"source_principal="unknown""#)
            && l.contains(r#"connection_security_policy="none""#)
    });
    assert!(mtls && plain, "{series:#?}");

    mesh.apply_yaml(
        "strict-foo.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let mut expected = all_ok.clone();
    expected[4] = "curl.legacy to httpbin.foo: 000 (exit 56)".into();
    assert_eq!(every_pair(&mesh), expected, "STRICT in foo: the client without a sidecar is reset");

    // A workload exception: httpbin's port 8080 takes plaintext again (sidecars then send
    // plaintext to it too, as auto mTLS follows the server's mode).
    mesh.apply_yaml(
        "httpbin-port.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n",
    );
    assert_eq!(every_pair(&mesh), all_ok, "port 8080 of httpbin.foo is DISABLE");
    let headers = mesh.ok(&["exec", "-n", "foo", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(!headers.contains("X-Forwarded-Client-Cert"), "plaintext now: {headers}");

    // Mesh-wide STRICT: bar's httpbin refuses legacy too; foo keeps its exception.
    mesh.ok(&["delete", "peerauthentication", "httpbin", "-n", "foo"]);
    mesh.apply_yaml(
        "mesh-strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let mut expected = all_ok;
    expected[4] = "curl.legacy to httpbin.foo: 000 (exit 56)".into();
    expected[5] = "curl.legacy to httpbin.bar: 000 (exit 56)".into();
    assert_eq!(every_pair(&mesh), expected);
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
