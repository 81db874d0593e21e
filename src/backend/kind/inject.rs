//! Sidecar injection, pure: one workload document in, the same document with `istio-init`,
//! `istio-proxy` and their volumes added to its pod template, as Istio's injector does.
//! `meshrig kube-inject -f FILE` (istioctl's verb) runs it on every document of a file; istiod's
//! mutating webhook will run it on each pod. Known sample images become meshrig's built-in apps
//! (`SampleImages::Builtin`), so Bookinfo runs on a cluster without internet.

use serde_json::{json, Map, Value};

use crate::apps::{self, Workload};
use crate::backend::kind::render::{self, Plan};
use crate::backend::kind::SampleImages;

/// What injection did to one document.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// A workload that keeps no sidecar, and why (istioctl's reasons).
    Skipped(String),
    /// Not a kind with a pod template (Service, ServiceAccount, ...): left as it is.
    NotAWorkload,
}

/// The annotation injection leaves, and the one that says not to inject.
pub const STATUS: &str = "sidecar.istio.io/status";
pub const INJECT: &str = "sidecar.istio.io/inject";

/// Injects the pod template of `doc` (a Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
/// Job, CronJob or ReplicationController; a `List`'s items each).
pub fn inject(doc: &mut Value, plan: &Plan) -> Result<Outcome, String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if kind == "List" {
        let mut any = Outcome::NotAWorkload;
        for item in doc.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
            if inject(item, plan)? == Outcome::Injected {
                any = Outcome::Injected;
            }
        }
        return Ok(any);
    }
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(Outcome::NotAWorkload),
    };
    let mut template = &mut *doc;
    for key in path {
        template = template.get_mut(*key).ok_or_else(|| format!("{kind} {name}: no {}", path.join(".")))?;
    }
    inject_template(template, &name, plan)
}

/// The label or annotation value of `key` in the template's metadata.
fn meta<'a>(t: &'a Value, field: &str, key: &str) -> Option<&'a str> {
    t.get("metadata")?.get(field)?.get(key)?.as_str()
}

fn inject_template(t: &mut Value, workload: &str, plan: &Plan) -> Result<Outcome, String> {
    let off = |field| meta(t, field, INJECT).is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if off("labels") || off("annotations") {
        return Ok(Outcome::Skipped(format!("{INJECT}: \"false\"")));
    }
    if meta(t, "annotations", STATUS).is_some() {
        return Ok(Outcome::Skipped("already injected".into()));
    }
    if t.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::Skipped("hostNetwork pods share the node's network: nothing to capture".into()));
    }
    let containers = t
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{workload}: the pod template has no spec.containers"))?;
    let first = containers.first().and_then(|c| c.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut ports: Vec<u16> = containers
        .iter()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let include = meta(t, "annotations", "traffic.sidecar.istio.io/includeInboundPorts").unwrap_or("*").to_string();
    let labels: Map<String, Value> =
        t.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();

    if plan.sample_images == SampleImages::Builtin {
        let annotations = string_map(t.pointer("/metadata/annotations"));
        for c in t.pointer_mut("/spec/containers").and_then(Value::as_array_mut).into_iter().flatten() {
            builtin_app(c, &annotations, &plan.image);
        }
    }

    // Istio's gateway injection: the pod's `image: auto` container becomes the gateway proxy.
    let gateway = meta(t, "annotations", "inject.istio.io/templates")
        .is_some_and(|ts| ts.split(',').any(|t| t.trim() == "gateway"));
    if gateway {
        let own: Vec<u16> = ports.iter().copied().filter(|p| !crate::backend::kind::PROXY_PORTS.contains(p)).collect();
        let proxy = render::sidecar(plan, "gateway", &own, &include).map_err(|e| e.to_string())?;
        let template = proxy["containers"][0].clone();
        let containers = t.pointer_mut("/spec/containers").and_then(Value::as_array_mut).ok_or("no containers")?;
        let mut replaced = false;
        for c in containers.iter_mut().filter(|c| c["image"] == "auto") {
            let mut merged = template.clone();
            merged["name"] = c["name"].clone();
            if let Some(p) = c.get("ports") {
                merged["ports"] = p.clone();
            }
            *c = merged;
            replaced = true;
        }
        if !replaced {
            return Err(format!("{workload}: the gateway template needs a container with `image: auto`"));
        }
        let volumes = proxy["volumes"].as_array().cloned().unwrap_or_default();
        let spec = t.get_mut("spec").and_then(Value::as_object_mut).ok_or("the pod template has no spec")?;
        let list = spec.entry("volumes").or_insert_with(|| json!([]));
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().ok_or("spec.volumes is not a list")?.extend(volumes);
        mark(t, workload, &labels, &first, &[], &["istio-proxy"])?;
        return Ok(Outcome::Injected);
    }

    let sidecar = render::sidecar(plan, "sidecar", &ports, &include).map_err(|e| e.to_string())?;
    let spec = t.get_mut("spec").and_then(Value::as_object_mut).ok_or("the pod template has no spec")?;
    for field in ["initContainers", "containers", "volumes"] {
        let added = sidecar.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
        let list = spec.entry(field).or_insert_with(|| json!([]));
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().ok_or_else(|| format!("spec.{field} is not a list"))?.extend(added);
    }
    mark(t, workload, &labels, &first, &["istio-init"], &["istio-proxy"])?;
    Ok(Outcome::Injected)
}

