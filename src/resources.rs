//! The resource model: every kind meshrig accepts (Kubernetes core + Istio networking),
//! as strict serde data with no IO, plus parsing with located errors and validation.
//!
//! # Layout
//! - `meta`: `ObjectMeta`, `LabelSelector`, `IntOrString`.
//! - `core`: Namespace, ServiceAccount, ConfigMap, Secret, Service, Deployment.
//! - `mesh_config`: Istio's mesh config as the `istio` ConfigMap carries it.
//! - `networking`: Gateway, VirtualService, DestinationRule, ServiceEntry (complete istio/api fields).
//! - `security`: PeerAuthentication, AuthorizationPolicy, RequestAuthentication.
//! - `certmanager`: cert-manager's Certificate, Issuer, ClusterIssuer.
//! - `parse`: multi-document YAML → `Document`s, errors with absolute file:line:column.
//! - `locate`: the line of a field path in a document (for findings made after parsing).

/// Istio's root namespace: mesh-wide policies (PeerAuthentication, RequestAuthentication,
/// AuthorizationPolicy, Telemetry) live there.
pub const ROOT_NAMESPACE: &str = "istio-system";

pub mod certmanager;
pub mod core;
pub mod locate;
pub mod mesh_config;
pub mod meta;
pub mod networking;
pub mod parse;
pub mod security;
pub mod telemetry;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::meta::{IntOrString, LabelSelector, ObjectMeta};
pub use self::networking::{DestinationRule, Gateway, VirtualService};
pub use self::parse::{parse_documents, Document, ParseError};

/// Every kind meshrig stores, in apply order (namespaces first, routing last): its Rust type,
/// plural, kubectl short name, accepted apiVersions (the first preferred) and scope. This table
/// is the one place a new kind is declared; `kinds!` derives `Kind`, `Resource` and the
/// dispatch between them from it.
macro_rules! kinds {
    ($($kind:ident($ty:ty) { plural: $plural:literal, short: $short:literal, versions: $versions:expr, namespaced: $ns:literal },)*) => {
        /// The kinds meshrig stores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Kind {
            $($kind,)*
        }

        /// One object of any supported kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource {
            $($kind($ty),)*
        }

        impl Kind {
            /// Every kind, in apply order.
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            /// The Kubernetes `kind`, e.g. `VirtualService`.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Kind::$kind => stringify!($kind),)*
                }
            }

            /// The lowercase plural resource name, e.g. `virtualservices`.
            pub fn plural(&self) -> &'static str {
                match self {
                    $(Kind::$kind => $plural,)*
                }
            }

            /// kubectl short name, e.g. `vs`.
            pub fn short_name(&self) -> &'static str {
                match self {
                    $(Kind::$kind => $short,)*
                }
            }

            /// False only for cluster-scoped kinds (Namespace).
            pub fn namespaced(&self) -> bool {
                match self {
                    $(Kind::$kind => $ns,)*
                }
            }

            /// The JSON schema of an object of this kind, from its serde shape (schemars); the
            /// kind backend's CRDs are made from it.
            pub fn json_schema(&self) -> serde_json::Value {
                match self {
                    $(Kind::$kind => serde_json::to_value(schemars::schema_for!($ty)).expect("a schema is JSON"),)*
                }
            }

            /// Accepted `apiVersion`s; the first is the preferred one.
            pub fn api_versions(&self) -> &'static [&'static str] {
                match self {
                    $(Kind::$kind => $versions,)*
                }
            }
        }

        /// Runs `$e` with `$r` bound to the object inside any `Resource`.
        macro_rules! each {
            ($self_:expr, $r:ident => $e:expr) => {
                match $self_ {
                    $(Resource::$kind($r) => $e,)*
                }
            };
        }

        impl Resource {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Resource::$kind(_) => Kind::$kind,)*
                }
            }

            /// Strict conversion of one YAML document already known to be of `kind`.
            pub(crate) fn from_yaml(kind: Kind, s: &str) -> Result<Resource, serde_yaml::Error> {
                Ok(match kind {
                    $(Kind::$kind => Resource::$kind(serde_yaml::from_str(s)?),)*
                })
            }

            /// Strict conversion of JSON already known to be of `kind` (apiVersion checked).
            fn convert(kind: Kind, v: serde_json::Value) -> Result<Resource, String> {
                Ok(match kind {
                    $(Kind::$kind => Resource::$kind(
                        serde_json::from_value(v).map_err(|e| format!("{}: {e}", stringify!($kind)))?,
                    ),)*
                })
            }
        }
    };
}

const CORE_V1: &[&str] = &["v1"];
const APPS_V1: &[&str] = &["apps/v1"];
const CERT_MANAGER: &[&str] = &["cert-manager.io/v1"];
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const ISTIO_TELEMETRY: &[&str] = &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];
const ISTIO_NETWORKING: &[&str] =
    &["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"];

