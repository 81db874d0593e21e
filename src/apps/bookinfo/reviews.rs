//! reviews (Istio's Java app): two reviews of a book; v2 and v3 ask ratings for their stars
//! (black within 10 s, red within 2.5 s), v1 never does.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::json;
use crate::apps::outbound;

/// What the image and the container's environment choose.
#[derive(Clone, Debug)]
pub struct Config {
    pub ratings_enabled: bool,
    pub star_color: String,
    /// `http://ratings:9080/ratings` (with `RATINGS_HOSTNAME` and `SERVICES_DOMAIN` applied).
    pub ratings_url: String,
    pub podname: String,
    pub clustername: String,
}

impl Config {
    pub fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let domain = var("SERVICES_DOMAIN").map(|d| format!(".{d}")).unwrap_or_default();
        let host = var("RATINGS_HOSTNAME").unwrap_or_else(|| "ratings".into());
        Config {
            ratings_enabled: var("ENABLE_RATINGS").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            star_color: var("STAR_COLOR").unwrap_or_else(|| "black".into()),
            ratings_url: format!("http://{host}{domain}:9080/ratings"),
            podname: var("HOSTNAME").unwrap_or_default(),
            clustername: var("CLUSTER_NAME").unwrap_or_else(|| "null".into()),
        }
    }

    /// The ratings call's connect and receive timeout: 10 s for black stars, 2.5 s otherwise.
    pub fn ratings_timeout(&self) -> Duration {
        if self.star_color == "black" {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(2500)
        }
    }
}

/// What reviews passes on to ratings: trace context, `end-user` and `user-agent`.
fn forwarded() -> Vec<&'static str> {
    let mut names = outbound::TRACE_HEADERS.to_vec();
    names.extend(["end-user", "user-agent"]);
    names
}

pub fn router(config: Config) -> Router {
    Router::new()
        .route("/health", get(|| async { json(StatusCode::OK, r#"{"status": "Reviews is healthy"}"#) }))
        .route("/reviews/{id}", get(reviews))
        .with_state(config)
}

async fn reviews(State(config): State<Config>, Path(id): Path<String>, req: Request) -> Response {
    // The Java app's path parameter is an int: anything else is not found.
    let Ok(id) = id.parse::<i32>() else {
        return json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    };
    let stars = if config.ratings_enabled {
        let headers = outbound::forward(req.headers(), &forwarded());
        let url = format!("{}/{id}", config.ratings_url);
        match outbound::get(&url, &headers, config.ratings_timeout()).await {
            Ok(r) if r.status == StatusCode::OK => Some(parse_stars(&r.body)),
            Ok(r) => {
                crate::net::log(&format!("Error: unable to contact {url} got status of {}", r.status.as_u16()));
                None
            }
            Err(e) => {
                crate::net::log(&format!("Error: unable to contact {url} got exception {e}"));
                None
            }
        }
    } else {
        None
    };
    json(StatusCode::OK, body(&config, id, stars))
}

/// Reviewer1's and Reviewer2's stars from ratings' answer (-1 where absent).
fn parse_stars(body: &[u8]) -> (i64, i64) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let get = |who: &str| v["ratings"][who].as_i64().unwrap_or(-1);
    (get("Reviewer1"), get("Reviewer2"))
}

/// The reviews JSON, laid out as the Java app builds it. `stars` is None when ratings is off
/// or did not answer.
pub fn body(config: &Config, id: i32, stars: Option<(i64, i64)>) -> String {
    let rating = |n: Option<i64>| -> String {
        if !config.ratings_enabled {
            return String::new();
        }
        match n {
            Some(n) if n != -1 => format!(r#", "rating": {{"stars": {n}, "color": "{}"}}"#, config.star_color),
            _ => r#", "rating": {"error": "Ratings service is currently unavailable"}"#.to_string(),
        }
    };
    format!(
        concat!(
            r#"{{"id": "{id}","podname": "{pod}","clustername": "{cluster}","reviews": ["#,
            r#"{{  "reviewer": "Reviewer1",  "text": "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"{r1}}},"#,
            r#"{{  "reviewer": "Reviewer2",  "text": "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."{r2}}}"#,
            "]}}"
        ),
        id = id,
        pod = config.podname,
        cluster = config.clustername,
        r1 = rating(stars.map(|s| s.0)),
        r2 = rating(stars.map(|s| s.1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool, color: &str) -> Config {
        Config {
            ratings_enabled: enabled,
            star_color: color.into(),
            ratings_url: String::new(),
            podname: "reviews-v2-abc".into(),
            clustername: "null".into(),
        }
    }

    #[test]
    fn the_body_is_valid_json_with_stars_an_error_or_no_rating() {
        let v: serde_json::Value = serde_json::from_str(&body(&config(true, "red"), 0, Some((5, 4)))).unwrap();
        assert_eq!(v["reviews"][0]["rating"], serde_json::json!({"stars": 5, "color": "red"}));
        assert_eq!(v["podname"], "reviews-v2-abc");
        assert_eq!(v["id"], "0");
        let v: serde_json::Value = serde_json::from_str(&body(&config(true, "black"), 0, None)).unwrap();
        assert_eq!(v["reviews"][1]["rating"]["error"], "Ratings service is currently unavailable");
        let v: serde_json::Value = serde_json::from_str(&body(&config(false, "black"), 0, None)).unwrap();
        assert!(v["reviews"][0].get("rating").is_none());
        assert_eq!(config(true, "black").ratings_timeout(), Duration::from_secs(10));
        assert_eq!(config(true, "red").ratings_timeout(), Duration::from_millis(2500));
        assert_eq!(parse_stars(br#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#), (5, 4));
        assert_eq!(parse_stars(b"{}"), (-1, -1));
    }
}
