//! The built-in `httpbin` sample app: a re-implementation of go-httpbin v2.15.0 (the image
//! `mccutchen/go-httpbin:v2.15.0` that Istio's `samples/httpbin/httpbin.yaml` runs) for the
//! endpoints Istio's tasks use, with its status codes, JSON shapes, content types and errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use axum::Router;

/// Largest request body go-httpbin accepts (`DefaultMaxBodySize`, 1 MiB).
const MAX_BODY_SIZE: usize = 1024 * 1024;
/// Longest user-controlled delay (`DefaultMaxDuration`, 10s), in nanoseconds.
const MAX_DURATION_NS: i64 = 10_000_000_000;
/// `/bytes/{n}` silently caps `n` at 100 KiB in v2.15.0.
const MAX_BYTES: i64 = 100 * 1024;

const JSON_CT: &str = "application/json; charset=utf-8";
const TEXT_CT: &str = "text/plain; charset=utf-8";
const HTML_CT: &str = "text/html; charset=utf-8";
const BINARY_CT: &str = "application/octet-stream";

/// The whole httpbin app.
pub fn router() -> Router {
    Router::new()
        .route("/", any(index))
        .route("/get", any(get))
        .route("/head", any(head))
        .route("/post", any(|r| with_body_only(r, "POST")))
        .route("/put", any(|r| with_body_only(r, "PUT")))
        .route("/patch", any(|r| with_body_only(r, "PATCH")))
        .route("/delete", any(|r| with_body_only(r, "DELETE")))
        .route("/anything", any(anything))
        .route("/anything/", any(anything))
        .route("/anything/{*rest}", any(anything))
        .route("/headers", any(headers))
        .route("/ip", any(ip))
        .route("/user-agent", any(user_agent))
        .route("/uuid", any(uuid))
        .route("/status/{code}", any(status))
        .route("/delay/{duration}", any(delay))
        .route("/bytes/{n}", any(bytes))
        .route("/redirect/{n}", any(|r| redirect(r, Redirect::Param)))
        .route("/relative-redirect/{n}", any(|r| redirect(r, Redirect::Relative)))
        .route("/absolute-redirect/{n}", any(|r| redirect(r, Redirect::Absolute)))
        .route("/response-headers", any(response_headers))
        .fallback(not_found)
        .layer(middleware::from_fn(cors_and_head))
}

// ---------------------------------------------------------------------------
// middleware: go-httpbin's `preflight` (CORS) and `autohead`
// ---------------------------------------------------------------------------

async fn cors_and_head(req: Request, next: Next) -> Response {
    let origin = header_first(req.headers(), "origin").filter(|o| !o.is_empty()).unwrap_or_else(|| "*".to_string());
    if req.method() == Method::OPTIONS {
        let mut resp = empty(StatusCode::OK);
        let h = resp.headers_mut();
        set_header(h, "access-control-allow-origin", &origin);
        set_header(h, "access-control-allow-credentials", "true");
        set_header(h, "access-control-allow-methods", "GET, POST, HEAD, PUT, DELETE, PATCH, OPTIONS");
        set_header(h, "access-control-max-age", "3600");
        if let Some(v) = header_first(req.headers(), "access-control-request-headers") {
            if !v.is_empty() {
                set_header(h, "access-control-allow-headers", &v);
            }
        }
        return resp;
    }
    let is_head = req.method() == Method::HEAD;
    let mut resp = next.run(req).await;
    // preflight sets these before the handler runs, so handler values come after them
    for (name, value) in
        [("access-control-allow-origin", origin.as_str()), ("access-control-allow-credentials", "true")]
    {
        let h = resp.headers_mut();
        let existing: Vec<HeaderValue> = h.get_all(name).iter().cloned().collect();
        set_header(h, name, value);
        for v in existing {
            h.append(HeaderName::from_static(name), v);
        }
    }
    if is_head {
        // autohead discards whatever body the handler wrote
        *resp.body_mut() = Body::empty();
    }
    resp
}

// ---------------------------------------------------------------------------
// handlers
// ---------------------------------------------------------------------------

const INDEX_HTML: &str = r#"<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>go-httpbin(1): HTTP Client Testing Service</title>
</head>
<body>
<h1>go-httpbin(1): HTTP Client Testing Service</h1>
<h2>ENDPOINTS</h2>
<ul>
<li><a href="/"><code>/</code></a> This page.</li>
<li><a href="/absolute-redirect/6"><code>/absolute-redirect/:n</code></a> 302 Absolute redirects <em>n</em> times.</li>
<li><a href="/anything"><code>/anything/:anything</code></a> Returns anything that is passed to request.</li>
<li><a href="/bytes/1024"><code>/bytes/:n</code></a> Generate <em>n</em> random bytes of binary data, accepts optional <em>seed</em> integer parameter.</li>
<li><a href="/delay/3"><code>/delay/:n</code></a> Delay responding for min(<em>n</em>, 10) seconds.</li>
<li><code>/delete</code> Returns request data. Allows only <code>DELETE</code> requests.</li>
<li><a href="/get"><code>/get</code></a> Returns GET data.</li>
<li><a href="/head"><code>/head</code></a> Returns response headers. Allows only <code>HEAD</code> requests.</li>
<li><a href="/headers"><code>/headers</code></a> Returns request header dict.</li>
<li><a href="/ip"><code>/ip</code></a> Returns Origin IP.</li>
<li><code>/patch</code> Returns request data. Allows only <code>PATCH</code> requests.</li>
<li><code>/post</code> Returns request data. Allows only <code>POST</code> requests.</li>
<li><code>/put</code> Returns request data. Allows only <code>PUT</code> requests.</li>
<li><a href="/redirect/6"><code>/redirect/:n</code></a> 302 Redirects <em>n</em> times.</li>
<li><a href="/relative-redirect/6"><code>/relative-redirect/:n</code></a> 302 Relative redirects <em>n</em> times.</li>
<li><a href="/response-headers?Server=httpbin&amp;Content-Type=text%2Fplain%3B+charset%3DUTF-8"><code>/response-headers</code></a> Returns given response headers.</li>
<li><a href="/status/418"><code>/status/:code</code></a> Returns given HTTP Status code; <code>/status/200:3,503:1</code> picks one at random by weight.</li>
<li><a href="/user-agent"><code>/user-agent</code></a> Returns user-agent.</li>
<li><a href="/uuid"><code>/uuid</code></a> Generates a <a href="https://en.wikipedia.org/wiki/Universally_unique_identifier">UUID4</a> value.</li>
</ul>
</body>
</html>
"#;

