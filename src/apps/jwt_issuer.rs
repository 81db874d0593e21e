//! The built-in `jwt-issuer` sample app (image `meshrig/jwt-issuer`): a token issuer for
//! RequestAuthentication labs, where istio.io points `jwksUri` at a file on GitHub. It serves
//! its public keys at `/jwks.json` (what a RequestAuthentication's `jwksUri` names, fetched
//! by the control plane) and signs tokens at `/token?sub=…&groups=…&expire=…`.
//!
//! The signing key (ECDSA P-256, ES256) is kept in the environment's state directory, so a
//! restarted issuer serves the same keys and the tokens it gave out stay valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;

/// The `iss` of every token this app signs (a RequestAuthentication's `issuer`).
pub const ISSUER: &str = "testing@meshrig.local";
/// A token's lifetime when `/token` is not given `expire`.
const DEFAULT_EXPIRE: u64 = 3600;

/// The key file under the state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("jwt-issuer").join("key.p8")
}

pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    /// The issuer whose key is in `path`, made the first time (0600 in a 0700 directory).
    pub fn load_or_create(path: &Path) -> Result<Issuer, String> {
        let shown = path.display();
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| "could not generate a key".to_string())?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    crate::env::set_mode(dir, 0o700);
                }
                crate::env::write_atomic(path, doc.as_ref(), 0o600).map_err(|e| format!("{shown}: {e}"))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| format!("{shown} is not an ECDSA P-256 key ({e}); delete it to make a new one"))?;
        let kid = B64
            .encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref()).as_ref()[..12]);
        Ok(Issuer { key, kid })
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> String {
        // The public key is the uncompressed point: 0x04, then x and y (32 bytes each).
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": B64.encode(x), "y": B64.encode(y),
        }]})
        .to_string()
    }

    /// A signed token with `claims` (an object) plus `iss`, `iat` and `exp` unless given.
    pub fn sign(&self, mut claims: serde_json::Map<String, serde_json::Value>, now: u64, expire: u64) -> String {
        claims.entry("iss").or_insert_with(|| ISSUER.into());
        claims.entry("iat").or_insert_with(|| now.into());
        claims.entry("exp").or_insert_with(|| (now + expire).into());
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signed =
            format!("{}.{}", B64.encode(header.to_string()), B64.encode(serde_json::Value::Object(claims).to_string()));
        let signature = self.key.sign(&SystemRandom::new(), signed.as_bytes()).expect("ECDSA signing does not fail");
        format!("{signed}.{}", B64.encode(signature.as_ref()))
    }
}

/// `/token`'s parameters.
#[derive(Debug, Default, Deserialize)]
pub struct TokenParams {
    /// `sub` (default: the issuer itself, as Istio's demo token).
    pub sub: Option<String>,
    /// Comma-separated `groups` claim.
    pub groups: Option<String>,
    /// Space-separated `scope` claim.
    pub scope: Option<String>,
    /// Comma-separated `aud` claim.
    pub aud: Option<String>,
    /// Lifetime in seconds.
    pub expire: Option<u64>,
}

impl TokenParams {
    pub fn claims(&self) -> serde_json::Map<String, serde_json::Value> {
        let list = |s: &str| {
            s.split(',').map(str::trim).filter(|v| !v.is_empty()).map(Into::into).collect::<Vec<serde_json::Value>>()
        };
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), self.sub.clone().unwrap_or_else(|| ISSUER.into()).into());
        if let Some(g) = &self.groups {
            claims.insert("groups".into(), list(g).into());
        }
        if let Some(s) = &self.scope {
            claims.insert("scope".into(), s.clone().into());
        }
        if let Some(a) = &self.aud {
            claims.insert("aud".into(), list(a).into());
        }
        claims
    }
}

pub fn router(issuer: Issuer) -> Router {
    Router::new()
        .route("/jwks.json", get(jwks))
        .route("/jwks", get(jwks))
        .route("/token", get(token))
        .route("/", get(|| async { format!("jwt-issuer: tokens of issuer {ISSUER:?}; GET /jwks.json, GET /token?sub=NAME&groups=A,B&expire=SECONDS\n") }))
        .with_state(Arc::new(issuer))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], issuer.jwks()).into_response()
}

async fn token(State(issuer): State<Arc<Issuer>>, Query(params): Query<TokenParams>) -> Response {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let expire = params.expire.unwrap_or(DEFAULT_EXPIRE);
    if expire > 10 * 365 * 24 * 3600 {
        return (StatusCode::BAD_REQUEST, "expire is in seconds, at most ten years\n").into_response();
    }
    let token = issuer.sign(params.claims(), now, expire);
    ([(header::CONTENT_TYPE, "text/plain")], format!("{token}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_tokens_verify_against_its_jwks_and_the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path());
        let issuer = Issuer::load_or_create(&path).unwrap();
        let params =
            TokenParams { sub: Some("alice".into()), groups: Some("group1, group2".into()), ..Default::default() };
        let token = issuer.sign(params.claims(), 1_000, 60);
        let rule = crate::jwt::Rule { issuer: ISSUER.into(), jwks: issuer.jwks(), ..Default::default() };
        let ok = crate::jwt::verify(std::slice::from_ref(&rule), &token, 1_010).unwrap();
        assert_eq!(ok.claims["sub"], "alice");
        assert_eq!(ok.claims["groups"], serde_json::json!(["group1", "group2"]));
        assert_eq!(
            crate::jwt::verify(std::slice::from_ref(&rule), &token, 1_000 + 60 + 61).unwrap_err(),
            crate::jwt::Refusal::Expired
        );
        // The same key after a restart; another key (another kid) has no key for the token.
        let again = Issuer::load_or_create(&path).unwrap();
        assert_eq!(again.jwks(), issuer.jwks());
        let other = Issuer::load_or_create(&dir.path().join("other.p8")).unwrap();
        let rule = crate::jwt::Rule { jwks: other.jwks(), ..rule };
        assert_eq!(crate::jwt::verify(&[rule], &token, 1_010).unwrap_err(), crate::jwt::Refusal::KidAlgMismatch);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Issuer::load_or_create(&path).err().unwrap().contains("delete it"));
    }
}
