//! `meshrig up --backend kind` as a learner runs it, down to the cluster's API: a `kind` on PATH
//! that stands in for kind's cluster creation (it records what it was asked, loads the image
//! into the test's own Docker daemon with `docker load`, and hands out the fake API server's
//! kubeconfig), the fake API server (`src/testing/kube_api.rs`) with a stand-in for the
//! controllers (a Ready node; each Deployment's replicas available once applied). What is
//! proven: the preflight passes on a real daemon, the cluster config kind is given publishes
//! the environment's ports, the image loads, every manifest is server-side applied as meshrig,
//! `up` waits for the Deployments, a second `up` reuses the cluster and changes nothing, and
//! apply/get/delete go to the API server; `down` keeps the cluster, `down --purge` deletes it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::docker::{cannot_run, start_daemon};
use crate::kube_api::FakeApi;
use crate::support::{ports, text};

const FAKE_KIND: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_KIND_DIR/calls"
case "$1 $2" in
"get clusters") cat "$FAKE_KIND_DIR/clusters" 2>/dev/null; exit 0 ;;
"create cluster") cp "$6" "$FAKE_KIND_DIR/config.yaml" && echo "$4" >> "$FAKE_KIND_DIR/clusters"; echo "Creating cluster \"$4\" ..." >&2; exit 0 ;;
"get kubeconfig") cat "$FAKE_KIND_DIR/kubeconfig"; exit 0 ;;
"load image-archive") docker load -i "$3" >&2; exit $? ;;
"delete cluster") : > "$FAKE_KIND_DIR/clusters"; echo "Deleting cluster \"$4\" ..." >&2; exit 0 ;;
esac
echo "fake kind: unexpected: $*" >&2
exit 1
"#;

struct Env<'a> {
    state: &'a Path,
    fake: &'a Path,
    docker_host: String,
}

impl Env<'_> {
    fn meshrig(&self, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.fake.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_meshrig"))
            .arg("--state-dir")
            .arg(self.state)
            .args(["--env", "kindtest"])
            .args(args)
            .env("PATH", path)
            .env("FAKE_KIND_DIR", self.fake)
            .env("DOCKER_HOST", &self.docker_host)
            .env("MESHRIG_KIND_WAIT", "60")
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.meshrig(args);
        assert!(out.status.success(), "meshrig {}: {}", args.join(" "), text(&out));
        text(&out)
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.fake.join("calls")).unwrap_or_default()
    }
}