async fn index(req: Request) -> Response {
    if let Some(r) = check_method(req.method(), &["GET"]) {
        return r;
    }
    let mut resp = text(StatusCode::OK, HTML_CT, INDEX_HTML.as_bytes().to_vec());
    set_header(
        resp.headers_mut(),
        "content-security-policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' camo.githubusercontent.com",
    );
    resp
}

async fn get(req: Request) -> Response {
    if let Some(r) = check_method(req.method(), &["GET"]) {
        return r;
    }
    no_body_response(&req)
}

async fn head(req: Request) -> Response {
    if let Some(r) = check_method(req.method(), &["HEAD"]) {
        return r;
    }
    no_body_response(&req)
}

async fn with_body_only(req: Request, method: &'static str) -> Response {
    if let Some(r) = check_method(req.method(), &[method]) {
        return r;
    }
    request_with_body(req).await
}

async fn anything(req: Request) -> Response {
    if req.method() == Method::HEAD {
        return no_body_response(&req);
    }
    request_with_body(req).await
}

async fn headers(req: Request) -> Response {
    json(StatusCode::OK, J::Obj(vec![("headers".into(), request_headers(&req))]))
}

async fn ip(req: Request) -> Response {
    json(StatusCode::OK, J::Obj(vec![("origin".into(), J::str(client_ip(&req)))]))
}

async fn user_agent(req: Request) -> Response {
    let ua = req.headers().get("user-agent").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    json(StatusCode::OK, J::Obj(vec![("user-agent".into(), J::Str(ua))]))
}

async fn uuid(_req: Request) -> Response {
    json(StatusCode::OK, J::Obj(vec![("uuid".into(), J::str(crate::trace::request_id()))]))
}

async fn status(req: Request) -> Response {
    let raw = path_param(&req, "/status/");
    let code = if !raw.contains(',') {
        match parse_bounded_status(&raw, 100, 599) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, Some(e)),
        }
    } else {
        let mut choices: Vec<(i64, f64)> = Vec::new();
        for pair in raw.split(',') {
            let (raw_choice, weight) = match pair.split_once(':') {
                Some((c, w)) => match parse_go_float(w) {
                    Some(w) => (c, w),
                    None => {
                        return error(StatusCode::BAD_REQUEST, Some(format!("invalid weight value: {}", go_quote(w))))
                    }
                },
                None => (pair, 1.0),
            };
            match go_atoi(raw_choice) {
                Ok(c) => choices.push((c, weight)),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        Some(format!("invalid choice value: {}", go_quote(raw_choice))),
                    )
                }
            }
        }
        match weighted_choice(&choices) {
            Some(c) => c,
            // go-httpbin panics here (weights summing to <= 0); the server then drops the
            // connection. The closest an HTTP response can get is an empty 500.
            None => return empty(StatusCode::INTERNAL_SERVER_ERROR),
        }
    };
    do_status(code)
}

async fn delay(req: Request) -> Response {
    let raw = path_param(&req, "/delay/");
    let nanos = match parse_bounded_duration(&raw, 0, MAX_DURATION_NS) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, Some(format!("invalid duration: {e}"))),
    };
    // dropping this future (client went away) is the cancellation path
    tokio::time::sleep(Duration::from_nanos(nanos as u64)).await;
    let timing = format!("initial_delay;dur={:.2};desc=\"initial delay\"", nanos as f64 / 1e6);
    let mut resp = request_with_body(req).await;
    set_header(resp.headers_mut(), "server-timing", &timing);
    resp
}

async fn bytes(req: Request) -> Response {
    let raw = path_param(&req, "/bytes/");
    let n = match go_atoi(&raw) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, Some(format!("invalid byte count: {e}"))),
    };
    let query = parse_query(req.uri().query().unwrap_or("")).0;
    let seed = query.get("seed").and_then(|v| v.first()).cloned();
    let mut rng = match seed.filter(|s| !s.is_empty()) {
        Some(s) => match go_parse_int(&s, "ParseInt") {
            Ok(v) => fastrand::Rng::with_seed(v as u64),
            Err(e) => return error(StatusCode::BAD_REQUEST, Some(format!("invalid seed: {e}"))),
        },
        None => fastrand::Rng::new(),
    };
    if n < 0 {
        return error(StatusCode::BAD_REQUEST, Some(format!("invalid byte count: {n} must be greater than 0")));
    }
    if n == 0 {
        let mut resp = empty(StatusCode::OK);
        set_header(resp.headers_mut(), "content-length", "0");
        return resp;
    }
    let n = n.min(MAX_BYTES) as usize;
    let data: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
    let mut resp = text(StatusCode::OK, BINARY_CT, data);
    set_header(resp.headers_mut(), "content-length", &n.to_string());
    resp
}

#[derive(Clone, Copy)]
enum Redirect {
    /// `/redirect/{n}`: relative unless `?absolute=true`
    Param,
    Relative,
    Absolute,
}

