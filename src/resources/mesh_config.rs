//! Istio's mesh config as meshrig reads it: the `mesh` key of ConfigMap `istio` in
//! `istio-system` (where `istioctl install --set meshConfig...` puts it). meshrig applies
//! `outboundTrafficPolicy.mode`, `enableTracing`, `defaultConfig.tracing.sampling`,
//! `accessLogFile`, `accessLogEncoding`, `accessLogFormat` (parsed by
//! `access_format.rs`) and `pathNormalization`; every other field is accepted and
//! reported as not applied.

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
    /// The share of new traces sampled, in hundredths of a percent (Istio's 0.01 steps);
    /// `None` leaves meshrig's default (`trace::DEFAULT_SAMPLING`). `enableTracing: false` is 0.
    pub sampling: Option<u32>,
    /// `accessLogFile`; none (or empty): off, Istio's default.
    pub access_log_file: Option<String>,
    /// `accessLogEncoding: JSON`, also for a Telemetry's `envoy` provider when the file is off.
    pub access_log_json: bool,
    /// `accessLogFormat`, parsed, for text lines (also a Telemetry's `envoy` provider's).
    pub access_log_format: Option<Vec<crate::access_format::Piece>>,
    /// `pathNormalization.normalization` (BASE unless set).
    pub path_normalization: crate::normalize::PathNormalization,
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
    let mut enabled = true;
    let (mut log_file, mut log_json, mut log_format) = (None, false, None);
    for (k, v) in &map {
        let key = k.as_str().unwrap_or_default();
        if key == "accessLogFile" {
            log_file = Some(v.as_str().ok_or("accessLogFile: must be a path, such as /dev/stdout")?.to_string());
            continue;
        }
        if key == "accessLogFormat" {
            let text = v.as_str().ok_or("accessLogFormat: must be a string of Envoy's %OPERATORS%")?;
            if !text.is_empty() {
                log_format = Some(crate::access_format::parse(text).map_err(|e| format!("accessLogFormat: {e}"))?);
            }
            continue;
        }
        if key == "accessLogEncoding" {
            log_json = match v.as_str() {
                Some("TEXT") => false,
                Some("JSON") => true,
                _ => return Err("accessLogEncoding: must be TEXT or JSON".into()),
            };
            continue;
        }
        if key == "pathNormalization" {
            let names = crate::normalize::PathNormalization::NAMES.join(", ");
            let name = match v.get("normalization") {
                None => "BASE",
                Some(n) => {
                    n.as_str().ok_or_else(|| format!("pathNormalization.normalization: must be one of {names}"))?
                }
            };
            config.path_normalization = crate::normalize::PathNormalization::parse(name)
                .ok_or_else(|| format!("pathNormalization.normalization: {name:?} is not one of {names}"))?;
            if let Some(m) = v.as_mapping() {
                for k in m.keys().filter_map(|k| k.as_str()).filter(|k| *k != "normalization") {
                    unapplied.push(format!("pathNormalization.{k}"));
                }
            }
            continue;
        }
        if key == "enableTracing" {
            enabled = v.as_bool().ok_or("enableTracing: must be true or false")?;
            continue;
        }
        if key == "defaultConfig" {
            config.sampling = default_config(v, &mut unapplied)?;
            continue;
        }
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
    if !enabled {
        config.sampling = Some(0);
    }
    if log_json && log_format.is_some() {
        // A JSON format is an object of operators; meshrig writes its JSON lines with Istio's keys.
        unapplied.push("accessLogFormat (with accessLogEncoding: JSON)".to_string());
        log_format = None;
    }
    config.access_log_json = log_json;
    config.access_log_format = log_format;
    config.access_log_file = log_file.filter(|f| !f.is_empty());
    Ok((config, unapplied))
}

/// `defaultConfig` (ProxyConfig): `tracing.sampling` (0–100) is applied, the rest reported.
fn default_config(v: &serde_yaml::Value, unapplied: &mut Vec<String>) -> Result<Option<u32>, String> {
    let Some(map) = v.as_mapping() else { return Ok(None) };
    let mut sampling = None;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        if key != "tracing" {
            unapplied.push(format!("defaultConfig.{key}"));
            continue;
        }
        for (k, v) in v.as_mapping().into_iter().flatten() {
            let key = k.as_str().unwrap_or_default();
            if key != "sampling" {
                unapplied.push(format!("defaultConfig.tracing.{key}"));
                continue;
            }
            let n = v.as_f64().filter(|n| (0.0..=100.0).contains(n));
            let n = n.ok_or("defaultConfig.tracing.sampling: must be a number from 0 to 100 (percent)")?;
            sampling = Some((n * 100.0).round() as u32);
        }
    }
    Ok(sampling)
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
            parse("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFormat: '%START_TIME%'\nenablePrometheusMerge: true\n").unwrap();
        assert_eq!(c.outbound, OutboundMode::RegistryOnly);
        assert_eq!(unapplied, ["enablePrometheusMerge"]);
        assert_eq!(parse("outboundTrafficPolicy: {}\n").unwrap().0.outbound, OutboundMode::AllowAny);
        assert_eq!(parse("").unwrap().0, MeshConfig::default());
        let e = parse("outboundTrafficPolicy: {mode: DENY}\n").unwrap_err();
        assert!(e.contains("outboundTrafficPolicy.mode") && e.contains("REGISTRY_ONLY"), "{e}");
        assert!(parse("- a\n").is_err());
    }

    #[test]
    fn reads_the_tracing_sampling_and_enable_tracing() {
        let (c, unapplied) = parse("defaultConfig:\n  tracing: {sampling: 1.5, zipkin: {address: x}}\n  holdApplicationUntilProxyStarts: true\n").unwrap();
        assert_eq!(c.sampling, Some(150));
        assert_eq!(unapplied, ["defaultConfig.tracing.zipkin", "defaultConfig.holdApplicationUntilProxyStarts"]);
        assert_eq!(
            parse("enableTracing: false\ndefaultConfig: {tracing: {sampling: 100}}\n").unwrap().0.sampling,
            Some(0)
        );
        assert_eq!(parse("enableTracing: true\n").unwrap().0.sampling, None);
        assert!(parse("defaultConfig: {tracing: {sampling: 101}}\n").unwrap_err().contains("0 to 100"));
        let log = parse("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n").unwrap().0;
        assert_eq!((log.access_log_file.as_deref(), log.access_log_json), (Some("/dev/stdout"), true));
        assert_eq!(parse("accessLogFile: ''\n").unwrap().0.access_log_file, None, "empty is Istio's off");
        assert!(parse("accessLogEncoding: XML\n").unwrap_err().contains("TEXT or JSON"));
    }
}
