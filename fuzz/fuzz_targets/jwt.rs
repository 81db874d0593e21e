//! Tokens as a RequestAuthentication's proxy reads them: found wherever the rules look, then
//! verified in Envoy's order; any text gets an answer (a refusal with Envoy's text), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrig::jwt::{find_tokens, verify, verify_found, Rule};

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},{"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},{"kty":"oct","k":"c2VjcmV0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let rules = [
        Rule { issuer: "testing@secure.istio.io".into(), jwks: JWKS.into(), ..Default::default() },
        Rule {
            issuer: "other@example".into(),
            audiences: vec!["httpbin".into()],
            jwks: JWKS.into(),
            from_headers: vec![("x-jwt".into(), "Token ".into())],
            from_params: vec!["jwt".into()],
            from_cookies: vec!["session".into()],
            ..Default::default()
        },
    ];
    let now = 1_800_000_000;
    if let Err(refusal) = verify(&rules, text, now) {
        assert!(!refusal.message().is_empty());
    }
    let mut headers = http::HeaderMap::new();
    for (name, prefix) in [("authorization", "Bearer "), ("x-jwt", "Token "), ("cookie", "session=")] {
        if let Ok(v) = http::HeaderValue::from_str(&format!("{prefix}{text}")) {
            headers.append(name, v);
        }
    }
    let query = format!("access_token={text}&jwt={text}");
    for found in find_tokens(&rules, &headers, Some(&query)) {
        let _ = verify_found(&rules, &found, now);
    }
});
