//! Writing objects to the API server as `meshrig up` and `meshrig apply` do on the kind
//! backend: server-side apply (field manager `meshrig`, conflicts forced, as `kubectl apply
//! --server-side --force-conflicts`), each document to where its apiVersion and kind are
//! served, with what happened (created, configured, unchanged) told from its resourceVersion.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use crate::api::Action;

/// The field manager meshrig's applies own their fields as.
pub const FIELD_MANAGER: &str = "meshrig";

/// Kinds outside meshrig's resource table that its manifests use, cluster-scoped or not.
const KUBERNETES: &[(&str, &str, bool)] = &[
    ("v1", "Pod", true),
    ("v1", "Node", false),
    ("v1", "Endpoints", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", false),
    ("rbac.authorization.k8s.io/v1", "Role", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", true),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", false),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", false),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", false),
    ("apps/v1", "DaemonSet", true),
    ("apps/v1", "StatefulSet", true),
    ("apps/v1", "ReplicaSet", true),
    ("batch/v1", "Job", true),
    ("networking.k8s.io/v1", "Ingress", true),
    ("policy/v1", "PodDisruptionBudget", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", true),
];

/// Kubernetes' plural of a kind (the lowercase kind, `-ies` for a consonant and `y`, `-es` for
/// `s`, else `-s`; what every kind above and in the resource table follows). Pure.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ => format!("{lower}s"),
    }
}

/// Where `apiVersion`/`kind` is served, and whether it is namespaced. Pure.
pub fn resource_of(api_version: &str, kind: &str) -> Result<(ApiResource, bool), String> {
    let known = crate::resources::Kind::from_kind(kind)
        .filter(|k| k.api_versions().contains(&api_version))
        .map(|k| k.namespaced())
        .or_else(|| KUBERNETES.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, ns)| *ns));
    let namespaced = known.ok_or_else(|| {
        format!(
            "{kind} ({api_version}) is not a kind meshrig applies; `kubectl apply` applies anything the cluster serves"
        )
    })?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural(kind),
    };
    Ok((ar, namespaced))
}

/// `doc`'s kind and name, as kubectl names it (`deployment.apps/istiod`).
pub fn display(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("?").to_ascii_lowercase();
    let group = doc["apiVersion"].as_str().and_then(|v| v.split_once('/')).map(|(g, _)| g).unwrap_or("");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

fn api_for(
    client: &kube::Client,
    doc: &Value,
    default_namespace: &str,
) -> Result<(Api<DynamicObject>, String), String> {
    let api_version = doc["apiVersion"].as_str().ok_or_else(|| format!("{}: no apiVersion", display(doc)))?;
    let kind = doc["kind"].as_str().ok_or_else(|| format!("{}: no kind", display(doc)))?;
    let name = doc["metadata"]["name"].as_str().ok_or_else(|| format!("{}: no metadata.name", display(doc)))?;
    let (ar, namespaced) = resource_of(api_version, kind)?;
    let api = if namespaced {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(default_namespace);
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    Ok((api, name.to_string()))
}

/// Server-side applies `doc` (its namespace, else `default_namespace`).
pub async fn apply(client: &kube::Client, doc: &Value, default_namespace: &str) -> Result<Action, String> {
    let (api, name) = api_for(client, doc, default_namespace)?;
    let mut doc = doc.clone();
    if let Some(meta) = doc["metadata"].as_object_mut() {
        // Server-set fields a pasted `kubectl get -o yaml` carries are not the applier's.
        for field in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"] {
            meta.remove(field);
        }
    }
    if let Some(o) = doc.as_object_mut() {
        o.remove("status");
    }
    let before = api.get_opt(&name).await.map_err(|e| format!("{}: {e}", display(&doc)))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(&doc))
        .await
        .map_err(|e| format!("{}: {}", display(&doc), reason(&e)))?;
    Ok(match before {
        None => Action::Created,
        Some(b) if b.metadata.resource_version == after.metadata.resource_version => Action::Unchanged,
        Some(_) => Action::Configured,
    })
}

/// Deletes `doc`'s object, if it exists.
pub async fn delete(client: &kube::Client, doc: &Value, default_namespace: &str) -> Result<Action, String> {
    let (api, name) = api_for(client, doc, default_namespace)?;
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(Action::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::NotFound),
        Err(e) => Err(format!("{}: {}", display(doc), reason(&e))),
    }
}

/// What the API server said, without the client's framing: a refusal by the validating webhook
/// reads as meshrig's own message.
pub fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Creates `doc`'s object, as `kubectl create`: `Unchanged` when it exists already (nothing is
/// written).
pub async fn create(client: &kube::Client, doc: &Value, default_namespace: &str) -> Result<Action, String> {
    let (api, _) = api_for(client, doc, default_namespace)?;
    let object: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| format!("{}: {e}", display(doc)))?;
    match api.create(&kube::api::PostParams::default(), &object).await {
        Ok(_) => Ok(Action::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::Unchanged),
        Err(e) => Err(format!("{}: {}", display(doc), reason(&e))),
    }
}

/// The labels of `doc`'s object, if it exists.
pub async fn labels(
    client: &kube::Client,
    doc: &Value,
    default_namespace: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, String> {
    let (api, name) = api_for(client, doc, default_namespace)?;
    let object = api.get_opt(&name).await.map_err(|e| format!("{}: {}", display(doc), reason(&e)))?;
    Ok(object.map(|o| o.metadata.labels.unwrap_or_default()))
}

/// Replaces the labels of `doc`'s object with `labels` (a merge patch: the ones gone are
/// removed); whether anything changed.
pub async fn set_labels(
    client: &kube::Client,
    doc: &Value,
    default_namespace: &str,
    before: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<bool, String> {
    if before == labels {
        return Ok(false);
    }
    let (api, name) = api_for(client, doc, default_namespace)?;
    let mut patch = serde_json::Map::new();
    for k in before.keys().filter(|k| !labels.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    for (k, v) in labels {
        patch.insert(k.clone(), Value::String(v.clone()));
    }
    let body = serde_json::json!({"metadata": {"labels": patch}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| format!("{}: {}", display(doc), reason(&e)))?;
    Ok(true)
}
