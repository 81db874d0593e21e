//! The admin listener: `/ready`, `/stats/prometheus`, `/config_dump` (Envoy's admin, in small).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::net::{self, Body};
use crate::proxy::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/ready" | "/healthz/ready" => {
            if shared.has_config() {
                net::text(StatusCode::OK, "LIVE\n")
            } else {
                net::text(StatusCode::SERVICE_UNAVAILABLE, "no config received from the control plane yet\n")
            }
        }
        "/stats/prometheus" => {
            let mut resp = net::text(StatusCode::OK, &shared.stats.encode());
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        "/config_dump" => {
            let runtime = shared.runtime.borrow().clone();
            net::json_pretty(StatusCode::OK, &runtime.snapshot)
        }
        _ => net::text(StatusCode::NOT_FOUND, "admin endpoints: /ready /stats/prometheus /config_dump\n"),
    }
}
