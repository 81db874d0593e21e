//! istiod's admission webhooks, as the API server calls them (AdmissionReview v1 over TLS, on the
//! control plane's 15017 behind Service port 443): `/inject` runs `inject::inject` on a pod
//! being created and answers with a JSONPatch; `/validate` runs meshrig's own validators on an
//! Istio object and refuses it with their messages, prefixed as Istio's are ("configuration is
//! invalid: "), and hands warnings back as admission warnings, which kubectl prints. The reviews
//! are pure functions; `serve` is the TLS listener.

use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::backend::kind::inject::{self, Outcome};
use crate::backend::kind::render::Plan;
use crate::net::{self, Body};

/// The answer to one AdmissionReview (`path` is `/inject` or `/validate`).
pub fn review(path: &str, review: &Value, plan: &Plan) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let mut response = match path {
        "/inject" => inject_pod(request, plan),
        "/validate" => validate_object(request),
        other => json!({"allowed": true, "warnings": [format!("meshrig has no webhook at {other}")]}),
    };
    response["uid"] = uid;
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn refused(message: String) -> Value {
    json!({"allowed": false, "status": {"code": 400, "message": message}})
}

/// Injects a pod being created: a JSONPatch that replaces its metadata and spec with the
/// injected ones (the pod is not stored yet, so nothing else can have changed them).
fn inject_pod(request: &Value, plan: &Plan) -> Value {
    let mut pod = request["object"].clone();
    if pod.get("kind").is_none() {
        pod["kind"] = json!("Pod");
    }
    match inject::inject(&mut pod, plan) {
        Ok(Outcome::Injected) => {
            let patch = json!([
                {"op": "replace", "path": "/metadata", "value": pod["metadata"]},
                {"op": "replace", "path": "/spec", "value": pod["spec"]},
            ]);
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            json!({"allowed": true, "patchType": "JSONPatch", "patch": encoded})
        }
        Ok(_) => json!({"allowed": true}),
        Err(e) => refused(format!("injection failed: {e}")),
    }
}

/// Validates an Istio object being created or updated, as `meshrig apply` does.
fn validate_object(request: &Value) -> Value {
    let object = &request["object"];
    if object.is_null() {
        return json!({"allowed": true});
    }
    let mut resource = match crate::resources::Resource::from_value(object.clone()) {
        Ok(r) => r,
        Err(e) => return refused(format!("configuration is invalid: {e}")),
    };
    resource.set_default_namespace(request["namespace"].as_str().unwrap_or("default"));
    match crate::validate::validate(&resource) {
        Ok(mut warnings) => {
            warnings.extend(crate::validate::unenforced(&resource));
            if warnings.is_empty() {
                json!({"allowed": true})
            } else {
                json!({"allowed": true, "warnings": warnings})
            }
        }
        Err(errors) => refused(format!("configuration is invalid: {}", errors.join("; "))),
    }
}

/// A TLS server config for the webhooks' certificate (chain and key, PEM).
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = crate::tls::certs_from_pem(chain_pem)?;
    let key = crate::tls::key_from_pem(key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the webhook certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The most an AdmissionReview may take (a pod or an Istio object, with its managed fields).
const MAX_REVIEW: usize = 8 << 20;

async fn handle(req: Request<Incoming>, plan: Arc<Plan>) -> Response<Body> {
    if req.method() != Method::POST {
        return net::text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let path = req.uri().path().to_string();
    let bytes = match net::read_body(req.into_body(), MAX_REVIEW).await {
        Ok(b) => b,
        Err(e) => return net::text(StatusCode::BAD_REQUEST, &format!("read the review: {e}\n")),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(r) => net::json(StatusCode::OK, &review(&path, &r, &plan)),
        Err(e) => net::text(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {e}\n")),
    }
}

/// Serves the webhooks on `listener` over TLS until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, plan: Plan) {
    let plan = Arc::new(plan);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, _) = net::accept(&listener).await;
        let (acceptor, plan) = (acceptor.clone(), plan.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let service = service_fn(move |req| {
                let plan = plan.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, plan).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