kinds! {
    Namespace(core::Namespace) { plural: "namespaces", short: "ns", versions: CORE_V1, namespaced: false },
    ServiceAccount(core::ServiceAccount) { plural: "serviceaccounts", short: "sa", versions: CORE_V1, namespaced: true },
    ConfigMap(core::ConfigMap) { plural: "configmaps", short: "cm", versions: CORE_V1, namespaced: true },
    Secret(core::Secret) { plural: "secrets", short: "secret", versions: CORE_V1, namespaced: true },
    Issuer(certmanager::Issuer) { plural: "issuers", short: "issuer", versions: CERT_MANAGER, namespaced: true },
    ClusterIssuer(certmanager::Issuer) {
        plural: "clusterissuers", short: "clusterissuer", versions: CERT_MANAGER, namespaced: false
    },
    Certificate(certmanager::Certificate) {
        plural: "certificates", short: "cert", versions: CERT_MANAGER, namespaced: true
    },
    Service(core::Service) { plural: "services", short: "svc", versions: CORE_V1, namespaced: true },
    Deployment(core::Deployment) { plural: "deployments", short: "deploy", versions: APPS_V1, namespaced: true },
    Gateway(networking::Gateway) { plural: "gateways", short: "gw", versions: ISTIO_NETWORKING, namespaced: true },
    VirtualService(networking::VirtualService) {
        plural: "virtualservices", short: "vs", versions: ISTIO_NETWORKING, namespaced: true
    },
    DestinationRule(networking::DestinationRule) {
        plural: "destinationrules", short: "dr", versions: ISTIO_NETWORKING, namespaced: true
    },
    ServiceEntry(networking::ServiceEntry) {
        plural: "serviceentries", short: "se", versions: ISTIO_NETWORKING, namespaced: true
    },
    PeerAuthentication(security::PeerAuthentication) {
        plural: "peerauthentications", short: "pa", versions: ISTIO_SECURITY, namespaced: true
    },
    AuthorizationPolicy(security::AuthorizationPolicy) {
        plural: "authorizationpolicies", short: "ap", versions: ISTIO_SECURITY, namespaced: true
    },
    RequestAuthentication(security::RequestAuthentication) {
        plural: "requestauthentications", short: "ra", versions: ISTIO_SECURITY, namespaced: true
    },
    Telemetry(telemetry::Telemetry) {
        plural: "telemetries", short: "telemetry", versions: ISTIO_TELEMETRY, namespaced: true
    },
}

impl Kind {
    /// kubectl-style resource names, case-insensitive: kind, plural, singular,
    /// short name, and `<plural>.<group>` (e.g. `virtualservices.networking.istio.io`).
    pub fn from_user(s: &str) -> Option<Kind> {
        let s = s.trim().to_ascii_lowercase();
        let (name, group) = match s.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (s, None),
        };
        let kind = Kind::ALL.iter().copied().find(|k| {
            let kind = k.as_str().to_ascii_lowercase();
            name == kind || name == k.plural() || name == k.short_name()
        })?;
        match group.as_deref() {
            None => Some(kind),
            Some(g) => {
                let expected = match kind.api_versions()[0].split_once('/') {
                    Some((grp, _)) => grp,
                    None => "",
                };
                (g == expected).then_some(kind)
            }
        }
    }

    /// Parse the exact Kubernetes `kind` string (case-sensitive, as the API server does).
    pub fn from_kind(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a stored object: kind, namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey { kind, namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ResourceKey {
    /// `VirtualService default/httpbin`, or `Namespace istio-system` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Resource {
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, r => &r.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, r => &mut r.metadata)
    }

    pub fn api_version(&self) -> &str {
        each!(self, r => &r.api_version)
    }

    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// The key; namespace is "" for cluster-scoped kinds and when not yet defaulted.
    pub fn key(&self) -> ResourceKey {
        let kind = self.kind();
        let namespace =
            if kind.namespaced() { self.meta().namespace.clone().unwrap_or_default() } else { String::new() };
        ResourceKey { kind, namespace, name: self.meta().name.clone() }
    }

    /// Fill `metadata.namespace` when empty (namespaced kinds only; cluster-scoped
    /// kinds keep `None`).
    pub fn set_default_namespace(&mut self, ns: &str) {
        let namespaced = self.kind().namespaced();
        let meta = self.meta_mut();
        if !namespaced {
            meta.namespace = None;
        } else if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some(ns.to_string());
        }
    }

    /// The object as Kubernetes shows it (apiVersion, kind, metadata, spec; empty fields omitted).
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = each!(self, r => serde_json::to_value(r)).expect("resource types serialize to JSON infallibly");
        // `kind` is implied by the variant; make sure it is the canonical one.
        if let Some(obj) = v.as_object_mut() {
            obj.insert("kind".to_string(), serde_json::Value::String(self.kind().as_str().to_string()));
        }
        v
    }

    /// Strict conversion from JSON: dispatch on `kind`, check `apiVersion`, deny unknown fields.
    pub fn from_value(v: serde_json::Value) -> Result<Resource, String> {
        let kind_str = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| format!("missing `kind`; supported kinds: {}", supported_kinds()))?
            .to_string();
        let kind_str = kind_str.as_str();
        let kind = Kind::from_kind(kind_str)
            .ok_or_else(|| format!("unsupported kind `{kind_str}`; supported kinds: {}", supported_kinds()))?;
        let api_version =
            v.get("apiVersion").and_then(|a| a.as_str()).ok_or_else(|| format!("{kind_str}: missing `apiVersion`"))?;
        if !kind.api_versions().contains(&api_version) {
            return Err(format!(
                "{kind_str}: unsupported apiVersion `{api_version}`; use one of {}",
                kind.api_versions().join(", ")
            ));
        }
        Resource::convert(kind, v)
    }

    /// Same kind, labels, annotations and content (spec and other user fields); ignores
    /// apiVersion, status and server-set metadata. Answers `unchanged` vs `configured`.
    pub fn same_content(&self, other: &Resource) -> bool {
        if self.kind() != other.kind() {
            return false;
        }
        let (a, b) = (self.meta(), other.meta());
        a.labels == b.labels && a.annotations == b.annotations && content_value(self) == content_value(other)
    }
}

