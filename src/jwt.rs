//! JWTs as Envoy's `jwt_authn` checks them for a RequestAuthentication (pure; the clock is
//! passed in): where the token is, its signature against the rule's JWKS (RS256/384/512,
//! ES256/384), the issuer, the audiences, and `exp`/`nbf` with Envoy's 60 s of clock skew.
//! A request without a token passes without an identity, as Istio configures Envoy.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Envoy's default allowance for clocks that disagree.
const CLOCK_SKEW: u64 = 60;

/// One `jwtRules` entry as the proxy needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The JWKS (JSON): inline, or fetched by the control plane from `jwks_uri`.
    #[serde(default)]
    pub jwks: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `(header, prefix)`; none means `Authorization: Bearer ` (and the `access_token` parameter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// `(header, claim)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<(String, String)>,
}

/// Why a token was refused, with Envoy's texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    IssuerNotConfigured,
    Verification,
    Expired,
    NotYetValid,
    Audience,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Malformed => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            Refusal::IssuerNotConfigured => "Jwt issuer is not configured",
            Refusal::Verification => "Jwt verification fails",
            Refusal::Expired => "Jwt is expired",
            Refusal::NotYetValid => "Jwt not yet valid",
            Refusal::Audience => "Audiences in Jwt are not allowed",
        }
    }
}

/// A verified token.
#[derive(Clone, Debug)]
pub struct Verified {
    /// `iss/sub`: the request principal.
    pub principal: String,
    pub claims: serde_json::Value,
    /// The payload as sent (base64url), for `outputPayloadToHeader`.
    pub payload: String,
    /// The rule that verified it.
    pub rule: usize,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The token a request carries, and where it was: the rules' locations, else Envoy's defaults.
pub fn find_token(rules: &[Rule], headers: &http::HeaderMap, query: Option<&str>) -> Option<(String, TokenAt)> {
    let mut header_locations: Vec<(String, String)> = rules.iter().flat_map(|r| r.from_headers.clone()).collect();
    let mut params: Vec<String> = rules.iter().flat_map(|r| r.from_params.clone()).collect();
    let cookies: Vec<&String> = rules.iter().flat_map(|r| &r.from_cookies).collect();
    if rules.iter().any(|r| r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty()) {
        header_locations.push(("authorization".into(), "Bearer ".into()));
        params.push("access_token".into());
    }
    for (name, prefix) in &header_locations {
        if let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            if let Some(token) = v.strip_prefix(prefix.as_str()) {
                return Some((token.trim().to_string(), TokenAt::Header(name.to_ascii_lowercase())));
            }
        }
    }
    for p in &params {
        if let Some(v) = crate::proxy::route::query_param(query, p) {
            return Some((v.to_string(), TokenAt::Param(p.clone())));
        }
    }
    for name in cookies {
        let value = headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
            line.split(';').find_map(|pair| pair.trim().strip_prefix(name.as_str())?.strip_prefix('='))
        });
        if let Some(v) = value {
            return Some((v.to_string(), TokenAt::Cookie(name.clone())));
        }
    }
    None
}

/// Where the token was found (removed from the request unless `forwardOriginalToken`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAt {
    Header(String),
    Param(String),
    /// A cookie (never removed, as Envoy leaves cookies alone).
    Cookie(String),
}

/// Verifies `token` against the rule whose issuer it names, at `now` (Unix seconds).
pub fn verify(rules: &[Rule], token: &str, now: u64) -> Result<Verified, Refusal> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, sig_b64] = parts.as_slice() else { return Err(Refusal::Malformed) };
    let header: serde_json::Value =
        b64(header_b64).and_then(|h| serde_json::from_slice(&h).ok()).ok_or(Refusal::Malformed)?;
    let claims: serde_json::Value =
        b64(payload_b64).and_then(|p| serde_json::from_slice(&p).ok()).ok_or(Refusal::Malformed)?;
    let signature = b64(sig_b64).ok_or(Refusal::Verification)?;
    let issuer = claims.get("iss").and_then(|i| i.as_str()).unwrap_or_default();
    let (index, rule) =
        rules.iter().enumerate().find(|(_, r)| r.issuer == issuer).ok_or(Refusal::IssuerNotConfigured)?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or_default();
    let kid = header.get("kid").and_then(|k| k.as_str());
    let signed = format!("{header_b64}.{payload_b64}");
    let keys: serde_json::Value = serde_json::from_str(&rule.jwks).map_err(|_| Refusal::Verification)?;
    let ok = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| kid.is_none() || k["kid"].as_str() == kid)
        .any(|k| check_signature(k, alg, signed.as_bytes(), &signature));
    if !ok {
        return Err(Refusal::Verification);
    }
    let time = |name: &str| claims.get(name).and_then(|v| v.as_u64());
    if time("exp").is_some_and(|exp| now > exp + CLOCK_SKEW) {
        return Err(Refusal::Expired);
    }
    if time("nbf").is_some_and(|nbf| now + CLOCK_SKEW < nbf) {
        return Err(Refusal::NotYetValid);
    }
    if !rule.audiences.is_empty() {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => vec![],
        };
        if !auds.iter().any(|a| rule.audiences.iter().any(|w| w == a)) {
            return Err(Refusal::Audience);
        }
    }
    let subject = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
    Ok(Verified {
        principal: format!("{issuer}/{subject}"),
        claims: claims.clone(),
        payload: payload_b64.to_string(),
        rule: index,
    })
}

fn check_signature(jwk: &serde_json::Value, alg: &str, message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{self as sig, VerificationAlgorithm as _};
    let field = |name: &str| jwk[name].as_str().and_then(b64);
    match (jwk["kty"].as_str(), alg) {
        (Some("RSA"), "RS256" | "RS384" | "RS512") => {
            let (Some(n), Some(e)) = (field("n"), field("e")) else { return false };
            let params = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                _ => &sig::RSA_PKCS1_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, message, signature).is_ok()
        }
        (Some("EC"), "ES256" | "ES384") => {
            let (Some(x), Some(y)) = (field("x"), field("y")) else { return false };
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            let algorithm = if alg == "ES256" { &sig::ECDSA_P256_SHA256_FIXED } else { &sig::ECDSA_P384_SHA384_FIXED };
            algorithm.verify_sig(&point, message, signature).is_ok()
        }
        _ => false,
    }
}

/// A JWKS's problems, for validation: it must parse and hold at least one RSA or EC key.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("jwks is not JSON: {e}"))?;
    let keys = v["keys"].as_array().ok_or("jwks has no `keys` list")?;
    if !keys.iter().any(|k| matches!(k["kty"].as_str(), Some("RSA" | "EC"))) {
        return Err("jwks has no RSA or EC key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
