//! The binary as istiod (`meshrig control-plane --kubernetes`) against the fake API server
//! (`src/testing/kube_api.rs`, reached through a kubeconfig as kubectl would): it makes the CA
//! root's Secret, fills in the webhook configurations' `caBundle`, says it is ready once it has
//! listed the cluster, serves the webhooks over TLS with a certificate the API server trusts by
//! that bundle, and serves a sidecar process whose projected token the API server reviews. A
//! restarted istiod signs with the same root and the sidecar keeps its config.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::kube_api::FakeApi;
use crate::support::{ports, ready_line, within};

const IMAGE: &str = "docker.io/library/meshrig:test-000000";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn istiod(
    kubeconfig: &std::path::Path,
    state: &std::path::Path,
    p: [u16; 4],
    log: &std::path::Path,
    zipkin: &str,
) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(["control-plane", "--kubernetes"])
        .args(["--api-port", &p[0].to_string(), "--webhook-port", &p[1].to_string()])
        .args(["--monitoring-port", &p[2].to_string()])
        .env("KUBECONFIG", kubeconfig)
        .env("MESHRIG_ENV", "kindtest")
        .env("MESHRIG_STATE_DIR", state)
        .env("MESHRIG_IMAGE", IMAGE)
        .env("MESHRIG_ZIPKIN", zipkin)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start istiod");
    let log = log.to_path_buf();
    ready_line(&mut child, "istiod", || std::fs::read_to_string(&log).unwrap_or_default());
    Killed(child)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn webhook_configurations(api: &FakeApi) {
    let plan = meshrig::backend::kind::render::Plan {
        env: "kindtest".into(),
        image: IMAGE.into(),
        http_port: 8080,
        https_port: 8443,
        tcp_port: 31400,
        sample_images: Default::default(),
    };
    let manifests = meshrig::backend::kind::render::manifests(&plan).unwrap();
    for doc in manifests.into_iter().flat_map(|r| r.documents) {
        if doc["kind"].as_str().is_some_and(|k| k.ends_with("WebhookConfiguration")) {
            api.put(doc);
        }
    }
}

