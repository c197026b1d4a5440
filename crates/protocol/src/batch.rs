//! The batch a device sends: a numbered group of samples. These types are the protocol's
//! meaning; [`crate::pb`] and the JSON form are two spellings of it.
//!
//! The JSON field names are part of the protocol (a microcontroller may write them by hand):
//! `device`, `boot_id`, `seq`, `sent_at_ms`, `dropped_before`, `samples`, and per sample
//! `metric`, `labels`, `ts_ms`, `value`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A numbered group of samples from one device. `(device, seq)` identifies it for
/// deduplication; a resent batch carries the same number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Device id; must equal the `{device}` level of the topic it was published on.
    pub device: String,
    /// Changes on every boot, so the server can tell a restart from a gap.
    #[serde(default)]
    pub boot_id: String,
    /// Per-device batch number; only grows, survives restarts of the agent.
    pub seq: u64,
    /// Device clock at send time, ms since the Unix epoch (0 when unknown).
    #[serde(default)]
    pub sent_at_ms: i64,
    /// Batches the device dropped from its spool (full) before this one was written.
    #[serde(default)]
    pub dropped_before: u64,
    pub samples: Vec<Sample>,
}

/// One measurement: a metric name, its labels, a time and a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub metric: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sample time on the device clock, ms since the Unix epoch.
    pub ts_ms: i64,
    pub value: f64,
}

impl Sample {
    /// A sample with no labels.
    pub fn new(metric: impl Into<String>, ts_ms: i64, value: f64) -> Self {
        Self {
            metric: metric.into(),
            labels: BTreeMap::new(),
            ts_ms,
            value,
        }
    }

    /// Adds a label; builder style.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}
