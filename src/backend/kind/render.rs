//! What `up --backend kind` creates and applies, as data: the kind config and the manifests,
//! rendered with tera from the templates under `manifests/kind/`, and the CRDs of the kinds
//! meshrig accepts, made from the kinds table. Every document is parsed back before it is
//! returned, so a template that renders invalid YAML is an error here, not in the cluster.

use serde::Serialize;

use crate::backend::kind::{self, SampleImages};
use crate::resources::Kind;

/// The templates, by the path they are read from.
const TEMPLATES: [(&str, &str); 9] = [
    ("addons/kind/prometheus.yaml", include_str!("../../../addons/kind/prometheus.yaml")),
    ("addons/kind/grafana.yaml", include_str!("../../../addons/kind/grafana.yaml")),
    ("addons/kind/jaeger.yaml", include_str!("../../../addons/kind/jaeger.yaml")),
    ("addons/kind/kiali.yaml", include_str!("../../../addons/kind/kiali.yaml")),
    ("manifests/kind/cluster.yaml", include_str!("../../../manifests/kind/cluster.yaml")),
    ("manifests/kind/istiod.yaml", include_str!("../../../manifests/kind/istiod.yaml")),
    ("manifests/kind/webhooks.yaml", include_str!("../../../manifests/kind/webhooks.yaml")),
    ("manifests/kind/gateway.yaml", include_str!("../../../manifests/kind/gateway.yaml")),
    ("manifests/kind/sidecar.yaml", include_str!("../../../manifests/kind/sidecar.yaml")),
];

/// The addons the kind backend installs from their upstream images, with manifests written
/// here (`addons/kind/`), and the image of each (the versions Istio 1.28's addons use).
pub const ADDONS: [(&str, &str); 4] = [
    ("prometheus", "docker.io/prom/prometheus:v3.5.0"),
    ("grafana", "docker.io/grafana/grafana:12.0.1"),
    ("jaeger", "docker.io/jaegertracing/all-in-one:1.70.0"),
    ("kiali", "quay.io/kiali/kiali:v2.17"),
];

/// meshrig's Grafana dashboard over the proxies' standard metrics.
pub const MESH_DASHBOARD: &str = include_str!("../../../addons/kind/dashboards/istio-mesh.json");

/// The mesh config the `istio` ConfigMap starts with (`meshrig apply` of a ConfigMap `istio`
/// in istio-system changes it, as on the local backend).
pub const MESH_CONFIG: &str = "rootNamespace: istio-system
trustDomain: cluster.local
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15010
";

/// One environment's cluster, as the templates need it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The environment's name (the cluster is `meshrig-NAME`).
    pub env: String,
    /// meshrig's image, as `image_tag` names it.
    pub image: String,
    /// Host ports (127.0.0.1) of the gateway's HTTP, HTTPS and TCP listeners.
    pub http_port: u16,
    pub https_port: u16,
    pub tcp_port: u16,
    pub sample_images: SampleImages,
}

/// One gateway port: its Service port, the container port behind it, the NodePort kind
/// publishes, and the host port that NodePort is published on.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GatewayPort {
    pub name: &'static str,
    pub port: u16,
    pub target_port: u16,
    pub node_port: u16,
    pub host_port: u16,
}

impl Plan {
    /// The ingress gateway's ports, as istioctl's default profile names them (80→8080,
    /// 443→8443, 31400), on fixed NodePorts.
    pub fn gateway_ports(&self) -> Vec<GatewayPort> {
        vec![
            GatewayPort { name: "http2", port: 80, target_port: 8080, node_port: 30080, host_port: self.http_port },
            GatewayPort { name: "https", port: 443, target_port: 8443, node_port: 30443, host_port: self.https_port },
            GatewayPort { name: "tcp", port: 31400, target_port: 31400, node_port: 31400, host_port: self.tcp_port },
        ]
    }

    /// Where proxies reach the control plane.
    pub fn control_plane(&self) -> String {
        format!("istiod.istio-system.svc:{}", kind::API_PORT)
    }

