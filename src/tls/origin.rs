//! TLS a proxy originates to a server outside the mesh's identities (DestinationRule `tls`
//! `SIMPLE` and `MUTUAL`), as Envoy's upstream TLS context does: the server's chain checked
//! against the rule's `caCertificates` (else the system's roots) and its name against the
//! SNI or the rule's `subjectAltNames`, or nothing checked with `insecureSkipVerify`; for
//! MUTUAL, this client's own certificate from the rule's files.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{certs_from_pem, key_from_pem, provider};
use crate::snapshot::Originate;

/// The client config for `o` (with its client certificate when `mutual`). Files are read
/// here, once per cluster: an unreadable one is an error that names it.
pub fn config(o: &Originate, mutual: bool) -> Result<Arc<ClientConfig>, String> {
    let read = |field: &str, path: &str| std::fs::read_to_string(path).map_err(|e| format!("{field} {path}: {e}"));
    let verifier: Arc<dyn ServerCertVerifier> = if o.insecure_skip_verify {
        Arc::new(Checker::Nothing)
    } else {
        let mut roots = RootCertStore::empty();
        match &o.ca_certificates {
            Some(path) => {
                for c in
                    certs_from_pem(&read("caCertificates", path)?).map_err(|e| format!("caCertificates {path}: {e}"))?
                {
                    roots.add(c).map_err(|e| format!("caCertificates {path}: {e}"))?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if roots.is_empty() {
            return Err(
                "no CA certificates to check the server with (set caCertificates, or install ca-certificates)".into()
            );
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        Arc::new(Checker::WebPki { inner, names: o.subject_alt_names.clone() })
    };
    with_verifier(verifier, o, mutual)
}

/// A config whose every handshake fails with `reason` (a cluster whose files could not be
/// read: its requests fail as Envoy's would, and the log says why).
pub fn refusing(reason: String) -> Arc<ClientConfig> {
    with_verifier(Arc::new(Checker::Refuse(reason)), &Originate::default(), false).expect("no files to read")
}

fn with_verifier(
    verifier: Arc<dyn ServerCertVerifier>,
    o: &Originate,
    mutual: bool,
) -> Result<Arc<ClientConfig>, String> {
    let read = |field: &str, path: &str| std::fs::read_to_string(path).map_err(|e| format!("{field} {path}: {e}"));
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = if mutual {
        let (Some(cert), Some(key)) = (&o.client_certificate, &o.private_key) else {
            return Err("MUTUAL needs clientCertificate and privateKey".into());
        };
        let chain =
            certs_from_pem(&read("clientCertificate", cert)?).map_err(|e| format!("clientCertificate {cert}: {e}"))?;
        let key = key_from_pem(&read("privateKey", key)?).map_err(|e| format!("privateKey {key}: {e}"))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| format!("clientCertificate and privateKey: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How the server's certificate is checked.
#[derive(Debug)]
enum Checker {
    /// `insecureSkipVerify`.
    Nothing,
    /// WebPKI, with the names Envoy's `match_subject_alt_names` accepts (the SNI if none).
    WebPki {
        inner: Arc<WebPkiServerVerifier>,
        names: Vec<String>,
    },
    Refuse(String),
}

impl ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (inner, names) = match self {
            Checker::Nothing => return Ok(ServerCertVerified::assertion()),
            Checker::Refuse(reason) => return Err(rustls::Error::General(reason.clone())),
            Checker::WebPki { inner, names } => (inner, names),
        };
        if names.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = rustls::Error::General("no subjectAltNames".into());
        for name in names {
            let Ok(name) = ServerName::try_from(name.as_str()) else { continue };
            match inner.verify_server_cert(end_entity, intermediates, &name, ocsp, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
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
