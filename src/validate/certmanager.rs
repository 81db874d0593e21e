//! cert-manager's kinds: an issuer is of one type meshrig can issue with; a Certificate names
//! its Secret, its issuer and at least one name.

use super::*;

/// An issuer is one of `selfSigned`, `ca`, `acme`, `vault`, `venafi`; meshrig issues with the
/// first two and says what to use instead of the others.
pub(super) fn validate_issuer(i: &crate::resources::certmanager::Issuer, rep: &mut Report) {
    let s = &i.spec;
    let set = [s.self_signed.is_some(), s.ca.is_some(), s.acme.is_some(), s.vault.is_some(), s.venafi.is_some()];
    if set.iter().filter(|x| **x).count() != 1 {
        rep.err(
            "spec",
            "give exactly one issuer type: selfSigned, ca (acme, vault and venafi are not available offline)",
        );
    }
    if s.acme.is_some() {
        rep.err(
            "spec.acme",
            "an ACME issuer (Let's Encrypt) needs the internet: its servers must reach your gateway. meshrig runs \
             offline; use a `selfSigned` issuer to make a CA Certificate (`isCA: true`), then a `ca` issuer on its Secret",
        );
    }
    for (field, present) in [("vault", s.vault.is_some()), ("venafi", s.venafi.is_some())] {
        if present {
            rep.err(
                format!("spec.{field}"),
                format!(
                    "a {field} issuer needs its server, which meshrig cannot reach; use `selfSigned` and `ca` issuers"
                ),
            );
        }
    }
    if s.ca.as_ref().is_some_and(|c| c.secret_name.is_empty()) {
        rep.err("spec.ca.secretName", "is required: the Secret with the CA's tls.crt and tls.key");
    }
}

pub(super) fn validate_certificate(c: &crate::resources::certmanager::Certificate, rep: &mut Report) {
    let s = &c.spec;
    if s.secret_name.is_empty() {
        rep.err("spec.secretName", "is required: the Secret the certificate and key are written to");
    }
    if s.issuer_ref.name.is_empty() {
        rep.err("spec.issuerRef.name", "is required");
    }
    if let Some(kind) = s.issuer_ref.kind.as_deref().filter(|k| !matches!(*k, "Issuer" | "ClusterIssuer")) {
        rep.err("spec.issuerRef.kind", format!("`{kind}`: use Issuer or ClusterIssuer"));
    }
    if let Some(group) = s.issuer_ref.group.as_deref().filter(|g| *g != "cert-manager.io") {
        rep.err("spec.issuerRef.group", format!("`{group}`: meshrig issues with cert-manager.io issuers only"));
    }
    if s.common_name.is_none()
        && s.dns_names.is_empty()
        && s.ip_addresses.is_empty()
        && s.uris.is_empty()
        && s.email_addresses.is_empty()
    {
        rep.err("spec", "at least one of commonName, dnsNames, uris, emailAddresses or ipAddresses must be set");
    }
    for (field, v) in [("duration", &s.duration), ("renewBefore", &s.renew_before)] {
        if let Some(v) = v {
            match super::parse_duration(v) {
                Ok(d) if d.as_secs() < 3600 && field == "duration" => {
                    rep.err(format!("spec.{field}"), "certificate duration must be greater than 1h")
                }
                Ok(_) => {}
                Err(e) => rep.err(format!("spec.{field}"), e),
            }
        }
    }
    for (i, ip) in s.ip_addresses.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            rep.err(format!("spec.ipAddresses[{i}]"), format!("`{ip}` is not an IP address"));
        }
    }
    if let Some(pk) = &s.private_key {
        match (pk.algorithm.as_deref().unwrap_or("RSA"), pk.size) {
            ("RSA", None | Some(2048 | 3072 | 4096)) | ("ECDSA", None | Some(256 | 384)) | ("Ed25519", None) => {}
            (a @ ("RSA" | "ECDSA" | "Ed25519"), Some(size)) => {
                rep.err("spec.privateKey.size", format!("{size} is not a valid size for {a}"))
            }
            (other, _) => rep.err("spec.privateKey.algorithm", format!("`{other}`: use RSA, ECDSA or Ed25519")),
        }
    }
}
