//! A gateway's HTTPS servers: their certificates come from Secrets, fetched from the control
//! plane with the gateway's own credential (Envoy's SDS, in one call) and kept by the Secret's
//! version, so a rotated Secret is fetched once and used for new handshakes without a restart.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::api::{self, Credential};
use crate::net::log;
use crate::snapshot::ServerTls;
use crate::tls::{self, SniConfigs};

/// Server configs by (Secret, its version, mode, minimum TLS version).
#[derive(Default)]
pub struct Credentials {
    cache: HashMap<ServerTls, Arc<ServerConfig>>,
}

impl Credentials {
    /// Each port's servers with their certificates; a server whose Secret is missing or
    /// unusable is left out (a client naming it gets no handshake, as with Envoy).
    pub async fn configs(
        &mut self,
        api: &api::Client,
        ports: &[(u16, Vec<ServerTls>)],
    ) -> HashMap<u16, Arc<SniConfigs>> {
        let mut out = HashMap::new();
        let mut keep = HashMap::new();
        for (port, servers) in ports {
            let mut sni = SniConfigs::default();
            for server in servers {
                let config = match self.cache.remove(server) {
                    Some(c) => Some(c),
                    None => fetch(api, server).await,
                };
                if let Some(c) = config {
                    sni.servers.push((server.hosts.clone(), c.clone()));
                    keep.insert(server.clone(), c);
                }
            }
            out.insert(*port, Arc::new(sni));
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
    let ca = match (server.mode.as_str(), &cred.ca) {
        ("MUTUAL", None) => {
            log(&format!("gateway: credential {name} has no ca.crt (nor a {name}-cacert Secret) for MUTUAL"));
            return None;
        }
        ("MUTUAL", Some(ca)) => Some(ca.as_str()),
        _ => None,
    };
    let tls13 = server.min_version.as_deref() == Some("TLSV1_3");
    match tls::gateway_config(&cred.cert_chain, &cred.key, ca, tls13) {
        Ok(c) => Some(c),
        Err(e) => {
            log(&format!("gateway: credential {name}: {e}"));
            None
        }
    }
}