/// The labels and annotations injection leaves on the pod template.
fn mark(
    t: &mut Value,
    workload: &str,
    labels: &Map<String, Value>,
    first: &str,
    init: &[&str],
    containers: &[&str],
) -> Result<(), String> {
    let metadata =
        t.as_object_mut().ok_or("the pod template is not a mapping")?.entry("metadata").or_insert_with(|| json!({}));
    let canonical_name = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(Value::as_str))
        .unwrap_or(workload)
        .to_string();
    let canonical_revision = ["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(Value::as_str))
        .unwrap_or("latest")
        .to_string();
    let labels = object(metadata, "labels");
    labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
    labels.insert("service.istio.io/canonical-name".into(), json!(canonical_name));
    labels.insert("service.istio.io/canonical-revision".into(), json!(canonical_revision));
    let annotations = object(metadata, "annotations");
    let status = json!({
        "initContainers": init,
        "containers": containers,
        "volumes": ["istio-token"],
        "imagePullSecrets": null,
        "revision": "default",
    });
    annotations.insert(STATUS.into(), json!(status.to_string()));
    annotations.insert("istio.io/rev".into(), json!("default"));
    for (k, v) in [
        ("kubectl.kubernetes.io/default-container", first),
        ("kubectl.kubernetes.io/default-logs-container", first),
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "15090"),
        ("prometheus.io/path", "/stats/prometheus"),
    ] {
        annotations.entry(k).or_insert_with(|| json!(v));
    }
    Ok(())
}

/// The object at `key` of `parent`, made if missing or null.
fn object<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let map = parent.as_object_mut().expect("a mapping");
    let v = map.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("made an object")
}

fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// A container whose image is one of the samples meshrig has built in runs that app from
/// meshrig's image, on its container port on every address, with the environment the sample
/// image bakes in. Other images are left to be pulled.
fn builtin_app(c: &mut Value, annotations: &std::collections::BTreeMap<String, String>, image: &str) {
    let Some(current) = c.get("image").and_then(Value::as_str) else { return };
    let Ok(Workload::App { app, port, env }) = apps::resolve(current, annotations) else { return };
    let mut args = vec![
        json!("--state-dir=/tmp/meshrig"),
        json!("app"),
        json!(app.name()),
        json!(format!("--container-port={port}")),
        json!(format!("--listen=0.0.0.0:{port}")),
    ];
    let own: Vec<Value> = c.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
    if !own.is_empty() {
        args.push(json!("--"));
        args.extend(own);
    }
    let c = c.as_object_mut().expect("a container is a mapping");
    c.insert("image".into(), json!(image));
    c.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    c.remove("command");
    c.insert("args".into(), Value::Array(args));
    let list = c.entry("env").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        for (k, v) in env {
            if !list.iter().any(|e| e.get("name").and_then(Value::as_str) == Some(k.as_str())) {
                list.push(json!({"name": k, "value": v}));
            }
        }
    }
}
