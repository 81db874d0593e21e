//! details (Istio's Ruby app): the book's details by id, `/health`.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::json;

pub fn router() -> Router {
    Router::new()
        .route("/health", get(|| async { json(StatusCode::OK, r#"{"status":"Details is healthy"}"#) }))
        .route("/details", get(details))
        .route("/details/{*rest}", get(details))
}

async fn details(req: Request) -> Response {
    let last = req.uri().path().rsplit('/').next().unwrap_or("");
    match last.parse::<i64>().ok() {
        Some(id) => json(StatusCode::OK, body(id)),
        None => json(StatusCode::BAD_REQUEST, r#"{"error":"please provide numeric product id"}"#),
    }
}

/// The details of book `id` (every id is the same paperback, as in Istio's sample).
pub fn body(id: i64) -> String {
    format!(
        r#"{{"id":{id},"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}}"#
    )
}
