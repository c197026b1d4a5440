//! Security routes: `GET /api/v1/events` (security events, newest first) and
//! `POST /api/v1/enrol` (a device's certificate request for a single-use token).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::security::enrol::{self, EnrolError};
use crate::security::events::{Event, Filter, Kind};

/// Largest enrolment request body.
const MAX_ENROL_BYTES: usize = 64 << 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub kind: Option<String>,
    pub device: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/events?kind=K&device=D&limit=N`.
pub async fn events(
    AxumState(app): AxumState<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(k) => Some(Kind::parse(k).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown event kind {k:?}; expected one of {}",
                known.join(", ")
            ))
        })?),
    };
    let list: Vec<Event> = app.state.security.events.list(&Filter {
        kind,
        device: q.device.filter(|d| !d.is_empty()),
        limit: q.limit,
    });
    Ok(Json(serde_json::json!({ "events": list })))
}

/// `POST /api/v1/enrol` with `{"token": "...", "csr": "-----BEGIN CERTIFICATE REQUEST..."}`.
pub async fn enrol(
    AxumState(app): AxumState<AppState>,
    request: Request,
) -> Result<Json<enrol::Response>, ApiError> {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let body = axum::body::to_bytes(request.into_body(), MAX_ENROL_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request: {e}")))?;
    let req: enrol::Request = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"token\": \"...\", \"csr\": \"PEM\"}}: {e}"
        ))
    })?;
    let security = Arc::clone(&app.state.security);
    let done = tokio::task::spawn_blocking(move || enrol::enrol(&security, &req, source))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match done {
        Ok(r) => Ok(Json(r)),
        Err(e @ EnrolError::NoCa) => Err(ApiError::not_found(e.to_string())),
        Err(e @ EnrolError::BadToken) => Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string())),
        Err(e @ EnrolError::BadRequest(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ EnrolError::Internal(_)) => {
            tracing::error!(error = %e, "enrolment failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    }
}
