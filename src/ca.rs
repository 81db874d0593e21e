//! The mesh's certificate authority: one root per environment (kept in the state dir, key
//! 0600), and workload certificates signed for CSRs, whose only name is the SPIFFE id
//! `spiffe://cluster.local/ns/NS/sa/SA` of the caller (never what the CSR asks for); and the
//! control plane's own serving certificate, by DNS name (its admission webhooks).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// Istio's default trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Istio's default workload certificate lifetime (`DEFAULT_WORKLOAD_CERT_TTL`).
pub const WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// The root's lifetime (Istio's self-signed root: 10 years).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The root starts a minute in the past, so a clock a little behind still accepts it.
const BACKDATE: Duration = Duration::from_secs(60);

/// `spiffe://cluster.local/ns/NS/sa/SA`.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path} is damaged ({why}); the mesh's identities hang on it. Restore it from a copy, or run `meshrig down --purge` to start over with a new CA"
    )]
    Damaged { path: String, why: String },
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error("the CSR asks for {asked}, but the caller is {caller}; a proxy may only ask for its own identity")]
    WrongIdentity { asked: String, caller: String },
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The root: its certificate (PEM, what everyone trusts) and what signs with its key.
pub struct Ca {
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { .. }") // the key stays out of logs
    }
}

const ROOT_CERT: &str = "root-cert.pem";
const ROOT_KEY: &str = "root-key.pem";

impl Ca {
    /// A new root, held in memory only.
    pub fn generate() -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, TRUST_DOMAIN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_TTL).into();
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key)?;
        Ok(Ca { root_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The environment's root in `dir` (`root-cert.pem`, `root-key.pem`), created the first
    /// time. A damaged file is an error that says what to do: a new root would silently
    /// break every running proxy's trust.
    pub fn load_or_create(dir: &Path) -> Result<Ca, Error> {
        let (cert_path, key_path) = (dir.join(ROOT_CERT), dir.join(ROOT_KEY));
        let io = |path: &Path, source| Error::Io { path: path.display().to_string(), source };
        if !key_path.exists() && !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            crate::env::set_mode(dir, 0o700);
            let ca = Ca::generate()?;
            let write = |path: &Path, text: &str, mode| {
                crate::env::write_atomic(path, text.as_bytes(), mode)
                    .map_err(|e| Error::Io { path: path.display().to_string(), source: std::io::Error::other(e) })
            };
            write(&key_path, &ca.issuer.key().serialize_pem(), 0o600)?;
            write(&cert_path, &ca.root_pem, 0o644)?;
            return Ok(ca);
        }
        let damaged = |path: &Path, why: String| Error::Damaged { path: path.display().to_string(), why };
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| damaged(&key_path, e.to_string()))?;
        let root_pem = std::fs::read_to_string(&cert_path).map_err(|e| damaged(&cert_path, e.to_string()))?;
        Ca::from_pem(root_pem, &key_pem)
            .map_err(|(in_key, why)| damaged(if in_key { &key_path } else { &cert_path }, why))
    }

    /// The CA of a root certificate and its key, as PEM; the error says which of the two is
    /// wrong (true: the key) and why.
    pub fn from_pem(root_pem: String, key_pem: &str) -> Result<Ca, (bool, String)> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| (true, e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&root_pem, key).map_err(|e| (false, e.to_string()))?;
        if issuer.key().public_key_raw() != public_key_of(&root_pem).map_err(|why| (false, why))? {
            return Err((true, "the key does not belong to the root certificate".into()));
        }
        Ok(Ca { root_pem, issuer })
    }

    /// The root's private key, as PEM (for keeping it where the backend keeps it).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Signs `csr_pem` for `identity` (a SPIFFE id), valid for `ttl`. The CSR proves the
    /// caller holds the key; its names must be empty or exactly `identity`.
    pub fn sign_workload(&self, csr_pem: &str, identity: &str, ttl: Duration) -> Result<String, Error> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| Error::BadCsr(e.to_string()))?;
        for san in &csr.params.subject_alt_names {
            let asked = match san {
                SanType::URI(u) => u.as_str().to_string(),
                other => format!("{other:?}"),
            };
            if asked != identity {
                return Err(Error::WrongIdentity { asked, caller: identity.into() });
            }
        }
        let uri = identity.to_string().try_into().map_err(|_| Error::BadCsr(format!("{identity:?} is not a URI")))?;
        let now = SystemTime::now();
        let params = &mut csr.params;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // No backdating: the proxy renews at half the certificate's life, counted from here.
        params.not_before = now.into();
        params.not_after = (now + ttl).into();
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions.clear();
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}

