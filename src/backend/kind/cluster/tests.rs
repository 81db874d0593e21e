//! The kind backend's control plane against the fake API server (`testing::kube_api`): config
//! and Pods through reflectors (with an expired watch forcing a relist), TokenReview, the CA's
//! Secret, and a real sidecar routed by what the API server holds.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::backend::kind::pods;
use crate::testing::kube_api::FakeApi;

fn client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(api.url().parse().expect("a URL"));
    kube::Client::try_from(config).expect("a client")
}

/// Polls `f` every 20 ms until it holds (a watch's effect is asynchronous), for up to 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn virtual_service(header: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "httpbin", "namespace": "default"},
        "spec": {"hosts": ["httpbin"], "http": [{"route": [{"destination": {"host": "httpbin"}}],
            "headers": {"request": {"set": {"x-from-vs": header}}}}]}})
}

fn service(port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin", "namespace": "default"},
        "spec": {"selector": {"app": "httpbin"}, "clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 8000, "targetPort": port}]}})
}

/// A Pod as the API server shows it once scheduled and Ready; `sidecar`: injected.
fn pod(name: &str, app: &str, port: u16, sidecar: bool) -> Value {
    let mut containers = vec![json!({"name": app, "image": "x", "ports": [{"containerPort": port}]})];
    let mut annotations = json!({});
    if sidecar {
        containers.push(json!({"name": "istio-proxy", "image": "meshrig", "args": ["proxy", "--role=sidecar"]}));
        annotations = json!({"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"});
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}, "annotations": annotations},
        "spec": {"serviceAccountName": app, "containers": containers},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}})
}

async fn control_plane(api: &FakeApi, dir: &std::path::Path) -> crate::control_plane::Started {
    let env = crate::env::Env::resolve("kind-test", Some(dir.to_path_buf())).unwrap();
    env.ensure_dirs().unwrap();
    let settings = crate::env::Settings { tracing_port: 0, ..Default::default() };
    crate::control_plane::start(env, Box::new(config::Watched::new()), settings, Box::new(Cluster::new(client(api))))
        .await
        .expect("the control plane starts")
}

fn has_vs(state: &State, header: &str) -> bool {
    let key = crate::resources::ResourceKey::new(Kind::VirtualService, "default", "httpbin");
    let want = crate::resources::Resource::from_value(virtual_service(header)).unwrap();
    state.lock().config.objects().get(&key).is_some_and(|r| r.same_content(&want))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_the_clusters_and_an_expired_watch_relists() {
    let api = FakeApi::start().await;
    api.put(virtual_service("one"));
    // What the validating webhook would have refused, got in anyway: skipped, named in the log.
    api.put(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "typo", "namespace": "default"}, "spec": {"hostz": ["x"]}}));
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&api, dir.path()).await;
    let state = cp.state.clone();
    eventually("the VirtualService is seen", || has_vs(&state, "one")).await;
    let typo = crate::resources::ResourceKey::new(Kind::VirtualService, "default", "typo");
    assert!(state.lock().config.objects().get(&typo).is_none(), "an object meshrig cannot read is skipped");
    assert!(state.lock().config.objects().namespace_exists("default"));

    // A change comes through the watch and moves the version proxies see.
    let before = state.version();
    api.put(virtual_service("two"));
    eventually("the change is seen", || has_vs(&state, "two")).await;
    assert!(state.version().counter > before.counter);

    // The history is gone and the watch is cut: resuming gets 410 and the reflector relists.
    let lists_before = lists_of(&api, "virtualservices");
    api.compact();
    api.cut_watches();
    eventually("a relist after 410", || lists_of(&api, "virtualservices") > lists_before).await;
    api.put(virtual_service("three"));
    eventually("the change after the relist is seen", || has_vs(&state, "three")).await;

    // Deleted on the API server: gone from the config.
    api.remove("networking.istio.io/v1", "VirtualService", "default", "httpbin");
    let key = crate::resources::ResourceKey::new(Kind::VirtualService, "default", "httpbin");
    eventually("the deletion is seen", || state.lock().config.objects().get(&key).is_none()).await;

    // The control plane writes nothing itself: the API server is where applies go.
    let refused = state.lock().config.apply(vec![], false).unwrap_err();
    assert!(refused.to_string().contains("written to the API server"), "{refused}");
}