/// Everything but `apiVersion`, `metadata` and `status`.
fn content_value(r: &Resource) -> serde_json::Value {
    let mut v = r.to_value();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("metadata");
        obj.remove("status");
    }
    v
}

/// "Namespace, ServiceAccount, ..." for error messages.
pub(crate) fn supported_kinds() -> String {
    Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(deserializer)?;
        Resource::from_value(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names() {
        for &k in Kind::ALL {
            assert_eq!(Kind::from_user(k.as_str()), Some(k));
            assert_eq!(Kind::from_user(&k.as_str().to_uppercase()), Some(k));
            assert_eq!(Kind::from_user(k.plural()), Some(k));
            assert_eq!(Kind::from_user(k.short_name()), Some(k));
            assert_eq!(Kind::from_kind(k.as_str()), Some(k));
        }
        assert_eq!(Kind::from_user("virtualservice"), Some(Kind::VirtualService));
        assert_eq!(Kind::from_user("VS"), Some(Kind::VirtualService));
        assert_eq!(Kind::from_user("deployments.apps"), Some(Kind::Deployment));
        assert_eq!(Kind::from_user("virtualservices.networking.istio.io"), Some(Kind::VirtualService));
        assert_eq!(Kind::from_user("gateways.gateway.networking.k8s.io"), None);
        assert_eq!(Kind::from_user("pods"), None);
        assert!(!Kind::Namespace.namespaced());
        assert!(Kind::Gateway.namespaced());
        assert_eq!(Kind::VirtualService.plural(), "virtualservices");
        assert!(Kind::DestinationRule.api_versions().contains(&"networking.istio.io/v1alpha3"));
    }

    #[test]
    fn key_display_and_default_namespace() {
        let mut r = Resource::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "httpbin"},
            "spec": {"hosts": ["httpbin"], "http": [{"route": [{"destination": {"host": "httpbin"}}]}]}
        }))
        .unwrap();
        r.set_default_namespace("default");
        assert_eq!(r.key().to_string(), "VirtualService default/httpbin");
        r.set_default_namespace("other");
        assert_eq!(r.meta().namespace.as_deref(), Some("default"));

        let mut ns = Resource::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}
        }))
        .unwrap();
        ns.set_default_namespace("default");
        assert_eq!(ns.meta().namespace, None);
        assert_eq!(ns.key().to_string(), "Namespace istio-system");
    }

    #[test]
    fn from_value_is_strict() {
        let err = Resource::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v2", "kind": "Gateway", "metadata": {"name": "g"}
        }))
        .unwrap_err();
        assert!(err.contains("networking.istio.io/v1beta1"), "{err}");
        let err = Resource::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}
        }))
        .unwrap_err();
        assert!(err.contains("VirtualService"), "{err}");
        let err = Resource::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "d"}, "spec": {"hots": "x"}
        }))
        .unwrap_err();
        assert!(err.contains("unknown field `hots`"), "{err}");
    }

    #[test]
    fn same_content_ignores_server_fields() {
        let a = Resource::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"host": "reviews"}
        }))
        .unwrap();
        let mut b = Resource::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": "d", "labels": {"a": "b"}, "uid": "123", "resourceVersion": "7",
                         "generation": 2, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"host": "reviews"}, "status": {}
        }))
        .unwrap();
        assert!(a.same_content(&b));
        b.meta_mut().labels.insert("x".into(), "y".into());
        assert!(!a.same_content(&b));
        let json = serde_json::to_string(&vec![a.clone()]).unwrap();
        let back: Vec<Resource> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![a]);
    }
}
