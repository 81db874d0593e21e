//! TLS for the whole binary: one rustls crypto provider (aws-lc-rs), PEM, certificate
//! inspection, and Istio mutual TLS: a workload's credential (swapped on rotation), the
//! server config that requires a client certificate from the mesh's root, and client configs
//! that accept a server only by its SPIFFE id (URI SAN), as Istio's `ISTIO_MUTUAL` does;
//! `origin`: TLS to servers outside the mesh (DestinationRule `SIMPLE` and `MUTUAL`).

pub mod origin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};

/// ALPN a sidecar offers when it originates Istio mTLS (as Istio's sidecars, then plain HTTP/1.1).
pub const MESH_ALPN: [&[u8]; 3] = [b"istio-http/1.1", b"istio", b"http/1.1"];

/// The one crypto provider of the binary.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// Makes [`provider`] the process default too, so nothing can pick another.
pub fn install_default() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("not a PEM private key: {e}"))
}

/// What `proxy-config secret` and tests show of a certificate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CertInfo {
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

fn info(der: &[u8]) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
    let (mut uris, mut dns) = (vec![], vec![]);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        uris,
        dns,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

/// Every certificate of a PEM chain, described.
pub fn describe(pem: &str) -> Result<Vec<CertInfo>, String> {
    certs_from_pem(pem)?.iter().map(|c| info(c)).collect()
}

/// The URI SANs of a certificate (a workload's SPIFFE id).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    info(der).map(|i| i.uris).unwrap_or_default()
}

/// SHA-256 of a certificate, hex (Envoy's `Hash=` in `x-forwarded-client-cert`).
pub fn cert_sha256(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn anchors(root_pem: &str) -> Result<Vec<TrustAnchor<'static>>, String> {
    certs_from_pem(root_pem)?
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()).map_err(|e| format!("root: {e}")))
        .collect()
}

/// Checks that `end` chains to one of `roots` for `usage` and, unless `allowed` is empty,
/// names one of the `allowed` SPIFFE ids.
fn verify(
    end: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[TrustAnchor<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    allowed: &[String],
) -> Result<(), rustls::Error> {
    use rustls::{CertificateError, OtherError};
    let cert = webpki::EndEntityCert::try_from(end)
        .map_err(|e| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))))?;
    cert.verify_for_usage(
        provider().signature_verification_algorithms.all,
        roots,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(|e| {
        rustls::Error::InvalidCertificate(match e {
            webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
            webpki::Error::CertExpired { .. } => CertificateError::Expired,
            webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
            other => CertificateError::Other(OtherError(Arc::new(other))),
        })
    })?;
    if !allowed.is_empty() && !uri_sans(end).iter().any(|u| allowed.contains(u)) {
        return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
    }
    Ok(())
}

/// `chain` (leaf first, PEM) chains to `root_pem` as a server and names one of `allowed`.
#[cfg(test)]
pub fn verify_chain(chain: &[String], root_pem: &str, allowed: &[String]) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> =
        chain.iter().map(|p| certs_from_pem(p)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    let (end, rest) = certs.split_first().ok_or("empty chain")?;
    let roots = anchors(root_pem)?;
    verify(end, rest, &roots, UnixTime::now(), webpki::KeyUsage::server_auth(), allowed).map_err(|e| e.to_string())
}

/// Accepts a server whose certificate chains to the mesh's root and names an expected SPIFFE id
/// (any id from the root when none is expected), whatever the SNI says: Istio's SNI
/// (`outbound_.8000_._.httpbin...`) is for routing, identity is the URI SAN.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<Vec<TrustAnchor<'static>>>,
    allowed: Vec<String>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify(end_entity, intermediates, &self.roots, now, webpki::KeyUsage::server_auth(), &self.allowed)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate a workload presents, swapped in place when it is renewed: handshakes
/// after the swap use the new one, connections already up keep going.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CertSlot {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A certified key from a PEM chain (leaf first) and a PEM private key.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let certs = certs_from_pem(chain_pem)?;
    let key = key_from_pem(key_pem)?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| format!("private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(Arc::new(ck))
}

