//! `GET /api/v1/stream[?device=ID]`: server-sent events that tell a page something changed,
//! so it can re-read what it shows. Checked every half second:
//!
//! - `fleet`: the fleet's counts by status and health, its integrity totals and its alerts
//!   (`{"firing","pending","muted"}`), at first and then every 5 s when devices reported or
//!   the counts changed (a device going offline reports nothing), and at once when the alert
//!   counts change; assessing every device is the costly part, hence not every tick;
//! - `devices`: the ids of devices that reported since the last event (at most 100, with the
//!   full `count`); with `?device=ID` instead
//! - `device`: that device's status, health level, last seen and batches received, when it
//!   reported.
//!
//! A page's stream ends when it goes away or the server shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::AppState;
use super::api::Rollup;
use super::list::{Brief, assess_all};
use crate::alerting::AlertCounts;
use crate::fleet::Counts;

const TICK: Duration = Duration::from_millis(500);
/// The fleet's counts are recomputed at most this often.
const FLEET_REFRESH_MS: i64 = 5_000;
/// Device ids listed in one `devices` event.
const MAX_IDS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    pub device: Option<String>,
}

/// The receiving end as the stream axum's [`Sse`] wants.
pub struct Events(mpsc::Receiver<Event>);

impl Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

pub async fn stream(
    AxumState(app): AxumState<AppState>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<StreamQuery>,
) -> Result<Sse<KeepAliveStream<Events>>, super::error::ApiError> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(produce(app, q.device, tx));
    Ok(Sse::new(Events(rx)).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Serialize, PartialEq)]
struct FleetEvent {
    #[serde(flatten)]
    counts: Rollup,
    integrity: Counts,
    alerts: AlertCounts,
}

#[derive(Debug, Serialize)]
struct DeviceEvent<'a> {
    id: &'a str,
    status: &'static str,
    level: &'static str,
    last_seen_ms: i64,
    batches_received: u64,
}

fn event(name: &str, data: &impl Serialize) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}

async fn produce(app: AppState, device: Option<String>, tx: mpsc::Sender<Event>) {
    let mut shutdown = app.shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watermark = i64::MIN;
    let mut last_fleet: Option<FleetEvent> = None;
    let mut last_fleet_ms = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
            () = tx.closed() => return,
        }
        let events = match &device {
            Some(id) => device_events(&app, id, &mut watermark),
            None => fleet_events(&app, &mut watermark, &mut last_fleet, &mut last_fleet_ms),
        };
        for e in events {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}

fn device_events(app: &AppState, id: &str, watermark: &mut i64) -> Vec<Event> {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let Some(d) = registry.get(id) else {
        return Vec::new();
    };
    if d.last_seen_ms <= *watermark {
        return Vec::new();
    }
    *watermark = d.last_seen_ms;
    let b = Brief::of(id, d, st, now);
    let data = DeviceEvent {
        id,
        status: super::web::status_name(b.status),
        level: super::web::level_name(b.health.level),
        last_seen_ms: d.last_seen_ms,
        batches_received: d.integrity.counts(now, st.missing_grace_ms).received,
    };
    event("device", &data).into_iter().collect()
}

fn fleet_events(
    app: &AppState,
    watermark: &mut i64,
    last: &mut Option<FleetEvent>,
    last_ms: &mut i64,
) -> Vec<Event> {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let mut changed: Vec<&str> = Vec::new();
    let mut newest = *watermark;
    let mut count = 0usize;
    for (id, d) in registry.iter() {
        if d.last_seen_ms > *watermark {
            count += 1;
            if changed.len() < MAX_IDS {
                changed.push(id);
            }
            newest = newest.max(d.last_seen_ms);
        }
    }
    let mut out = Vec::new();
    let first = last.is_none();
    let alerts = app.alerting.counts(now);
    let alerts_changed = last.as_ref().is_some_and(|l| l.alerts != alerts);
    if first || alerts_changed || now - *last_ms >= FLEET_REFRESH_MS {
        let all = assess_all(&registry, st, now);
        let mut counts = Rollup::default();
        for b in &all {
            counts.add(b.status, b.health.level);
        }
        let fleet = FleetEvent {
            counts,
            integrity: registry.integrity_totals(now, st.missing_grace_ms),
            alerts,
        };
        if count > 0 || last.as_ref() != Some(&fleet) {
            out.extend(event("fleet", &fleet));
        }
        *last = Some(fleet);
        *last_ms = now;
    }
    if count > 0 && !first {
        out.extend(event(
            "devices",
            &serde_json::json!({"changed": changed, "count": count}),
        ));
    }
    *watermark = newest;
    out
}
