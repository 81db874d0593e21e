//! productpage (Istio's Python app): the page, its JSON API, login and logout with a session
//! cookie (logged in, it sends `end-user: NAME` on), and its own client behaviour: details and
//! reviews each within 3 s, reviews tried twice (Istio's deliberate 6 s), one after the other.

use std::time::Duration;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::{json, page};
use crate::apps::outbound;

/// productpage's timeout for each call it makes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times productpage asks reviews before giving up.
pub const REVIEWS_TRIES: u32 = 2;

const DETAILS_ERROR: &str = "Sorry, product details are currently unavailable for this book.";
const REVIEWS_ERROR: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_ERROR: &str = "Sorry, product ratings are currently unavailable for this book.";

pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/health", get(|| async { html(StatusCode::OK, "Product page is healthy".into()) }))
        .route("/login", post(login))
        .route("/logout", get(logout))
        .route("/productpage", get(product_page))
        .route("/api/v1/products", get(products))
        .route("/api/v1/products/{id}", get(product))
        .route("/api/v1/products/{id}/reviews", get(product_reviews))
        .route("/api/v1/products/{id}/ratings", get(product_ratings))
        .fallback(not_found)
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

async fn index() -> Response {
    html(StatusCode::OK, page::index())
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n".into(),
    )
}

// ---------------------------------------------------------------------------
// the session: a signed cookie `session` holding the user's name
// ---------------------------------------------------------------------------

/// The key session cookies are signed with (fixed, as the sample's secret is, so that every
/// replica and restart accepts them).
const SESSION_KEY: &str = "meshrig-bookinfo-session";

fn sign(payload: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SESSION_KEY.bytes().chain(payload.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The cookie value for `user`: hex of `{"user": NAME}`, a dot, and its signature.
pub fn session_cookie(user: &str) -> String {
    let payload: String = serde_json::json!({ "user": user }).to_string().bytes().map(|b| format!("{b:02x}")).collect();
    let sig = sign(&payload);
    format!("{payload}.{sig}")
}

/// The user of a request's session cookie, when it is there and its signature holds.
pub fn session_user(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("session="))?;
    let (payload, sig) = value.split_once('.')?;
    if sign(payload) != sig || payload.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..payload.len()).step_by(2).map(|i| u8::from_str_radix(payload.get(i..i + 2)?, 16).ok()).collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    v["user"].as_str().map(str::to_string)
}

/// Where login and logout send the browser back to: the page it came from.
fn back(headers: &HeaderMap, cookie: String) -> Response {
    let to = headers.get(header::REFERER).and_then(|v| v.to_str().ok()).unwrap_or("/productpage").to_string();
    let body = format!(
        "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: <a href=\"{0}\">{0}</a>. If not, click the link.\n",
        page::escape(&to)
    );
    let mut resp = html(StatusCode::FOUND, body);
    if let Ok(v) = HeaderValue::from_str(&to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn login(req: Request) -> Response {
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.unwrap_or_default();
    let user = form_field(&body, "username").unwrap_or_default();
    back(&headers, format!("session={}; HttpOnly; Path=/", session_cookie(&user)))
}

async fn logout(headers: HeaderMap) -> Response {
    back(&headers, "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/".into())
}

/// A field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

// ---------------------------------------------------------------------------
// calls to the other services
// ---------------------------------------------------------------------------

/// What productpage sends on: trace context, the browser's `user-agent`, `cookie`,
/// `authorization` and `jwt`, and `end-user` when someone is logged in.
fn forward_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut names = outbound::TRACE_HEADERS.to_vec();
    names.extend(["user-agent", "cookie", "authorization", "jwt"]);
    let mut out = outbound::forward(incoming, &names);
    if let Some(user) = session_user(incoming) {
        if let Ok(v) = HeaderValue::from_str(&user) {
            out.insert("end-user", v);
        }
    }
    out
}

fn service_url(service: &str, id: &str) -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let domain = var("SERVICES_DOMAIN").map(|d| format!(".{d}")).unwrap_or_default();
    let host = var(&format!("{}_HOSTNAME", service.to_uppercase())).unwrap_or_else(|| service.to_string());
    format!("http://{host}{domain}:9080/{service}/{id}")
}

/// One call as productpage makes it: 200 gives the JSON; anything else (or no answer) the
/// error object, with the answer's status or 500.
async fn call(service: &str, id: &str, headers: &HeaderMap, tries: u32, error: &str) -> (u16, Value) {
    let url = service_url(service, id);
    let mut status = 500;
    for _ in 0..tries {
        match outbound::get(&url, headers, CALL_TIMEOUT).await {
            Ok(r) if r.status == StatusCode::OK => {
                if let Ok(v) = serde_json::from_slice(&r.body) {
                    return (200, v);
                }
                status = 500;
            }
            Ok(r) => status = r.status.as_u16(),
            Err(e) => {
                crate::net::log(&format!("{url}: {e}"));
                status = 500;
            }
        }
    }
    (status, serde_json::json!({ "error": error }))
}

async fn product_page(headers: HeaderMap) -> Response {
    let fwd = forward_headers(&headers);
    let user = session_user(&headers).unwrap_or_default();
    let (details_status, details) = call("details", "0", &fwd, 1, DETAILS_ERROR).await;
    let (reviews_status, reviews) = call("reviews", "0", &fwd, REVIEWS_TRIES, REVIEWS_ERROR).await;
    let view = page::View { user: &user, details_status, details: &details, reviews_status, reviews: &reviews };
    html(StatusCode::OK, page::product_page(&view))
}

async fn products() -> Response {
    let list = serde_json::json!([{ "id": 0, "title": page::TITLE, "descriptionHtml": page::DESCRIPTION_HTML }]);
    json(StatusCode::OK, list.to_string())
}

fn api(status: u16, v: Value) -> Response {
    json(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), v.to_string())
}

async fn product(Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (s, v) = call("details", &id, &forward_headers(&headers), 1, DETAILS_ERROR).await;
    api(s, v)
}

async fn product_reviews(Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (s, v) = call("reviews", &id, &forward_headers(&headers), REVIEWS_TRIES, REVIEWS_ERROR).await;
    api(s, v)
}

async fn product_ratings(Path(id): Path<String>, headers: HeaderMap) -> Response {
    let (s, v) = call("ratings", &id, &forward_headers(&headers), 1, RATINGS_ERROR).await;
    api(s, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_carries_the_user_and_a_forged_one_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; session={}", session_cookie("jason")).parse().unwrap());
        assert_eq!(session_user(&h).as_deref(), Some("jason"));
        let good = session_cookie("jason");
        let (payload, _) = good.split_once('.').unwrap();
        let forged = format!("{payload}.{:016x}", 0);
        h.insert(header::COOKIE, format!("session={forged}").parse().unwrap());
        assert_eq!(session_user(&h), None);
        let fwd = {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, format!("session={}", session_cookie("jason")).parse().unwrap());
            h.insert("x-b3-traceid", "abc".parse().unwrap());
            h.insert("x-unrelated", "no".parse().unwrap());
            forward_headers(&h)
        };
        assert_eq!(fwd.get("end-user").unwrap(), "jason");
        assert_eq!(fwd.get("x-b3-traceid").unwrap(), "abc");
        assert!(fwd.get("x-unrelated").is_none());
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(form_field(b"username=jason&passwd=x", "username").as_deref(), Some("jason"));
        assert_eq!(form_field(b"username=a+b%21&passwd=", "username").as_deref(), Some("a b!"));
        assert_eq!(form_field(b"passwd=", "username"), None);
        assert_eq!(form_field(b"x=100%", "x").as_deref(), Some("100%"));
    }
}
