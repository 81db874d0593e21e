//! cert-manager in the control plane: a Certificate in an apply (or one whose issuer is in it)
//! gets its `kubernetes.io/tls` Secret in the same batch, issued by a `selfSigned` or `ca`
//! Issuer or ClusterIssuer. A Secret already issued for the same spec is kept; a changed
//! spec is issued again. (ACME and the other issuers are refused at validation.)

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::control_plane::config::Objects;
use crate::resources::certmanager::Certificate;
use crate::resources::core::Secret;
use crate::resources::{Kind, Resource, ResourceKey};

/// Where a ClusterIssuer's `ca.secretName` lives (cert-manager's cluster resource namespace).
pub const CLUSTER_RESOURCE_NAMESPACE: &str = "cert-manager";
/// The spec a Secret was issued for (a changed spec is issued again).
const SPEC_ANNOTATION: &str = "cert-manager.meshrig.dev/spec-hash";
/// cert-manager's default validity.
const DEFAULT_DURATION: Duration = Duration::from_secs(2160 * 3600);

type Batch = Vec<(Resource, Vec<String>)>;

/// The object with `key`, from the batch (what is being applied) or else the applied objects.
fn find<'a>(objects: &'a Objects, batch: &'a Batch, key: &ResourceKey) -> Option<&'a Resource> {
    batch.iter().rev().map(|(r, _)| r).find(|r| &r.key() == key).or_else(|| objects.get(key))
}

fn spec_hash(c: &Certificate) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.spec.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Adds to `batch` the Secrets its Certificates need; a Certificate that cannot be issued yet
/// gets a warning saying why.
pub fn issue(objects: &Objects, batch: &mut Batch) {
    let issuers_in_batch: Vec<ResourceKey> = batch
        .iter()
        .filter(|(r, _)| matches!(r.kind(), Kind::Issuer | Kind::ClusterIssuer))
        .map(|(r, _)| r.key())
        .collect();
    let mut candidates: Vec<(Option<usize>, Certificate)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, (r, _))| if let Resource::Certificate(c) = r { Some((Some(i), c.clone())) } else { None })
        .collect();
    // Certificates already applied whose issuer arrives now.
    for (key, r) in objects.all() {
        let Resource::Certificate(c) = r else { continue };
        if candidates
            .iter()
            .any(|(_, b)| b.metadata.name == c.metadata.name && b.metadata.namespace == c.metadata.namespace)
        {
            continue;
        }
        if issuers_in_batch.contains(&issuer_key(c, &key.namespace)) {
            candidates.push((None, c.clone()));
        }
    }
    for (index, cert) in candidates {
        let ns = cert.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let secret_key = ResourceKey::new(Kind::Secret, &ns, &cert.spec.secret_name);
        let hash = spec_hash(&cert);
        if let Some(Resource::Secret(s)) = find(objects, batch, &secret_key) {
            if s.metadata.annotations.get(SPEC_ANNOTATION) == Some(&hash) {
                continue;
            }
        }
        match secret_for(objects, batch, &cert, &ns, &hash) {
            Ok(secret) => {
                let note =
                    format!("Certificate {ns}/{} issued into Secret {}", cert.metadata.name, cert.spec.secret_name);
                batch.push((Resource::Secret(secret), vec![note]));
            }
            Err(why) => {
                if let Some(i) = index {
                    batch[i].1.push(format!("not issued yet: {why}"));
                }
            }
        }
    }
}

fn issuer_key(c: &Certificate, ns: &str) -> ResourceKey {
    match c.spec.issuer_ref.kind.as_deref() {
        Some("ClusterIssuer") => ResourceKey::new(Kind::ClusterIssuer, "", &c.spec.issuer_ref.name),
        _ => ResourceKey::new(Kind::Issuer, ns, &c.spec.issuer_ref.name),
    }
}

