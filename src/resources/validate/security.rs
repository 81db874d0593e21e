//! Security kinds' validation, as istiod's webhook checks them (`ValidatePeerAuthentication`).

use super::*;
use crate::resources::security::PeerAuthentication;

pub(super) fn validate_peer_authentication(pa: &PeerAuthentication, rep: &mut Report) {
    let spec = &pa.spec;
    let selected = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !selected {
        rep.err(
            "spec.portLevelMtls",
            "mesh/namespace peer authentication cannot have port level mTLS: add a spec.selector for the workload",
        );
    }
    for port in spec.port_level_mtls.keys() {
        if !(1..=65535).contains(port) {
            rep.err(format!("spec.portLevelMtls[{port}]"), "port must be in the range 1..65535");
        }
    }
    if selected && pa.metadata.namespace.as_deref() == Some(crate::translate::ROOT_NAMESPACE) {
        rep.warn(
            "spec.selector",
            "a PeerAuthentication with a selector in the root namespace (istio-system) applies to no other namespace; drop the selector for a mesh-wide policy",
        );
    }
}