/// The controllers' part, for the fake: a Ready node, and for every Deployment its replicas
/// available and one Running pod (with a log), which goes when the Deployment does.
async fn controllers(api: FakeApi) {
    api.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "meshrig-kindtest-control-plane"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    loop {
        // The garbage collector's part: a Deployment's pod goes with it.
        let deployments: Vec<(String, String)> = api
            .list("apps/v1", "Deployment")
            .iter()
            .map(|d| {
                (
                    d["metadata"]["namespace"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for p in api.list("v1", "Pod") {
            let (ns, name) = (p["metadata"]["namespace"].as_str().unwrap(), p["metadata"]["name"].as_str().unwrap());
            if let Some(owner) = name.strip_suffix("-5d8f9-abcde") {
                if !deployments.iter().any(|(n, d)| n == ns && d == owner) {
                    api.remove("v1", "Pod", ns, name);
                }
            }
        }
        for mut d in api.list("apps/v1", "Deployment") {
            if d["status"]["availableReplicas"].is_null() {
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                d["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas});
                let (ns, name) = (
                    d["metadata"]["namespace"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                );
                let template = &d["spec"]["template"];
                let pod = format!("{name}-5d8f9-abcde");
                let statuses: Vec<_> = template["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| json!({"name": c["name"], "ready": true, "restartCount": 0, "state": {"running": {}}}))
                    .collect();
                api.put(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": ns, "labels": template["metadata"]["labels"]},
                    "spec": template["spec"], "status": {"phase": "Running", "containerStatuses": statuses}}));
                for c in template["spec"]["containers"].as_array().unwrap() {
                    api.set_log(
                        &ns,
                        &pod,
                        c["name"].as_str().unwrap(),
                        &format!("first line of {name}\nlast line of {name}\n"),
                    );
                }
                api.put(d);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn up_on_kind_creates_the_cluster_loads_the_image_applies_the_mesh_and_waits() {
    if let Some(why) = cannot_run() {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
            panic!("the kind up test cannot run under CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let daemon = start_daemon();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(FakeApi::start());
    rt.spawn(controllers(api.clone()));
    let work = tempfile::tempdir().unwrap();
    let fake = work.path().join("fake");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(fake.join("bin/kind"), FAKE_KIND).unwrap();
    Command::new("chmod").args(["755", fake.join("bin/kind").to_str().unwrap()]).status().unwrap();
    std::fs::write(fake.join("kubeconfig"), api.kubeconfig()).unwrap();
    let state = work.path().join("state");
    let env = Env { state: &state, fake: &fake, docker_host: daemon.socket() };
    let [http, https, tcp, _] = ports();

    let out = env.ok(&[
        "up",
        "--backend",
        "kind",
        "--http-port",
        &http.to_string(),
        "--https-port",
        &https.to_string(),
        "--tcp-port",
        &tcp.to_string(),
    ]);
    for said in [
        "cluster meshrig-kindtest created",
        "loaded",
        "objects applied",
        "Deployments available",
        "runs on kind cluster meshrig-kindtest",
    ] {
        assert!(out.contains(said), "up says {said:?}:\n{out}");
    }
    // kind was asked for the environment's cluster, with a config publishing its ports.
    assert!(env.calls().contains("create cluster --name meshrig-kindtest --config"), "{}", env.calls());
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(fake.join("config.yaml")).unwrap()).unwrap();
    let mappings = serde_json::to_value(&config["nodes"][0]["extraPortMappings"]).unwrap();
    for port in [http, https, tcp] {
        assert!(
            mappings.as_array().unwrap().iter().any(|m| m["hostPort"] == port && m["listenAddress"] == "127.0.0.1"),
            "port {port} is published on 127.0.0.1: {mappings}"
        );
    }
    // The image is in Docker (kind's load took the archive), under the tag istiod runs.
    let istiod = api.get("apps/v1", "Deployment", "istio-system", "istiod").expect("istiod is applied");
    let image = istiod["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string();
    daemon.run(&["image", "inspect", &image]).unwrap_or_else(|e| panic!("the image {image} is not loaded: {e}"));
    // Everything went in by server-side apply, as meshrig.
    let crd = api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "virtualservices.networking.istio.io");
    assert!(crd.is_some(), "Istio's CRDs are applied");
    assert!(api.get("apps/v1", "Deployment", "istio-system", "istio-ingressgateway").is_some());
    // The sample apps, as on the local backend, in the default namespace labelled for injection.
    let default = api.get("v1", "Namespace", "", "default").unwrap();
    assert_eq!(default["metadata"]["labels"]["istio-injection"], "enabled", "{default}");
    for app in ["httpbin", "productpage-v1", "reviews-v3", "curl"] {
        assert!(api.get("apps/v1", "Deployment", "default", app).is_some(), "{app} is applied");
    }
    assert!(out.contains("the sample apps (httpbin, bookinfo)") && out.contains("/productpage"), "{out}");
    let dry = env.ok(&["up", "--backend", "kind", "--dry-run"]);
    assert!(dry.contains("samples/bookinfo/platform/kube/bookinfo.yaml (bookinfo)"), "the dry run lists the apps too");
    let patches: Vec<_> = api.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert!(
        !patches.is_empty()
            && patches.iter().all(
                |r| r.content_type.starts_with("application/apply-patch") && r.uri.contains("fieldManager=meshrig")
            ),
        "{patches:?}"
    );
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["backend"], "kind", "the backend is remembered: {settings}");

    // `up` again (the backend remembered): the cluster is reused and nothing changes.
    let out = env.ok(&["up"]);
    assert!(out.contains("cluster meshrig-kindtest exists: reusing it"), "{out}");
    assert_eq!(out.matches(" 0 created, 0 configured").count(), 2, "a second up changes nothing:\n{out}");
    assert_eq!(env.calls().matches("create cluster").count(), 1);

    // An addon, and its dashboard through a port-forward, as istioctl's.
    let out = env.ok(&["up", "--addons", "grafana"]);
    assert!(out.contains("objects applied"), "{out}");
    let grafana = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let grafana_addr = grafana.local_addr().unwrap();
    rt.spawn(async move {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "grafana stand-in" }));
        axum::serve(grafana, app).await
    });
    api.forward_to("istio-system", "grafana-5d8f9-abcde", 3000, grafana_addr);
    let mut dashboard = Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--env", "kindtest", "dashboard", "grafana", "--no-browser"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(dashboard.stdout.take().unwrap()).read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert!(url.starts_with("http://localhost:") && url.ends_with('/'), "{url}");
    let port: u16 = url.trim_start_matches("http://localhost:").trim_end_matches('/').parse().unwrap();
    for _ in 0..2 {
        let page = crate::support::get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "localhost", "/").unwrap();
        assert_eq!((page.status, page.body.as_str()), (200, "grafana stand-in"), "each connection is forwarded");
    }
    let _ = dashboard.kill();
    let _ = dashboard.wait();
    let out = env.ok(&["addons", "enable", "prometheus"]);
    assert!(out.contains("prometheus ready") && out.contains("Deployments available"), "{out}");
    assert!(api.get("apps/v1", "Deployment", "istio-system", "prometheus").is_some());
    let listed = env.ok(&["addons", "list"]);
    assert!(listed.lines().any(|l| l.starts_with("prometheus") && l.contains("ready")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("kiali") && l.contains("disabled")), "{listed}");
    assert!(env.ok(&["addons", "disable", "prometheus"]).contains("prometheus removed"));
    assert!(api.get("apps/v1", "Deployment", "istio-system", "prometheus").is_none());
    let out = env.meshrig(&["dashboard", "kiali", "--no-browser"]);
    assert!(!out.status.success() && text(&out).contains("--addons kiali"), "{}", text(&out));

    // apply, get and delete go to the API server; a mistake is named by file and line first.
    let bad = work.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin]\n  http:\n  - route:\n    - destination: {host: httpbin}\n      weight: -5\n").unwrap();
    let out = env.meshrig(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("bad.yaml:10")
            && text(&out).contains("weight must not be negative")
            && text(&out).contains("nothing was applied"),
        "{}",
        text(&out)
    );
    assert!(api.get("networking.istio.io/v1", "VirtualService", "default", "httpbin").is_none());
    let good = work.path().join("good.yaml");
    std::fs::write(&good, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin]\n  http:\n  - route:\n    - destination: {host: httpbin}\n").unwrap();
    assert!(env.ok(&["apply", "-f", good.to_str().unwrap()]).contains("virtualservice/httpbin created"));
    assert!(env.ok(&["apply", "-f", good.to_str().unwrap()]).contains("virtualservice/httpbin unchanged"));
    // The analyzers read the cluster: after an apply, and as `analyze`.
    let ghost = work.path().join("ghost.yaml");
    std::fs::write(&ghost, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ghost\nspec:\n  hosts: [ghost]\n  http:\n  - route:\n    - destination: {host: ghost}\n").unwrap();
    let out = env.ok(&["apply", "-f", ghost.to_str().unwrap()]);
    assert!(
        out.contains(&format!("Error [IST0101] (VirtualService default/ghost {}:1)", ghost.display()))
            && out.contains("Referenced host not found: \"ghost\""),
        "{out}"
    );
    let out = env.meshrig(&["analyze"]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
    assert!(text(&out).contains("IST0101"), "{}", text(&out));
    env.ok(&["delete", "vs", "ghost"]);
    let out = env.meshrig(&["analyze"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(api.get("networking.istio.io/v1", "VirtualService", "default", "httpbin").is_some());
    let listed = env.ok(&["get", "vs"]);
    assert!(listed.contains("httpbin") && listed.contains("[httpbin]"), "{listed}");
    let pods = env.ok(&["get", "pods", "-n", "istio-system"]);
    assert!(pods.contains("istiod-5d8f9-abcde") && pods.contains("1/1") && pods.contains("Running"), "{pods}");

    // The kubectl verbs of Istio's tasks: label, create namespace, create secret.
    let out = env.ok(&["label", "namespace", "default", "istio-injection=enabled"]);
    assert!(out.contains("namespace/default not labeled"), "up labelled it already: {out}");
    let out = env.meshrig(&["label", "namespace", "default", "istio-injection=disabled"]);
    assert!(!out.status.success() && text(&out).contains("--overwrite"), "{}", text(&out));
    assert!(env.ok(&["create", "namespace", "bookinfo"]).contains("namespace/bookinfo created"));
    let again = env.meshrig(&["create", "namespace", "bookinfo"]);
    assert!(!again.status.success() && text(&again).contains("already exists"), "{}", text(&again));
    let out = env.ok(&["label", "namespace", "bookinfo", "istio-injection=enabled"]);
    assert!(out.contains("namespace/bookinfo labeled"), "{out}");
    let ns = api.get("v1", "Namespace", "", "bookinfo").unwrap();
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled", "{ns}");
    env.ok(&["create", "secret", "generic", "creds", "--from-literal=user=admin", "-n", "bookinfo"]);
    assert!(api.get("v1", "Secret", "bookinfo", "creds").is_some());

    // status and logs read the cluster.
    let status = env.ok(&["status"]);
    assert!(status.contains("runs on kind cluster meshrig-kindtest") && status.contains("istiod: ready"), "{status}");
    assert!(status.contains(&format!("http://127.0.0.1:{http}")), "{status}");
    let logs = env.ok(&["logs", "deploy/istiod", "-n", "istio-system", "--tail", "1"]);
    assert_eq!(logs.trim(), "last line of istiod", "{logs}");
    // Followed: what the kubelet sends, until the stream ends (the fake ends it at once).
    let followed = env.ok(&["logs", "deploy/istiod", "-n", "istio-system", "-f"]);
    assert!(followed.contains("first line of istiod\nlast line of istiod"), "{followed}");
    // doctor on a kind environment checks the kind backend and the cluster (not its own ports).
    let doctor = env.meshrig(&["doctor"]);
    let said = text(&doctor);
    assert!(said.contains("meshrig-kindtest: 3 of 3 istio-system pods ready"), "{said}");
    assert!(!said.contains("port"), "the cluster's own ports are not a problem: {said}");
    // exec runs in the pod's container through the API server, with its exit code.
    let curl =
        api.list("v1", "Pod").into_iter().find(|p| p["metadata"]["labels"]["app"] == "curl").expect("curl's pod");
    let curl = curl["metadata"]["name"].as_str().unwrap().to_string();
    api.on_exec("default", &curl, "curl", "{\"headers\": {}}\n", 0);
    let out = env.meshrig(&["exec", "curl", "--", "curl", "-s", "http://httpbin:8000/headers"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("ran: curl -s http://httpbin:8000/headers"),
        "the command went as given: {}",
        text(&out)
    );
    api.on_exec("default", &curl, "curl", "", 7);
    let out = env.meshrig(&["exec", "deploy/curl", "-c", "curl", "--", "curl", "http://nowhere"]);
    assert_eq!(out.status.code(), Some(7), "curl's exit code comes back: {}", text(&out));
    let described = env.ok(&["describe", "pod", "istiod", "-n", "istio-system"]);
    assert!(
        described.contains("Name:") && described.contains("istiod-5d8f9-abcde") && described.contains("Restart Count:"),
        "{described}"
    );
    // What is not built on kind yet says so, and what to use instead.
    let out = env.meshrig(&["proxy-status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("kubectl --context kind-meshrig-kindtest"), "{}", text(&out));

    // down: the mesh leaves the cluster; the cluster, the CRDs and the user's objects stay.
    let out = env.ok(&["down"]);
    assert!(out.contains("the mesh is out of cluster meshrig-kindtest"), "{out}");
    assert!(api.get("apps/v1", "Deployment", "istio-system", "istiod").is_none());
    assert!(api.get("networking.istio.io/v1", "VirtualService", "default", "httpbin").is_some());
    assert!(api
        .get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "virtualservices.networking.istio.io")
        .is_some());
    assert!(!env.calls().contains("delete cluster"));
    assert!(env.ok(&["delete", "vs", "httpbin"]).contains("virtualservice/httpbin deleted"));

    // down --purge: the cluster is deleted, and the environment with it.
    env.ok(&["down", "--purge"]);
    assert!(env.calls().contains("delete cluster --name meshrig-kindtest"), "{}", env.calls());
    assert!(!state.exists());
}
