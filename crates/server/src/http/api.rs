//! Handlers of the fleet REST API: the device list (see [`super::list`]) and detail, fleet
//! roll-ups, integrity, raw samples, and ingest.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::State as AxumState;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleetmon_protocol::decode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::list::{Brief, DeviceList, ListQuery, assess_all, device_list};
use crate::fleet::availability::Transition;
use crate::fleet::energy::Estimate;
use crate::fleet::health::{self, Health, Level};
use crate::fleet::{Counts, Device, LastValue, Status, Tags, Transport, tags};
use crate::ingest::Accepted;
use crate::state::State;
use crate::store::{Point, Selector};
use crate::telemetry::RejectLabels;

/// A device as the API shows it.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub status: Status,
    /// ok / warning / critical, with every reason.
    pub health: Health,
    /// Operator-set facts: site, group, model, lat, lon, gateway...
    pub tags: Tags,
    /// From the device's `device_info` (or its `model` tag).
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// Status last published by the device on its status topic (`online`, `offline`).
    pub reported_status: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub boot_id: String,
    pub transport: Option<Transport>,
    pub address: Option<String>,
    pub batches_received: u64,
    pub batches_duplicate: u64,
    pub batches_rejected: u64,
    /// Batch numbers not (yet) received between the lowest and the highest received; the
    /// `integrity.missing` counter holds those older than the grace period.
    pub batches_missing: u64,
    /// Batches the device reported dropping from its own spool.
    pub batches_dropped_on_device: u64,
    pub samples_received: u64,
    /// When and why the device last went offline.
    pub last_disconnect: Option<Transition>,
    /// Milliseconds since the last online/offline change.
    pub in_state_ms: Option<i64>,
    /// Went offline at least 5 times in the last 10 minutes.
    pub flapping: bool,
    /// Device clock minus server clock, ms (positive: ahead).
    pub clock_skew_ms: Option<i64>,
    /// Age of the newest sample of the last batch on arrival, ms.
    pub data_latency_ms: Option<i64>,
    pub integrity: Counts,
    pub last_values: Vec<LastValue>,
    /// Received batch numbers as inclusive ranges (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<[u64; 2]>>,
    /// Online/offline changes, oldest first (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<Vec<Transition>>,
    /// Drain rate and time to empty of the battery that empties first, from the last 24 h of
    /// `battery_charge_ratio` (detail view only, when the device has a battery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<Estimate>,
    /// When each filling filesystem will be full, with the uncertainty band (detail view
    /// only; mounts that are not filling are left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_full: Option<Vec<crate::fleet::derived::DiskForecast>>,
}

/// The device's battery estimate (see [`crate::fleet::derived::battery_estimate`]).
pub fn battery(st: &State, device: &str, now_ms: i64) -> Option<Estimate> {
    crate::fleet::derived::battery_estimate(st.store.as_ref(), device, now_ms)
}

pub fn view(id: &str, d: &Device, st: &State, now_ms: i64, detail: bool) -> DeviceView {
    let integrity = d.integrity.counts(now_ms, st.missing_grace_ms);
    let status = d.status(now_ms, st.offline_after_ms);
    DeviceView {
        id: id.to_owned(),
        status,
        health: health::assess(
            d,
            status,
            now_ms,
            integrity.missing,
            &st.thresholds,
            st.firmware_policy.as_ref(),
        ),
        tags: d.tags.clone(),
        model: d.tag_or_info("model").map(str::to_owned),
        firmware: d.info("firmware").map(str::to_owned),
        reported_status: d.reported_status.clone(),
        first_seen_ms: d.first_seen_ms,
        last_seen_ms: d.last_seen_ms,
        boot_id: d.boot_id.clone(),
        transport: d.last_transport,
        address: d.address.clone(),
        batches_received: integrity.received,
        batches_duplicate: integrity.duplicate,
        batches_rejected: integrity.corrupt,
        batches_missing: d.integrity.gaps(),
        batches_dropped_on_device: integrity.device_dropped,
        samples_received: d.samples_received,
        last_disconnect: d.availability.last_offline().copied(),
        in_state_ms: d.availability.in_state_ms(now_ms),
        flapping: d.availability.is_flapping(now_ms),
        clock_skew_ms: d.timing.skew_ms(),
        data_latency_ms: d.timing.latency_ms(),
        integrity,
        last_values: d.last_values(),
        seqs: detail.then(|| d.integrity.stored().ranges().to_vec()),
        availability: detail.then(|| d.availability.history().copied().collect()),
        battery: if detail {
            battery(st, id, now_ms)
        } else {
            None
        },
        disk_full: detail
            .then(|| crate::fleet::derived::disk_forecasts(st.store.as_ref(), id, now_ms)),
    }
}

