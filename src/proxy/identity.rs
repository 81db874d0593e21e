//! The proxy's workload identity, as istio-agent keeps it: a key made here and never sent, a
//! CSR to the control plane (with this pod's own credential), and renewal at half the
//! certificate's life. Renewal swaps the credential in place (`tls::CertSlot`): new handshakes
//! use the new certificate, connections already up carry on.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use crate::api::{self, CertificateRequest, CertificateResponse};
use crate::net::log;
use crate::tls::{self, Mtls};

pub struct Identity {
    /// `spiffe://cluster.local/ns/NS/sa/SA`.
    pub spiffe: String,
    pub mtls: Mtls,
    /// The certificate chain and root now in use (PEM), for the admin's `/certs`.
    pems: RwLock<(String, String)>,
}

impl Identity {
    /// The chain (leaf first) and the root, PEM.
    pub fn pems(&self) -> (String, String) {
        self.pems.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A new key and a certificate for it, for the pod `key` (`namespace/pod`).
async fn request(client: &api::Client, pod: &str) -> Result<(CertificateResponse, String), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| e.to_string())?;
    let resp: CertificateResponse =
        client.post(&certificates_path(pod), &CertificateRequest { csr }).await.map_err(|e| e.to_string())?;
    Ok((resp, key.serialize_pem()))
}

/// `POST /v1/certificates?namespace=NS&pod=NAME`: a proxy's own credential is good for its own
/// pod only; the environment's token (a proxy started by hand) names the pod.
fn certificates_path(pod: &str) -> String {
    let (namespace, name) = pod.split_once('/').unwrap_or(("", pod));
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("namespace", namespace)
        .append_pair("pod", name)
        .finish();
    format!("/v1/certificates?{query}")
}

/// The proxy's identity, asked for until the control plane answers (a proxy without one
/// could not speak mTLS, so it does not announce itself ready before).
pub async fn obtain(client: &api::Client, pod: &str) -> Arc<Identity> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match request(client, pod).await.and_then(|(resp, key)| {
            let ck = tls::certified_key(&resp.cert_chain, &key)?;
            let mtls = Mtls::new(ck, &resp.root)?;
            Ok(Identity { spiffe: resp.identity, mtls, pems: RwLock::new((resp.cert_chain, resp.root)) })
        }) {
            Ok(identity) => return Arc::new(identity),
            Err(e) => {
                log(&format!("identity: no certificate yet ({e}); asking again in {backoff:?}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// When to renew a certificate valid `not_before..not_after` (Unix seconds): at half its life,
/// as istio-agent (`SECRET_GRACE_PERIOD_RATIO` 0.5).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) / 2
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Renews the certificate for as long as the proxy runs; a failure keeps the current one and
/// tries again soon (it is still valid for the other half of its life).
pub async fn renew(identity: Arc<Identity>, client: api::Client, pod: String) {
    loop {
        let (chain, _) = identity.pems();
        let wait = match tls::describe(&chain).ok().and_then(|c| c.into_iter().next()) {
            Some(leaf) => (renew_at(leaf.not_before, leaf.not_after) - now_secs()).max(1),
            None => 1,
        };
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        let mut backoff = Duration::from_secs(1);
        loop {
            match request(&client, &pod)
                .await
                .and_then(|(resp, key)| Ok((tls::certified_key(&resp.cert_chain, &key)?, resp)))
            {
                Ok((ck, resp)) => {
                    identity.mtls.slot.set(ck);
                    *identity.pems.write().unwrap_or_else(|e| e.into_inner()) = (resp.cert_chain, resp.root);
                    log(&format!("identity: renewed the certificate of {}", identity.spiffe));
                    break;
                }
                Err(e) => {
                    log(&format!("identity: renewal failed ({e}); trying again in {backoff:?}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_at_half_its_life() {
        assert_eq!(renew_at(1000, 1000 + 86400), 1000 + 43200);
        assert_eq!(renew_at(0, 3), 1);
    }
}