async fn redirect(req: Request, kind: Redirect) -> Response {
    let (prefix, relative) = match kind {
        Redirect::Param => {
            let q = parse_query(req.uri().query().unwrap_or("")).0;
            let absolute =
                q.get("absolute").and_then(|v| v.first()).map(|v| v.to_lowercase() == "true").unwrap_or(false);
            ("/redirect/", !absolute)
        }
        Redirect::Relative => ("/relative-redirect/", true),
        Redirect::Absolute => ("/absolute-redirect/", false),
    };
    let raw = path_param(&req, prefix);
    let n = match go_atoi(&raw) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, Some(format!("invalid redirect count: {e}"))),
    };
    if n < 1 {
        return error(StatusCode::BAD_REQUEST, Some("redirect count must be > 0".into()));
    }
    let next = n - 1;
    let path = if next < 1 {
        "/get".to_string()
    } else if relative {
        format!("/relative-redirect/{next}")
    } else {
        format!("/absolute-redirect/{next}")
    };
    let location = if relative { path } else { format!("{}://{}{}", scheme(req.headers()), request_host(&req), path) };
    let mut resp = empty(StatusCode::FOUND);
    set_header(resp.headers_mut(), "location", &location);
    resp
}

async fn response_headers(req: Request) -> Response {
    let args = parse_query(req.uri().query().unwrap_or("")).0;
    let body = format!("{}\n", J::values(&args).pretty());
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    for (k, vs) in &args {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            continue; // Go's server drops header fields with invalid names
        };
        for v in vs {
            // Go's server rewrites newlines in header values to spaces
            let v = v.replace(['\r', '\n'], " ");
            if let Ok(value) = HeaderValue::from_str(&v) {
                h.append(name.clone(), value);
            }
        }
    }
    if h.get("content-type").is_none() {
        set_header(h, "content-type", JSON_CT);
    }
    resp
}

async fn not_found() -> Response {
    go_http_error(StatusCode::NOT_FOUND, "404 page not found")
}

// ---------------------------------------------------------------------------
// response builders
// ---------------------------------------------------------------------------

/// Go 1.22 `ServeMux` answer to a known path with the wrong method.
fn check_method(method: &Method, allowed: &[&str]) -> Option<Response> {
    let m = method.as_str();
    if allowed.contains(&m) || (m == "HEAD" && allowed.contains(&"GET")) {
        return None;
    }
    let mut methods: Vec<&str> = allowed.to_vec();
    if methods.contains(&"GET") && !methods.contains(&"HEAD") {
        methods.push("HEAD");
    }
    methods.sort_unstable();
    let mut resp = go_http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    set_header(resp.headers_mut(), "allow", &methods.join(", "));
    Some(resp)
}

/// Go's `http.Error`: plain text, newline-terminated, `nosniff`.
fn go_http_error(status: StatusCode, msg: &str) -> Response {
    let mut resp = text(status, TEXT_CT, format!("{msg}\n").into_bytes());
    set_header(resp.headers_mut(), "x-content-type-options", "nosniff");
    resp
}

/// go-httpbin's `writeError`: `{"status_code": …, "error": …, "detail": …}`.
fn error(status: StatusCode, detail: Option<String>) -> Response {
    let mut fields = vec![
        ("status_code".to_string(), J::Num(status.as_u16() as f64)),
        ("error".to_string(), J::str(status.canonical_reason().unwrap_or(""))),
    ];
    if let Some(d) = detail.filter(|d| !d.is_empty()) {
        fields.push(("detail".to_string(), J::str(d)));
    }
    json(status, J::Obj(fields))
}

fn json(status: StatusCode, body: J) -> Response {
    text(status, JSON_CT, format!("{}\n", body.pretty()).into_bytes())
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    set_header(resp.headers_mut(), "content-type", content_type);
    resp
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

fn set_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

fn do_status(code: i64) -> Response {
    // Go sends a 1xx as an informational response and then a final 200 when the
    // handler returns without writing another status.
    let code = if (100..200).contains(&code) { 200 } else { code };
    let Ok(status) = u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()).ok_or(()) else {
        // Go's WriteHeader panics on codes outside 100..=999; the connection is dropped.
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut ct = TEXT_CT;
    let mut extra: Vec<(&'static str, &'static str)> = Vec::new();
    let mut body: Option<&'static str> = None;
    match code {
        300 => {
            extra.push(("location", "/image/jpeg"));
            body = Some(STATUS_300_BODY);
        }
        301 | 302 | 303 | 305 | 307 => extra.push(("location", "/redirect/1")),
        308 => {
            extra.push(("location", "/image/jpeg"));
            body = Some(STATUS_308_BODY);
        }
        401 => extra.push(("www-authenticate", "Basic realm=\"Fake Realm\"")),
        402 => {
            extra.push(("x-more-info", "http://vimeo.com/22053820"));
            body = Some("Fuck you, pay me!");
        }
        406 => {
            ct = JSON_CT;
            body = Some(STATUS_406_BODY);
        }
        407 => extra.push(("proxy-authenticate", "Basic realm=\"Fake Realm\"")),
        418 => {
            extra.push(("x-more-info", "http://tools.ietf.org/html/rfc2324"));
            body = Some("I'm a teapot!");
        }
        _ => {}
    }
    let mut resp = text(status, ct, body.unwrap_or("").as_bytes().to_vec());
    for (k, v) in extra {
        set_header(resp.headers_mut(), k, v);
    }
    resp
}

const STATUS_300_BODY: &str = r#"<!doctype html>
<head>
<title>Multiple Choices</title>
</head>
<body>
<ul>
<li><a href="/image/jpeg">/image/jpeg</a></li>
<li><a href="/image/png">/image/png</a></li>
<li><a href="/image/svg">/image/svg</a></li>
</body>
</html>"#;

const STATUS_308_BODY: &str = r#"<!doctype html>
<head>
<title>Permanent Redirect</title>
</head>
<body>Permanently redirected to <a href="/image/jpeg">/image/jpeg</a>
</body>
</html>"#;

const STATUS_406_BODY: &str = r#"{
  "message": "Client did not request a supported media type",
  "accept": [
    "image/webp",
    "image/svg+xml",
    "image/jpeg",
    "image/png",
    "image/"
  ]
}
"#;