fn lists_of(api: &FakeApi, plural: &str) -> usize {
    api.requests().iter().filter(|r| r.method == "GET" && r.uri.contains(plural) && !r.uri.contains("watch=")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_the_pod_its_tokenreview_names_and_the_answer_is_kept() {
    let api = FakeApi::start().await;
    api.add_token("tok-1", "default", "httpbin", "httpbin-7d4-abcde");
    let reviews = tokens::TokenReviews::new(client(&api));
    let check: &dyn Credentials = &reviews;
    assert_eq!(check.owner("tok-1").await.as_deref(), Some("default/httpbin-7d4-abcde"));
    assert_eq!(check.owner("tok-1").await.as_deref(), Some("default/httpbin-7d4-abcde"));
    assert_eq!(check.owner("forged").await, None);
    assert_eq!(check.owner("").await, None, "an empty token is nobody, without asking");
    let reviews_sent: Vec<_> = api.requests().into_iter().filter(|r| r.uri.contains("tokenreviews")).collect();
    assert_eq!(reviews_sent.len(), 2, "one review per token, the answer kept: {reviews_sent:?}");
    assert!(reviews_sent.iter().all(|r| r.method == "POST"));
}

#[test]
fn a_review_names_a_pod_only_when_authenticated_for_istio_ca_and_bound_to_a_pod() {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
    let status = |authenticated, audiences: Option<Vec<&str>>, user: &str, pod: Option<&str>| TokenReviewStatus {
        authenticated: Some(authenticated),
        audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
        user: Some(UserInfo {
            username: Some(user.into()),
            extra: pod.map(|p| [("authentication.kubernetes.io/pod-name".to_string(), vec![p.to_string()])].into()),
            ..UserInfo::default()
        }),
        ..TokenReviewStatus::default()
    };
    let sa = "system:serviceaccount:bookinfo:reviews";
    assert_eq!(
        tokens::owner(&status(true, Some(vec!["istio-ca"]), sa, Some("reviews-1"))).as_deref(),
        Some("bookinfo/reviews-1")
    );
    assert_eq!(tokens::owner(&status(true, None, sa, Some("reviews-1"))).as_deref(), Some("bookinfo/reviews-1"));
    assert_eq!(tokens::owner(&status(false, Some(vec!["istio-ca"]), sa, Some("reviews-1"))), None);
    assert_eq!(tokens::owner(&status(true, Some(vec!["https://kubernetes.default.svc"]), sa, Some("r"))), None);
    assert_eq!(tokens::owner(&status(true, None, sa, None)), None, "a token not bound to a pod");
    assert_eq!(tokens::owner(&status(true, None, "kubernetes-admin", Some("r"))), None, "not a service account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_root_is_made_once_and_kept_in_a_secret() {
    let api = FakeApi::start().await;
    let first = ca::load_or_create(client(&api)).await.unwrap();
    let second = ca::load_or_create(client(&api)).await.unwrap();
    assert_eq!(first.root_pem(), second.root_pem(), "a restarted control plane signs with the same root");
    let secret = api.get("v1", "Secret", "istio-system", "istio-ca-secret").expect("the Secret");
    assert!(secret["data"]["ca-cert.pem"].is_string() && secret["data"]["ca-key.pem"].is_string());

    // Damaged: an error naming the Secret and what to do; the Secret is left as it is.
    let mut damaged = secret.clone();
    damaged["data"]["ca-key.pem"] = json!("bm90IGEga2V5");
    api.put(damaged);
    let e = ca::load_or_create(client(&api)).await.unwrap_err();
    assert!(
        e.contains("istio-system/istio-ca-secret is damaged: ca-key.pem")
            && e.contains("kubectl -n istio-system delete secret"),
        "{e}"
    );
    assert_eq!(
        api.get("v1", "Secret", "istio-system", "istio-ca-secret").unwrap()["data"]["ca-key.pem"],
        "bm90IGEga2V5"
    );
}

#[test]
fn a_pods_phase_is_what_status_shows() {
    use crate::api::Phase;
    let mut p = pod("a", "a", 80, true);
    assert_eq!(pods::phase(&p), Phase::Running);
    p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    assert_eq!(pods::phase(&p), Phase::Starting);
    p["status"]["containerStatuses"] = json!([{"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
    assert_eq!(pods::phase(&p), Phase::CrashLoopBackOff);
    assert_eq!(pods::phase(&json!({"status": {"phase": "Pending"}})), Phase::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_is_routed_by_what_the_api_server_holds() {
    // httpbin, a plain pod (no sidecar) at 127.0.0.1 on the port it listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, crate::apps::httpbin::router()).await });

    let api = FakeApi::start().await;
    api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"istio-injection": "enabled"}}}));
    api.put(service(app_port));
    api.put(virtual_service("one"));
    api.put(pod("httpbin-1", "httpbin", app_port, false));
    api.put(pod("sleep-1", "sleep", 9, true));
    api.add_token("sleep-token", "default", "sleep", "sleep-1");
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&api, dir.path()).await;
    let state = cp.state.clone();
    eventually("the pods are seen", || state.lock().pods.len() == 2).await;

    let config = crate::proxy::Config {
        role: crate::snapshot::Role::Sidecar,
        control_plane: crate::api::Client::new(cp.address, "sleep-token".into()),
        namespace: "default".into(),
        pod: "sleep-1".into(),
        inbound_ports: vec![],
        publish: Default::default(),
        max_connections: crate::env::DEFAULT_MAX_CONNECTIONS,
        listen: crate::proxy::Listen::Loopback,
    };
    let proxy = crate::proxy::start(config).await.expect("the sidecar gets its snapshot with its ServiceAccount token");
    let outbound: SocketAddr = proxy.addrs[&crate::ready::Listener::Outbound];
    let client =
        crate::net::per_request().proxy(reqwest::Proxy::http(format!("http://{outbound}")).unwrap()).build().unwrap();
    let header = || async {
        let (status, body) = crate::testing::get(&client, "http://httpbin:8000/headers").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["headers"]["X-From-Vs"].as_array().and_then(|a| a.first()).and_then(|s| s.as_str()).unwrap_or("").to_string()
    };
    assert_eq!(header().await, "one");

    // Edited on the API server (kubectl apply): the sidecar is routed by the new version.
    api.put(virtual_service("two"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while header().await != "two" {
        assert!(tokio::time::Instant::now() < deadline, "the sidecar never got the edited VirtualService");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The pod goes: the sidecar has no endpoint for httpbin (503, as Envoy's no healthy upstream).
    api.remove("v1", "Pod", "default", "httpbin-1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = crate::testing::get(&client, "http://httpbin:8000/headers").await;
        if status == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pod's deletion never reached the sidecar: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn istiods_deployment_gives_it_what_injection_needs() {
    let plan = crate::backend::kind::tests::plan();
    let istiod = crate::backend::kind::render::manifests(&plan)
        .unwrap()
        .into_iter()
        .flat_map(|r| r.documents)
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "istiod")
        .expect("istiod's Deployment");
    let container = &istiod["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["control-plane", "--kubernetes"]));
    let vars: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect();
    assert_eq!(vars["MESHRIG_ENV"], plan.env);
    let from_env = istiod::plan(&vars["MESHRIG_ENV"], |k| vars.get(k).cloned()).unwrap();
    assert_eq!((from_env.image, from_env.sample_images), (plan.image.clone(), plan.sample_images));
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == vars["MESHRIG_STATE_DIR"].as_str()), "the state dir is a volume");

    assert!(istiod::plan("e", |_| None).unwrap_err().contains("MESHRIG_IMAGE is not set"));
    let bad = istiod::plan("e", |k| Some(if k == "MESHRIG_IMAGE" { "i".into() } else { "pulled".into() }));
    assert!(bad.unwrap_err().contains("MESHRIG_SAMPLE_IMAGES=pulled: use builtin or upstream"));
}

#[test]
fn the_ca_bundle_goes_into_every_webhook_once() {
    let mut config =
        json!({"webhooks": [{"name": "a", "clientConfig": {"caBundle": ""}}, {"name": "b", "clientConfig": {}}]});
    assert!(istiod::with_ca_bundle(&mut config, "Uk9PVA=="));
    assert!(config["webhooks"].as_array().unwrap().iter().all(|w| w["clientConfig"]["caBundle"] == "Uk9PVA=="));
    assert!(!istiod::with_ca_bundle(&mut config, "Uk9PVA=="), "nothing to change the second time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_is_served_before_every_watch_has_listed_the_cluster() {
    let api = FakeApi::start().await;
    api.hold("telemetries");
    api.put(pod("sleep-1", "sleep", 9, true));
    api.add_token("sleep-token", "default", "sleep", "sleep-1");
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(&api, dir.path()).await;
    let state = cp.state.clone();
    eventually("the pod is seen", || state.lock().pods.len() == 1).await;
    assert!(!state.backend.synced(), "one watch has not listed yet");
    let client = crate::api::Client::new(cp.address, "sleep-token".into());
    let asked = tokio::spawn(async move { client.get::<Value>("/v1/snapshot?namespace=default&pod=sleep-1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "the snapshot waits for the last watch");
    api.release();
    let answer = tokio::time::timeout(Duration::from_secs(10), asked).await.expect("answered once synced").unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    assert!(state.backend.synced());
}
