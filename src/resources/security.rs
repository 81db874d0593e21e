//! Istio security kinds (`security.istio.io`): PeerAuthentication, field for field as in
//! istio/api `security/v1beta1/peer_authentication.proto` (strict like the other kinds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::meta::ObjectMeta;
use crate::resources::networking::WorkloadSelector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// The workloads (in the policy's namespace) it applies to; none: the whole namespace
    /// (or, in the root namespace, the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Container (target) port → its mode; only with a selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u32, PeerMtls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerMtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// PeerAuthentication's mutual TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the wider scope; PERMISSIVE when nothing is set anywhere.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext on the same port.
    Permissive,
    /// mTLS only: a plaintext connection is reset.
    Strict,
}

impl MtlsMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}