fn weighted_choice(choices: &[(i64, f64)]) -> Option<i64> {
    let total: f64 = choices.iter().map(|c| c.1).sum();
    let target = fastrand::f64() * total;
    let mut current = 0.0;
    for (choice, weight) in choices {
        current += weight;
        if target < current {
            return Some(*choice);
        }
    }
    None
}

/// go-httpbin's `noBodyResponse` (GET, HEAD).
fn no_body_response(req: &Request) -> Response {
    json(StatusCode::OK, J::Obj(common_fields(req)))
}

fn common_fields(req: &Request) -> Vec<(String, J)> {
    let args = parse_query(req.uri().query().unwrap_or("")).0;
    vec![
        ("args".into(), J::values(&args)),
        ("headers".into(), request_headers(req)),
        ("method".into(), J::str(req.method().as_str())),
        ("origin".into(), J::str(client_ip(req))),
        ("url".into(), J::str(request_url(req))),
    ]
}

/// go-httpbin's `RequestWithBody`: the request echoed with `data`, `files`, `form`, `json`.
async fn request_with_body(req: Request) -> Response {
    let mut fields = common_fields(&req);
    let method = req.method().clone();
    let content_type = header_first(req.headers(), "content-type").unwrap_or_default();
    let query_err = parse_query(req.uri().query().unwrap_or("")).1;
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_SIZE).await {
        Ok(b) => b,
        Err(e) => {
            let too_big =
                std::error::Error::source(&e).map(|s| s.to_string().contains("length limit")).unwrap_or(false)
                    || e.to_string().contains("length limit");
            let detail = if too_big { "http: request body too large".to_string() } else { e.to_string() };
            return error(StatusCode::BAD_REQUEST, Some(format!("error parsing request body: {detail}")));
        }
    };
    let mut data = J::str("");
    let mut files = J::Obj(vec![]);
    let mut form = J::Obj(vec![]);
    let mut json_body = J::Null;
    if !body.is_empty() {
        data = J::Str(body.to_vec());
        let media = content_type.split(';').next().unwrap_or("");
        let parsed: Result<(), String> = match media {
            "text/html" | "text/plain" => Ok(()),
            "application/x-www-form-urlencoded" => {
                let (values, body_err) = if matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "GET") {
                    parse_query(&String::from_utf8_lossy(&body))
                } else {
                    (BTreeMap::new(), None)
                };
                match body_err.or(query_err) {
                    Some(e) => Err(e),
                    None => {
                        form = J::values(&values);
                        Ok(())
                    }
                }
            }
            "multipart/form-data" => match parse_multipart(&content_type, &body) {
                Ok((values, file_values)) => {
                    form = J::values(&values);
                    files = J::values(&file_values);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            "application/json" => {
                let mut it = serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>();
                match it.next() {
                    Some(Ok(v)) => {
                        json_body = J::from_value(v);
                        Ok(())
                    }
                    Some(Err(e)) if e.is_eof() => Err("unexpected EOF".into()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("EOF".into()),
                }
            }
            _ => {
                let ct = if media.is_empty() { BINARY_CT } else { media };
                data = J::str(format!("data:{ct};base64,{}", base64_url(&body)));
                Ok(())
            }
        };
        if let Err(e) = parsed {
            return error(StatusCode::BAD_REQUEST, Some(format!("error parsing request body: {e}")));
        }
    }
    fields.push(("data".into(), data));
    fields.push(("files".into(), files));
    fields.push(("form".into(), form));
    fields.push(("json".into(), json_body));
    json(StatusCode::OK, J::Obj(fields))
}

// ---------------------------------------------------------------------------
// request helpers
// ---------------------------------------------------------------------------

fn header_first(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Go's `r.Host`: the request-target's authority (absolute form, HTTP/2) or the Host header.
fn request_host(req: &Request) -> String {
    if let Some(a) = req.uri().authority() {
        return a.as_str().to_string();
    }
    header_first(req.headers(), "host").unwrap_or_default()
}

/// Request headers as go-httpbin reports them: canonical names, every value, plus `Host`.
fn request_headers(req: &Request) -> J {
    let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name.as_str() == "host" {
            continue;
        }
        map.entry(canonical_header_key(name.as_str())).or_default().push(value.as_bytes().to_vec());
    }
    map.insert("Host".into(), vec![request_host(req).into_bytes()]);
    J::Obj(map.into_iter().map(|(k, vs)| (k, J::Arr(vs.into_iter().map(J::Str).collect()))).collect())
}

/// Go's `textproto.CanonicalMIMEHeaderKey`.
fn canonical_header_key(name: &str) -> String {
    let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// go-httpbin v2.15.0's `getClientIP`. Its last fallback is Go's `r.RemoteAddr`, which is
/// `ip:port` (the port was only stripped in later releases); without a peer it is empty.
fn client_ip(req: &Request) -> String {
    for name in ["fly-client-ip", "cf-connecting-ip"] {
        if let Some(v) = header_first(req.headers(), name).filter(|v| !v.is_empty()) {
            return v;
        }
    }
    if let Some(xff) = header_first(req.headers(), "x-forwarded-for").filter(|v| !v.is_empty()) {
        return xff.split(',').next().unwrap_or("").trim().to_string();
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.to_string()).unwrap_or_default()
}

fn scheme(h: &HeaderMap) -> String {
    if let Some(s) = header_first(h, "x-forwarded-proto").filter(|s| !s.is_empty()) {
        return s;
    }
    if let Some(s) = header_first(h, "x-forwarded-protocol").filter(|s| !s.is_empty()) {
        return s;
    }
    if header_first(h, "x-forwarded-ssl").as_deref() == Some("on") {
        return "https".into();
    }
    "http".into()
}

/// go-httpbin's `getURL(r).String()`.
fn request_url(req: &Request) -> String {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{}://{}{}", scheme(req.headers()), request_host(req), path)
}

/// The (percent-decoded) rest of the path after `prefix`, like Go's `r.PathValue`.
fn path_param(req: &Request, prefix: &str) -> String {
    let raw = req.uri().path().strip_prefix(prefix).unwrap_or("");
    String::from_utf8_lossy(&percent_decode(raw, false).unwrap_or_else(|_| raw.into())).into_owned()
}

/// Decode `%XX` escapes (and `+` as space when `plus` is set), Go's `unescape` and its error.
fn percent_decode(s: &str, plus: bool) -> Result<Vec<u8>, String> {
    crate::uri::percent_decode(s, plus).map_err(|esc| format!("invalid URL escape {}", go_quote(&esc)))
}

/// Go's `url.ParseQuery`: the values that parsed, and the first error if any.
fn parse_query(query: &str) -> (BTreeMap<String, Vec<String>>, Option<String>) {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut err = None;
    for pair in query.split('&') {
        if pair.contains(';') {
            err.get_or_insert_with(|| "invalid semicolon separator in query".to_string());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (percent_decode(k, true), percent_decode(v, true)) {
            (Ok(k), Ok(v)) => map
                .entry(String::from_utf8_lossy(&k).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(&v).into_owned()),
            (Err(e), _) | (_, Err(e)) => {
                err.get_or_insert(e);
            }
        }
    }
    (map, err)
}

type FormValues = BTreeMap<String, Vec<String>>;

/// A small `multipart/form-data` reader: fields without a filename go to `form`, the
/// others to `files` (contents as strings), like Go's `ParseMultipartForm`.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<(FormValues, FormValues), String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| "no multipart boundary param in Content-Type".to_string())?;
    let delim = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        if from > hay.len() {
            return None;
        }
        hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
    };
    let eof = || "multipart: NextPart: EOF".to_string();
    let mut form = FormValues::new();
    let mut files = FormValues::new();
    let mut pos = find(body, &delim, 0).ok_or_else(eof)? + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break;
        }
        // rest of the boundary line
        let line_end = find(body, b"\n", pos).ok_or_else(eof)?;
        let mut cursor = line_end + 1;
        // part headers
        let mut name = None;
        let mut filename = None;
        loop {
            let end = find(body, b"\n", cursor).ok_or_else(eof)?;
            let line = String::from_utf8_lossy(&body[cursor..end]);
            let line = line.trim_end_matches('\r');
            cursor = end + 1;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    for param in v.split(';').skip(1) {
                        if let Some((pk, pv)) = param.split_once('=') {
                            let pv = pv.trim().trim_matches('"').to_string();
                            match pk.trim().to_ascii_lowercase().as_str() {
                                "name" => name = Some(pv),
                                "filename" => filename = Some(pv),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        let next = find(body, &delim, cursor).ok_or_else(eof)?;
        let mut content = &body[cursor..next];
        content = content.strip_suffix(b"\n").unwrap_or(content);
        content = content.strip_suffix(b"\r").unwrap_or(content);
        if let Some(name) = name {
            let value = String::from_utf8_lossy(content).into_owned();
            match filename {
                Some(f) if !f.is_empty() => files.entry(name).or_default().push(value),
                _ => form.entry(name).or_default().push(value),
            }
        }
        pos = next + delim.len();
    }
    Ok((form, files))
}

// ---------------------------------------------------------------------------
// Go-compatible parsing and formatting
// ---------------------------------------------------------------------------

/// Go's `strconv.Quote` for the strings that show up in error messages.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.Atoi`, with its error text.
fn go_atoi(s: &str) -> Result<i64, String> {
    go_parse_int(s, "Atoi")
}

fn go_parse_int(s: &str, func: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.{func}: parsing {}: invalid syntax", go_quote(s));
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = (v * 10 + i128::from(b - b'0')).min(i128::from(u64::MAX) + 1);
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).map_err(|_| format!("strconv.{func}: parsing {}: value out of range", go_quote(s)))
}

/// Go's `strconv.ParseFloat` (decimal forms, inf/nan); `None` on a syntax error.
fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return s.parse::<f64>().ok();
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// go-httpbin's `parseBoundedDuration`: a Go duration string, else float seconds
/// (truncated to milliseconds); returns nanoseconds or the error text.
fn parse_bounded_duration(input: &str, min: i64, max: i64) -> Result<i64, String> {
    let d = match crate::duration::parse(input).ok() {
        Some(d) => d,
        None => match parse_go_float(input) {
            Some(f) => ((f * 1000.0) as i64).saturating_mul(1_000_000),
            None => return Err(format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(input))),
        },
    };
    if d > max {
        Err(format!("duration {} longer than {}", crate::duration::string(d), crate::duration::string(max)))
    } else if d < min {
        Err(format!("duration {} shorter than {}", crate::duration::string(d), crate::duration::string(min)))
    } else {
        Ok(d)
    }
}

fn parse_bounded_status(input: &str, min: i64, max: i64) -> Result<i64, String> {
    let code = go_atoi(input).map_err(|e| format!("invalid status code: {}: {e}", go_quote(input)))?;
    if code < min || code > max {
        return Err(format!("invalid status code: {code} not in range [{min}, {max}]"));
    }
    Ok(code)
}

fn base64_url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(data)
}

