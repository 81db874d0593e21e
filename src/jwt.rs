//! JWTs as Envoy's `jwt_authn` checks them for a RequestAuthentication (pure; the clock is
//! passed in): every token the request carries where a rule looks, each parsed and judged in
//! Envoy's order and with its texts (claim types, issuer, `nbf`/`exp` with 60 s of clock skew,
//! audiences, then the signature against the rule's JWKS: RS, PS, ES, HS and EdDSA). A request
//! without a token passes without an identity, as Istio configures Envoy.

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
    /// `jwks` parsed, once per rule (so once per snapshot, not per request).
    #[serde(skip)]
    pub parsed: KeySet,
}

/// A rule's key set, parsed on first use and kept with the rule, marked with the `jwks` text it
/// came from (its buffer's address and length: a rule given other keys parses those). It takes
/// no part in equality or hashing (it is derived from `jwks`), and a clone parses afresh.
#[derive(Default)]
pub struct KeySet(std::sync::OnceLock<((usize, usize), Vec<serde_json::Value>)>);

impl Clone for KeySet {
    fn clone(&self) -> Self {
        KeySet::default()
    }
}

impl PartialEq for KeySet {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeySet {}

impl std::hash::Hash for KeySet {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "KeySet(parsed)" } else { "KeySet(not yet)" })
    }
}

impl Rule {
    /// The keys of `jwks` (none when it is not a key set), parsed the first time they are asked for.
    pub fn keys(&self) -> std::borrow::Cow<'_, [serde_json::Value]> {
        let parse = || {
            serde_json::from_str::<serde_json::Value>(&self.jwks)
                .ok()
                .and_then(|v| v.get("keys").and_then(|k| k.as_array()).cloned())
                .unwrap_or_default()
        };
        let mark = (self.jwks.as_ptr() as usize, self.jwks.len());
        let (at, keys) = self.parsed.0.get_or_init(|| (mark, parse()));
        if *at == mark {
            std::borrow::Cow::Borrowed(keys)
        } else {
            std::borrow::Cow::Owned(parse())
        }
    }
}

/// Why a token was refused, with Envoy's texts (its `jwt_verify` status strings) and codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    HeaderBase64,
    HeaderJson,
    BadAlg,
    AlgNotImplemented,
    BadKid,
    PayloadBase64,
    PayloadJson,
    IssNotString,
    SubNotString,
    /// `iat`, `nbf` or `exp` is not a number.
    TimeNotInteger(TimeClaim),
    /// `iat`, `nbf` or `exp` is negative or past 64 bits.
    TimeOutOfRange(TimeClaim),
    JtiNotString,
    AudNotString,
    SignatureBase64,
    IssuerNotConfigured,
    Expired,
    NotYetValid,
    Audience,
    KidAlgMismatch,
    Verification,
}

/// The time claims, as Envoy reads them (whole seconds; a fraction is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeClaim {
    Iat,
    Nbf,
    Exp,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        use TimeClaim::*;
        match self {
            Refusal::Malformed => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            Refusal::HeaderBase64 => "Jwt header is an invalid Base64url encoded",
            Refusal::HeaderJson => "Jwt header is an invalid JSON",
            Refusal::BadAlg => "Jwt header [alg] field is required and must be a string",
            Refusal::AlgNotImplemented => "Jwt header [alg] is not supported",
            Refusal::BadKid => "Jwt header [kid] field is not a string",
            Refusal::PayloadBase64 => "Jwt payload is an invalid Base64url encoded",
            Refusal::PayloadJson => "Jwt payload is an invalid JSON",
            Refusal::IssNotString => "Jwt payload [iss] field is not a string",
            Refusal::SubNotString => "Jwt payload [sub] field is not a string",
            Refusal::TimeNotInteger(Iat) => "Jwt payload [iat] field is not an integer",
            Refusal::TimeNotInteger(Nbf) => "Jwt payload [nbf] field is not an integer",
            Refusal::TimeNotInteger(Exp) => "Jwt payload [exp] field is not an integer",
            Refusal::TimeOutOfRange(Iat) => "Jwt payload [iat] field is not a positive 64 bit integer",
            Refusal::TimeOutOfRange(Nbf) => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Refusal::TimeOutOfRange(Exp) => "Jwt payload [exp] field is not a positive 64 bit integer",
            Refusal::JtiNotString => "Jwt payload [jti] field is not a string",
            Refusal::AudNotString => "Jwt payload [aud] field is not a string or string list",
            Refusal::SignatureBase64 => "Jwt signature is an invalid Base64url encoded",
            Refusal::IssuerNotConfigured => "Jwt issuer is not configured",
            Refusal::Expired => "Jwt is expired",
            Refusal::NotYetValid => "Jwt not yet valid",
            Refusal::Audience => "Audiences in Jwt are not allowed",
            Refusal::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Refusal::Verification => "Jwt verification fails",
        }
    }

    /// Envoy answers a token whose audience is not allowed with 403, every other refusal 401.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refusal::Audience => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
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