/// A workload's Istio mutual TLS: its credential, the mesh's root, the server config, and a
/// client config per set of accepted server identities (kept, so sessions resume).
pub struct Mtls {
    pub slot: Arc<CertSlot>,
    roots: Arc<Vec<TrustAnchor<'static>>>,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<Vec<String>, Arc<ClientConfig>>>,
}

impl std::fmt::Debug for Mtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mtls { .. }")
    }
}

impl Mtls {
    pub fn new(key: Arc<CertifiedKey>, root_pem: &str) -> Result<Mtls, String> {
        let roots = Arc::new(anchors(root_pem)?);
        let mut store = RootCertStore::empty();
        for c in certs_from_pem(root_pem)? {
            store.add(c).map_err(|e| format!("root: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let slot = Arc::new(CertSlot(RwLock::new(key)));
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(slot.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec(), b"istio-http/1.1".to_vec(), b"istio".to_vec()];
        Ok(Mtls { slot, roots, server: Arc::new(server), clients: Mutex::new(HashMap::new()) })
    }

    /// Requires a client certificate from the mesh's root (STRICT, and TLS under PERMISSIVE).
    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Presents this workload's certificate and accepts a server that is one of `allowed`.
    pub fn client(&self, allowed: &[String]) -> Arc<ClientConfig> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(allowed) {
            return c.clone();
        }
        let verifier = Arc::new(SpiffeVerifier { roots: self.roots.clone(), allowed: allowed.to_vec() });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.slot.clone());
        config.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        if clients.len() > 1024 {
            clients.clear();
        }
        clients.insert(allowed.to_vec(), config.clone());
        config
    }
}

/// A gateway server's TLS from its Secret: the certificate and key, TLS 1.2 and 1.3 (or 1.3
/// only), and for MUTUAL a client certificate that chains to `ca`.
/// Whether a gateway server asks for a client certificate, and from which CA.
#[derive(Clone, Copy, Debug)]
pub enum ClientAuth<'a> {
    None,
    /// `MUTUAL`: a certificate from `ca` is required.
    Required(&'a str),
    /// `OPTIONAL_MUTUAL`: one is checked if the client sends it.
    Optional(&'a str),
}

pub fn gateway_config(
    chain_pem: &str,
    key_pem: &str,
    client_auth: ClientAuth<'_>,
    tls13_only: bool,
) -> Result<Arc<ServerConfig>, String> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12, &rustls::version::TLS13] };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions).map_err(|e| e.to_string())?;
    let builder = match client_auth {
        ClientAuth::Required(ca) | ClientAuth::Optional(ca) => {
            let mut store = RootCertStore::empty();
            for c in certs_from_pem(ca).map_err(|e| format!("ca.crt: {e}"))? {
                store.add(c).map_err(|e| format!("ca.crt: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider());
            let verifier = if matches!(client_auth, ClientAuth::Optional(_)) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("ca.crt: {e}"))?)
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| format!("certificate and key: {e}"))?;
    // As Envoy's gateways: HTTP/2 for clients that offer it, HTTP/1.1 for the others.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a gateway port does with a TLS connection whose SNI a server names (Envoy's filter
/// chains): terminate it with that server's config, or hand it through as bytes.
#[derive(Clone, Debug)]
pub enum Chain {
    Terminate(Arc<ServerConfig>),
    /// A PASSTHROUGH server's `tls` rule takes it (the proxy picks the rule by SNI again).
    Passthrough,
}

/// The TLS servers of one gateway port, chosen by SNI as Envoy's filter chains are: an exact
/// host first, then the longest `*.suffix`, then `*` (which also takes a client without SNI).
#[derive(Debug, Default)]
pub struct SniConfigs {
    pub servers: Vec<(Vec<String>, Chain)>,
}

impl SniConfigs {
    pub fn pick(&self, sni: Option<&str>) -> Option<Chain> {
        best_by_sni(self.servers.iter().map(|(hosts, chain)| (hosts.as_slice(), chain)), sni).cloned()
    }

    /// Some server hands TLS through: the SNI must be read without taking the bytes.
    pub fn passes_through(&self) -> bool {
        self.servers.iter().any(|(_, c)| matches!(c, Chain::Passthrough))
    }
}

/// The entry whose hosts match `sni` best: exact, then the longest `*.suffix`, then `*`.
pub fn best_by_sni<'a, T>(entries: impl Iterator<Item = (&'a [String], T)>, sni: Option<&str>) -> Option<T> {
    let sni = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let mut best: Option<(usize, T)> = None;
    for (hosts, value) in entries {
        let score = hosts
            .iter()
            .map(|h| {
                let h = h.to_ascii_lowercase();
                match (&sni, h.as_str()) {
                    (_, "*") => 1,
                    (Some(s), h) if h == s => usize::MAX,
                    (Some(s), h) if h.starts_with("*.") && s.ends_with(&h[1..]) => 1 + h.len(),
                    _ => 0,
                }
            })
            .max()
            .unwrap_or(0);
        if score > 0 && best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, value));
        }
    }
    best.map(|(_, v)| v)
}

