//! Ground truth of a run with injected faults: per device, what was produced, sent,
//! acknowledged, lost, duplicated and corrupted, when it was offline and how wrong its clock
//! was. A server that counts integrity correctly must arrive at exactly these numbers:
//!
//! | truth | what a fleetmon server counts |
//! |---|---|
//! | `acked` seqs | stored seqs |
//! | `lost` | missing (holes between the first and the last stored seq) |
//! | `duplicated` | duplicate batches (acknowledged, stored once) |
//! | `corrupted` | rejected batches (checksum), attributed through the topic's device id |
//!
//! `fleetmon sim --truth FILE` writes it as JSON:
//! `{"seed":1,"devices":[{"device":"sim-00000","produced":..,"sent":..,"acked":..,"lost":..,
//! "lost_seqs":[..],"duplicated":..,"corrupted":..,"outages":[{"start_ms":..,"end_ms":..}],
//! "clock_skew_ms":..,"first_seq":..,"last_seq":..}]}`. With a scenario, a device's entry also
//! lists its value faults: `"value_faults":[{"kind":"overheat","celsius":95.0,"ramp_ms":300000,
//! "start_ms":..,"end_ms":..}]` (`end_ms` null: until the end of the run).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::summary::{DeviceSummary, Summary};

/// One offline window of a device, wall clock (ms since the Unix epoch, not skewed): from
/// the moment its connection was dropped to the moment it started reconnecting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// What one device did, in the terms a server's integrity counters use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTruth {
    pub device: String,
    /// Seqs assigned: `first_seq..=last_seq`.
    pub produced: u64,
    /// Distinct seqs written to the network at least once (corrupted copies not counted).
    pub sent: u64,
    /// Distinct seqs acknowledged.
    pub acked: u64,
    /// Seqs dropped on the device after they got their seq; never sent.
    pub lost: u64,
    pub lost_seqs: Vec<u64>,
    /// Extra copies of acknowledged batches that were acknowledged themselves.
    pub duplicated: u64,
    /// Corrupted payloads written to the network.
    pub corrupted: u64,
    pub outages: Vec<Outage>,
    pub clock_skew_ms: i64,
    pub first_seq: u64,
    /// The highest seq produced; `None` if the device produced nothing.
    pub last_seq: Option<u64>,
    /// The scenario's value faults of this device (none: left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_faults: Vec<crate::scenario::FaultWindow>,
}

impl From<&DeviceSummary> for DeviceTruth {
    fn from(d: &DeviceSummary) -> Self {
        Self {
            device: d.device.clone(),
            produced: d.batches_produced,
            sent: d.batches_sent,
            acked: d.batches_acked,
            lost: d.lost_seqs.len() as u64,
            lost_seqs: d.lost_seqs.clone(),
            duplicated: d.duplicated,
            corrupted: d.corrupted,
            outages: d.outages.clone(),
            clock_skew_ms: d.clock_skew_ms,
            first_seq: d.first_seq,
            last_seq: d.last_seq(),
            value_faults: d.value_faults.clone(),
        }
    }
}

/// The ground truth of a whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub seed: u64,
    pub devices: Vec<DeviceTruth>,
}

impl Truth {
    /// The truth of a finished run.
    pub fn of(summary: &Summary) -> Self {
        Self {
            seed: summary.seed,
            devices: summary.devices.iter().map(DeviceTruth::from).collect(),
        }
    }

    /// Writes the truth as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<(), SimError> {
        let failed = |reason: String| SimError::Truth {
            path: path.display().to_string(),
            reason,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| failed(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_has_the_documented_shape() {
        let d = DeviceSummary {
            device: "sim-00000".into(),
            first_seq: 10,
            batches_produced: 5,
            batches_sent: 4,
            batches_acked: 4,
            lost_seqs: vec![12],
            duplicated: 2,
            corrupted: 1,
            outages: vec![Outage {
                start_ms: 1_000,
                end_ms: 2_000,
            }],
            clock_skew_ms: -5_000,
            ..DeviceSummary::default()
        };
        let summary = Summary {
            seed: 9,
            ..Summary::from_devices(vec![d], 1.0)
        };
        let truth = Truth::of(&summary);
        let json = serde_json::to_value(&truth).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seed": 9, "devices": [{
                "device": "sim-00000", "produced": 5, "sent": 4, "acked": 4,
                "lost": 1, "lost_seqs": [12], "duplicated": 2, "corrupted": 1,
                "outages": [{"start_ms": 1000, "end_ms": 2000}],
                "clock_skew_ms": -5000, "first_seq": 10, "last_seq": 14
            }]})
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.json");
        truth.write(&path).unwrap();
        let back: Truth = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, truth);
        assert!(truth.write(&dir.path().join("no/such/dir.json")).is_err());
    }
}
