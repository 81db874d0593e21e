//! Istio's HTTP metadata exchange: a client-side proxy tells the server-side one who is
//! calling (`x-envoy-peer-metadata-id`, `x-envoy-peer-metadata`), so the server's metrics name
//! the source workload; the server removes both before the app sees the request. Istio encodes
//! the metadata as a base64 protobuf Struct; meshrig as base64 JSON with the same keys (`NAME`,
//! `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`), read only by meshrig's proxies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};

use crate::proxy::stats::Peer;
use crate::snapshot::{ProxyIdentity, Role};

pub const ID: &str = "x-envoy-peer-metadata-id";
pub const METADATA: &str = "x-envoy-peer-metadata";

/// Metadata larger than this is ignored (the peer is then `unknown`).
const MAX_LEN: usize = 8 * 1024;

/// The two headers a proxy sends with requests into the mesh: built once per snapshot. A
/// plain forwarder (a pod without a sidecar) sends none, as a pod without Envoy would.
pub fn headers(me: &ProxyIdentity) -> Option<(HeaderValue, HeaderValue)> {
    let kind = match me.role {
        Role::Sidecar => "sidecar",
        Role::Gateway => "router",
        Role::Plain => return None,
    };
    let id = format!("{kind}~127.0.0.1~{}.{}~{}.svc.cluster.local", me.pod, me.namespace, me.namespace);
    let metadata = serde_json::json!({
        "NAME": me.pod,
        "NAMESPACE": me.namespace,
        "WORKLOAD_NAME": me.workload,
        "LABELS": me.labels,
        "CLUSTER_ID": "Kubernetes",
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(metadata.to_string());
    Some((HeaderValue::from_str(&id).ok()?, HeaderValue::from_str(&encoded).ok()?))
}

/// Sets this proxy's exchange headers on a request into the mesh (replacing any the app sent).
pub fn announce(headers: &mut HeaderMap, mine: &Option<(HeaderValue, HeaderValue)>) {
    strip(headers);
    if let Some((id, metadata)) = mine {
        headers.insert(ID, id.clone());
        headers.insert(METADATA, metadata.clone());
    }
}

/// Removes the exchange headers (a request leaving the mesh, or reaching the app).
pub fn strip(headers: &mut HeaderMap) {
    headers.remove(ID);
    headers.remove(METADATA);
}

/// The caller a request's exchange headers name, removed from the request. A connection
/// keeps its last answer, so a peer's metadata is decoded once per connection, not per request.
pub fn caller(headers: &mut HeaderMap, memo: &Mutex<Option<(HeaderValue, Arc<Peer>)>>) -> Option<Arc<Peer>> {
    headers.remove(ID);
    let value = headers.remove(METADATA)?;
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((seen, peer)) = &*memo {
        if *seen == value {
            return Some(peer.clone());
        }
    }
    let peer = Arc::new(decode(value.as_bytes())?);
    *memo = Some((value, peer.clone()));
    Some(peer)
}

/// The peer in a metadata header's value; `None` when it is not meshrig's encoding.
pub fn decode(value: &[u8]) -> Option<Peer> {
    if value.len() > MAX_LEN {
        return None;
    }
    let json = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let text = |k: &str| v.get(k).and_then(|s| s.as_str());
    let namespace = text("NAMESPACE")?;
    let workload = text("WORKLOAD_NAME").or_else(|| text("NAME"))?;
    let labels: BTreeMap<String, String> = v
        .get("LABELS")
        .and_then(|l| l.as_object())
        .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Some(Peer::new(workload, namespace, &labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role) -> ProxyIdentity {
        ProxyIdentity {
            namespace: "default".into(),
            pod: "productpage-v1-7f9c".into(),
            workload: "productpage-v1".into(),
            labels: [("app".to_string(), "productpage".to_string()), ("version".to_string(), "v1".to_string())].into(),
            service_account: "bookinfo-productpage".into(),
            role,
        }
    }

    #[test]
    fn the_server_learns_the_caller_and_the_app_never_sees_the_headers() {
        let mine = headers(&identity(Role::Sidecar));
        let (id, _) = mine.clone().unwrap();
        assert_eq!(id.to_str().unwrap(), "sidecar~127.0.0.1~productpage-v1-7f9c.default~default.svc.cluster.local");
        let mut h = HeaderMap::new();
        h.insert(METADATA, HeaderValue::from_static("spoofed by the app"));
        announce(&mut h, &mine);
        let memo = Mutex::new(None);
        let peer = caller(&mut h, &memo).unwrap();
        assert_eq!(*peer, Peer::new("productpage-v1", "default", &identity(Role::Sidecar).labels));
        assert!(!h.contains_key(ID) && !h.contains_key(METADATA));
        // The next request on the connection reuses the decoded peer.
        announce(&mut h, &mine);
        assert!(Arc::ptr_eq(&caller(&mut h, &memo).unwrap(), &peer));
    }

    #[test]
    fn plain_forwarders_send_nothing_and_garbage_is_unknown() {
        assert!(headers(&identity(Role::Plain)).is_none());
        assert!(headers(&identity(Role::Gateway)).unwrap().0.to_str().unwrap().starts_with("router~"));
        assert!(decode(b"not base64!").is_none());
        assert!(decode(base64::engine::general_purpose::STANDARD.encode("{\"NAME\": 3}").as_bytes()).is_none());
        let mut h = HeaderMap::new();
        h.insert(METADATA, HeaderValue::from_static("Zm9v"));
        assert!(caller(&mut h, &Mutex::new(None)).is_none());
        assert!(!h.contains_key(METADATA));
    }
}
