//! Mutual TLS decided at config time (pure): the PeerAuthentication mode in force for one
//! workload port (Istio's `ComposePeerAuthentication`), and the TLS a client uses to reach a
//! cluster (DestinationRule `tls`, else auto mTLS).

use std::collections::BTreeMap;

use crate::resources::networking::{ClientTlsSettings, TrafficPolicy};
use crate::resources::security::{MtlsMode, PeerAuthentication};
use crate::snapshot::{ClusterTls, Originate};

type Labels = BTreeMap<String, String>;

fn namespace_of(pa: &PeerAuthentication) -> &str {
    pa.metadata.namespace.as_deref().unwrap_or("default")
}

fn selector_of(pa: &PeerAuthentication) -> Option<&Labels> {
    pa.spec.selector.as_ref().map(|s| &s.match_labels).filter(|l| !l.is_empty())
}

fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The mode an inbound port is sent with (`peer_mode` never leaves it unset).
pub fn inbound_mode(mode: MtlsMode) -> crate::snapshot::MtlsMode {
    match mode {
        MtlsMode::Disable => crate::snapshot::MtlsMode::Disable,
        MtlsMode::Strict => crate::snapshot::MtlsMode::Strict,
        MtlsMode::Permissive | MtlsMode::Unset => crate::snapshot::MtlsMode::Permissive,
    }
}

/// The mode for container `port` of a workload in `namespace` with `labels`, given every
/// PeerAuthentication oldest first (the oldest wins among several at one level). Start
/// PERMISSIVE, then the mesh policy (root namespace, no selector), the namespace's, the
/// workload's, and its `portLevelMtls` entry, each applied unless UNSET: the narrowest wins.
pub fn peer_mode(policies: &[PeerAuthentication], root: &str, namespace: &str, labels: &Labels, port: u16) -> MtlsMode {
    let mesh = policies.iter().find(|p| namespace_of(p) == root && selector_of(p).is_none());
    let ns = policies.iter().find(|p| namespace_of(p) == namespace && selector_of(p).is_none());
    let workload =
        policies.iter().find(|p| namespace_of(p) == namespace && selector_of(p).is_some_and(|s| selects(s, labels)));
    let mut mode = MtlsMode::Permissive;
    let mut apply = |m: MtlsMode| {
        if m != MtlsMode::Unset {
            mode = m;
        }
    };
    for p in [mesh, ns, workload].into_iter().flatten() {
        apply(p.spec.mtls.map(|m| m.mode).unwrap_or_default());
    }
    if let Some(p) = workload {
        if let Some(m) = p.spec.port_level_mtls.get(&u32::from(port)) {
            apply(m.mode);
        }
    }
    mode
}

/// The `tls` block in force for `port`: the subset's, else the DR's port-level entry, else
/// the DR's own (Istio's MergeTrafficPolicy).
fn tls_block<'a>(
    dr: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: u16,
) -> Option<&'a ClientTlsSettings> {
    let of = |tp: &'a TrafficPolicy| {
        let port_level =
            tp.port_level_settings.iter().find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
        match port_level {
            Some(p) => p.tls.as_ref(),
            None => tp.tls.as_ref(),
        }
    };
    subset.and_then(of).or_else(|| dr.and_then(of))
}

