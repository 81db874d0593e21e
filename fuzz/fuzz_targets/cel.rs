//! CEL as a Telemetry writes it: parse and check never panic or recurse without bound; what
//! parses evaluates, and survives the snapshot's JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrig::cel::{Expr, Facts, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(expr) = Expr::parse(text) else { return };
    let request = Request {
        method: "GET".into(),
        host: "httpbin:8000".into(),
        path: "/status/418?x=1".into(),
        scheme: "http",
        protocol: "HTTP/1.1",
        headers: vec![("x-user".into(), "alice".into()), ("user-agent".into(), "curl/8".into())],
    };
    let facts = Facts { request: Some(&request), code: Some(418), destination_port: Some(8000), mtls: true };
    let _ = expr.eval(&facts);
    let _ = expr.matches(&Facts::default());
    let json = serde_json::to_string(&expr).expect("an expression serializes");
    let back: Expr = serde_json::from_str(&json).expect("a checked expression reads back");
    assert_eq!(back, expr);
});
