//! The device registry: what the server knows about each device — when it was seen, how it is
//! connected, what it sent, what happened to each of its batch numbers — and whether it is
//! online.
//!
//! - [`availability`]: online/offline transitions with reasons; flapping.
//! - [`integrity`]: received, duplicate, missing, out of order, late, corrupt, device drops.
//! - [`timing`]: clock skew and data latency.
//! - [`tags`]: site, group, model, position — from the tags file and the API, attached as labels.
//! - [`energy`]: battery drain rate and time to empty.
//! - [`link`]: throughput per network interface.
//! - [`limits`]: temperature limits and link capacities per model and device.
//! - [`firmware`]: the firmware policy — minimum versions, vulnerable ranges.
//! - [`health`]: ok / warning / critical with reasons.
//! - [`trend`]: robust line fits for forecasts.
//! - [`anomaly`]: anomaly scores of incoming samples and of devices against their peers.
//! - [`derived`]: the series derived from all of the above, written into the store.
//! - [`series_refs`]: each device's derived series, resolved in the store once.
//!
//! The registry is rebuilt from the WAL on start (batches and integrity events); connection
//! state starts empty, so every device starts offline.

pub mod anomaly;
pub mod availability;
pub mod derived;
pub mod energy;
pub mod firmware;
pub mod health;
pub mod integrity;
pub mod last_values;
pub mod limits;
pub mod link;
pub mod series_refs;
pub mod tags;
pub mod timing;
pub mod trend;

use std::collections::{BTreeMap, HashMap};

use fleetmon_protocol::Batch;
pub use last_values::LastValues;
use serde::Serialize;

pub use availability::{Availability, Reason, Status};
pub use integrity::{Counts, Integrity};
pub use tags::Tags;
pub use timing::Timing;

/// How a batch reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Mqtt,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Transport::Mqtt => 1,
            Transport::Http => 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Transport::Mqtt),
            2 => Some(Transport::Http),
            _ => None,
        }
    }
}

/// What the registry needs of a stored batch (its samples live in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub device: String,
    pub boot_id: String,
    pub seq: u64,
    pub sent_at_ms: i64,
    pub dropped_before: u64,
    pub samples: u64,
    pub newest_ts_ms: Option<i64>,
}

impl BatchSummary {
    pub fn of(batch: &Batch) -> Self {
        Self {
            device: batch.device.clone(),
            boot_id: batch.boot_id.clone(),
            seq: batch.seq,
            sent_at_ms: batch.sent_at_ms,
            dropped_before: batch.dropped_before,
            samples: batch.samples.len() as u64,
            newest_ts_ms: batch.samples.iter().map(|s| s.ts_ms).max(),
        }
    }
}

/// The last value of one series of a device.
#[derive(Debug, Clone, Serialize)]
pub struct LastValue {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub ts_ms: i64,
    pub value: f64,
}

/// Everything known about one device.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub boot_id: String,
    pub last_transport: Option<Transport>,
    pub samples_received: u64,
    pub integrity: Integrity,
    pub availability: Availability,
    pub timing: Timing,
    /// Last value per series (labels without the device label).
    pub last_values: LastValues,
    /// Throughput per network interface, from the byte counters.
    pub links: link::LinkMeters,
    pub mqtt_sessions: u32,
    pub http_last_seen_ms: Option<i64>,
    /// Last payload on the device's status topic (`online`, `offline`).
    pub reported_status: Option<String>,
    pub address: Option<String>,
    /// The device's tags: the tags file's ([`tags::TagRules`]) with the API's over them.
    pub tags: Tags,
    /// The tags set through the API (what `DATA_DIR/tags.json` keeps).
    pub api_tags: Tags,
    /// Bumped whenever the device is changed through the registry; keys [`HealthCache`].
    pub generation: u64,
    /// The last health assessment, reused while nothing it depends on changed.
    pub health_cache: HealthCache,
}

/// What a cached assessment was made from: the device's generation and the inputs that move
/// with the clock alone (status, missing batches past the grace, recent disconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthKey {
    pub generation: u64,
    pub status: Status,
    pub missing: u64,
    pub disconnects: usize,
}

/// A device's last [`health::Health`], so a page over 10,000 devices does not assess each
/// one again on every request. Cloning a device starts with an empty cache.
#[derive(Default)]
pub struct HealthCache(std::sync::Mutex<Option<(HealthKey, std::sync::Arc<health::Health>)>>);