#[test]
fn the_binary_runs_as_istiod_against_the_api_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(FakeApi::start());
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    webhook_configurations(&api);

    // httpbin: a plain pod (no sidecar) on this machine, behind a Service and a VirtualService.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app.local_addr().unwrap().port();
    drop(app);
    let mut httpbin = Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(["app", "httpbin", "--container-port", "8080", "--listen", &format!("127.0.0.1:{app_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ready_line(&mut httpbin, "httpbin", String::new);
    let _httpbin = Killed(httpbin);
    api.put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin", "namespace": "default"},
        "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000, "targetPort": app_port}]}}));
    api.put(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "httpbin", "namespace": "default"},
        "spec": {"hosts": ["httpbin"], "http": [{"route": [{"destination": {"host": "httpbin"}}],
            "headers": {"request": {"set": {"x-from-vs": "cluster"}}}}]}}));
    for (name, app, port, sidecar) in [("httpbin-1", "httpbin", app_port, false), ("sleep-1", "sleep", 9, true)] {
        let mut containers = vec![json!({"name": app, "image": "x", "ports": [{"containerPort": port}]})];
        let mut annotations = json!({});
        if sidecar {
            containers.push(json!({"name": "istio-proxy", "image": IMAGE, "args": ["proxy", "--role=sidecar"]}));
            annotations = json!({"sidecar.istio.io/status": "{}"});
        }
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}, "annotations": annotations},
            "spec": {"serviceAccountName": app, "containers": containers},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.add_token("projected-sleep-token", "default", "sleep", "sleep-1");

    let p = ports();
    let log = work.path().join("istiod.log");
    let istiod_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let state = work.path().join("state");
    // A Zipkin collector (the Jaeger addon's, in a cluster): what istiod hands on.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let zipkin = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let zipkin_url = format!("http://{}/api/v2/spans", zipkin.local_addr().unwrap());
    let store = received.clone();
    let app = axum::Router::new().route(
        "/api/v2/spans",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                let spans: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
                store.lock().unwrap().extend(spans);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    rt.spawn(async move { axum::serve(zipkin, app).await });
    let mut running = istiod(&kubeconfig, &state, p, &log, &zipkin_url);

    // Ready once every watch has listed the cluster.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    within(Duration::from_secs(20), Duration::from_millis(50), "istiod is ready", || {
        let r = rt.block_on(client.get(format!("http://{}/ready", local(p[2]))).send()).map_err(|e| e.to_string())?;
        if r.status() == 200 {
            Ok(())
        } else {
            Err(format!("{}: {}", r.status(), istiod_log()))
        }
    });

    // The CA root is in its Secret, and both webhook configurations trust it.
    let secret = api.get("v1", "Secret", "istio-system", "istio-ca-secret").expect("istiod made its CA's Secret");
    let root_b64 = secret["data"]["ca-cert.pem"].as_str().unwrap().to_string();
    let root = base64::engine::general_purpose::STANDARD.decode(&root_b64).unwrap();
    within(Duration::from_secs(10), Duration::from_millis(50), "caBundle is filled in", || {
        let all: Vec<Value> = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
            .iter()
            .map(|k| {
                api.get(
                    "admissionregistration.k8s.io/v1",
                    k,
                    "",
                    if k.starts_with('M') { "istio-sidecar-injector" } else { "istio-validator-istio-system" },
                )
                .unwrap()
            })
            .collect();
        let webhooks: Vec<&Value> = all.iter().flat_map(|c| c["webhooks"].as_array().unwrap()).collect();
        if webhooks.len() >= 2 && webhooks.iter().all(|w| w["clientConfig"]["caBundle"] == root_b64.as_str()) {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });

    // The API server's call to the validating webhook: over TLS, trusted by that bundle, as
    // istiod.istio-system.svc; a misspelt VirtualService is refused with meshrig's message.
    let tls = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&root).unwrap()])
        .resolve("istiod.istio-system.svc", local(p[1]))
        .build()
        .unwrap();
    let review = |path: &str, object: Value| -> Value {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": "CREATE", "namespace": "default", "object": object}});
        let url = format!("https://istiod.istio-system.svc:{}{path}", p[1]);
        let request = tls.post(url).header("content-type", "application/json").body(body.to_string());
        let r = rt.block_on(request.send()).expect("the webhook answers over TLS");
        serde_json::from_str(&rt.block_on(r.text()).unwrap()).unwrap()
    };
    let refused = review(
        "/validate",
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x", "namespace": "default"},
            "spec": {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "x"}, "wieght": 10}]}]}}),
    );
    assert_eq!(refused["response"]["allowed"], false, "{refused}");
    assert!(refused["response"]["status"]["message"].as_str().unwrap().contains("wieght"), "{refused}");
    let injected = review(
        "/inject",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"app": "ratings"}},
            "spec": {"containers": [{"name": "ratings", "image": "docker.io/istio/examples-bookinfo-ratings-v1:1.20.3", "ports": [{"containerPort": 9080}]}]}}),
    );
    let patch =
        base64::engine::general_purpose::STANDARD.decode(injected["response"]["patch"].as_str().unwrap()).unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("istio-proxy") && patch.contains(IMAGE), "{patch}");

    // A sidecar process with its projected token: the API server reviews it, istiod serves it
    // the cluster's config, and it routes by the VirtualService.
    let token = work.path().join("istio-token");
    std::fs::write(&token, "projected-sleep-token").unwrap();
    let proxy_log = work.path().join("proxy.log");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(["proxy", "--role", "sidecar", "--namespace", "default", "--pod", "sleep-1"])
        .arg(format!("--control-plane=127.0.0.1:{}", p[0]))
        .arg(format!("--token-file={}", token.display()))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&proxy_log).unwrap())
        .spawn()
        .unwrap();
    let line = ready_line(&mut proxy, "the sidecar", || {
        std::fs::read_to_string(&proxy_log).unwrap_or_default() + &istiod_log()
    });
    let _proxy = Killed(proxy);
    let announced: Value = serde_json::from_str(line.trim().trim_start_matches("READY").trim()).unwrap();
    let outbound: SocketAddr = announced["outbound"].as_str().unwrap().parse().unwrap();
    let through =
        reqwest::Client::builder().proxy(reqwest::Proxy::http(format!("http://{outbound}")).unwrap()).build().unwrap();
    let header = || -> Result<String, String> {
        let r = rt.block_on(through.get("http://httpbin:8000/headers").send()).map_err(|e| e.to_string())?;
        let v: Value =
            serde_json::from_str(&rt.block_on(r.text()).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        Ok(v["headers"]["X-From-Vs"][0].as_str().unwrap_or("").to_string())
    };
    within(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the sidecar routes by the cluster's VirtualService",
        || match header()? {
            h if h == "cluster" => Ok(()),
            h => Err(h),
        },
    );
    // The sidecar's spans reach the Zipkin collector, as the calling workload's.
    within(Duration::from_secs(20), Duration::from_millis(100), "spans reach Zipkin", || {
        let spans = received.lock().unwrap().clone();
        match spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "sleep.default") {
            Some(s) if s["kind"] == "CLIENT" && s["traceId"].as_str().is_some_and(|t| t.len() == 32) => Ok(()),
            _ => Err(format!("{spans:?}")),
        }
    });
    let reviews = api.requests().iter().filter(|r| r.uri.contains("tokenreviews")).count();
    assert!(reviews >= 1, "the token was reviewed by the API server");

    // istiod crashes and comes back: same root (from its Secret), and the sidecar keeps serving.
    let _ = running.0.kill();
    let _ = running.0.wait();
    assert_eq!(header().unwrap(), "cluster", "the sidecar serves while istiod is down");
    running = istiod(&kubeconfig, &state, p, &log, &zipkin_url);
    let secret = api.get("v1", "Secret", "istio-system", "istio-ca-secret").unwrap();
    assert_eq!(secret["data"]["ca-cert.pem"], root_b64.as_str(), "the root is the same after a restart");
    api.put(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "httpbin", "namespace": "default"},
        "spec": {"hosts": ["httpbin"], "http": [{"route": [{"destination": {"host": "httpbin"}}],
            "headers": {"request": {"set": {"x-from-vs": "after-restart"}}}}]}}));
    within(Duration::from_secs(20), Duration::from_millis(50), "the sidecar follows the restarted istiod", || {
        match header()? {
            h if h == "after-restart" => Ok(()),
            h => Err(h),
        }
    });
    drop(running);
}
