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
    /// Streaming anomaly detectors of incoming samples.
    pub anomaly: Mutex<crate::fleet::anomaly::Scorer>,
    /// Security events, the CA, live certificates, revocations.
    pub security: Arc<Security>,
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
            anomaly: Mutex::new(crate::fleet::anomaly::Scorer::default()),
            security,
        }
    }

    /// Reads the registry. A panic elsewhere never leaves it unusable: the data is plain.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
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

    /// Replaces the tags of device `id` (registering it if never seen) and saves every
    /// device's tags; on a failed save the old tags stay. Returns the device.
    pub fn set_tags(&self, id: &str, new: Tags) -> Result<Device, TagError> {
        tags::validate(&new)?;
        let mut registry = self.registry_mut();
        let previous = std::mem::replace(&mut registry.entry(id).tags, new);
        if let Some(path) = &self.tags_path {
            let all: BTreeMap<&str, &Tags> = registry
                .iter()
                .filter(|(_, d)| !d.tags.is_empty())
                .map(|(k, d)| (k.as_str(), &d.tags))
                .collect();
            if let Err(e) = tags::save(path, &all) {
                registry.entry(id).tags = previous;
                return Err(e);
            }
        }
        Ok(registry.entry(id).clone())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