/// The peer's SPIFFE id and certificate hash after a handshake.
pub fn peer_of(certs: Option<&[CertificateDer<'_>]>) -> (Option<String>, Option<String>) {
    let Some(leaf) = certs.and_then(|c| c.first()) else { return (None, None) };
    (uri_sans(leaf).into_iter().next(), Some(cert_sha256(leaf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{spiffe_id, Ca, WORKLOAD_TTL};

    pub(crate) fn workload(ca: &Ca, id: &str) -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let chain = ca.sign_workload(&csr, id, WORKLOAD_TTL).unwrap();
        certified_key(&chain, &key.serialize_pem()).unwrap()
    }

    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> (Result<Option<String>, String>, Result<(), String>) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from("outbound_.8000_._.httpbin.foo.svc.cluster.local").unwrap();
        let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        let s = s.map(|s| peer_of(s.get_ref().1.peer_certificates()).0).map_err(|e| e.to_string());
        (s, c.map(|_| ()).map_err(|e| e.to_string()))
    }

    #[tokio::test]
    async fn two_workloads_of_one_mesh_know_each_other_by_spiffe_id() {
        let ca = Ca::generate().unwrap();
        let (server_id, client_id) = (spiffe_id("foo", "httpbin"), spiffe_id("foo", "curl"));
        let server = Mtls::new(workload(&ca, &server_id), ca.root_pem()).unwrap();
        let client = Mtls::new(workload(&ca, &client_id), ca.root_pem()).unwrap();
        let (s, c) = handshake(server.server(), client.client(std::slice::from_ref(&server_id))).await;
        assert_eq!(s.unwrap(), Some(client_id.clone()));
        c.unwrap();
        // A client that expects someone else refuses the server.
        let (_, c) = handshake(server.server(), client.client(&[spiffe_id("foo", "other")])).await;
        assert!(c.unwrap_err().contains("NotValidForName"));
    }

    #[tokio::test]
    async fn another_meshs_workload_is_refused_both_ways() {
        let (ca, stranger_ca) = (Ca::generate().unwrap(), Ca::generate().unwrap());
        let server = Mtls::new(workload(&ca, &spiffe_id("foo", "httpbin")), ca.root_pem()).unwrap();
        let stranger = Mtls::new(workload(&stranger_ca, &spiffe_id("foo", "curl")), stranger_ca.root_pem()).unwrap();
        let (s, c) = handshake(server.server(), stranger.client(&[])).await;
        assert!(s.is_err() && c.is_err(), "{s:?} {c:?}");
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_used_for_new_handshakes() {
        let ca = Ca::generate().unwrap();
        let id = spiffe_id("foo", "httpbin");
        let server = Mtls::new(workload(&ca, &id), ca.root_pem()).unwrap();
        let before = server.slot.get().cert[0].clone();
        server.slot.set(workload(&ca, &id));
        let after = server.slot.get().cert[0].clone();
        assert_ne!(before, after);
        let client = Mtls::new(workload(&ca, &spiffe_id("foo", "curl")), ca.root_pem()).unwrap();
        let (a, b) = tokio::io::duplex(64 << 10);
        let name = ServerName::try_from("x").unwrap();
        let (s, c) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(server.server()).accept(a),
            tokio_rustls::TlsConnector::from(client.client(&[])).connect(name, b)
        );
        s.unwrap();
        assert_eq!(c.unwrap().get_ref().1.peer_certificates().unwrap()[0], after);
    }
}
