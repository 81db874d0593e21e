//! Hostile and careless input, through the real binary: every reproduction gets a clear
//! refusal or Istio's/Envoy's answer, and the control plane outlives all of them.

use std::time::Duration;

use crate::support::{text, within, Mesh};

const POLL: Duration = Duration::from_millis(100);

fn access_log_filter(expression: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: httpbin-filter}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  accessLogging:\n  - providers: [{{name: envoy}}]\n    filter:\n      expression: \"{expression}\"\n"
    )
}

#[test]
fn hostile_expressions_are_refused_everywhere_and_the_widest_accepted_filter_reaches_the_proxies() {
    let mesh = Mesh::up();
    let control_plane = mesh.status()["control_plane"]["pid"].clone();
    let nested = format!("{}response.code >= 400{}", "(".repeat(2000), ")".repeat(2000));
    let ands = vec!["response.code == 1"; 8000].join(" && ");
    let nots = format!("{}true", "!".repeat(200_000));
    let choices = "true ? 'a' : ".repeat(30_000) + "'b'";
    for (name, expression, limit) in [
        ("nested.yaml", nested, "nests deeper than 32 levels"),
        ("ands.yaml", ands, "characters long; meshrig accepts at most 4096"),
        ("nots.yaml", nots, "characters long"),
        ("choices.yaml", choices, "characters long"),
    ] {
        let file = mesh.work.path().join(name);
        std::fs::write(&file, access_log_filter(&expression)).unwrap();
        let file = file.to_str().unwrap();
        for args in [vec!["analyze", "-f", file], vec!["apply", "--dry-run", "-f", file], vec!["apply", "-f", file]] {
            let out = mesh.run(&args);
            let all = text(&out);
            let code = if args[0] == "analyze" { 79 } else { 4 };
            assert_eq!(out.status.code(), Some(code), "{args:?}:\n{all}");
            assert!(all.contains(&format!("{name}:9")), "{args:?} names the file and line:\n{all}");
            assert!(all.contains("spec.accessLogging[0].filter.expression"), "{args:?}:\n{all}");
            assert!(all.contains(limit), "{args:?} names the limit {limit:?}:\n{all}");
        }
    }
    // The control plane is still the one `up` started, and takes changes.
    let status = mesh.status();
    assert_eq!((&status["running"], &status["control_plane"]["pid"]), (&true.into(), &control_plane), "{status}");

    // The widest filter the limits accept (a hundred OR-ed header tests) reaches the proxies,
    // which read it and log by it.
    let wide: Vec<String> = (0..100).map(|i| format!("request.headers['x-ticket'] == 't{i}'")).collect();
    let out = mesh.apply_yaml("wide.yaml", &access_log_filter(&wide.join(" || ")));
    assert!(out.contains("created"), "{out}");
    let status = mesh.ok(&["proxy-status"]);
    assert!(status.lines().skip(1).all(|l| l.contains("SYNCED")), "{status}");
    mesh.curl(&["x-ticket: t99", "x-request-id: wide-logged"], "http://httpbin:8000/get");
    mesh.curl(&["x-ticket: t100", "x-request-id: wide-skipped"], "http://httpbin:8000/get");
    mesh.curl(&["x-ticket: t0", "x-request-id: wide-first"], "http://httpbin:8000/get");
    let log = within(Duration::from_secs(10), POLL, "the logged requests", || {
        let log = mesh.ok(&["logs", "httpbin", "-c", "istio-proxy"]);
        (log.contains("wide-logged") && log.contains("wide-first")).then(|| log.clone()).ok_or(log)
    });
    assert!(!log.contains("wide-skipped"), "a request the filter does not match was logged:\n{log}");
}