impl Ca {
    /// A serving certificate for `dns_names` (the control plane's webhooks, as the API server
    /// calls them: `istiod.istio-system.svc`), with a new key: the chain and the key, PEM.
    pub fn sign_server(&self, dns_names: &[&str], ttl: Duration) -> Result<(String, String), Error> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = dns_names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ttl).into();
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

fn public_key_of(cert_pem: &str) -> Result<Vec<u8>, String> {
    let der = crate::tls::certs_from_pem(cert_pem)?.into_iter().next().ok_or("no certificate in it")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;

    fn csr_for(uri: Option<&str>) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(u) = uri {
            params.subject_alt_names = vec![SanType::URI(u.to_string().try_into().unwrap())];
        }
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    #[test]
    fn a_workload_certificate_names_only_the_callers_spiffe_id() {
        let ca = Ca::generate().unwrap();
        let id = spiffe_id("foo", "httpbin");
        let (_, csr) = csr_for(Some(&id));
        let pem = ca.sign_workload(&csr, &id, WORKLOAD_TTL).unwrap();
        let info = tls::describe(&pem).unwrap();
        assert_eq!(info[0].uris, vec![id.clone()]);
        assert_eq!(info[0].subject, "");
        let lifetime = info[0].not_after - info[0].not_before;
        assert_eq!(lifetime, WORKLOAD_TTL.as_secs() as i64);
        // It chains to the root, for a server and for a client.
        tls::verify_chain(std::slice::from_ref(&pem), ca.root_pem(), std::slice::from_ref(&id)).unwrap();
        // A CSR without names gets the caller's identity.
        let (_, csr) = csr_for(None);
        let pem = ca.sign_workload(&csr, &id, WORKLOAD_TTL).unwrap();
        assert_eq!(tls::describe(&pem).unwrap()[0].uris, vec![id]);
    }

    #[test]
    fn a_csr_for_someone_else_is_refused() {
        let ca = Ca::generate().unwrap();
        let (_, csr) = csr_for(Some(&spiffe_id("istio-system", "istiod")));
        let e = ca.sign_workload(&csr, &spiffe_id("foo", "curl"), WORKLOAD_TTL).unwrap_err();
        assert!(matches!(e, Error::WrongIdentity { .. }), "{e}");
        assert!(ca.sign_workload("not a csr", "spiffe://x", WORKLOAD_TTL).is_err());
    }

    #[test]
    fn the_root_is_kept_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = Ca::load_or_create(&ca_dir).unwrap();
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(ca_dir.join(p)).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(ROOT_KEY), 0o600);
        let again = Ca::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.root_pem(), again.root_pem());
        // What the reloaded root signs chains to the first root.
        let id = spiffe_id("default", "bookinfo-reviews");
        let (_, csr) = csr_for(Some(&id));
        let pem = again.sign_workload(&csr, &id, WORKLOAD_TTL).unwrap();
        tls::verify_chain(&[pem], first.root_pem(), &[id]).unwrap();
        // Another root's key beside this certificate is refused, as is garbage.
        let other = Ca::generate().unwrap();
        std::fs::write(ca_dir.join(ROOT_KEY), other.issuer.key().serialize_pem()).unwrap();
        let e = Ca::load_or_create(&ca_dir).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        std::fs::write(ca_dir.join(ROOT_KEY), "garbage").unwrap();
        let e = Ca::load_or_create(&ca_dir).unwrap_err();
        assert!(e.to_string().contains("meshrig down --purge"), "{e}");
    }
}
