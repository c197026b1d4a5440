//! What the server's tasks share: the device registry, the sample store, the self-metrics and
//! the clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fleetmon_protocol::Limits;

use crate::clock::Clock;
use crate::fleet::health::Thresholds;
use crate::fleet::tags::{self, TagError, Tags};
use crate::fleet::{Device, Registry};
use crate::security::Security;
use crate::security::events::Events;
use crate::store::SampleStore;
use crate::telemetry::Telemetry;

/// The default of [`State::max_series_per_device`].
pub const DEFAULT_MAX_SERIES_PER_DEVICE: usize = 10_000;
/// The default message rate per device: 200 messages a second with bursts of 5,000. Far
/// above what the agent (10 s interval; a backlog drains at 50 batches/s, its HTTP fallback
/// sends up to 50/s × interval at once) and the simulator (at least 10 ms between batches,
/// at most 1,000 unacknowledged to resend after an outage) ever send.
pub const DEFAULT_DEVICE_RATE: Option<crate::ratelimit::Rate> = Some(crate::ratelimit::Rate {
    per_second: 200.0,
    burst: 5_000.0,
});

pub struct State {
    registry: RwLock<Registry>,
    pub store: Arc<dyn SampleStore>,
    pub telemetry: Telemetry,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// An HTTP-only device is offline once its last batch is older than this.
    pub offline_after_ms: i64,
    /// A gap in a device's batch numbers counts as missing once it is older than this.
    pub missing_grace_ms: i64,
    pub thresholds: Thresholds,
    pub firmware_policy: Option<crate::fleet::firmware::Policy>,
    /// PromQL engine options: lookback, sample limit, timeout.
    pub query: fleetmon_promql::Options,
    /// Where device tags are kept (`DATA_DIR/tags.json`); none in unit tests.
    pub tags_path: Option<std::path::PathBuf>,
    /// Most distinct series (metric + labels) one device may have; a batch that would take
    /// it over is refused, so one device cannot blow up the index.
    pub max_series_per_device: usize,
    /// Streaming anomaly detectors of incoming samples.
    pub anomaly: Mutex<crate::fleet::anomaly::Scorer>,
    /// Security events, the CA, live certificates, revocations.
    pub security: Arc<Security>,
    /// Message rate per device, shared by MQTT and HTTP ingest.
    pub device_rate: crate::ratelimit::DeviceRate,
}

impl State {
    pub fn new(
        store: Arc<dyn SampleStore>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        offline_after_ms: i64,
    ) -> Self {
        let telemetry = Telemetry::new();
        let events = Events::new(telemetry.security_events.clone());
        let security = Arc::new(Security::new(events, Arc::clone(&clock)));
        Self {
            registry: RwLock::new(Registry::default()),
            store,
            telemetry,
            clock,
            limits,
            offline_after_ms,
            missing_grace_ms: 120_000,
            thresholds: Thresholds::default(),
            firmware_policy: None,
            query: fleetmon_promql::Options::default(),
            tags_path: None,
            max_series_per_device: DEFAULT_MAX_SERIES_PER_DEVICE,
            anomaly: Mutex::new(crate::fleet::anomaly::Scorer::default()),
            security,
            device_rate: crate::ratelimit::DeviceRate::new(DEFAULT_DEVICE_RATE),
        }
    }

    /// Reads the registry. A panic elsewhere never leaves it unusable: the data is plain.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses `batch` when it would give its device more than `max_series_per_device`
    /// series; says how many it would have. Series the device already has never count, so a
    /// resend of an accepted batch always passes.
    pub fn check_series_budget(&self, batch: &fleetmon_protocol::Batch) -> Result<(), String> {
        let limit = self.max_series_per_device;
        let registry = self.registry();
        let known = registry.get(&batch.device).map(|d| &d.last_values);
        let have = known.map_or(0, |k| k.len());
        if have + batch.samples.len() <= limit {
            return Ok(());
        }
        let mut new = std::collections::HashSet::new();
        for s in &batch.samples {
            if known.is_none_or(|k| !k.contains(&s.metric, &s.labels)) {
                new.insert((&s.metric, &s.labels));
            }
        }
        if have + new.len() > limit {
            return Err(format!(
                "device {:?} would have {} series, more than the {limit} allowed per device ({} new in this batch)",
                batch.device,
                have + new.len(),
                new.len()
            ));
        }
        Ok(())
    }

    /// Anomaly scores of `samples` (those of watched metrics), as samples to store.
    pub fn anomaly_scores(
        &self,
        samples: &[(crate::store::SeriesKey, crate::store::Point)],
    ) -> Vec<(crate::store::SeriesKey, crate::store::Point)> {
        self.anomaly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .score(samples)
    }

    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the API tags of device `id` (registering it if never seen) and saves every
    /// device's API tags; on a failed save the old tags stay. Returns the device.
    pub fn set_tags(&self, id: &str, new: Tags) -> Result<Device, TagError> {
        tags::validate(&new)?;
        let mut registry = self.registry_mut();
        let previous = registry.set_api_tags(id, new);
        if let Some(path) = &self.tags_path {
            let all: BTreeMap<&str, &Tags> = registry
                .iter()
                .filter(|(_, d)| !d.api_tags.is_empty())
                .map(|(k, d)| (k.as_str(), &d.api_tags))
                .collect();
            if let Err(e) = tags::save(path, &all) {
                registry.set_api_tags(id, previous);
                return Err(e);
            }
        }
        Ok(registry.entry(id).clone())
    }

    /// Counts one message of `device` against its rate; over it, reports the device as a
    /// security event (at most once a minute) and says when to retry. `action` says what
    /// happens to the messages over the rate, for the event.
    pub fn check_device_rate(
        &self,
        device: &str,
        source: Option<std::net::SocketAddr>,
        action: &str,
    ) -> Result<(), crate::ratelimit::Limited> {
        let now = self.now_ms();
        self.device_rate.check(device, now).inspect_err(|limited| {
            if let (Some(n), Some(rate)) = (limited.report, self.device_rate.rate()) {
                self.security.events.record(
                    now,
                    crate::security::events::Kind::RateLimited,
                    Some(device),
                    source,
                    format!(
                        "device {device:?} publishes faster than {} messages/s (burst {}): {n} message(s) {action} since the last report",
                        rate.per_second, rate.burst
                    ),
                );
            }
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
