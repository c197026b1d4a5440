//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the HTTP API, kept in the
//! repository as `docs/openapi.json` and compiled in, so clients and tools (schemathesis,
//! code generators) fetch exactly what this build serves. A test in
//! `crates/fleetmon/tests/openapi.rs` holds it to the router: every route is described, and
//! nothing else.

use axum::http::header;
use axum::response::IntoResponse;

/// The description, as written in `docs/openapi.json`.
pub const SPEC: &str = include_str!("../../../../docs/openapi.json");

pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SPEC)
}
