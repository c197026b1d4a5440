//! Live counters the devices update and the progress bar reads: cheap atomics, so a thousand
//! device tasks can report without contending on a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Fleet-wide running totals.
#[derive(Debug, Default)]
pub(crate) struct FleetStats {
    connected: AtomicU64,
    acked: AtomicU64,
    produced: AtomicU64,
    skipped: AtomicU64,
}

/// A consistent-enough copy of [`FleetStats`] for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub connected: u64,
    pub acked: u64,
    pub produced: u64,
    pub skipped: u64,
}

impl FleetStats {
    /// A connection carrying `devices` devices is up.
    pub fn connected(&self, devices: u64) {
        self.connected.fetch_add(devices, Ordering::Relaxed);
    }

    /// A connection carrying `devices` devices is down.
    pub fn disconnected(&self, devices: u64) {
        self.connected.fetch_sub(devices, Ordering::Relaxed);
    }

    pub fn acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn produced(&self) {
        self.produced.fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connected: self.connected.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}
