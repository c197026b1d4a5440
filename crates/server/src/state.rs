//! What the server's tasks share: the device registry, the sample store, the self-metrics and
//! the clock.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fleetmon_protocol::Limits;

use crate::clock::Clock;
use crate::fleet::Registry;
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
}

impl State {
    pub fn new(
        store: Arc<dyn SampleStore>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        offline_after_ms: i64,
    ) -> Self {
        Self {
            registry: RwLock::new(Registry::default()),
            store,
            telemetry: Telemetry::new(),
            clock,
            limits,
            offline_after_ms,
            missing_grace_ms: 120_000,
        }
    }

    /// Reads the registry. A panic elsewhere never leaves it unusable: the data is plain.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
