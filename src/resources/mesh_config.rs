//! Istio's mesh config as meshrig reads it: the `mesh` key of ConfigMap `istio` in
//! `istio-system` (where `istioctl install --set meshConfig...` puts it). meshrig applies
//! `outboundTrafficPolicy.mode`; every other field is accepted and reported as not applied.

use serde::{Deserialize, Serialize};

use crate::resources::core::ConfigMap;

/// The ConfigMap Istio keeps its mesh config in.
pub const NAMESPACE: &str = "istio-system";
pub const NAME: &str = "istio";
pub const KEY: &str = "mesh";

/// `meshConfig.outboundTrafficPolicy.mode`: where a sidecar sends a host the mesh does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Istio's default: pass it through (`PassthroughCluster`).
    #[default]
    AllowAny,
    /// Only hosts in the registry (Services, ServiceEntries); others get a 502 (`BlackHoleCluster`).
    RegistryOnly,
}

/// The fields meshrig applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    pub outbound: OutboundMode,
}

/// Is this the ConfigMap that carries the mesh config?
pub fn is_mesh_config(cm: &ConfigMap) -> bool {
    cm.metadata.name == NAME && cm.metadata.namespace.as_deref() == Some(NAMESPACE)
}

/// Parses the `mesh` value: the config, and the paths of fields meshrig does not apply.
/// An error names the field and the values allowed.
pub fn parse(mesh: &str) -> Result<(MeshConfig, Vec<String>), String> {
    let value: serde_yaml::Value = serde_yaml::from_str(mesh).map_err(|e| format!("not YAML: {e}"))?;
    let map = match value {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok((MeshConfig::default(), vec![])),
        _ => return Err("must be a YAML mapping of MeshConfig fields".into()),
    };
    let mut config = MeshConfig::default();
    let mut unapplied = Vec::new();
    for (k, v) in &map {
        let key = k.as_str().unwrap_or_default();
        if key != "outboundTrafficPolicy" {
            unapplied.push(key.to_string());
            continue;
        }
        let mode = v.get("mode").and_then(|m| m.as_str());
        config.outbound = match mode {
            None | Some("ALLOW_ANY") => OutboundMode::AllowAny,
            Some("REGISTRY_ONLY") => OutboundMode::RegistryOnly,
            Some(other) => {
                return Err(format!("outboundTrafficPolicy.mode: {other:?} is not one of ALLOW_ANY, REGISTRY_ONLY"))
            }
        };
        if let Some(m) = v.as_mapping() {
            for k in m.keys().filter_map(|k| k.as_str()).filter(|k| *k != "mode") {
                unapplied.push(format!("outboundTrafficPolicy.{k}"));
            }
        }
    }
    Ok((config, unapplied))
}

/// The mesh config a ConfigMap carries (defaults when the key is missing or invalid; apply
/// rejects an invalid one, so a stored one parses).
pub fn from_config_map(cm: &ConfigMap) -> MeshConfig {
    cm.data.get(KEY).and_then(|m| parse(m).ok()).map(|(c, _)| c).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_outbound_mode_and_names_what_it_does_not_apply() {
        let (c, unapplied) =
            parse("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\n").unwrap();
        assert_eq!(c.outbound, OutboundMode::RegistryOnly);
        assert_eq!(unapplied, ["accessLogFile"]);
        assert_eq!(parse("outboundTrafficPolicy: {}\n").unwrap().0.outbound, OutboundMode::AllowAny);
        assert_eq!(parse("").unwrap().0, MeshConfig::default());
        let e = parse("outboundTrafficPolicy: {mode: DENY}\n").unwrap_err();
        assert!(e.contains("outboundTrafficPolicy.mode") && e.contains("REGISTRY_ONLY"), "{e}");
        assert!(parse("- a\n").is_err());
    }
}