#[test]
fn paths_are_normalised_before_authorization_so_a_deny_cannot_be_walked_around() {
    let mesh = Mesh::up();
    mesh.ok(&["apply", "-f", crate::support::sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    // Istio's security best-practices example: DENY a path and a method at the workload.
    mesh.apply_yaml(
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [/anything/admin]}}]\n  - to: [{operation: {methods: [DELETE]}}]\n  - when: [{key: 'request.headers[x-role]', values: [guest]}]\n",
    );
    let gw = mesh.gateway();
    let call = |method: &str, path: &str, headers: &[(&str, &str)]| {
        crate::support::request(gw, method, "httpbin.example.com", path, headers).unwrap()
    };
    assert_eq!(call("GET", "/anything/admin", &[]).status, 403);
    for path in [
        "/anything/x/../admin",
        "/anything/./admin",
        "/anything/%2e/admin",
        "/anything/%61dmin",
        "/anything/x/%2E%2E/admin",
        "/anything\\admin",
    ] {
        let r = call("GET", path, &[]);
        assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"), "{path}");
    }
    // What is let through reaches the app normalised: httpbin echoes the path it got.
    let r = call("GET", "/anything/x/../public?q=%2e", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let url: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(url["url"].as_str().unwrap().ends_with("/anything/public?q=%2e"), "{}", r.body);
    // %00 is refused whatever the option; a method that is not upper case gets 400.
    assert_eq!(call("GET", "/anything/a%00b", &[]).status, 400);
    let lower = call("delete", "/anything/x", &[]);
    assert_eq!((lower.status, lower.body.as_str()), (400, "Bad Request"));
    assert_eq!(call("DELETE", "/anything/x", &[]).status, 403);
    // A header sent twice is compared joined: `guest` then `admin` is "guest,admin".
    assert_eq!(call("GET", "/anything/x", &[("x-role", "guest")]).status, 403);
    assert_eq!(call("GET", "/anything/x", &[("x-role", "admin"), ("x-role", "guest")]).status, 200);
    // Inside the mesh too: the curl pod's request is normalised by its sidecar (and httpbin's).
    assert_eq!(mesh.http_code("curl", "default", "http://httpbin:8000/anything/x/%2e%2e/admin"), "403");

    // Double slashes are kept under BASE and merged under MERGE_SLASHES.
    assert_eq!(call("GET", "/anything//admin", &[]).status, 200);
    mesh.apply_yaml(
        "mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: MERGE_SLASHES\n",
    );
    assert_eq!(call("GET", "/anything//admin", &[]).status, 403);
    // %2F is decoded only by DECODE_AND_MERGE_SLASHES: httpbin gets it, and has no such page.
    assert_eq!(call("GET", "/anything%2fadmin", &[]).status, 404);
    mesh.apply_yaml(
        "mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: DECODE_AND_MERGE_SLASHES\n",
    );
    assert_eq!(call("GET", "/anything%2fadmin", &[]).status, 403);
    let err = mesh.apply_refused(
        "bad-mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    pathNormalization: {normalization: SOMETIMES}\n",
    );
    assert!(err.contains("pathNormalization.normalization: \"SOMETIMES\" is not one of NONE, BASE"), "{err}");
    // NONE: the path as sent, so the bypass works again (as in Istio).
    mesh.apply_yaml(
        "mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    pathNormalization: {normalization: NONE}\n",
    );
    assert_eq!(call("GET", "/anything/%61dmin", &[]).status, 200);
}

#[test]
fn a_built_in_app_never_gets_variables_that_change_how_meshrigs_binary_runs() {
    let mesh = Mesh::up();
    let out = mesh.apply_yaml(
        "env.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: envtest}\nspec:\n  selector: {matchLabels: {app: envtest}}\n  template:\n    metadata: {labels: {app: envtest}}\n    spec:\n      containers:\n      - name: httpbin\n        image: docker.io/mccutchen/go-httpbin:v2.15.0\n        ports: [{containerPort: 8080}]\n        env:\n        - {name: FOO, value: bar}\n        - {name: LD_PRELOAD, value: /tmp/evil.so}\n        - {name: MESHRIG_STATE_DIR, value: /tmp/elsewhere}\n",
    );
    assert!(
        out.contains("spec.template.spec.containers[0].env[1].name: LD_PRELOAD is not passed to the app")
            && out.contains("env[2].name: MESHRIG_STATE_DIR is not passed"),
        "{out}"
    );
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "envtest").unwrap().clone();
    let environs: Vec<String> = pod["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/environ")).unwrap()).replace('\0', "\n"))
        .collect();
    assert!(environs.iter().any(|e| e.lines().any(|l| l == "FOO=bar")), "the app gets its own env: {environs:?}");
    for e in &environs {
        assert!(!e.contains("LD_PRELOAD") && !e.contains("/tmp/elsewhere"), "{e}");
    }
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    for args in [&["completion", "bash"][..], &["completion", "fish"], &["samples", "--help"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshrig"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe as `| head -1` does.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(matches!(out.status.code(), Some(0 | 141)), "{args:?}: {:?} {err}", out.status);
    }
}