/// How a client reaches the cluster's endpoints: no `tls` block is auto mTLS (Istio mTLS to
/// endpoints with a sidecar that accept it, plaintext to the others); `DISABLE` plaintext;
/// `ISTIO_MUTUAL` the mesh's certificates, always; `SIMPLE` and `MUTUAL` TLS with the rule's
/// own files (or the system's roots).
pub fn cluster_tls(dr: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> ClusterTls {
    let Some(tls) = tls_block(dr, subset, port) else { return ClusterTls::Auto };
    let originate = || Originate {
        sni: tls.sni.clone(),
        subject_alt_names: tls.subject_alt_names.clone(),
        ca_certificates: tls.ca_certificates.clone(),
        client_certificate: tls.client_certificate.clone(),
        private_key: tls.private_key.clone(),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
    };
    match tls.mode.as_deref() {
        Some("ISTIO_MUTUAL") => {
            ClusterTls::IstioMutual { sni: tls.sni.clone(), subject_alt_names: tls.subject_alt_names.clone() }
        }
        Some("SIMPLE") => ClusterTls::Simple(originate()),
        Some("MUTUAL") => ClusterTls::Mutual(originate()),
        _ => ClusterTls::Disable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse_documents;
    use crate::resources::Resource;

    fn policies(yaml: &str) -> Vec<PeerAuthentication> {
        parse_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d.resource {
                Resource::PeerAuthentication(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn labels(app: &str) -> Labels {
        [("app".to_string(), app.to_string())].into()
    }

    const ROOT: &str = "istio-system";

    fn pa(ns: &str, name: &str, body: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n---\n"
        )
    }

    #[test]
    fn nothing_anywhere_is_permissive() {
        assert_eq!(peer_mode(&[], ROOT, "foo", &labels("httpbin"), 8080), MtlsMode::Permissive);
    }

    #[test]
    fn the_narrowest_scope_wins_and_unset_inherits() {
        let mesh = pa(ROOT, "default", "  mtls: {mode: STRICT}");
        let ns = pa("foo", "default", "  mtls: {mode: PERMISSIVE}");
        let wl = pa("foo", "httpbin", "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: UNSET}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    9000: {mode: UNSET}");
        let all = policies(&format!("{mesh}{ns}{wl}"));
        // The mesh says STRICT; foo says PERMISSIVE; httpbin's workload policy is UNSET but
        // disables 8080 only.
        assert_eq!(peer_mode(&all, ROOT, "bar", &labels("httpbin"), 8080), MtlsMode::Strict);
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("curl"), 8080), MtlsMode::Permissive);
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("httpbin"), 8080), MtlsMode::Disable);
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("httpbin"), 9000), MtlsMode::Permissive);
        // A namespace policy without a mode leaves the mesh's.
        let all = policies(&format!("{mesh}{}", pa("foo", "default", "  {}")));
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("httpbin"), 8080), MtlsMode::Strict);
    }

    #[test]
    fn a_selector_in_the_root_namespace_is_not_mesh_wide_and_the_oldest_wins() {
        let sel = pa(ROOT, "only-some", "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: STRICT}");
        let all = policies(&sel);
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("httpbin"), 8080), MtlsMode::Permissive);
        // Two namespace-wide policies: the first (oldest) in the list wins.
        let all = policies(&format!(
            "{}{}",
            pa("foo", "older", "  mtls: {mode: STRICT}"),
            pa("foo", "newer", "  mtls: {mode: DISABLE}")
        ));
        assert_eq!(peer_mode(&all, ROOT, "foo", &labels("x"), 80), MtlsMode::Strict);
    }

    #[test]
    fn a_destination_rule_tls_block_overrides_auto_mtls() {
        let dr: TrafficPolicy = serde_yaml::from_str("tls: {mode: DISABLE}\nportLevelSettings:\n- port: {number: 9080}\n  tls: {mode: ISTIO_MUTUAL, sni: my.sni}").unwrap();
        assert_eq!(cluster_tls(None, None, 8000), ClusterTls::Auto);
        assert_eq!(cluster_tls(Some(&dr), None, 8000), ClusterTls::Disable);
        assert_eq!(
            cluster_tls(Some(&dr), None, 9080),
            ClusterTls::IstioMutual { sni: Some("my.sni".into()), subject_alt_names: vec![] }
        );
        let subset: TrafficPolicy = serde_yaml::from_str("tls: {mode: ISTIO_MUTUAL}").unwrap();
        assert_eq!(
            cluster_tls(Some(&dr), Some(&subset), 8000),
            ClusterTls::IstioMutual { sni: None, subject_alt_names: vec![] }
        );
    }
}