/// `GET /api/v1/devices[?status=&health=&site=&group=&model=&firmware=&q=&sort=&limit=&offset=]`.
pub async fn list_devices(
    AxumState(app): AxumState<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(device_list(&app, &q)?))
}

/// `GET /api/v1/devices/{id}`.
pub async fn get_device(
    AxumState(app): AxumState<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let st = &app.state;
    let registry = st.registry();
    let d = registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device {id:?}")))?;
    Ok(Json(view(&id, d, st, st.now_ms(), true)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesQuery {
    pub device: Option<String>,
    pub metric: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct SeriesView {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    /// `[ts_ms, value]` pairs, ascending by time.
    pub points: Vec<(i64, f64)>,
}

/// `GET /api/v1/samples?device=D&metric=M&start_ms=A&end_ms=B`: raw points.
pub async fn samples(
    AxumState(app): AxumState<AppState>,
    ApiQuery(q): ApiQuery<SamplesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if q.device.is_none() && q.metric.is_none() {
        return Err(ApiError::bad_request(
            "give at least one of `device` and `metric`",
        ));
    }
    let mut selector = Selector {
        metric: q.metric,
        labels: BTreeMap::new(),
    };
    if let Some(d) = q.device {
        selector.labels.insert("device".to_owned(), d);
    }
    let series: Vec<SeriesView> = app
        .state
        .store
        .select(
            &selector,
            q.start_ms.unwrap_or(i64::MIN),
            q.end_ms.unwrap_or(i64::MAX),
        )
        .into_iter()
        .map(|s| SeriesView {
            metric: s.metric,
            labels: s.labels,
            points: s
                .points
                .iter()
                .map(|&Point { ts_ms, value }| (ts_ms, value))
                .collect(),
        })
        .collect();
    Ok(Json(serde_json::json!({ "series": series })))
}

/// `POST /api/v1/ingest`: one batch, protobuf frame or JSON. Answers 200 only once the batch
/// is durable (or was already stored); 429 with `Retry-After` when its device is over its
/// message rate.
pub async fn ingest(
    AxumState(app): AxumState<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    cert: Option<Extension<super::https::DeviceCert>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, Response> {
    let st = &app.state;
    let reject = |reason: &'static str| {
        st.telemetry
            .rejected
            .get_or_create(&RejectLabels {
                transport: "http",
                reason,
            })
            .inc();
    };
    let body = body.map_err(|e| {
        reject("too_large");
        ApiError::new(
            e.status(),
            format!(
                "request body rejected: {} (at most {} bytes accepted)",
                e.body_text(),
                st.limits.max_payload_bytes
            ),
        )
        .into_response()
    })?;
    let (batch, _) = decode(&body, &st.limits).map_err(|e| {
        reject(e.kind());
        tracing::warn!(reason = %e, "HTTP batch rejected");
        ApiError::from(e).into_response()
    })?;
    let source = peer.map(|p| p.0.0);
    // Over HTTPS a batch comes from the device whose certificate opened the connection.
    if let Some(Extension(super::https::DeviceCert(cert))) = cert
        && cert.as_deref() != Some(batch.device.as_str())
    {
        reject("unauthenticated");
        let (status, why) = match &cert {
            None => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "HTTPS ingest needs the device's client certificate; none was presented for device {:?}",
                    batch.device
                ),
            ),
            Some(own) => (
                StatusCode::FORBIDDEN,
                format!(
                    "the certificate of device {own:?} may not send batches of device {:?}",
                    batch.device
                ),
            ),
        };
        st.security.events.record(
            st.now_ms(),
            crate::security::events::Kind::AclViolation,
            cert.as_deref().or(Some(batch.device.as_str())),
            source,
            why.clone(),
        );
        return Err(ApiError::new(status, why).into_response());
    }
    if let Err(limited) = st.check_device_rate(&batch.device, source, "answered 429") {
        reject("rate_limited");
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "device {:?} is over its message rate; batch {} not stored, retry in {} s",
                batch.device,
                batch.seq,
                limited.retry_after_secs()
            ),
        )
        .into_response();
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(limited.retry_after_secs()),
        );
        return Err(r);
    }
    if let Err(why) = st.check_series_budget(&batch) {
        reject("too_many_series");
        tracing::warn!(device = %batch.device, reason = %why, "HTTP batch rejected");
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why).into_response());
    }
    let (device, seq) = (batch.device.clone(), batch.seq);
    let outcome = app
        .ingest
        .store(batch, Transport::Http)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let now = st.now_ms();
    st.registry_mut().http_seen(&device, now, None);
    Ok(Json(serde_json::json!({
        "status": outcome.as_str(),
        "device": device,
        "seq": seq,
        "duplicate": outcome == Accepted::Duplicate,
    })))
}

