//! Tokens signed here, checked as Envoy checks them.

use super::*;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

fn enc(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An ES256 key, its JWKS, and a signer of claims.
pub(crate) struct Issuer {
    key: EcdsaKeyPair,
    pub jwks: String,
}

impl Issuer {
    pub(crate) fn new() -> Issuer {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let (x, y) = (enc(&public[1..33]), enc(&public[33..65]));
        let jwks = format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"{x}","y":"{y}"}}]}}"#);
        Issuer { key, jwks }
    }
    pub(crate) fn token(&self, claims: serde_json::Value) -> String {
        let head = enc(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
        let body = enc(claims.to_string().as_bytes());
        let signed = format!("{head}.{body}");
        let sig = self.key.sign(&aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", enc(sig.as_ref()))
    }
}

fn rule(issuer: &Issuer) -> Rule {
    Rule { issuer: "testing@secure.istio.io".into(), jwks: issuer.jwks.clone(), ..Default::default() }
}

const NOW: u64 = 1_800_000_000;

#[test]
fn a_signed_token_gives_iss_slash_sub() {
    let i = Issuer::new();
    let t = i.token(
        serde_json::json!({"iss": "testing@secure.istio.io", "sub": "alice", "exp": NOW + 10, "groups": ["g1"]}),
    );
    let v = verify(&[rule(&i)], &t, NOW).unwrap();
    assert_eq!(v.principal, "testing@secure.istio.io/alice");
    assert_eq!(v.claims["groups"][0], "g1");
}

#[test]
fn bad_tokens_get_envoys_answers() {
    let i = Issuer::new();
    let rules = [rule(&i)];
    assert_eq!(verify(&rules, "deadbeef", NOW).unwrap_err(), Refusal::Malformed);
    let other = Issuer::new().token(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x"}));
    assert_eq!(verify(&rules, &other, NOW).unwrap_err(), Refusal::Verification, "signed by another key");
    let stranger = i.token(serde_json::json!({"iss": "someone@else", "sub": "x"}));
    assert_eq!(verify(&rules, &stranger, NOW).unwrap_err(), Refusal::IssuerNotConfigured);
    // Expired: only after Envoy's 60 s of skew.
    let expired = i.token(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "exp": NOW - 30}));
    assert!(verify(&rules, &expired, NOW).is_ok());
    assert_eq!(verify(&rules, &expired, NOW + 31).unwrap_err(), Refusal::Expired);
    let early = i.token(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "nbf": NOW + 120}));
    assert_eq!(verify(&rules, &early, NOW).unwrap_err(), Refusal::NotYetValid);
    // Audiences, when the rule names some.
    let mut with_aud = rule(&i);
    with_aud.audiences = vec!["httpbin".into()];
    let aud = i.token(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "aud": ["other"]}));
    assert_eq!(verify(&[with_aud.clone()], &aud, NOW).unwrap_err(), Refusal::Audience);
    let good = i.token(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "aud": "httpbin"}));
    assert!(verify(&[with_aud], &good, NOW).is_ok());
}

#[test]
fn an_rsa_key_verifies_rs256() {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = key.public_key().as_ref().to_vec();
    // The public key is DER RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
    let (n, e) = rsa_components(&der);
    let jwks = format!(r#"{{"keys":[{{"kty":"RSA","n":"{}","e":"{}"}}]}}"#, enc(&n), enc(&e));
    let head = enc(br#"{"alg":"RS256"}"#);
    let body = enc(br#"{"iss":"rsa@example","sub":"bob"}"#);
    let signed = format!("{head}.{body}");
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes(), &mut sig).unwrap();
    let token = format!("{signed}.{}", enc(&sig));
    let r = Rule { issuer: "rsa@example".into(), jwks, ..Default::default() };
    assert_eq!(verify(&[r], &token, NOW).unwrap().principal, "rsa@example/bob");
}

/// `n` and `e` of a DER RSAPublicKey (lengths in short or long form, leading zero dropped).
fn rsa_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn read(der: &[u8], at: usize) -> (usize, usize) {
        let first = der[at + 1] as usize;
        if first < 0x80 {
            (at + 2, first)
        } else {
            let n = first & 0x7f;
            let len = der[at + 2..at + 2 + n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (at + 2 + n, len)
        }
    }
    let (body, _) = read(der, 0);
    let (n_at, n_len) = read(der, body);
    let (e_at, e_len) = read(der, n_at + n_len);
    let strip = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
    (strip(&der[n_at..n_at + n_len]), strip(&der[e_at..e_at + e_len]))
}

#[test]
fn tokens_are_found_where_the_rules_say() {
    let mut h = http::HeaderMap::new();
    h.insert("authorization", "Bearer abc".parse().unwrap());
    let default = [Rule::default()];
    assert_eq!(find_token(&default, &h, None), Some(("abc".into(), TokenAt::Header("authorization".into()))));
    assert_eq!(find_token(&default, &http::HeaderMap::new(), Some("x=1&access_token=qq")).unwrap().0, "qq");
    let custom = [Rule { from_headers: vec![("x-jwt".into(), String::new())], ..Default::default() }];
    assert_eq!(find_token(&custom, &h, None), None, "only the rule's own locations");
    h.insert("x-jwt", "zz".parse().unwrap());
    assert_eq!(find_token(&custom, &h, None).unwrap().0, "zz");
    let cookie = [Rule { from_cookies: vec!["session".into()], ..Default::default() }];
    assert_eq!(find_token(&cookie, &h, None), None, "a cookie rule does not read Authorization");
    h.insert("cookie", "sessionx=no; session=tok".parse().unwrap());
    assert_eq!(find_token(&cookie, &h, None), Some(("tok".into(), TokenAt::Cookie("session".into()))));
}
