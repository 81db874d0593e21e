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

fn first(rules: &[Rule], h: &http::HeaderMap, query: Option<&str>) -> Option<(String, TokenAt)> {
    find_tokens(rules, h, query).into_iter().next().map(|f| (f.token, f.at))
}

#[test]
fn tokens_are_found_where_the_rules_say() {
    let mut h = http::HeaderMap::new();
    h.insert("authorization", "Bearer abc".parse().unwrap());
    let default = [Rule::default()];
    assert_eq!(first(&default, &h, None), Some(("abc".into(), TokenAt::Header("authorization".into()))));
    assert_eq!(first(&default, &http::HeaderMap::new(), Some("x=1&access_token=qq")).unwrap().0, "qq");
    let custom = [Rule { from_headers: vec![("x-jwt".into(), String::new())], ..Default::default() }];
    assert_eq!(first(&custom, &h, None), None, "only the rule's own locations");
    h.insert("x-jwt", "zz".parse().unwrap());
    assert_eq!(first(&custom, &h, None).unwrap().0, "zz");
    let cookie = [Rule { from_cookies: vec!["session".into()], ..Default::default() }];
    assert_eq!(first(&cookie, &h, None), None, "a cookie rule does not read Authorization");
    h.insert("cookie", "sessionx=no; session=tok".parse().unwrap());
    assert_eq!(first(&cookie, &h, None), Some(("tok".into(), TokenAt::Cookie("session".into()))));
    // Every place is read, not only the first that has a token.
    let all = find_tokens(&default, &h, Some("access_token=forged"));
    let tokens: Vec<&str> = all.iter().map(|f| f.token.as_str()).collect();
    assert_eq!(tokens, ["abc", "forged"]);
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x"});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

#[test]
fn time_claims_are_read_as_envoy_reads_them() {
    let i = Issuer::new();
    let rules = [rule(&i)];
    let refusal = |extra| verify(&rules, &i.token(claims(extra)), NOW).map(|_| ()).unwrap_err().message();
    // A fraction is dropped: the token expires when its whole second does.
    let fraction = i.token(claims(serde_json::json!({"exp": (NOW - 100) as f64 + 0.5})));
    assert_eq!(verify(&rules, &fraction, NOW).unwrap_err(), Refusal::Expired);
    assert_eq!(refusal(serde_json::json!({"exp": "1800000000"})), "Jwt payload [exp] field is not an integer");
    assert_eq!(refusal(serde_json::json!({"exp": -5})), "Jwt payload [exp] field is not a positive 64 bit integer");
    assert_eq!(
        refusal(serde_json::json!({"exp": 2.001e206})),
        "Jwt payload [exp] field is not a positive 64 bit integer"
    );
    assert_eq!(refusal(serde_json::json!({"nbf": "soon"})), "Jwt payload [nbf] field is not an integer");
    assert_eq!(refusal(serde_json::json!({"nbf": -1})), "Jwt payload [nbf] field is not a positive 64 bit integer");
    assert_eq!(refusal(serde_json::json!({"iat": true})), "Jwt payload [iat] field is not an integer");
    assert_eq!(refusal(serde_json::json!({"aud": ["a", 1]})), "Jwt payload [aud] field is not a string or string list");
    assert_eq!(refusal(serde_json::json!({"sub": 7})), "Jwt payload [sub] field is not a string");
    // exp 0 is "no expiry", as in Envoy.
    assert!(verify(&rules, &i.token(claims(serde_json::json!({"exp": 0}))), NOW).is_ok());
}

#[test]
fn malformed_tokens_get_envoys_texts_and_a_wrong_audience_gets_403() {
    let i = Issuer::new();
    let mut with_aud = rule(&i);
    with_aud.audiences = vec!["httpbin".into()];
    let rules = [with_aud];
    let refusal = |token: &str| verify(&rules, token, NOW).unwrap_err();
    let good = i.token(claims(serde_json::json!({"aud": "httpbin"})));
    let (head, rest) = good.split_once('.').unwrap();
    let (body, sig) = rest.split_once('.').unwrap();
    let none = format!("{}.{body}.", enc(br#"{"alg":"none"}"#));
    assert_eq!(refusal(&none), Refusal::Malformed, "Envoy skips the empty signature section");
    let none = format!("{}.{body}.{sig}", enc(br#"{"alg":"none"}"#));
    assert_eq!(refusal(&none).message(), "Jwt header [alg] is not supported");
    assert_eq!(
        refusal(&format!("{}.{body}.{sig}", enc(b"{}"))).message(),
        "Jwt header [alg] field is required and must be a string"
    );
    assert_eq!(refusal(&format!("@@.{body}.{sig}")).message(), "Jwt header is an invalid Base64url encoded");
    assert_eq!(refusal(&format!("{}.{body}.{sig}", enc(b"[1]"))).message(), "Jwt header is an invalid JSON");
    assert_eq!(refusal(&format!("{head}.@@.{sig}")).message(), "Jwt payload is an invalid Base64url encoded");
    assert_eq!(refusal(&format!("{head}.{body}.@@")).message(), "Jwt signature is an invalid Base64url encoded");
    let other_kid = format!("{}.{body}.{sig}", enc(br#"{"alg":"ES256","kid":"k9"}"#));
    assert_eq!(refusal(&other_kid).message(), "Jwks doesn't have key to match kid or alg from Jwt");
    let tampered = format!(
        "{head}.{}.{sig}",
        enc(claims(serde_json::json!({"aud": "httpbin", "sub": "admin"})).to_string().as_bytes())
    );
    assert_eq!(refusal(&tampered), Refusal::Verification);
    let wrong = refusal(&i.token(claims(serde_json::json!({"aud": "other"}))));
    assert_eq!((wrong.status(), wrong.message()), (http::StatusCode::FORBIDDEN, "Audiences in Jwt are not allowed"));
    assert_eq!(Refusal::Expired.status(), http::StatusCode::UNAUTHORIZED);
    assert!(verify(&rules, &good, NOW).is_ok());
}

#[test]
fn a_token_is_only_taken_from_a_place_its_issuers_rule_names() {
    let i = Issuer::new();
    let header_rule = Rule { from_headers: vec![("x-jwt".into(), String::new())], ..rule(&i) };
    let other = Rule { issuer: "other@example".into(), ..rule(&i) };
    let rules = [header_rule, other];
    let mut h = http::HeaderMap::new();
    h.insert("authorization", format!("Bearer {}", i.token(claims(serde_json::json!({})))).parse().unwrap());
    let found = find_tokens(&rules, &h, None);
    assert_eq!(found.len(), 1);
    assert_eq!(verify_found(&rules, &found[0], NOW).unwrap_err(), Refusal::IssuerNotConfigured);
}

#[test]
fn a_rules_key_set_is_parsed_once_and_follows_new_keys() {
    let rule = Rule { jwks: r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]}"#.into(), ..Rule::default() };
    assert!(matches!(rule.keys(), std::borrow::Cow::Borrowed(_)), "the first call parses and keeps");
    assert!(matches!(rule.keys(), std::borrow::Cow::Borrowed(k) if k.len() == 1), "later calls reuse it");
    let moved = Rule { jwks: r#"{"keys": []}"#.into(), ..rule };
    assert!(moved.keys().is_empty(), "a rule given other keys reads those, not the kept ones");
    assert!(Rule { jwks: "not json".into(), ..Rule::default() }.keys().is_empty());
}