/// `PUT /api/v1/devices/{id}/tags` with a JSON object of tags: replaces the device's tags
/// (registering the device if it was never seen) and keeps them in `DATA_DIR/tags.json`.
pub async fn put_tags(
    AxumState(app): AxumState<AppState>,
    actor: super::auth::Actor,
    ApiPath(id): ApiPath<String>,
    body: Result<Json<Tags>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DeviceView>, ApiError> {
    if !fleetmon_protocol::validate::is_valid_device_id(&id) {
        return Err(ApiError::bad_request(format!(
            "device id {id:?} is invalid: use 1 to 128 of A-Z a-z 0-9 . _ : -"
        )));
    }
    let Json(new_tags) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "tags must be a JSON object of strings: {}",
            e.body_text()
        ))
    })?;
    let st = &app.state;
    let detail = format!(
        "device {id}: {}",
        serde_json::to_string(&new_tags).unwrap_or_default()
    );
    let d = st.set_tags(&id, new_tags).map_err(|e| match e {
        tags::TagError::File { .. } => {
            tracing::error!(error = %e, "tags not saved");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    super::auth::audit(&app, &actor, "device.tags", "ok", detail).await;
    Ok(Json(view(&id, &d, st, st.now_ms(), true)))
}

/// Counts of one slice of the fleet.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Rollup {
    pub total: usize,
    pub online: usize,
    pub offline: usize,
    pub ok: usize,
    pub warning: usize,
    pub critical: usize,
}

impl Rollup {
    pub fn add(&mut self, status: Status, level: Level) {
        self.total += 1;
        match status {
            Status::Online => self.online += 1,
            Status::Offline => self.offline += 1,
        }
        match level {
            Level::Ok => self.ok += 1,
            Level::Warning => self.warning += 1,
            Level::Critical => self.critical += 1,
        }
    }
}

/// The fleet rolled up: in all, by site, by group, and the integrity totals.
#[derive(Debug, Serialize)]
pub struct FleetView {
    pub fleet: Rollup,
    pub sites: BTreeMap<String, Rollup>,
    pub groups: BTreeMap<String, Rollup>,
    pub integrity: Counts,
}

/// Devices without a site or group tag are counted under this name.
pub const UNTAGGED: &str = "(none)";

impl FleetView {
    /// Rolls up assessed devices.
    pub fn of(devices: &[Brief<'_>], integrity: Counts) -> Self {
        let mut out = FleetView {
            fleet: Rollup::default(),
            sites: BTreeMap::new(),
            groups: BTreeMap::new(),
            integrity,
        };
        for b in devices {
            let (status, level) = (b.status, b.health.level);
            out.fleet.add(status, level);
            let site = b.tag("site").unwrap_or(UNTAGGED);
            let group = b.tag("group").unwrap_or(UNTAGGED);
            out.sites
                .entry(site.to_owned())
                .or_default()
                .add(status, level);
            out.groups
                .entry(group.to_owned())
                .or_default()
                .add(status, level);
        }
        out
    }
}

/// `GET /api/v1/fleet`.
pub async fn fleet(AxumState(app): AxumState<AppState>) -> Json<FleetView> {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let all = assess_all(&registry, st, now);
    Json(FleetView::of(
        &all,
        registry.integrity_totals(now, st.missing_grace_ms),
    ))
}

/// Integrity counters of the fleet and of each device.
#[derive(Debug, Serialize)]
pub struct IntegrityReport {
    pub totals: Counts,
    pub devices: Vec<DeviceIntegrity>,
}

#[derive(Debug, Serialize)]
pub struct DeviceIntegrity {
    pub id: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /api/v1/integrity`: fleet totals and per-device counters, sorted by id.
pub async fn integrity(AxumState(app): AxumState<AppState>) -> Json<IntegrityReport> {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let mut devices: Vec<DeviceIntegrity> = registry
        .iter()
        .map(|(id, d)| DeviceIntegrity {
            id: id.clone(),
            counts: d.integrity.counts(now, st.missing_grace_ms),
        })
        .collect();
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Json(IntegrityReport {
        totals: registry.integrity_totals(now, st.missing_grace_ms),
        devices,
    })
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}
