//! The Prometheus-compatible query API under `/prometheus/api/v1/`: `query`, `query_range`,
//! `series`, `labels`, `label/{name}/values`, `metadata`, `format_query` and
//! `status/buildinfo`, each as GET (query
//! string) and POST (form body), answering in Prometheus's JSON shapes so Grafana's Prometheus
//! data source works against fleetmon.
//!
//! Evaluation runs on a blocking thread through `fleetmon-promql`, reading the server's
//! [`SampleStore`]. Errors map to Prometheus's `errorType`s here: `bad_data` 400, `execution`
//! 422, `timeout` 503.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetmon_promql::params::{parse_duration, parse_time};
use fleetmon_promql::{Engine, Error as QueryError, Series, Value, format_value};
use fleetmon_tsdb::Matcher;
use serde_json::{Map, Value as JsonValue, json};

use super::AppState;
use crate::store::StoreSource;

/// Most points a range query may return per series (Prometheus's limit).
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// An engine with the server's query options (lookback, sample limit, timeout).
fn engine(app: &AppState) -> Engine {
    Engine::new(app.state.query.clone())
}

/// A Prometheus API error.
#[derive(Debug)]
pub struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }

    fn query(e: QueryError) -> Self {
        let (status, kind) = match &e {
            QueryError::Parse(_) | QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            QueryError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            QueryError::TooManySamples { .. }
            | QueryError::Execution(_)
            | QueryError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        };
        let message = match &e {
            QueryError::Parse(_) => format!("invalid parameter \"query\": {e}"),
            _ => e.to_string(),
        };
        Self {
            status,
            kind,
            message,
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

/// Prometheus's success envelope around `data`.
pub fn success(data: JsonValue) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

/// Decodes `application/x-www-form-urlencoded` (also the query string) into pairs.
pub fn decode_form(s: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(p), String::new()),
        })
        .collect()
}

/// Parameters from the query string and, for POST, the form body.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, body: &Bytes) -> Self {
        let mut p = decode_form(query.as_deref().unwrap_or(""));
        p.extend(decode_form(&String::from_utf8_lossy(body)));
        Self(p)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, PromError> {
        self.get(name)
            .map(|s| {
                parse_time(s)
                    .map_err(|e| PromError::bad_data(format!("invalid parameter \"{name}\": {e}")))
            })
            .transpose()
    }

    fn query(&self) -> Result<String, PromError> {
        self.get("query")
            .map(str::to_owned)
            .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": missing"))
    }

    /// The `start`/`end` range of the metadata endpoints, `None` when neither is given (as in
    /// Prometheus, a missing end is the end of time, a missing start its beginning).
    fn time_range(&self) -> Result<Option<(i64, i64)>, PromError> {
        let (start, end) = (self.time("start")?, self.time("end")?);
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        let (start, end) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
        if end < start {
            return Err(PromError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        Ok(Some((start, end)))
    }

    /// The `match[]` selectors as matcher lists.
    fn matches(&self) -> Result<Vec<Vec<Matcher>>, PromError> {
        self.all("match[]")
            .into_iter()
            .map(selector_matchers)
            .collect()
    }
}

/// A `match[]` selector's matchers.
fn selector_matchers(s: &str) -> Result<Vec<Matcher>, PromError> {
    fleetmon_promql::engine::selector_matchers(s)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"match[]\": {e}")))
}

/// A timestamp as Prometheus writes it: seconds, with milliseconds only when there are any.
fn ts_json(t_ms: i64) -> JsonValue {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        json!(t_ms as f64 / 1000.0)
    }
}

fn point(t_ms: i64, v: f64) -> JsonValue {
    json!([ts_json(t_ms), format_value(v)])
}

fn metric(labels: &fleetmon_promql::LabelSet) -> JsonValue {
    JsonValue::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), JsonValue::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn matrix(series: &[Series]) -> JsonValue {
    JsonValue::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "values": s.points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PromError> + Send + 'static,
) -> Result<T, PromError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PromError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: e.to_string(),
        })?
}

/// `GET|POST /prometheus/api/v1/query`.
pub async fn query(
    AxumState(app): AxumState<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let query = params.query()?;
    let t = params.time("time")?.unwrap_or_else(|| app.state.now_ms());
    let store = Arc::clone(&app.state.store);
    let engine = engine(&app);
    let value = run_blocking(move || {
        engine
            .instant(&StoreSource(store), &query, t)
            .map_err(PromError::query)
    })
    .await?;
    let (kind, result) = match value {
        Value::Scalar(v) => ("scalar", point(t, v)),
        Value::String(s) => ("string", json!([ts_json(t), s])),
        Value::Vector(v) => (
            "vector",
            JsonValue::Array(
                v.iter()
                    .map(|s| json!({"metric": metric(&s.labels), "value": point(t, s.v)}))
                    .collect(),
            ),
        ),
        Value::Matrix(m) => ("matrix", matrix(&m)),
    };
    Ok(success(json!({"resultType": kind, "result": result})))
}