    fn context(&self) -> tera::Context {
        let mut c = tera::Context::new();
        c.insert("env", &self.env);
        c.insert("cluster", &kind::cluster_name(&self.env));
        c.insert("node_image", kind::NODE_IMAGE);
        c.insert("image", &self.image);
        c.insert("gateway_ports", &self.gateway_ports());
        c.insert("control_plane", &self.control_plane());
        c.insert("token_dir", kind::TOKEN_DIR);
        c.insert("token_path", kind::TOKEN_PATH);
        c.insert("api_port", &kind::API_PORT);
        c.insert("webhook_port", &kind::WEBHOOK_PORT);
        c.insert("cluster_id", "Kubernetes");
        c.insert("mesh", MESH_CONFIG.trim_end());
        c.insert("sample_images", self.sample_images.as_str());
        c.insert("crd_groups", &crd_groups());
        c.insert("injection_webhooks", &injection_webhooks());
        c.insert("proxy_uid", &kind::PROXY_UID);
        let images: std::collections::BTreeMap<&str, &str> = ADDONS.iter().copied().collect();
        c.insert("images", &images);
        c.insert("dashboard", MESH_DASHBOARD.trim_end());
        c
    }
}

/// A rendered file: where it came from, its text, and its documents parsed.
#[derive(Debug)]
pub struct Rendered {
    pub source: String,
    pub text: String,
    pub documents: Vec<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source_name}: {message}")]
    Template { source_name: String, message: String },
}

/// The templates, parsed once per process (the webhook renders a sidecar for every pod).
fn engine() -> &'static tera::Tera {
    static ENGINE: std::sync::OnceLock<tera::Tera> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut t = tera::Tera::default();
        t.add_raw_templates(TEMPLATES.to_vec()).expect("meshrig's own templates parse (tested)");
        t
    })
}

/// Renders `name` with `context`, then parses what came out.
fn render_one(t: &tera::Tera, name: &str, context: &tera::Context) -> Result<Rendered, Error> {
    let fail = |message: String| Error::Template { source_name: name.to_string(), message };
    let text = t.render(name, context).map_err(|e| fail(crate::net::error_chain(&e)))?;
    let documents = parse_stream(&text).map_err(fail)?;
    Ok(Rendered { source: name.to_string(), text, documents })
}

/// The documents of a multi-document YAML stream (empty ones skipped).
pub fn parse_stream(text: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The kind cluster's config.
pub fn cluster_config(plan: &Plan) -> Result<Rendered, Error> {
    render_one(engine(), "manifests/kind/cluster.yaml", &plan.context())
}

/// Everything `up` applies to the cluster, in order: the CRDs, the control plane, the
/// webhooks, the ingress gateway.
pub fn manifests(plan: &Plan) -> Result<Vec<Rendered>, Error> {
    let t = engine();
    let context = plan.context();
    let crds = crds();
    let text = crds.iter().map(|c| serde_yaml::to_string(c).expect("JSON values serialize")).collect::<Vec<_>>();
    let mut out = vec![Rendered {
        source: "(generated) CustomResourceDefinitions".into(),
        text: text.join("---\n"),
        documents: crds,
    }];
    for name in ["manifests/kind/istiod.yaml", "manifests/kind/webhooks.yaml", "manifests/kind/gateway.yaml"] {
        out.push(render_one(t, name, &context)?);
    }
    Ok(out)
}

/// The manifests of the addons `names` (each one of `ADDONS`), in the order given.
pub fn addons(plan: &Plan, names: &[String]) -> Result<Vec<Rendered>, Error> {
    let t = engine();
    let context = plan.context();
    names
        .iter()
        .map(|name| {
            if !ADDONS.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = ADDONS.iter().map(|(n, _)| *n).collect();
                return Err(Error::Template {
                    source_name: format!("--addons {name}"),
                    message: format!("not an addon of the kind backend; choose from {}", known.join(", ")),
                });
            }
            render_one(t, &format!("addons/kind/{name}.yaml"), &context)
        })
        .collect()
}

