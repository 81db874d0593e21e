//! `meshrig control-plane --kubernetes`: what the `istiod` Deployment runs. The control plane
//! over the cluster (config and Pods watched, TokenReview credentials, the CA root from its
//! Secret) with its API on every interface of the pod (15010), the admission webhooks over TLS
//! on 15017 with a certificate for `istiod.istio-system.svc` from the mesh CA (whose root it
//! writes into the webhook configurations' `caBundle`), `/ready` on 15014 once every watch
//! has listed the cluster, so no proxy is served a partial config, and the proxies' spans handed
//! on to Zipkin's address (the Jaeger addon).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use hyper::StatusCode;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;

use super::{ca, config, Cluster};
use crate::backend::kind::render::Plan;
use crate::backend::kind::{webhook, SampleImages, API_PORT, WEBHOOK_PORT};
use crate::env::{Env, Settings};
use crate::net;

/// istiod's monitoring port (readiness; Istio's `http-monitoring`).
pub const MONITORING_PORT: u16 = 15014;
/// The names the API server calls the webhooks by.
pub const DNS_NAMES: [&str; 3] = ["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod"];
/// The webhook configurations whose `caBundle` istiod fills in.
pub const MUTATING: &str = "istio-sidecar-injector";
pub const VALIDATING: &str = "istio-validator-istio-system";

/// What injection renders, from the Deployment's environment (`MESHRIG_IMAGE`,
/// `MESHRIG_SAMPLE_IMAGES`); the environment's name is `env`. Pure.
pub fn plan(env: &str, var: impl Fn(&str) -> Option<String>) -> Result<Plan, String> {
    let image = var("MESHRIG_IMAGE").filter(|s| !s.is_empty()).ok_or(
        "MESHRIG_IMAGE is not set: istiod injects its own image into pods, and the Deployment names it (`meshrig up --backend kind` renders it)",
    )?;
    let sample_images = match var("MESHRIG_SAMPLE_IMAGES").as_deref() {
        None | Some("" | "builtin") => SampleImages::Builtin,
        Some("upstream") => SampleImages::Upstream,
        Some(other) => return Err(format!("MESHRIG_SAMPLE_IMAGES={other}: use builtin or upstream")),
    };
    Ok(Plan { env: env.to_string(), image, http_port: 0, https_port: 0, tcp_port: 0, sample_images })
}

/// Where istiod listens, on every interface of its pod.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub api: u16,
    pub webhooks: u16,
    pub monitoring: u16,
}

impl Default for Ports {
    fn default() -> Ports {
        Ports { api: API_PORT, webhooks: WEBHOOK_PORT, monitoring: MONITORING_PORT }
    }
}

/// Runs istiod until it is stopped.
pub async fn run(env: Env, ports: Ports) -> Result<(), String> {
    let plan = plan(&env.name, |k| std::env::var(k).ok())?;
    env.ensure_dirs().map_err(|e| e.to_string())?;
    let client = super::client().await?;
    let ca = ca::load_or_create(client.clone()).await?;
    let (chain, key) = ca
        .sign_server(&DNS_NAMES, Duration::from_secs(365 * 24 * 3600))
        .map_err(|e| format!("the webhook certificate: {e}"))?;
    let root = ca.root_pem().to_string();
    let tls = webhook::server_config(&chain, &key)?;
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let webhooks = net::bind(any(ports.webhooks)).await.map_err(|e| format!("bind {}: {e}", any(ports.webhooks)))?;
    let monitoring =
        net::bind(any(ports.monitoring)).await.map_err(|e| format!("bind {}: {e}", any(ports.monitoring)))?;

    let cluster = Cluster::new(client.clone());
    let synced = cluster.synced_check();
    let settings = Settings { tracing_port: 0, ..Settings::default() };
    let started = crate::control_plane::start_with(
        env,
        Box::new(config::Watched::new()),
        settings,
        Box::new(cluster),
        any(ports.api),
        ca,
    )
    .await
    .map_err(|e| e.to_string())?;
    // The proxies' spans go on to Zipkin's address (the Jaeger addon's `zipkin` Service), as
    // Istio's proxies send theirs; `MESHRIG_ZIPKIN` names another, empty for none.
    let zipkin = std::env::var("MESHRIG_ZIPKIN").unwrap_or_else(|_| crate::control_plane::zipkin::ISTIO_ZIPKIN.into());
    if !zipkin.is_empty() {
        started.traces.export_to(crate::control_plane::zipkin::Exporter::start(zipkin));
    }
    tokio::spawn(webhook::serve(webhooks, tls, plan));
    tokio::spawn(fill_ca_bundles(client, root));
    tokio::spawn(net::serve(monitoring, move |req, _| {
        let synced = synced.clone();
        async move {
            match req.uri().path() {
                "/ready" if synced() => net::text(StatusCode::OK, "ready\n"),
                "/ready" => {
                    net::text(StatusCode::SERVICE_UNAVAILABLE, "syncing: not every watch has listed the cluster yet\n")
                }
                _ => net::text(StatusCode::NOT_FOUND, "istiod serves /ready here\n"),
            }
        }
    }));
    net::log(&format!(
        "istiod: API on {}, webhooks on {}, readiness on {}",
        started.address,
        any(ports.webhooks),
        any(ports.monitoring)
    ));
    let mut addrs = crate::ready::Addrs::new();
    addrs.insert(crate::ready::Listener::Api, started.address);
    crate::ready::announce(&addrs);
    tokio::select! {
        _ = started.serving => Ok(()),
        _ = crate::shutdown::signalled() => {
            net::log("istiod: stopping; the proxies keep serving what they were last sent");
            Ok(())
        }
    }
}

/// Writes the CA root into every webhook of the two configurations, retrying until both hold
/// it (they may be applied after istiod starts).
async fn fill_ca_bundles(client: kube::Client, root_pem: String) {
    let bundle = base64::engine::general_purpose::STANDARD.encode(root_pem);
    for (kind, name) in [("MutatingWebhookConfiguration", MUTATING), ("ValidatingWebhookConfiguration", VALIDATING)] {
        let ar = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_ascii_lowercase()),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let mut said = false;
        loop {
            match fill_one(&api, name, &bundle).await {
                Ok(()) => {
                    net::log(&format!("istiod: {kind} {name} trusts the mesh CA"));
                    break;
                }
                Err(e) => {
                    if !said {
                        net::log(&format!("istiod: {kind} {name}: {e} (retrying)"));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

async fn fill_one(api: &Api<DynamicObject>, name: &str, bundle: &str) -> Result<(), String> {
    let mut object = api.get(name).await.map_err(|e| e.to_string())?;
    if !with_ca_bundle(&mut object.data, bundle) {
        return Ok(());
    }
    api.replace(name, &PostParams::default(), &object).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Sets `caBundle` in every webhook of a configuration; false when all already had it. Pure.
pub fn with_ca_bundle(data: &mut serde_json::Value, bundle: &str) -> bool {
    let mut changed = false;
    for w in data["webhooks"].as_array_mut().into_iter().flatten() {
        if w["clientConfig"]["caBundle"] != bundle {
            w["clientConfig"]["caBundle"] = bundle.into();
            changed = true;
        }
    }
    changed
}
