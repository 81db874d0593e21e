//! CLI manners: data on stdout and messages on stderr, colour only on a terminal, `-o` formats
//! that are what they say, distinct exit codes, no panic when the reader of stdout goes away,
//! and a `status` that reports a stopped environment instead of failing.

use std::process::Stdio;

use crate::support::{text, Mesh};

/// A command run in an environment that was never started.
fn stopped(args: &[&str]) -> std::process::Output {
    let state = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(args)
        .env("MESHRIG_STATE_DIR", state.path())
        .env_remove("MESHRIG_ENV")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

#[test]
fn a_stopped_environment_is_reported_with_its_own_exit_code() {
    let out = stopped(&["status", "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON on stdout");
    assert_eq!(v["running"], false);
    let out = stopped(&["status", "-o", "yaml"]);
    let v: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("valid YAML on stdout");
    assert_eq!(v["running"], serde_yaml::Value::Bool(false));
    assert!(!String::from_utf8_lossy(&out.stdout).trim_start().starts_with('{'), "YAML, not JSON");

    let out = stopped(&["get", "pods"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("meshrig up"), "one error style, with what to do: {err}");

    let out = stopped(&["lab", "list"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'), "no colour into a pipe, even without NO_COLOR");
}

#[test]
fn bad_input_and_usage_errors_have_distinct_codes() {
    let mesh = Mesh::up();
    let bad = mesh.work.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Namespace\nmetadata: {name: [x]}\n").unwrap();
    let out = mesh.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let zero = mesh.work.path().join("zero.yaml");
    std::fs::write(
        &zero,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: z}\nspec:\n  hosts: [httpbin]\n  http:\n  - route:\n    - {destination: {host: httpbin}, weight: 0}\n    - {destination: {host: httpbin}, weight: 0}\n",
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", zero.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "refused by the control plane: {}", text(&out));
    assert_eq!(mesh.run(&["apply", "--no-such-flag"]).status.code(), Some(2));

    let up = mesh.run(&["up"]);
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert_eq!(stdout.trim(), format!("http://{}", mesh.gateway()), "up prints the gateway URL on stdout");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let mesh = Mesh::up();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = mesh.cmd(&["status", "-o", "json"]).stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "as a process killed by SIGPIPE: {err}");
}

#[test]
fn hostile_inputs_are_refused_quickly_with_what_to_do_and_nothing_applied() {
    let mesh = Mesh::up();
    let out = mesh.run(&["apply", "-f", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("larger than 16 MiB"), "{}", text(&out));

    let huge = mesh.work.path().join("huge.yaml");
    std::fs::write(
        &huge,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: huge}\nspec:\n  replicas: 2147483647\n  selector: {matchLabels: {app: huge}}\n  template:\n    metadata: {labels: {app: huge}}\n    spec:\n      containers: [{name: c, image: curlimages/curl}]\n",
    )
    .unwrap();
    let out = mesh.run(&["apply", "--dry-run", "-f", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("spec.replicas") && text(&out).contains("1000"), "{}", text(&out));
    assert!(!mesh.ok(&["get", "deploy"]).contains("huge"));
}

#[test]
fn get_pods_and_status_agree_on_ready_as_kubectl_counts_it() {
    let mesh = Mesh::up();
    let row = |out: &str, name: &str| out.lines().find(|l| l.contains(name)).unwrap_or_default().to_string();
    let pods = mesh.ok(&["get", "pods", "-A"]);
    let status = mesh.ok(&["status"]);
    for (name, ready) in [("httpbin-", "2/2"), ("curl-", "2/2"), ("istio-ingressgateway-", "1/1")] {
        assert!(row(&pods, name).contains(ready), "get pods {name} {ready}:\n{pods}");
        assert!(row(&status, name).contains(ready), "status {name} {ready}:\n{status}");
    }
}

#[test]
fn logs_show_a_containers_lines_with_rfc3339_timestamps() {
    let mesh = Mesh::up();
    // The gateway logs each listener it opens for a Gateway server.
    mesh.ok(&["samples"]);
    mesh.ok(&["apply", "--wait", "-f", "samples/httpbin/httpbin-gateway.yaml"]);
    let proxy = mesh.ok(&["logs", "deploy/istio-ingressgateway", "-n", "istio-system", "--tail", "50"]);
    let line = proxy.lines().find(|l| l.contains("listening for port")).unwrap_or_else(|| panic!("{proxy}"));
    let stamp = line.split_whitespace().next().unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "RFC 3339 with milliseconds: {stamp}"
    );
    let one = mesh.ok(&["logs", "deploy/istio-ingressgateway", "-n", "istio-system", "--tail", "1"]);
    assert_eq!(one.trim_end().lines().count(), 1, "{one}");
    let wrong = mesh.run(&["logs", "deploy/httpbin", "-c", "nginx"]);
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("httpbin, istio-proxy"), "names the containers: {}", text(&wrong));
}

#[test]
fn completion_scripts_cover_the_commands_and_parse() {
    let out = stopped(&["completion", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    for word in ["proxy-config", "samples", "logs", "--tail"] {
        assert!(script.contains(word), "{word} is completed");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &script).unwrap();
    let syntax = std::process::Command::new("bash").arg("-n").arg(file.path()).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        assert!(stopped(&["completion", shell]).status.success());
    }
}

#[test]
fn create_and_label_a_namespace_as_the_tutorials_do() {
    let mesh = Mesh::up();
    assert!(mesh.ok(&["create", "namespace", "demo"]).contains("namespace/demo created"));
    assert!(!mesh.run(&["create", "namespace", "demo"]).status.success(), "it exists");
    mesh.ok(&["label", "namespace", "demo", "istio-injection=enabled"]);
    let httpbin = crate::support::sample("httpbin/httpbin.yaml");
    mesh.ok(&["apply", "--wait", "-n", "demo", "-f", httpbin.to_str().unwrap()]);
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["namespace"] == "demo").unwrap();
    assert_eq!(pod["role"], "sidecar", "the label turns injection on");

    // get -l, get all, describe pod: what the tutorials type next.
    let pods = mesh.ok(&["get", "pods", "-n", "demo", "-l", "app=httpbin,version=v1"]);
    assert!(pods.contains("httpbin-") && pods.contains("2/2"), "{pods}");
    assert!(mesh.ok(&["get", "pods", "-n", "demo", "-l", "app=ratings"]).contains("No pods found"));
    let services = mesh.ok(&["get", "svc", "-A", "-l", "app=httpbin"]);
    assert!(services.contains("demo") && services.contains("default"), "{services}");
    assert!(!mesh.ok(&["get", "svc", "-A", "-l", "app!=httpbin"]).contains(" httpbin "));
    let all = mesh.ok(&["get", "all", "-n", "demo"]);
    for want in ["pod/httpbin-", "service/httpbin", "deployment.apps/httpbin"] {
        assert!(all.contains(want), "get all shows {want}:\n{all}");
    }
    let described = mesh.ok(&["describe", "pod", "httpbin", "-n", "demo"]);
    for want in [
        "Namespace:        demo",
        "app=httpbin",
        "  httpbin:",
        "go-httpbin",
        "8080/TCP (listening on 127.0.0.1:",
        "  istio-proxy:",
        "SYNCED",
    ] {
        assert!(described.contains(want), "describe shows {want:?}:\n{described}");
    }

    let out = mesh.run(&["label", "ns", "demo", "istio-injection=disabled"]);
    assert!(!out.status.success() && text(&out).contains("--overwrite"), "{}", text(&out));
    mesh.ok(&["label", "ns", "demo", "istio-injection-"]);
    let ns = mesh.ok(&["get", "ns", "demo", "-o", "json"]);
    assert!(!ns.contains("istio-injection"), "{ns}");

    // delete namespace takes what is in it along; default cannot be deleted.
    let deleted = mesh.ok(&["delete", "namespace", "demo"]);
    assert!(deleted.contains("namespace/demo deleted") && deleted.contains("deployment/httpbin deleted"), "{deleted}");
    mesh.ok(&["apply", "--wait", "-f", httpbin.to_str().unwrap()]);
    let status = mesh.status();
    assert!(
        !status["pods"].as_array().unwrap().iter().any(|p| p["namespace"] == "demo"),
        "the namespace's pods are gone"
    );
    let out = mesh.run(&["delete", "namespace", "default"]);
    assert!(!out.status.success() && text(&out).contains("may not be deleted"), "{}", text(&out));
}

#[test]
fn apply_reads_a_directory_tree_only_when_asked_to() {
    let mesh = Mesh::up();
    mesh.ok(&["samples"]);
    // samples/ holds only subdirectories: without -R there is nothing to apply.
    let flat = mesh.run(&["apply", "--dry-run", "-f", "samples"]);
    assert!(!flat.status.success(), "{}", text(&flat));
    let tree = mesh.ok(&["apply", "--dry-run", "-R", "-f", "samples"]);
    for applied in ["gateway/httpbin-gateway", "deployment/sleep", "deployment/curl"] {
        assert!(tree.contains(applied), "{applied}:\n{tree}");
    }
}

#[test]
fn errors_the_control_plane_finds_name_the_file_and_line_and_nothing_is_applied() {
    let mesh = Mesh::up();
    let file = mesh.work.path().join("routes.yaml");
    // Two documents; the second has a regex that does not compile (line 21) and a destination
    // host of `*` (line 24), both found by validation in the control plane.
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ok-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [a.example.com]
  gateways: [ok-gateway]
  http:
  - match:
    - uri:
        regex: \"(unclosed\"
    route:
    - destination:
        host: \"*\"
",
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "invalid input:\n{}", text(&out));
    let err = text(&out);
    let at = |line: usize| format!("{}:{line}: VirtualService default/bad: ", file.display());
    assert!(err.contains(&format!("{}spec.http[0].match[0].uri.regex", at(21))), "{err}");
    assert!(err.contains(&format!("{}spec.http[0].route[0].destination.host", at(24))), "{err}");
    assert!(
        mesh.ok(&["get", "gateways"]).contains("No resources found"),
        "all or nothing: the good document was not applied"
    );

    // A missing namespace points at the document's metadata.
    let other = mesh.work.path().join("ns.yaml");
    std::fs::write(
        &other,
        "# a comment\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  namespace: nowhere\n",
    )
    .unwrap();
    let err = text(&mesh.run(&["apply", "-f", other.to_str().unwrap()]));
    assert!(
        err.contains(&format!(
            "{}:6: ServiceAccount nowhere/x: metadata.namespace: namespace \"nowhere\" not found",
            other.display()
        )),
        "{err}"
    );
}

/// Applies race each other (each plans outside the control plane's lock, then commits against
/// the store as it still is): every one lands, none is lost; so do racing deletes.
#[test]
fn concurrent_applies_and_deletes_all_land() {
    let mesh = Mesh::up();
    let race = |args: Vec<Vec<String>>| {
        let threads: Vec<_> = args
            .into_iter()
            .map(|a| {
                let mut cmd = mesh.cmd(&a.iter().map(String::as_str).collect::<Vec<_>>());
                std::thread::spawn(move || cmd.output().unwrap())
            })
            .collect();
        for t in threads {
            let out = t.join().unwrap();
            assert!(out.status.success(), "{}", text(&out));
        }
    };
    let files: Vec<String> = (0..8)
        .map(|i| {
            let path = mesh.work.path().join(format!("vs{i}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: race-{i}}}\n\
                     spec: {{hosts: [race-{i}.example.com], http: [{{route: [{{destination: {{host: httpbin}}}}]}}]}}\n"
                ),
            )
            .unwrap();
            path.display().to_string()
        })
        .collect();
    race(files.iter().map(|f| vec!["apply".into(), "-f".into(), f.clone()]).collect());
    let listed = mesh.ok(&["get", "vs"]);
    for i in 0..8 {
        assert!(listed.contains(&format!("race-{i}")), "race-{i} landed:\n{listed}");
    }
    race((0..8).map(|i| vec!["delete".into(), "vs".into(), format!("race-{i}")]).collect());
    assert!(!mesh.ok(&["get", "vs"]).contains("race-"), "every delete landed");
}