/// Envoy's base64url reader (absl's WebSafeBase64Unescape): padding optional.
fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// A token a request carries: where, and which rules name that place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub at: TokenAt,
    /// Indexes of the rules whose locations (or the default ones) include this place: the
    /// token's issuer must be one of theirs, as Envoy's `isIssuerAllowed`.
    pub rules: Vec<usize>,
}

/// Every token a request carries, in Envoy's extraction order (headers, then query
/// parameters, then cookies): the rules' locations, or Envoy's defaults (`Authorization:
/// Bearer` and `access_token`) for a rule that names none. Each must verify.
pub fn find_tokens(rules: &[Rule], headers: &http::HeaderMap, query: Option<&str>) -> Vec<Found> {
    let mut header_locations: Vec<((String, String), Vec<usize>)> = Vec::new();
    let mut params: Vec<(String, Vec<usize>)> = Vec::new();
    let mut cookies: Vec<(String, Vec<usize>)> = Vec::new();
    fn add<K: PartialEq>(list: &mut Vec<(K, Vec<usize>)>, key: K, rule: usize) {
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rules)) => rules.push(rule),
            None => list.push((key, vec![rule])),
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let default = r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty();
        if default {
            add(&mut header_locations, ("authorization".to_string(), "Bearer ".to_string()), i);
            add(&mut params, "access_token".to_string(), i);
        }
        for (name, prefix) in &r.from_headers {
            add(&mut header_locations, (name.to_ascii_lowercase(), prefix.clone()), i);
        }
        for p in &r.from_params {
            add(&mut params, p.clone(), i);
        }
        for c in &r.from_cookies {
            add(&mut cookies, c.clone(), i);
        }
    }
    let mut found = Vec::new();
    for ((name, prefix), rules) in header_locations {
        for v in headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()) {
            if let Some(token) = v.strip_prefix(prefix.as_str()) {
                let at = TokenAt::Header(name.clone());
                found.push(Found { token: token.trim().to_string(), at, rules: rules.clone() });
            }
        }
    }
    for (p, rules) in params {
        if let Some(v) = crate::uri::query_param(query, &p) {
            found.push(Found { token: v.to_string(), at: TokenAt::Param(p), rules });
        }
    }
    for (name, rules) in cookies {
        let value = headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
            line.split(';').find_map(|pair| pair.trim().strip_prefix(name.as_str())?.strip_prefix('='))
        });
        if let Some(v) = value {
            found.push(Found { token: v.to_string(), at: TokenAt::Cookie(name), rules });
        }
    }
    found
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
    let all: Vec<usize> = (0..rules.len()).collect();
    verify_found(rules, &Found { token: token.to_string(), at: TokenAt::Param(String::new()), rules: all }, now)
}

/// Verifies a token found in a request, in Envoy's order: parse (format, header, payload and
/// the types of its claims), the issuer among the rules that name the token's place, `nbf` and
/// `exp` with 60 s of skew, the audiences, then the signature by a key matching `kid` and `alg`.
pub fn verify_found(rules: &[Rule], found: &Found, now: u64) -> Result<Verified, Refusal> {
    let jwt = Parsed::new(&found.token)?;
    let index = found
        .rules
        .iter()
        .copied()
        .find(|i| rules.get(*i).is_some_and(|r| r.issuer == jwt.iss))
        .ok_or(Refusal::IssuerNotConfigured)?;
    let rule = &rules[index];
    if now + CLOCK_SKEW < jwt.nbf {
        return Err(Refusal::NotYetValid);
    }
    if jwt.exp != 0 && now > jwt.exp + CLOCK_SKEW {
        return Err(Refusal::Expired);
    }
    if !rule.audiences.is_empty() && !jwt.aud.iter().any(|a| rule.audiences.iter().any(|w| w == a)) {
        return Err(Refusal::Audience);
    }
    let mut matched = false;
    for k in rule.keys().iter() {
        let (kid, alg) = (k["kid"].as_str().unwrap_or(""), k["alg"].as_str().unwrap_or(""));
        if (!jwt.kid.is_empty() && !kid.is_empty() && kid != jwt.kid) || (!alg.is_empty() && alg != jwt.alg) {
            continue;
        }
        matched = true;
        if check_signature(k, &jwt.alg, jwt.signed.as_bytes(), &jwt.signature) {
            let subject = jwt.claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
            return Ok(Verified {
                principal: format!("{}/{subject}", jwt.iss),
                payload: jwt.payload_b64.to_string(),
                claims: jwt.claims,
                rule: index,
            });
        }
    }
    Err(if matched { Refusal::Verification } else { Refusal::KidAlgMismatch })
}