/// `GET|POST /prometheus/api/v1/query_range`.
pub async fn query_range(
    AxumState(app): AxumState<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let query = params.query()?;
    let start = params
        .time("start")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"start\": missing"))?;
    let end = params
        .time("end")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"end\": missing"))?;
    let step = params
        .get("step")
        .ok_or_else(|| PromError::bad_data("invalid parameter \"step\": missing"))
        .and_then(|s| {
            parse_duration(s)
                .map_err(|e| PromError::bad_data(format!("invalid parameter \"step\": {e}")))
        })?;
    if end < start {
        return Err(PromError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(PromError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if end.saturating_sub(start) / step > MAX_POINTS_PER_SERIES {
        return Err(PromError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let store = Arc::clone(&app.state.store);
    let engine = engine(&app);
    let series = run_blocking(move || {
        engine
            .range(&StoreSource(store), &query, start, end, step)
            .map_err(PromError::query)
    })
    .await?;
    Ok(matrix_response(&series))
}

/// The success envelope around a matrix, written straight into the body: a range query's
/// answer can hold millions of points, and a `serde_json::Value` per point costs more than the
/// query's evaluation.
fn matrix_response(series: &[Series]) -> Response {
    use std::fmt::Write as _;
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let mut body = String::with_capacity(64 + series.len() * 160 + points * 32);
    body.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"metric":"#);
        body.push_str(&metric(&s.labels).to_string());
        body.push_str(r#","values":["#);
        for (j, &(t, v)) in s.points.iter().enumerate() {
            if j > 0 {
                body.push(',');
            }
            if t % 1000 == 0 {
                let _ = write!(body, "[{},\"{}\"]", t / 1000, format_value(v));
            } else {
                let _ = write!(body, "[{},\"{}\"]", ts_json(t), format_value(v));
            }
        }
        body.push_str("]}");
    }
    body.push_str("]}}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET|POST /prometheus/api/v1/series`.
pub async fn series(
    AxumState(app): AxumState<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let matches = params.matches()?;
    if matches.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let range = params.time_range()?;
    let mut all = std::collections::BTreeSet::new();
    for m in &matches {
        let found = match range {
            Some((start, end)) => app.state.store.series_in_range(m, start, end),
            None => app.state.store.series_matching(m),
        };
        all.extend(found);
    }
    Ok(success(JsonValue::Array(
        all.iter()
            .map(|l| {
                JsonValue::Object(
                    l.iter()
                        .map(|(k, v)| (k.to_owned(), JsonValue::String(v.to_owned())))
                        .collect(),
                )
            })
            .collect(),
    )))
}

/// Union over `match[]` (or everything) of `f`'s strings, sorted. With `start`/`end`, only
/// series with samples in that range count, and `of_series` picks the strings from their
/// label sets.
fn union(
    app: &AppState,
    params: &Params,
    f: impl Fn(&[Matcher]) -> Vec<String>,
    of_series: impl Fn(&fleetmon_tsdb::Labels) -> Vec<String>,
) -> Result<Vec<String>, PromError> {
    let mut matches = params.matches()?;
    if matches.is_empty() {
        matches.push(Vec::new());
    }
    let range = params.time_range()?;
    let mut out = std::collections::BTreeSet::new();
    for m in &matches {
        match range {
            Some((start, end)) => {
                for labels in app.state.store.series_in_range(m, start, end) {
                    out.extend(of_series(&labels));
                }
            }
            None => out.extend(f(m)),
        }
    }
    Ok(out.into_iter().collect())
}

/// `GET|POST /prometheus/api/v1/labels`.
pub async fn labels(
    AxumState(app): AxumState<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let names = union(
        &app,
        &params,
        |m| app.state.store.label_names(m),
        |l| l.iter().map(|(k, _)| k.to_owned()).collect(),
    )?;
    Ok(success(json!(names)))
}

/// `GET /prometheus/api/v1/label/{name}/values`.
pub async fn label_values(
    AxumState(app): AxumState<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let values = union(
        &app,
        &params,
        |m| app.state.store.label_values(&name, m),
        |l| l.get(&name).map(str::to_owned).into_iter().collect(),
    )?;
    Ok(success(json!(values)))
}

/// `GET /prometheus/api/v1/status/buildinfo`: what Grafana reads to pick its query features.
/// fleetmon answers as the Prometheus version its semantics follow.
pub async fn buildinfo() -> Response {
    success(json!({
        "version": "2.42.0",
        "revision": "fleetmon",
        "branch": "fleetmon",
        "buildUser": "fleetmon",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// `GET /prometheus/api/v1/metadata`: fleetmon keeps no metric metadata yet.
pub async fn metadata() -> Response {
    success(json!({}))
}

/// `GET|POST /prometheus/api/v1/format_query`.
pub async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let query = params.query()?;
    let expr = fleetmon_promql::parse(&query).map_err(PromError::query)?;
    Ok(success(json!(expr.prettify())))
}
