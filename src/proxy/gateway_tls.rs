//! A gateway's TLS servers: their certificates come from Secrets, fetched from the control
//! plane with the gateway's own credential (Envoy's SDS, in one call) and kept by the Secret's
//! version, so a rotated Secret is fetched once and used for new handshakes without a restart.
//! `ISTIO_MUTUAL` servers use the gateway's own workload certificate; PASSTHROUGH servers'
//! SNI names are listed so the port knows to hand those connections through.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::api::{self, Credential};
use crate::net::log;
use crate::snapshot::{GatewayListener, ServerTls};
use crate::tls::{self, Chain, ClientAuth, SniConfigs};

/// Server configs by (Secret, its version, mode, minimum TLS version).
#[derive(Default)]
pub struct Credentials {
    cache: HashMap<ServerTls, Arc<ServerConfig>>,
}

impl Credentials {
    /// Each TLS port's servers with their certificates; a server whose Secret is missing or
    /// unusable is left out (a client naming it gets no handshake, as with Envoy). `mesh` is
    /// the gateway's own mTLS server config, for ISTIO_MUTUAL.
    pub async fn configs(
        &mut self,
        api: &api::Client,
        listeners: &[GatewayListener],
        mesh: Option<Arc<ServerConfig>>,
    ) -> HashMap<u16, Arc<SniConfigs>> {
        let mut out = HashMap::new();
        let mut keep = HashMap::new();
        for l in listeners.iter().filter(|l| !l.tls.is_empty() || !l.passthrough.is_empty()) {
            let mut sni = SniConfigs::default();
            for server in &l.tls {
                let config = match (server.mode.as_str(), self.cache.remove(server)) {
                    ("ISTIO_MUTUAL", _) => mesh.clone(),
                    (_, Some(c)) => Some(c),
                    (_, None) => fetch(api, server).await,
                };
                if let Some(c) = config {
                    sni.servers.push((server.hosts.clone(), Chain::Terminate(c.clone())));
                    keep.insert(server.clone(), c);
                }
            }
            for route in &l.passthrough {
                sni.servers.push((route.sni_hosts.clone(), Chain::Passthrough));
            }
            out.insert(l.port, Arc::new(sni));
        }
        self.cache = keep;
        out
    }
}

async fn fetch(api: &api::Client, server: &ServerTls) -> Option<Arc<ServerConfig>> {
    let name = &server.credential;
    let cred: Credential = match api.get(&format!("/v1/credentials?name={name}")).await {
        Ok(c) => c,
        Err(e) => {
            log(&format!("gateway: credential {name}: {e}; its hosts {:?} are not served", server.hosts));
            return None;
        }
    };
    let client_auth = match (server.mode.as_str(), &cred.ca) {
        (mode @ ("MUTUAL" | "OPTIONAL_MUTUAL"), None) => {
            log(&format!("gateway: credential {name} has no ca.crt (nor a {name}-cacert Secret) for {mode}"));
            return None;
        }
        ("MUTUAL", Some(ca)) => ClientAuth::Required(ca),
        ("OPTIONAL_MUTUAL", Some(ca)) => ClientAuth::Optional(ca),
        _ => ClientAuth::None,
    };
    let tls13 = server.min_version.as_deref() == Some("TLSV1_3");
    match tls::gateway_config(&cred.cert_chain, &cred.key, client_auth, tls13) {
        Ok(c) => Some(c),
        Err(e) => {
            log(&format!("gateway: credential {name}: {e}"));
            None
        }
    }
}