/// The algorithms Envoy implements; another `alg` is refused before any key is looked at.
const ALGORITHMS: [&str; 13] = [
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// A token taken apart as Envoy's `Jwt::parseFromString` does, with its texts for each fault.
struct Parsed<'a> {
    alg: String,
    kid: String,
    iss: String,
    claims: serde_json::Value,
    payload_b64: &'a str,
    signed: String,
    signature: Vec<u8>,
    nbf: u64,
    exp: u64,
    aud: Vec<String>,
}

impl<'a> Parsed<'a> {
    fn new(token: &'a str) -> Result<Parsed<'a>, Refusal> {
        // Envoy splits on dots and skips empty sections.
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        let [header_b64, payload_b64, sig_b64] = parts.as_slice() else { return Err(Refusal::Malformed) };
        let object = |bytes: Vec<u8>| match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v @ serde_json::Value::Object(_)) => Some(v),
            _ => None,
        };
        let header = object(b64(header_b64).ok_or(Refusal::HeaderBase64)?).ok_or(Refusal::HeaderJson)?;
        let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(Refusal::BadAlg)?.to_string();
        if !ALGORITHMS.contains(&alg.as_str()) {
            return Err(Refusal::AlgNotImplemented);
        }
        let kid = match header.get("kid") {
            None => String::new(),
            Some(serde_json::Value::String(k)) => k.clone(),
            Some(_) => return Err(Refusal::BadKid),
        };
        let claims = object(b64(payload_b64).ok_or(Refusal::PayloadBase64)?).ok_or(Refusal::PayloadJson)?;
        let string = |name: &str, refusal: Refusal| match claims.get(name) {
            None => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(refusal),
        };
        let iss = string("iss", Refusal::IssNotString)?;
        string("sub", Refusal::SubNotString)?;
        let time = |name: &str, claim: TimeClaim| -> Result<u64, Refusal> {
            match claims.get(name) {
                None => Ok(0),
                Some(serde_json::Value::Number(n)) => {
                    let v = n.as_f64().unwrap_or(f64::INFINITY);
                    if v < 0.0 || v >= u64::MAX as f64 {
                        Err(Refusal::TimeOutOfRange(claim))
                    } else {
                        Ok(v as u64)
                    }
                }
                Some(_) => Err(Refusal::TimeNotInteger(claim)),
            }
        };
        time("iat", TimeClaim::Iat)?;
        let nbf = time("nbf", TimeClaim::Nbf)?;
        let exp = time("exp", TimeClaim::Exp)?;
        string("jti", Refusal::JtiNotString)?;
        let aud = match claims.get("aud") {
            None => Vec::new(),
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Refusal::AudNotString)?,
            Some(_) => return Err(Refusal::AudNotString),
        };
        let signature = b64(sig_b64).ok_or(Refusal::SignatureBase64)?;
        Ok(Parsed {
            alg,
            kid,
            iss,
            claims,
            payload_b64,
            signed: format!("{header_b64}.{payload_b64}"),
            signature,
            nbf,
            exp,
            aud,
        })
    }
}

fn check_signature(jwk: &serde_json::Value, alg: &str, message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{self as sig, VerificationAlgorithm as _};
    let field = |name: &str| jwk[name].as_str().and_then(b64);
    match (jwk["kty"].as_str(), alg) {
        (Some("RSA"), "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512") => {
            let (Some(n), Some(e)) = (field("n"), field("e")) else { return false };
            let params = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &sig::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
                "PS384" => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, message, signature).is_ok()
        }
        (Some("EC"), "ES256" | "ES384" | "ES512") => {
            let (Some(x), Some(y)) = (field("x"), field("y")) else { return false };
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            let algorithm = match alg {
                "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
                "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
                _ => &sig::ECDSA_P521_SHA512_FIXED,
            };
            algorithm.verify_sig(&point, message, signature).is_ok()
        }
        (Some("OKP"), "EdDSA") if jwk["crv"] == "Ed25519" => {
            let Some(x) = field("x") else { return false };
            sig::ED25519.verify_sig(&x, message, signature).is_ok()
        }
        (Some("oct"), "HS256" | "HS384" | "HS512") => {
            use aws_lc_rs::hmac;
            let Some(k) = field("k") else { return false };
            let algorithm = match alg {
                "HS256" => hmac::HMAC_SHA256,
                "HS384" => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            hmac::verify(&hmac::Key::new(algorithm, &k), message, signature).is_ok()
        }
        _ => false,
    }
}

/// A JWKS's problems, for validation: it must parse and hold at least one RSA or EC key.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("jwks is not JSON: {e}"))?;
    let keys = v["keys"].as_array().ok_or("jwks has no `keys` list")?;
    if !keys.iter().any(|k| matches!(k["kty"].as_str(), Some("RSA" | "EC" | "OKP" | "oct"))) {
        return Err("jwks has no RSA, EC, OKP or oct key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
