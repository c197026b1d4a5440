//! Alerting API: `/api/v1/alerts`, `/api/v1/rules` (+ `POST /api/v1/rules/reload`),
//! `/api/v1/silences` (list, add, expire), and the same alerts and rules under `/prometheus`
//! in Prometheus's `{"status": "success", "data": ...}` envelope for Grafana.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::Response;
use fleetmon_alert::{Matcher, NewSilence};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Actor, audit};
use super::error::ApiError;
use super::extract::ApiPath;

pub async fn alerts(AxumState(app): AxumState<AppState>) -> Json<Value> {
    Json(app.alerting.alerts_json(app.state.now_ms()))
}

pub async fn rules(AxumState(app): AxumState<AppState>) -> Json<Value> {
    Json(app.alerting.rules_json())
}

pub async fn prometheus_alerts(AxumState(app): AxumState<AppState>) -> Response {
    super::prometheus::success(app.alerting.alerts_json(app.state.now_ms()))
}

pub async fn prometheus_rules(AxumState(app): AxumState<AppState>) -> Response {
    super::prometheus::success(app.alerting.rules_json())
}

/// Re-reads rule files and dispatcher settings; alert state is kept.
pub async fn reload(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
) -> Result<Json<Value>, ApiError> {
    let alerting = app.alerting.clone();
    let done = tokio::task::spawn_blocking(move || alerting.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = done {
        audit(&app, &actor, "rules.reload", "failed", e.to_string()).await;
        return Err(ApiError::bad_request(e.to_string()));
    }
    audit(&app, &actor, "rules.reload", "ok", String::new()).await;
    Ok(Json(json!({"status": "reloaded"})))
}

pub async fn silences(AxumState(app): AxumState<AppState>) -> Json<Value> {
    Json(json!({"silences": app.alerting.silences_json(app.state.now_ms())}))
}

/// A silence as posted: Alertmanager's fields, or a `duration` instead of `endsAt`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PostedSilence {
    matchers: Vec<Matcher>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    duration: Option<String>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

pub async fn add_silence(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let posted: PostedSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("silence: {e}")))?;
    let now = app.state.now_ms();
    let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|s| {
                fleetmon_alert::time::parse_rfc3339(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "silence: {field} {s:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let starts_at = time("startsAt", &posted.starts_at)?.unwrap_or(now);
    let ends_at = match (time("endsAt", &posted.ends_at)?, &posted.duration) {
        (Some(t), None) => t,
        (None, Some(d)) => {
            let d = fleetmon_alert::duration::parse_duration(d)
                .map_err(|e| ApiError::bad_request(format!("silence: duration: {e}")))?;
            starts_at.saturating_add(d)
        }
        _ => {
            return Err(ApiError::bad_request(
                "silence: give exactly one of endsAt and duration",
            ));
        }
    };
    let detail = format!(
        "matchers {}, until {}, by {:?}: {:?}",
        serde_json::to_string(&posted.matchers).unwrap_or_default(),
        fleetmon_alert::time::format_rfc3339(ends_at),
        posted.created_by,
        posted.comment
    );
    let new = NewSilence {
        matchers: posted.matchers,
        starts_at,
        ends_at,
        created_by: posted.created_by,
        comment: posted.comment,
    };
    let id = app
        .alerting
        .add_silence(new, now)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(silence = %id, "silence added");
    audit(
        &app,
        &actor,
        "silence.add",
        "ok",
        format!("silence {id}: {detail}"),
    )
    .await;
    Ok((StatusCode::CREATED, Json(json!({"silenceID": id}))))
}

pub async fn expire_silence(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    app.alerting
        .expire_silence(&id, app.state.now_ms())
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    tracing::info!(silence = %id, "silence expired");
    audit(
        &app,
        &actor,
        "silence.expire",
        "ok",
        format!("silence {id}"),
    )
    .await;
    Ok(Json(json!({"silenceID": id, "state": "expired"})))
}
