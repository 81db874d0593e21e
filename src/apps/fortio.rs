//! The fortio image's server side: fortio's echo on port 8080. Any path echoes the request
//! body with 200; the query shapes the answer as fortio's does: `status=503` (or
//! `503:30,429:10`, percentages), `delay=250ms` (or `1s:20`), `size=1024` (a payload of that
//! many bytes), `header=Name:Value` (repeatable), `close=true`. `/debug` describes the
//! request in text. The client side (`fortio load`, `fortio curl`) runs from `meshrig exec`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub fn router() -> Router {
    Router::new().fallback(handle)
}

async fn handle(req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let args: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let arg = |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(delay) = arg("delay").and_then(|d| pick(d, crate::load::fortio::go_duration)) {
        tokio::time::sleep(delay.min(Duration::from_secs(1800))).await;
    }
    let status = arg("status")
        .and_then(|s| pick(s, |v| v.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok())))
        .unwrap_or(StatusCode::OK);
    let debug = req.uri().path() == "/debug";
    let text = debug.then(|| describe(&req));
    let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body over 16 MiB\n").into_response(),
    };
    let mut resp = match (text, arg("size").and_then(|s| s.parse::<usize>().ok())) {
        (Some(t), _) => (status, t).into_response(),
        (None, Some(n)) => (status, Bytes::from(vec![b'X'; n.min(16 << 20)])).into_response(),
        (None, None) => (status, body).into_response(),
    };
    for (k, v) in &args {
        if k != "header" {
            continue;
        }
        if let Some((name, value)) = v.split_once(':') {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
            {
                resp.headers_mut().append(n, v);
            }
        }
    }
    if arg("close").is_some_and(|v| v == "true" || v == "1") {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `503:30,429:10` → 503 three times in ten, 429 once, else nothing; `503` → always.
fn pick<T>(spec: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    let roll = fastrand::f64() * 100.0;
    let mut acc = 0.0;
    for part in spec.split(',') {
        match part.rsplit_once(':').filter(|(_, p)| p.parse::<f64>().is_ok()) {
            Some((v, p)) => {
                acc += p.parse::<f64>().unwrap_or(0.0);
                if roll < acc {
                    return parse(v);
                }
            }
            None => return parse(part),
        }
    }
    None
}

fn describe(req: &Request) -> String {
    let mut out = format!(
        "Φορτίο (meshrig built-in) echo debug server on {}\n\n{} {} {:?}\n\nheaders:\n\n",
        std::env::var("HOSTNAME").unwrap_or_default(),
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        out.push_str(&format!("{}: {}\n", k, String::from_utf8_lossy(v.as_bytes())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(uri: &str) -> (u16, Vec<(String, String)>, String) {
        let req = axum::http::Request::builder().uri(uri).body(axum::body::Body::from("hello")).unwrap();
        let resp = router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_query_shapes_the_echo() {
        assert_eq!(get("/").await.2, "hello");
        assert_eq!(get("/echo?status=503").await.0, 503);
        assert_eq!(get("/?status=418:100").await.0, 418);
        assert_eq!(get("/?status=418:0").await.0, 200);
        assert_eq!(get("/?size=10").await.2, "XXXXXXXXXX");
        let (_, headers, _) = get("/?header=x-test%3Aone&close=true").await;
        assert!(headers.contains(&("x-test".into(), "one".into())), "{headers:?}");
        assert!(headers.contains(&("connection".into(), "close".into())));
        assert!(get("/debug").await.2.contains("GET /debug"));
    }
}