#[test]
fn objects_and_the_store_are_bounded_as_kubernetes_bounds_them() {
    let mesh = Mesh::up();
    let config_map = |name: &str, bytes: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  blob: {}\n", "x".repeat(bytes))
    };
    let err = mesh.apply_refused("big.yaml", &config_map("big", 1_200_000));
    assert!(
        err.contains("big.yaml:4: ConfigMap default/big: data: Too long: must have at most 1048576 bytes"),
        "{err}"
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: huge}}\nstringData:\n  blob: {}\n",
        "x".repeat(1_700_000)
    );
    let err = mesh.apply_refused("huge.yaml", &secret);
    assert!(err.contains("Kubernetes stores at most 1.5 MiB per object"), "{err}");
    // Many objects of allowed size: the store's bound, all or nothing.
    let part = |from: usize| (from..from + 12).map(|i| config_map(&format!("part-{i}"), 1_000_000)).collect::<Vec<_>>();
    mesh.ok(&["apply", "-f", &write(&mesh, "a.yaml", &part(0).join("---\n"))]);
    mesh.ok(&["apply", "-f", &write(&mesh, "b.yaml", &part(12).join("---\n"))]);
    let err = mesh.apply_refused("c.yaml", &part(24).join("---\n"));
    assert!(err.contains("meshrig keeps at most 32 MiB"), "{err}");
    let listed = mesh.ok(&["get", "configmaps"]);
    assert!(listed.contains("part-23") && !listed.contains("part-24") && !listed.contains("big"), "{listed}");
    mesh.ok(&["delete", "configmap", "part-0"]);
    mesh.apply_yaml("one.yaml", &config_map("part-24", 1_000_000));
    assert!(mesh.ok(&["get", "configmaps"]).contains("part-24"));
}

fn write(mesh: &Mesh, name: &str, text: &str) -> String {
    let file = mesh.work.path().join(name);
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

#[test]
fn the_gateway_holds_envoys_limits_on_headers_bodies_and_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let mesh = Mesh::up();
    mesh.ok(&["down"]);
    // The environment's own ports, remembered from the first `up`.
    mesh.ok(&["up", "--max-connections", "20"]);
    mesh.ok(&["apply", "-f", crate::support::sample("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    let gw = mesh.gateway();
    let call = |headers: &[(&str, &str)]| crate::support::request(gw, "GET", "httpbin.example.com", "/get", headers);

    // Request headers: up to Envoy's 60 KiB, then 431.
    let big = "x".repeat(50 * 1024);
    assert_eq!(call(&[("x-big", &big)]).unwrap().status, 200);
    let bigger = "x".repeat(61 * 1024);
    assert_eq!(call(&[("x-big", &bigger)]).unwrap().status, 431);

    // A malformed chunked body is the client's fault: 400, not the upstream's 503.
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /post HTTP/1.1\r\nHost: httpbin.example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Connections past --max-connections are closed as they arrive; the others keep working.
    let held: Vec<TcpStream> = (0..30).map(|_| TcpStream::connect(gw).unwrap()).collect();
    let closed = held
        .iter()
        .filter(|c| {
            let mut c = *c;
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            matches!(c.read(&mut [0u8; 1]), Ok(0) | Err(_))
                && c.write_all(b"GET /get HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n").is_ok()
                && {
                    let mut buf = [0u8; 12];
                    !matches!(c.read(&mut buf), Ok(n) if n > 0)
                }
        })
        .count();
    assert!(closed >= 10, "only {closed} of 30 connections past a limit of 20 were refused");
    drop(held);
    within(Duration::from_secs(5), POLL, "the gateway serving again", || {
        call(&[]).map_err(|e| e.to_string()).and_then(|r| (r.status == 200).then_some(()).ok_or(r.body))
    });

    // Headers sent too slowly: the connection is closed after the header timeout.
    let mut slow = TcpStream::connect(gw).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /get HTTP/1.1\r\nHost: httpbin.example.com\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(15), "closed after {waited:?}");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn status_says_what_the_local_backend_cannot_isolate_and_it_is_true() {
    let mesh = Mesh::up();
    mesh.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    let table = mesh.ok(&["status"]);
    assert!(
        table.contains("note: on the local backend every app also listens on a loopback port of its own"),
        "{table}"
    );
    let status = mesh.status();
    assert!(status["isolation"].as_str().unwrap().contains("past its sidecar's mutual TLS"), "{status}");
    // What the note says: httpbin's own port answers a plain client, STRICT or not.
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "httpbin").unwrap();
    let app: std::net::SocketAddr = pod["app_addrs"]["8080"].as_str().unwrap().parse().unwrap();
    assert_eq!(crate::support::get(app, "httpbin", "/get").unwrap().status, 200);
    assert_eq!(mesh.http_code("curl", "default", "http://httpbin:8000/get"), "200", "through the sidecars");
}

#[test]
fn a_stray_quote_does_not_let_deep_yaml_reach_the_parser() {
    let mesh = Mesh::up();
    // `a: x '` is plain text in YAML (the quote does not open a string); the flow below it is
    // 100,000 deep. Refused by the nesting guard, with the line, before any YAML parser runs.
    let hostile = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata:\n  a: x '\n  b: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let file = mesh.work.path().join("quote.yaml");
    std::fs::write(&file, hostile).unwrap();
    for args in [&["apply", "--dry-run", "-f"][..], &["analyze", "-f"]] {
        let out = mesh.run(&[args, &[file.to_str().unwrap()]].concat());
        let all = text(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {all}");
        assert!(all.contains("quote.yaml:6") && all.contains("nested more than 64 levels deep"), "{all}");
    }
}