// ---------------------------------------------------------------------------
// JSON written the way Go's encoder (SetIndent("", "  "), SetEscapeHTML(false)) writes it
// ---------------------------------------------------------------------------

/// A JSON value; strings are raw bytes so invalid UTF-8 is escaped byte by byte like Go.
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn str(s: impl Into<String>) -> J {
        J::Str(s.into().into_bytes())
    }

    /// Go's `url.Values` / `http.Header`: a sorted map of string arrays.
    fn values(m: &BTreeMap<String, Vec<String>>) -> J {
        J::Obj(m.iter().map(|(k, vs)| (k.clone(), J::Arr(vs.iter().map(|v| J::str(v.clone())).collect()))).collect())
    }

    /// What Go's `json.Decode` into `any` keeps: numbers as float64, maps sorted.
    fn from_value(v: serde_json::Value) -> J {
        match v {
            serde_json::Value::Null => J::Null,
            serde_json::Value::Bool(b) => J::Bool(b),
            serde_json::Value::Number(n) => J::Num(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => J::str(s),
            serde_json::Value::Array(a) => J::Arr(a.into_iter().map(J::from_value).collect()),
            serde_json::Value::Object(o) => {
                let mut entries: Vec<(String, J)> = o.into_iter().map(|(k, v)| (k, J::from_value(v))).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                J::Obj(entries)
            }
        }
    }

    fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(0, &mut out);
        out
    }

    fn write(&self, depth: usize, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(f) => out.push_str(&go_float(*f)),
            J::Str(s) => write_go_string(s, out),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Obj(items) if items.is_empty() => out.push_str("{}"),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(depth + 1, out);
                    item.write(depth + 1, out);
                }
                newline(depth, out);
                out.push(']');
            }
            J::Obj(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(depth + 1, out);
                    write_go_string(k.as_bytes(), out);
                    out.push_str(": ");
                    v.write(depth + 1, out);
                }
                newline(depth, out);
                out.push('}');
            }
        }
    }
}