fn secret_for(objects: &Objects, batch: &Batch, c: &Certificate, ns: &str, hash: &str) -> Result<Secret, String> {
    let ikey = issuer_key(c, ns);
    let issuer = match find(objects, batch, &ikey) {
        Some(Resource::Issuer(i) | Resource::ClusterIssuer(i)) => i,
        _ => {
            return Err(format!(
                "{} {} not found; the Secret is written once it exists",
                ikey.kind, c.spec.issuer_ref.name
            ))
        }
    };
    let key = new_key(c)?;
    let params = params(c)?;
    let (cert_pem, ca_pem) = if issuer.spec.self_signed.is_some() {
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        (cert.pem(), cert.pem())
    } else if let Some(ca) = &issuer.spec.ca {
        let ca_ns = if ikey.kind == Kind::ClusterIssuer { CLUSTER_RESOURCE_NAMESPACE } else { ns };
        let Some(Resource::Secret(ca_secret)) =
            find(objects, batch, &ResourceKey::new(Kind::Secret, ca_ns, &ca.secret_name))
        else {
            return Err(format!(
                "the CA Secret {ca_ns}/{} of issuer {} does not exist",
                ca.secret_name, issuer.metadata.name
            ));
        };
        let (Some(ca_cert), Some(ca_key)) = (ca_secret.text(&["tls.crt"]), ca_secret.text(&["tls.key"])) else {
            return Err(format!("the CA Secret {ca_ns}/{} has no tls.crt and tls.key", ca.secret_name));
        };
        let signer = KeyPair::from_pem(&ca_key).map_err(|e| format!("the CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, signer).map_err(|e| format!("the CA certificate: {e}"))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        (cert.pem(), ca_cert)
    } else {
        return Err(format!("issuer {} is not selfSigned or ca", issuer.metadata.name));
    };
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut metadata = crate::resources::ObjectMeta {
        name: c.spec.secret_name.clone(),
        namespace: Some(ns.to_string()),
        ..Default::default()
    };
    if let Some(t) = &c.spec.secret_template {
        metadata.labels = t.labels.clone();
        metadata.annotations = t.annotations.clone();
    }
    let annotations = [
        ("cert-manager.io/certificate-name", c.metadata.name.clone()),
        ("cert-manager.io/issuer-name", c.spec.issuer_ref.name.clone()),
        ("cert-manager.io/issuer-kind", ikey.kind.as_str().to_string()),
        ("cert-manager.io/common-name", c.spec.common_name.clone().unwrap_or_default()),
        ("cert-manager.io/alt-names", c.spec.dns_names.join(",")),
        (SPEC_ANNOTATION, hash.to_string()),
    ];
    for (k, v) in annotations {
        metadata.annotations.insert(k.to_string(), v);
    }
    Ok(Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: [("tls.crt", b64(&cert_pem)), ("tls.key", b64(&key.serialize_pem())), ("ca.crt", b64(&ca_pem))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        string_data: Default::default(),
        immutable: None,
    })
}

/// The key cert-manager would make: RSA 2048 by default, or the spec's algorithm and size.
fn new_key(c: &Certificate) -> Result<KeyPair, String> {
    let pk = c.spec.private_key.clone().unwrap_or_default();
    let key = match (pk.algorithm.as_deref().unwrap_or("RSA"), pk.size) {
        ("ECDSA", Some(384)) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        ("ECDSA", _) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        ("Ed25519", _) => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        (_, Some(4096)) => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096),
        (_, Some(3072)) => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072),
        _ => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
    };
    key.map_err(|e| format!("generating the key: {e}"))
}

fn params(c: &Certificate) -> Result<CertificateParams, String> {
    let s = &c.spec;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = &s.common_name {
        dn.push(DnType::CommonName, cn.as_str());
    }
    if let Some(subject) = &s.subject {
        for o in &subject.organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        for ou in &subject.organizational_units {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        for c in &subject.countries {
            dn.push(DnType::CountryName, c.as_str());
        }
    }
    p.distinguished_name = dn;
    let ia5 = |v: &str| v.to_string().try_into().map_err(|e| format!("`{v}`: {e}"));
    for d in &s.dns_names {
        p.subject_alt_names.push(SanType::DnsName(ia5(d)?));
    }
    for u in &s.uris {
        p.subject_alt_names.push(SanType::URI(ia5(u)?));
    }
    for e in &s.email_addresses {
        p.subject_alt_names.push(SanType::Rfc822Name(ia5(e)?));
    }
    for ip in &s.ip_addresses {
        p.subject_alt_names.push(SanType::IpAddress(ip.parse().map_err(|_| format!("`{ip}` is not an IP address"))?));
    }
    let duration = s.duration.as_deref().map(crate::validate::parse_duration).transpose()?.unwrap_or(DEFAULT_DURATION);
    let now = SystemTime::now();
    p.not_before = now.into();
    p.not_after = (now + duration).into();
    let mut serial = [0u8; 16];
    fastrand::fill(&mut serial);
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    if s.is_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    }
    for u in &s.usages {
        match u.as_str() {
            "server auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
            "cert sign" if !p.key_usages.contains(&KeyUsagePurpose::KeyCertSign) => {
                p.key_usages.push(KeyUsagePurpose::KeyCertSign)
            }
            _ => {}
        }
    }
    Ok(p)
}
