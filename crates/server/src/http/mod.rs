//! The HTTP surface: fleet REST API under `/api/v1`, ingest, the Prometheus-compatible query
//! API, self-metrics, health, and the dashboard.
//!
//! - [`auth`]: who may call what — sessions, API tokens, roles, CSRF (a middleware).
//! - [`login`]: the login page, login/logout/setup/whoami routes, the audit log route.
//! - [`openapi`]: the API's OpenAPI description (`docs/openapi.json`), served as is.
//! - [`users`]: operator accounts and API tokens (admins).
//! - [`api`]: device detail, fleet roll-ups, integrity, samples and ingest handlers.
//! - [`list`]: the device list's filters, sorting and paging (API and dashboard).
//! - [`live`]: server-sent events telling pages what changed.
//! - [`prometheus`]: PromQL over HTTP.
//! - [`security`]: security events and device enrolment.
//! - [`web`]: the dashboard's pages and embedded assets.
//! - [`error`]: the one place errors become status codes.
//! - [`extract`]: body, query and path extractors whose refusals are API errors.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod https;
pub mod list;
pub mod live;
pub mod login;
pub mod openapi;
pub mod prometheus;
pub mod security;
pub mod users;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::fleet::Status;
use crate::ingest::Ingest;
use crate::state::State;
use crate::telemetry::StatusLabels;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub state: Arc<State>,
    pub ingest: Ingest,
    pub alerting: Arc<crate::alerting::Alerting>,
    /// Accounts, sessions, tokens, throttling, the audit log.
    pub operators: Arc<crate::operators::Operators>,
    /// Turns true when the server stops; long-lived responses (event streams) end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Every route: its path and its handlers. The router is built from this table and nothing
/// else, so [`route_paths`] is the whole HTTP surface; a test holds `docs/openapi.json` to it.
fn routes(body_limit: usize) -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/", get(web::overview::page)),
        ("/devices", get(web::devices::page)),
        ("/devices/{id}", get(web::device::page)),
        ("/integrity", get(web::integrity::page)),
        ("/energy", get(web::energy::page)),
        ("/firmware", get(web::firmware::page)),
        ("/alerts", get(web::alerts::page)),
        ("/security", get(web::security::page)),
        ("/assets/{*name}", get(web::assets::serve)),
        ("/api/v1/stream", get(live::stream)),
        ("/healthz", get(healthz)),
        ("/login", get(login::page).post(login::form_login)),
        ("/logout", post(login::form_logout)),
        ("/api/v1/openapi.json", get(openapi::serve)),
        ("/api/v1/login", post(login::api_login)),
        ("/api/v1/logout", post(login::api_logout)),
        ("/api/v1/auth", get(login::whoami)),
        ("/api/v1/setup", post(login::setup)),
        ("/api/v1/audit", get(login::audit_log)),
        (
            "/api/v1/users",
            get(users::list_users).post(users::add_user),
        ),
        ("/api/v1/users/{name}", delete(users::remove_user)),
        (
            "/api/v1/tokens",
            get(users::list_tokens).post(users::create_token),
        ),
        ("/api/v1/tokens/{name}", delete(users::revoke_token)),
        ("/metrics", get(metrics)),
        ("/api/v1/devices", get(api::list_devices)),
        ("/api/v1/devices/{id}", get(api::get_device)),
        ("/api/v1/devices/{id}/tags", put(api::put_tags)),
        ("/api/v1/fleet", get(api::fleet)),
        ("/api/v1/alerts", get(alerts::alerts)),
        ("/api/v1/rules", get(alerts::rules)),
        ("/api/v1/rules/reload", post(alerts::reload)),
        (
            "/api/v1/silences",
            get(alerts::silences).post(alerts::add_silence),
        ),
        ("/api/v1/silences/{id}", delete(alerts::expire_silence)),
        ("/prometheus/api/v1/alerts", get(alerts::prometheus_alerts)),
        ("/prometheus/api/v1/rules", get(alerts::prometheus_rules)),
        ("/api/v1/samples", get(api::samples)),
        ("/api/v1/integrity", get(api::integrity)),
        ("/api/v1/events", get(security::events)),
        ("/api/v1/enrol", post(security::enrol)),
        (
            "/api/v1/ingest",
            post(api::ingest).layer(DefaultBodyLimit::max(body_limit)),
        ),
        (
            "/prometheus/api/v1/query",
            get(prometheus::query).post(prometheus::query),
        ),
        (
            "/prometheus/api/v1/query_range",
            get(prometheus::query_range).post(prometheus::query_range),
        ),
        (
            "/prometheus/api/v1/series",
            get(prometheus::series).post(prometheus::series),
        ),
        (
            "/prometheus/api/v1/labels",
            get(prometheus::labels).post(prometheus::labels),
        ),
        (
            "/prometheus/api/v1/label/{name}/values",
            get(prometheus::label_values),
        ),
        ("/prometheus/api/v1/metadata", get(prometheus::metadata)),
        (
            "/prometheus/api/v1/status/buildinfo",
            get(prometheus::buildinfo),
        ),
        (
            "/prometheus/api/v1/format_query",
            get(prometheus::format_query).post(prometheus::format_query),
        ),
    ]
}

/// The path of every route, in the router's syntax (`{id}`, `{*name}`).
pub fn route_paths() -> Vec<&'static str> {
    routes(0).into_iter().map(|(path, _)| path).collect()
}

pub fn router(app: AppState) -> Router {
    let body_limit = app.state.limits.max_payload_bytes;
    routes(body_limit)
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authorize,
        ))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(AxumState(app): AxumState<AppState>) -> impl IntoResponse {
    let st = &app.state;
    let (online, offline) = {
        let now = st.now_ms();
        let registry = st.registry();
        let online = registry
            .iter()
            .filter(|(_, d)| d.status(now, st.offline_after_ms) == Status::Online)
            .count();
        (online, registry.len() - online)
    };
    let t = &st.telemetry;
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    t.devices
        .get_or_create(&StatusLabels { status: "online" })
        .set(to_i64(online as u64));
    t.devices
        .get_or_create(&StatusLabels { status: "offline" })
        .set(to_i64(offline as u64));
    let stats = st.store.stats();
    t.store_series.set(to_i64(stats.series));
    t.store_samples.set(to_i64(stats.samples));
    t.store_disk_bytes.set(to_i64(stats.disk_bytes));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
}