impl HealthCache {
    /// The cached health for `key`, or `assess()` stored under it.
    pub fn get_or(
        &self,
        key: HealthKey,
        assess: impl FnOnce() -> health::Health,
    ) -> std::sync::Arc<health::Health> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, h)) = slot.as_ref()
            && *k == key
        {
            return std::sync::Arc::clone(h);
        }
        let h = std::sync::Arc::new(assess());
        *slot = Some((key, std::sync::Arc::clone(&h)));
        h
    }
}

impl Clone for HealthCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for HealthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthCache")
    }
}

impl Device {
    pub fn status(&self, now_ms: i64, offline_after_ms: i64) -> Status {
        let http_fresh = self
            .http_last_seen_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= offline_after_ms);
        if self.mqtt_sessions > 0 || http_fresh {
            Status::Online
        } else {
            Status::Offline
        }
    }

    /// Records a stored batch: its summary and its samples' last values.
    pub fn record_batch(
        &mut self,
        batch: &Batch,
        transport: Transport,
        received_ms: i64,
        grace_ms: i64,
    ) {
        self.record_summary(&BatchSummary::of(batch), transport, received_ms, grace_ms);
        self.record_values(
            batch
                .samples
                .iter()
                .map(|s| (&s.metric, &s.labels, s.ts_ms, s.value)),
        );
    }

    /// Records a stored batch from its summary (what the WAL keeps of it).
    pub fn record_summary(
        &mut self,
        b: &BatchSummary,
        transport: Transport,
        received_ms: i64,
        grace_ms: i64,
    ) {
        self.seen(received_ms);
        self.boot_id.clone_from(&b.boot_id);
        self.last_transport = Some(transport);
        self.samples_received += b.samples;
        self.integrity
            .stored_batch(b.seq, b.dropped_before, received_ms, grace_ms);
        self.timing
            .observe(received_ms, b.sent_at_ms, b.newest_ts_ms);
    }

    /// Keeps the newest value of each series: (metric, labels without `device`, ts, value).
    pub fn record_values<'a>(
        &mut self,
        values: impl IntoIterator<Item = (&'a String, &'a BTreeMap<String, String>, i64, f64)>,
    ) {
        for (metric, labels, ts_ms, value) in values {
            if metric.starts_with("network_") {
                self.links.observe(metric, labels, ts_ms, value);
            }
            self.last_values.record(metric, labels, ts_ms, value);
        }
    }

    pub fn seen(&mut self, now_ms: i64) {
        if self.first_seen_ms == 0 {
            self.first_seen_ms = now_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// The value of label `name` on the device's newest `device_info` sample (a firmware
    /// update makes a new series; the newest tells the current version).
    pub fn info(&self, name: &str) -> Option<&str> {
        self.last_values
            .of("device_info")
            .max_by_key(|(_, ts, _)| *ts)
            .and_then(|(labels, _, _)| labels.get(name))
            .map(String::as_str)
    }

    /// A tag, or else the same-named `device_info` label (e.g. `model`).
    pub fn tag_or_info(&self, name: &str) -> Option<&str> {
        self.tags
            .get(name)
            .map(String::as_str)
            .or_else(|| self.info(name))
    }

    /// The largest last value of `metric` over its series (NaN ignored).
    pub fn max_value(&self, metric: &str) -> Option<f64> {
        self.last_values
            .of(metric)
            .map(|(_, _, v)| v)
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }

    /// The smallest last value of `metric` over its series (NaN ignored).
    pub fn min_value(&self, metric: &str) -> Option<f64> {
        self.last_values
            .of(metric)
            .map(|(_, _, v)| v)
            .filter(|v| v.is_finite())
            .reduce(f64::min)
    }

    pub fn last_values(&self) -> Vec<LastValue> {
        self.last_values
            .iter()
            .map(|(metric, labels, ts_ms, value)| LastValue {
                metric: metric.to_owned(),
                labels: labels.clone(),
                ts_ms,
                value,
            })
            .collect()
    }
}

/// All devices by id.
#[derive(Debug, Default)]
pub struct Registry {
    devices: HashMap<String, Device>,
    /// Tags by device id from the configuration.
    tag_rules: tags::TagRules,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// The device `id` with its id as the registry holds it.
    pub fn get_key_value(&self, id: &str) -> Option<(&String, &Device)> {
        self.devices.get_key_value(id)
    }

    /// The device to change (made when new, with the tags file's tags); its generation is
    /// bumped, so its cached health is assessed again.
    pub fn entry(&mut self, id: &str) -> &mut Device {
        let rules = &self.tag_rules;
        let d = self.devices.entry(id.to_owned()).or_insert_with(|| Device {
            tags: rules.tags_for(id),
            ..Device::default()
        });
        d.generation = d.generation.wrapping_add(1);
        d
    }

    /// The tags of device `id`, also before its first batch is recorded (the tags file's).
    pub fn tags_of(&self, id: &str) -> std::borrow::Cow<'_, Tags> {
        match self.devices.get(id) {
            Some(d) => std::borrow::Cow::Borrowed(&d.tags),
            None => std::borrow::Cow::Owned(self.tag_rules.tags_for(id)),
        }
    }

    /// Replaces the tags file's rules and recomputes every device's tags.
    pub fn set_tag_rules(&mut self, rules: tags::TagRules) {
        self.tag_rules = rules;
        for (id, d) in &mut self.devices {
            d.tags = tags::effective(&self.tag_rules, id, &d.api_tags);
            d.generation = d.generation.wrapping_add(1);
        }
    }

    /// Replaces the API tags of device `id` (registering it); returns the previous ones.
    pub fn set_api_tags(&mut self, id: &str, api: Tags) -> Tags {
        let tags = tags::effective(&self.tag_rules, id, &api);
        let d = self.entry(id);
        d.tags = tags;
        std::mem::replace(&mut d.api_tags, api)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Device)> {
        self.devices.iter()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Is `(device, seq)` already stored?
    pub fn is_stored(&self, device: &str, seq: u64) -> bool {
        self.devices
            .get(device)
            .is_some_and(|d| d.integrity.is_stored(seq))
    }

    /// An MQTT connection spoke for `id`.
    pub fn session_opened(&mut self, id: &str, now_ms: i64, address: &str) {
        let d = self.entry(id);
        d.mqtt_sessions += 1;
        d.seen(now_ms);
        d.address = Some(address.to_owned());
        d.availability
            .record(now_ms, Status::Online, Reason::Connected);
    }

    /// A connection that spoke for `id` ended.
    pub fn session_closed(&mut self, id: &str, now_ms: i64, offline_after_ms: i64, reason: Reason) {
        let d = self.entry(id);
        d.mqtt_sessions = d.mqtt_sessions.saturating_sub(1);
        if d.status(now_ms, offline_after_ms) == Status::Offline {
            d.availability.record(now_ms, Status::Offline, reason);
        }
    }

    /// A batch from `id` arrived over HTTP.
    pub fn http_seen(&mut self, id: &str, now_ms: i64, address: Option<String>) {
        let d = self.entry(id);
        d.http_last_seen_ms = Some(now_ms);
        d.seen(now_ms);
        if address.is_some() {
            d.address = address;
        }
        d.availability
            .record(now_ms, Status::Online, Reason::HttpIngest);
    }

    /// Records HTTP-only devices whose timeout passed as offline.
    pub fn sweep(&mut self, now_ms: i64, offline_after_ms: i64) {
        for d in self.devices.values_mut() {
            let was_online = d
                .availability
                .last()
                .is_some_and(|t| t.status == Status::Online);
            if was_online && d.status(now_ms, offline_after_ms) == Status::Offline {
                let at = d.http_last_seen_ms.map_or(now_ms, |t| t + offline_after_ms);
                d.availability.record(at, Status::Offline, Reason::Timeout);
                d.generation = d.generation.wrapping_add(1);
            }
        }
    }

    /// Fleet-wide integrity counters.
    pub fn integrity_totals(&self, now_ms: i64, grace_ms: i64) -> Counts {
        let mut total = Counts::default();
        for d in self.devices.values() {
            total += d.integrity.counts(now_ms, grace_ms);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_devices_go_offline_after_the_timeout() {
        let mut r = Registry::default();
        r.http_seen("d", 1_000, None);
        let d = r.get("d").unwrap();
        assert_eq!(d.status(1_500, 1_000), Status::Online);
        assert_eq!(d.status(2_001, 1_000), Status::Offline);
        r.sweep(2_500, 1_000);
        let last = *r.get("d").unwrap().availability.last().unwrap();
        assert_eq!(
            (last.at_ms, last.status, last.reason),
            (2_000, Status::Offline, Reason::Timeout)
        );
    }

    #[test]
    fn sessions_count_down_to_offline() {
        let mut r = Registry::default();
        r.session_opened("d", 1, "127.0.0.1:1");
        r.session_opened("d", 2, "127.0.0.1:2");
        r.session_closed("d", 3, 0, Reason::TakenOver);
        assert_eq!(r.get("d").unwrap().status(3, 0), Status::Online);
        r.session_closed("d", 4, 0, Reason::Graceful);
        let d = r.get("d").unwrap();
        assert_eq!(d.status(4, 0), Status::Offline);
        let last = d.availability.last().unwrap();
        assert_eq!((last.at_ms, last.reason), (4, Reason::Graceful));
    }
}
