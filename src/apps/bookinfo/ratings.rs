//! ratings (Istio's Node.js app): two reviewers' stars by id, `POST` to change them, and the
//! misbehaving variants chosen by `SERVICE_VERSION` that resilience tasks use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;

use super::json;

/// `SERVICE_VERSION`, as the image or the container sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    /// Database-backed: no database runs locally, so every read fails as when it is unreachable.
    Database,
    /// Half the requests answer 503.
    Faulty,
    /// Half the requests take 7 s.
    Delayed,
    /// Unavailable (503) for alternate minutes.
    Unavailable,
    /// Unavailable and unhealthy for alternate quarters of an hour.
    Unhealthy,
}

impl Version {
    pub fn parse(s: &str) -> Version {
        match s {
            "v2" => Version::Database,
            "v-faulty" => Version::Faulty,
            "v-delayed" => Version::Delayed,
            "v-unavailable" => Version::Unavailable,
            "v-unhealthy" => Version::Unhealthy,
            _ => Version::V1,
        }
    }

    pub fn from_env() -> Version {
        Version::parse(&std::env::var("SERVICE_VERSION").unwrap_or_default())
    }

    /// The toggling period of the unavailable variants.
    fn period(self) -> Option<Duration> {
        match self {
            Version::Unavailable => Some(Duration::from_secs(60)),
            Version::Unhealthy => Some(Duration::from_secs(900)),
            _ => None,
        }
    }
}

#[derive(Clone)]
struct App {
    version: Version,
    started: Instant,
    posted: Arc<Mutex<HashMap<i64, serde_json::Value>>>,
}

impl App {
    /// Whether the toggling variants are in their unavailable phase (they start available).
    fn unavailable(&self) -> bool {
        self.version.period().is_some_and(|p| unavailable_at(self.started.elapsed(), p))
    }
}

/// Available for the first `period`, unavailable for the next, and so on.
pub fn unavailable_at(elapsed: Duration, period: Duration) -> bool {
    (elapsed.as_millis() / period.as_millis().max(1)) % 2 == 1
}

pub fn router(version: Version) -> Router {
    let app = App { version, started: Instant::now(), posted: Arc::default() };
    Router::new().route("/health", get(health)).route("/ratings/{*rest}", any(ratings)).with_state(app)
}

async fn health(State(app): State<App>) -> Response {
    if app.version == Version::Unhealthy && app.unavailable() {
        json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"status":"Ratings is not healthy"}"#)
    } else {
        json(StatusCode::OK, r#"{"status":"Ratings is healthy"}"#)
    }
}

const NOT_NUMERIC: &str = r#"{"error":"please provide numeric product ID"}"#;
const UNAVAILABLE: &str = r#"{"error":"Service unavailable"}"#;

async fn ratings(State(app): State<App>, req: Request) -> Response {
    let last = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
    let id = leading_int(&last);
    match *req.method() {
        Method::POST => {
            let Some(id) = id else { return json(StatusCode::BAD_REQUEST, NOT_NUMERIC) };
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.unwrap_or_default();
            let Ok(ratings) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return json(StatusCode::BAD_REQUEST, r#"{"error":"please provide valid ratings JSON"}"#);
            };
            if app.version == Version::Database {
                return json(
                    StatusCode::NOT_IMPLEMENTED,
                    r#"{"error":"Post not implemented for database backed ratings"}"#,
                );
            }
            app.posted.lock().unwrap_or_else(|e| e.into_inner()).insert(id, ratings);
            json(StatusCode::OK, stored(&app, id))
        }
        Method::GET => {
            let Some(id) = id else { return json(StatusCode::BAD_REQUEST, NOT_NUMERIC) };
            match app.version {
                Version::Database => {
                    json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"could not connect to ratings database"}"#)
                }
                Version::Faulty if fastrand::bool() => json(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                Version::Delayed if fastrand::bool() => {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                    json(StatusCode::OK, stored(&app, id))
                }
                Version::Unavailable | Version::Unhealthy if app.unavailable() => {
                    json(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
                }
                _ => json(StatusCode::OK, stored(&app, id)),
            }
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    }
}

/// JavaScript's `parseInt` of a path segment: the leading digits, if any.
fn leading_int(s: &str) -> Option<i64> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn stored(app: &App, id: i64) -> String {
    match app.posted.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        Some(r) => serde_json::json!({"id": id, "ratings": r}).to_string(),
        None => format!(r#"{{"id":{id},"ratings":{{"Reviewer1":5,"Reviewer2":4}}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unavailable_variants_start_available_and_alternate() {
        let p = Duration::from_secs(60);
        assert!(!unavailable_at(Duration::from_secs(0), p));
        assert!(unavailable_at(Duration::from_secs(61), p));
        assert!(!unavailable_at(Duration::from_secs(125), p));
        assert_eq!(leading_int("12abc"), Some(12));
        assert_eq!(leading_int("abc"), None);
        assert_eq!(Version::parse("v-faulty"), Version::Faulty);
        assert_eq!(Version::parse("v1"), Version::V1);
    }
}