fn newline(depth: usize, out: &mut String) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Go's float64 JSON encoding: shortest form, exponent only below 1e-6 or from 1e21.
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, exp)) if !exp.starts_with('-') => format!("{mant}e+{exp}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

fn write_go_string(bytes: &[u8], out: &mut String) {
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, false),
            Err(e) => (std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default(), true),
        };
        for c in valid.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        rest = &rest[valid.len()..];
        if bad {
            out.push_str("\\ufffd");
            rest = &rest[1..];
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn send(req: axum::http::Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = router().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
        (status, headers, body)
    }

    fn get_req(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::builder()
            .uri(uri)
            .header("host", "httpbin:8000")
            .header("user-agent", "curl/8.5.0")
            .body(Body::empty())
            .expect("request")
    }

    fn json_of(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("json body")
    }

    fn ct(h: &HeaderMap) -> &str {
        h.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn status_single_code() {
        let (s, h, b) = send(get_req("/status/503")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct(&h), TEXT_CT);
        assert!(b.is_empty());
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-credentials"], "true");
    }

    #[tokio::test]
    async fn status_teapot() {
        let (s, h, b) = send(get_req("/status/418")).await;
        assert_eq!(s.as_u16(), 418);
        assert_eq!(b, b"I'm a teapot!");
        assert_eq!(h["x-more-info"], "http://tools.ietf.org/html/rfc2324");
        assert_eq!(ct(&h), TEXT_CT);
    }

    #[tokio::test]
    async fn status_redirect_codes_have_location() {
        let (s, h, _) = send(get_req("/status/302")).await;
        assert_eq!(s, StatusCode::FOUND);
        assert_eq!(h["location"], "/redirect/1");
        let (s, h, _) = send(get_req("/status/401")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h["www-authenticate"], "Basic realm=\"Fake Realm\"");
    }

    #[tokio::test]
    async fn status_weighted_choice_hits_both() {
        let mut seen_200 = false;
        let mut seen_503 = false;
        for _ in 0..200 {
            let (s, _, _) = send(get_req("/status/200,503")).await;
            match s.as_u16() {
                200 => seen_200 = true,
                503 => seen_503 = true,
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(seen_200 && seen_503);
        let (s, _, _) = send(get_req("/status/200:0,503:1")).await;
        assert_eq!(s.as_u16(), 503);
    }

    #[tokio::test]
    async fn status_invalid() {
        let (s, h, b) = send(get_req("/status/abc")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(ct(&h), JSON_CT);
        let text = String::from_utf8(b).expect("utf8");
        assert_eq!(
            text,
            "{\n  \"status_code\": 400,\n  \"error\": \"Bad Request\",\n  \"detail\": \"invalid status code: \\\"abc\\\": strconv.Atoi: parsing \\\"abc\\\": invalid syntax\"\n}\n"
        );
        let (s, _, b) = send(get_req("/status/600")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid status code: 600 not in range [100, 599]");
        let (s, _, b) = send(get_req("/status/200:x,503")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid weight value: \"x\"");
        let (s, _, b) = send(get_req("/status/200,foo")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid choice value: \"foo\"");
    }

    #[tokio::test]
    async fn delay_too_long_is_400() {
        let (s, h, b) = send(get_req("/delay/11")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(ct(&h), JSON_CT);
        let v = json_of(&b);
        assert_eq!(v["status_code"], 400);
        assert_eq!(v["error"], "Bad Request");
        assert_eq!(v["detail"], "invalid duration: duration 11s longer than 10s");
        let (s, _, b) = send(get_req("/delay/abc")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid duration: strconv.ParseFloat: parsing \"abc\": invalid syntax");
        let (s, _, b) = send(get_req("/delay/1m")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid duration: duration 1m0s longer than 10s");
    }

    #[tokio::test]
    async fn delay_sleeps_and_echoes() {
        let start = tokio::time::Instant::now();
        let (s, h, b) = send(get_req("/delay/0.1?x=1")).await;
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), JSON_CT);
        assert_eq!(h["server-timing"], "initial_delay;dur=100.00;desc=\"initial delay\"");
        let v = json_of(&b);
        assert_eq!(v["headers"]["Host"], serde_json::json!(["httpbin:8000"]));
        assert_eq!(v["args"], serde_json::json!({"x": ["1"]}));
        assert_eq!(v["method"], "GET");
        assert_eq!(v["url"], "http://httpbin:8000/delay/0.1?x=1");
        assert_eq!(v["data"], "");
        assert_eq!(v["json"], serde_json::Value::Null);

        let start = tokio::time::Instant::now();
        let (s, h, _) = send(get_req("/delay/50ms")).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["server-timing"], "initial_delay;dur=50.00;desc=\"initial delay\"");
    }

    #[tokio::test]
    async fn headers_are_canonical_arrays() {
        let req = axum::http::Request::builder()
            .uri("/headers")
            .header("host", "httpbin:8000")
            .header("x-b3-traceid", "abc")
            .header("accept", "*/*")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .body(Body::empty())
            .expect("request");
        let (s, h, b) = send(req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), JSON_CT);
        let v = json_of(&b);
        assert_eq!(
            v,
            serde_json::json!({"headers": {
                "Accept": ["*/*"],
                "Host": ["httpbin:8000"],
                "X-B3-Traceid": ["abc"],
                "X-Multi": ["one", "two"],
            }})
        );
        let text = String::from_utf8(b).expect("utf8");
        assert!(text.starts_with("{\n  \"headers\": {\n    \"Accept\": [\n      \"*/*\"\n    ],"));
        assert!(text.ends_with("}\n"));
    }

    #[tokio::test]
    async fn get_echoes_request() {
        let req = axum::http::Request::builder()
            .uri("/get?b=2&a=1&a=3")
            .header("host", "example.com")
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .expect("request");
        let (s, _, b) = send(req).await;
        assert_eq!(s, StatusCode::OK);
        let v = json_of(&b);
        assert_eq!(v["args"], serde_json::json!({"a": ["1", "3"], "b": ["2"]}));
        assert_eq!(v["method"], "GET");
        assert_eq!(v["url"], "https://example.com/get?b=2&a=1&a=3");
        assert_eq!(v["origin"], "");
        assert!(v.get("data").is_none());
        let text = String::from_utf8(b).expect("utf8");
        let order: Vec<usize> = ["\"args\"", "\"headers\"", "\"method\"", "\"origin\"", "\"url\""]
            .iter()
            .map(|k| text.find(k).expect("field"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn ip_from_peer_and_forwarded_for() {
        let mut req = get_req("/ip");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 45678))));
        let (s, h, b) = send(req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), JSON_CT);
        // v2.15.0 reports Go's RemoteAddr verbatim (ip:port)
        assert_eq!(json_of(&b), serde_json::json!({"origin": "10.1.2.3:45678"}));

        let mut req = get_req("/ip");
        req.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("192.0.2.7, 10.0.0.1"));
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 45678))));
        let (_, _, b) = send(req).await;
        assert_eq!(json_of(&b), serde_json::json!({"origin": "192.0.2.7"}));

        let (_, _, b) = send(get_req("/ip")).await;
        assert_eq!(json_of(&b), serde_json::json!({"origin": ""}));
    }

    #[tokio::test]
    async fn anything_any_method_and_subpath() {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "FOO"] {
            let req = axum::http::Request::builder()
                .method(method)
                .uri("/anything/foo/bar?q=1")
                .header("host", "httpbin:8000")
                .body(Body::empty())
                .expect("request");
            let (s, _, b) = send(req).await;
            assert_eq!(s, StatusCode::OK, "{method}");
            let v = json_of(&b);
            assert_eq!(v["method"], method);
            assert_eq!(v["url"], "http://httpbin:8000/anything/foo/bar?q=1");
            assert_eq!(v["files"], serde_json::json!({}));
            assert_eq!(v["form"], serde_json::json!({}));
        }
        let (s, _, _) = send(get_req("/anything")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = send(get_req("/anything/")).await;
        assert_eq!(s, StatusCode::OK);
    }

    fn body_req(method: &str, uri: &str, ct: &str, body: &str) -> axum::http::Request<Body> {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "httpbin:8000")
            .header("content-type", ct)
            .body(Body::from(body.to_string()))
            .expect("request")
    }

    #[tokio::test]
    async fn post_bodies() {
        let (s, _, b) =
            send(body_req("POST", "/post", "application/json", r#"{"b": 1.0, "a": [1, "x", null], "c": 1e21}"#)).await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8(b.clone()).expect("utf8");
        assert!(text.contains("\"c\": 1e+21"), "{text}");
        assert!(text.contains("\"b\": 1,"), "{text}");
        let v = json_of(&b);
        assert_eq!(v["json"]["a"], serde_json::json!([1, "x", null]));
        assert_eq!(v["data"], r#"{"b": 1.0, "a": [1, "x", null], "c": 1e21}"#);

        let (s, _, b) = send(body_req("PUT", "/put", "application/x-www-form-urlencoded", "a=1&b=x+y&a=2")).await;
        assert_eq!(s, StatusCode::OK);
        let v = json_of(&b);
        assert_eq!(v["form"], serde_json::json!({"a": ["1", "2"], "b": ["x y"]}));
        assert_eq!(v["json"], serde_json::Value::Null);

        let (_, _, b) = send(body_req("PATCH", "/patch", "text/plain", "hello")).await;
        assert_eq!(json_of(&b)["data"], "hello");

        let (_, _, b) = send(body_req("DELETE", "/delete", "image/png", "encodeMe-png")).await;
        assert_eq!(json_of(&b)["data"], format!("data:image/png;base64,{}", base64_url(b"encodeMe-png")));
        assert_eq!(base64_url(b"encodeMe-png"), "ZW5jb2RlTWUtcG5n");
        assert_eq!(base64_url(b"\xfb\xff"), "-_8=");

        let (s, _, b) = send(body_req("POST", "/post", "application/json", "{nope")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(json_of(&b)["detail"].as_str().expect("detail").starts_with("error parsing request body: "));

        let multipart = "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv1\r\n--XX\r\nContent-Disposition: form-data; name=\"up\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n";
        let (s, _, b) = send(body_req("POST", "/post", "multipart/form-data; boundary=XX", multipart)).await;
        assert_eq!(s, StatusCode::OK);
        let v = json_of(&b);
        assert_eq!(v["form"], serde_json::json!({"f": ["v1"]}));
        assert_eq!(v["files"], serde_json::json!({"up": ["file body"]}));

        let big = "x".repeat(MAX_BODY_SIZE + 1);
        let (s, _, b) = send(body_req("POST", "/post", "text/plain", &big)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "error parsing request body: http: request body too large");
    }

    #[tokio::test]
    async fn wrong_method_is_405() {
        let (s, h, b) = send(body_req("POST", "/get", "text/plain", "x")).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h["allow"], "GET, HEAD");
        assert_eq!(ct(&h), TEXT_CT);
        assert_eq!(b, b"Method Not Allowed\n");
        let (s, h, _) = send(get_req("/post")).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h["allow"], "POST");
        for (method, path) in [("GET", "/put"), ("GET", "/patch"), ("POST", "/delete")] {
            let req = axum::http::Request::builder().method(method).uri(path).body(Body::empty()).expect("request");
            let (s, _, _) = send(req).await;
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (s, h, b) = send(get_req("/nope")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(ct(&h), TEXT_CT);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(b, b"404 page not found\n");
        for path in ["/status", "/status/", "/status/200/x", "/delay", "/get/"] {
            let (s, _, _) = send(get_req(path)).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn options_and_head() {
        let req = axum::http::Request::builder()
            .method("OPTIONS")
            .uri("/get")
            .header("origin", "http://a.example")
            .header("access-control-request-headers", "X-Test")
            .body(Body::empty())
            .expect("request");
        let (s, h, b) = send(req).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.is_empty());
        assert_eq!(h["access-control-allow-origin"], "http://a.example");
        assert_eq!(h["access-control-allow-headers"], "X-Test");
        assert_eq!(h["access-control-max-age"], "3600");

        let req = axum::http::Request::builder().method("HEAD").uri("/get").body(Body::empty()).expect("request");
        let (s, _, b) = send(req).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn uuid_user_agent_index() {
        let (s, h, b) = send(get_req("/uuid")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), JSON_CT);
        let id = json_of(&b)["uuid"].as_str().expect("uuid").to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));

        let (_, _, b) = send(get_req("/user-agent")).await;
        assert_eq!(json_of(&b), serde_json::json!({"user-agent": "curl/8.5.0"}));

        let (s, h, b) = send(get_req("/")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), HTML_CT);
        assert!(String::from_utf8(b).expect("utf8").contains("/status/"));
    }

    #[tokio::test]
    async fn bytes_random_and_seeded() {
        let (s, h, b) = send(get_req("/bytes/16")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), BINARY_CT);
        assert_eq!(h["content-length"], "16");
        assert_eq!(b.len(), 16);
        let (_, _, a) = send(get_req("/bytes/64?seed=42")).await;
        let (_, _, c) = send(get_req("/bytes/64?seed=42")).await;
        assert_eq!(a, c);
        let (_, _, big) = send(get_req("/bytes/200000")).await;
        assert_eq!(big.len(), 100 * 1024);
        let (s, _, b) = send(get_req("/bytes/-1")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid byte count: -1 must be greater than 0");
        let (s, _, b) = send(get_req("/bytes/8?seed=x")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid seed: strconv.ParseInt: parsing \"x\": invalid syntax");
        let (s, _, b) = send(get_req("/bytes/0")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn redirects() {
        let (s, h, _) = send(get_req("/redirect/3")).await;
        assert_eq!(s, StatusCode::FOUND);
        assert_eq!(h["location"], "/relative-redirect/2");
        let (_, h, _) = send(get_req("/redirect/1")).await;
        assert_eq!(h["location"], "/get");
        let (_, h, _) = send(get_req("/redirect/2?absolute=TRUE")).await;
        assert_eq!(h["location"], "http://httpbin:8000/absolute-redirect/1");
        let (s, h, _) = send(get_req("/relative-redirect/2")).await;
        assert_eq!(s, StatusCode::FOUND);
        assert_eq!(h["location"], "/relative-redirect/1");
        let (s, _, b) = send(get_req("/redirect/0")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "redirect count must be > 0");
        let (s, _, b) = send(get_req("/relative-redirect/x")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&b)["detail"], "invalid redirect count: strconv.Atoi: parsing \"x\": invalid syntax");
    }

    #[tokio::test]
    async fn response_headers_echo() {
        let (s, h, b) = send(get_req("/response-headers?X-Foo=bar&X-Foo=baz&freeform=1")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct(&h), JSON_CT);
        let foo: Vec<_> = h.get_all("x-foo").iter().collect();
        assert_eq!(foo, ["bar", "baz"]);
        assert_eq!(h["freeform"], "1");
        assert_eq!(json_of(&b), serde_json::json!({"X-Foo": ["bar", "baz"], "freeform": ["1"]}));
        let (_, h, _) = send(get_req("/response-headers?Content-Type=text/plain")).await;
        assert_eq!(ct(&h), "text/plain");
    }

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(crate::duration::string(11_000_000_000), "11s");
        assert_eq!(crate::duration::string(10_500_000_000), "10.5s");
        assert_eq!(crate::duration::string(3_600_000_000_000), "1h0m0s");
        assert_eq!(crate::duration::string(100_000_000), "100ms");
        assert_eq!(crate::duration::string(1_500), "1.5\u{b5}s");
        assert_eq!(crate::duration::string(-1_000_000_000), "-1s");
        assert_eq!(crate::duration::parse("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(crate::duration::parse("150ms"), Ok(150_000_000));
        assert!(crate::duration::parse("1.5").is_err());
        assert_eq!(crate::duration::parse("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_bounded_duration("-1", 0, MAX_DURATION_NS), Err("duration -1s shorter than 0s".to_string()));
        assert_eq!(canonical_header_key("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e20), "100000000000000000000");
        let mut s = String::new();
        write_go_string(b"a\"\\\n\x01\xff\xe2\x80\xa8z", &mut s);
        assert_eq!(s, "\"a\\\"\\\\\\n\\u0001\\ufffd\\u2028z\"");
        assert_eq!(
            go_atoi("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(go_atoi("+200"), Ok(200));
    }
}