/// What injection adds to a pod: `initContainers` (a sidecar's), `containers` and `volumes`;
/// `role` is `sidecar` or `gateway`.
pub fn sidecar(
    plan: &Plan,
    role: &str,
    inbound_ports: &[u16],
    include_inbound: &str,
) -> Result<serde_json::Value, Error> {
    let mut context = plan.context();
    context.insert("role", role);
    context.insert("inbound_ports", inbound_ports);
    context.insert("include_inbound", include_inbound);
    context.insert("exclude_inbound", &kind::excluded_inbound());
    let r = render_one(engine(), "manifests/kind/sidecar.yaml", &context)?;
    Ok(r.documents.into_iter().next().unwrap_or_default())
}

/// The API groups of the kinds meshrig installs CRDs for.
pub fn crd_groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = crd_kinds().iter().map(|k| group(*k)).collect();
    groups.dedup();
    groups
}

/// The kinds that are custom resources in a cluster: Istio's and cert-manager's.
fn crd_kinds() -> Vec<Kind> {
    Kind::ALL.iter().copied().filter(|k| group(*k).contains('.')).collect()
}

fn group(k: Kind) -> &'static str {
    k.api_versions()[0].split_once('/').map_or("", |(g, _)| g)
}

/// One CRD per custom kind, every version meshrig accepts served, the first stored. The schema
/// of `spec` is the API type's own (`schema.rs`), so the API server prunes what meshrig would not
/// read and `kubectl explain` knows the fields; the admission webhook adds meshrig's validators
/// and their messages.
pub fn crds() -> Vec<serde_json::Value> {
    crd_kinds()
        .into_iter()
        .map(|k| {
            let group = group(k);
            let spec = super::schema::spec(&k.json_schema());
            let versions: Vec<serde_json::Value> = k
                .api_versions()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    serde_json::json!({
                        "name": v.split_once('/').map_or(*v, |(_, v)| v),
                        "served": true,
                        "storage": i == 0,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec.clone(),
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            },
                        }},
                    })
                })
                .collect();
            let mut names = serde_json::json!({
                "kind": k.as_str(),
                "listKind": format!("{}List", k.as_str()),
                "plural": k.plural(),
                "singular": k.as_str().to_ascii_lowercase(),
            });
            if k.short_name() != k.as_str().to_ascii_lowercase() {
                names["shortNames"] = serde_json::json!([k.short_name()]);
            }
            serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {
                    "name": format!("{}.{group}", k.plural()),
                    "labels": {"app.kubernetes.io/part-of": "meshrig"},
                },
                "spec": {
                    "group": group,
                    "names": names,
                    "scope": if k.namespaced() { "Namespaced" } else { "Cluster" },
                    "versions": versions,
                },
            })
        })
        .collect()
}

#[derive(Serialize)]
struct Selector {
    key: &'static str,
    operator: &'static str,
    values: Vec<&'static str>,
}

#[derive(Serialize)]
struct InjectionWebhook {
    name: &'static str,
    namespace: Vec<Selector>,
    object: Vec<Selector>,
}

/// Istio's two injection webhooks without revisions: a namespace labelled
/// `istio-injection=enabled` (its pods unless labelled `sidecar.istio.io/inject=false`), and a
/// pod labelled `sidecar.istio.io/inject=true` in a namespace without the label.
fn injection_webhooks() -> Vec<InjectionWebhook> {
    let s = |key, operator, values: &[&'static str]| Selector { key, operator, values: values.to_vec() };
    vec![
        InjectionWebhook {
            name: "namespace.sidecar-injector.istio.io",
            namespace: vec![s("istio-injection", "In", &["enabled"])],
            object: vec![s("sidecar.istio.io/inject", "NotIn", &["\"false\""])],
        },
        InjectionWebhook {
            name: "object.sidecar-injector.istio.io",
            namespace: vec![s("istio-injection", "DoesNotExist", &[]), s("istio.io/rev", "DoesNotExist", &[])],
            object: vec![s("sidecar.istio.io/inject", "In", &["\"true\""]), s("istio.io/rev", "DoesNotExist", &[])],
        },
    ]
}
