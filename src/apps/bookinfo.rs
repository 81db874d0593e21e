//! Bookinfo, built in: productpage, details, reviews (v1–v3) and ratings (with its
//! `SERVICE_VERSION` variants), answering as Istio's images do where a user can see it
//! (reference §8.1). Each app calls the others through its sidecar, forwarding trace context.

pub mod details;
pub mod page;
pub mod productpage;
pub mod ratings;
pub mod reviews;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{App, Workload};

/// Every Bookinfo service listens on this port.
pub const PORT: u16 = 9080;

/// The built-in app for an image repository named like Istio's
/// `examples-bookinfo-<service>-<version>`, with what that image's build bakes into its
/// environment.
pub fn image(repo: &str) -> Option<Workload> {
    let name = repo.rsplit('/').next()?;
    let rest = name.strip_prefix("examples-bookinfo-")?;
    let (service, version) = rest.split_once('-')?;
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (app, env) = match (service, version) {
        ("productpage", _) => (App::Productpage, Vec::new()),
        ("details", _) => (App::Details, Vec::new()),
        ("reviews", "v1") => (App::Reviews, env(&[("ENABLE_RATINGS", "false")])),
        ("reviews", "v3") => (App::Reviews, env(&[("ENABLE_RATINGS", "true"), ("STAR_COLOR", "red")])),
        ("reviews", _) => (App::Reviews, env(&[("ENABLE_RATINGS", "true"), ("STAR_COLOR", "black")])),
        ("ratings", v) => (App::Ratings, env(&[("SERVICE_VERSION", v)])),
        _ => return None,
    };
    Some(Workload::App { app, port: PORT, env })
}

/// A JSON answer with the content type the Bookinfo apps send.
pub fn json(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_bookinfo_images_map_to_the_apps_with_their_baked_in_environment() {
        let env_of = |repo: &str| match image(repo) {
            Some(Workload::App { env, .. }) => env,
            other => panic!("{repo}: {other:?}"),
        };
        assert_eq!(env_of("istio/examples-bookinfo-reviews-v1"), [("ENABLE_RATINGS".into(), "false".into())]);
        assert!(env_of("istio/examples-bookinfo-reviews-v2").contains(&("STAR_COLOR".into(), "black".into())));
        assert!(env_of("release/examples-bookinfo-ratings-v-faulty")
            .contains(&("SERVICE_VERSION".into(), "v-faulty".into())));
        assert!(matches!(
            image("release/examples-bookinfo-productpage-v1"),
            Some(Workload::App { app: App::Productpage, port: 9080, .. })
        ));
        assert_eq!(image("nginx"), None);
        assert_eq!(image("istio/examples-bookinfo-mongodb"), None);
    }
}
