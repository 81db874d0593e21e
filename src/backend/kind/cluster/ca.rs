//! The mesh CA's root on Kubernetes: the Secret `istio-ca-secret` in `istio-system`
//! (`ca-cert.pem`, `ca-key.pem`, as Istio's self-signed CA keeps it), made by the first control
//! plane and read by every later one, so a restarted istiod signs with the same root and the
//! proxies' certificates stay trusted. A damaged Secret is an error naming it, never replaced.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::ca::Ca;

pub const NAMESPACE: &str = "istio-system";
pub const SECRET: &str = "istio-ca-secret";
const CERT: &str = "ca-cert.pem";
const KEY: &str = "ca-key.pem";

/// The root the Secret holds, or a new one written there (when two control planes race, the
/// one whose create lost reads the winner's).
pub async fn load_or_create(client: kube::Client) -> Result<Ca, String> {
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    for _ in 0..2 {
        if let Some(secret) = api.get_opt(SECRET).await.map_err(|e| format!("read Secret {NAMESPACE}/{SECRET}: {e}"))? {
            return from_secret(&secret);
        }
        let ca = Ca::generate().map_err(|e| e.to_string())?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                namespace: Some(NAMESPACE.into()),
                labels: Some(BTreeMap::from([("app".to_string(), "istiod".to_string())])),
                ..ObjectMeta::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(BTreeMap::from([
                (CERT.to_string(), ByteString(ca.root_pem().as_bytes().to_vec())),
                (KEY.to_string(), ByteString(ca.key_pem().into_bytes())),
            ])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(ca),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(format!("create Secret {NAMESPACE}/{SECRET}: {e}")),
        }
    }
    Err(format!("Secret {NAMESPACE}/{SECRET} was created and deleted again while it was read; start again"))
}

/// The CA a Secret holds. Pure.
pub fn from_secret(secret: &Secret) -> Result<Ca, String> {
    let damaged = |why: String| {
        format!(
            "Secret {NAMESPACE}/{SECRET} is damaged: {why}; the mesh's certificates all chain to it, so it is not replaced: \
             delete it (`kubectl -n {NAMESPACE} delete secret {SECRET}`) and restart istiod to make a new root, then restart the workloads"
        )
    };
    let data = secret.data.clone().unwrap_or_default();
    let field = |name: &str| -> Result<String, String> {
        let bytes = data.get(name).ok_or_else(|| damaged(format!("it has no {name}")))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| damaged(format!("{name} is not PEM text")))
    };
    let (cert, key) = (field(CERT)?, field(KEY)?);
    Ca::from_pem(cert, &key).map_err(|(in_key, why)| damaged(format!("{}: {why}", if in_key { KEY } else { CERT })))
}
