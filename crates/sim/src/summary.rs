//! The result of a run: per device, which batches were produced, which reached the network and
//! which the server acknowledged, as inclusive seq ranges (`[[1, 10], [12, 20]]`), with each
//! batch's sample count. A test holds
//! the server to it: every acknowledged `(device, seq)` must be stored exactly once, with
//! that many samples.

use serde::{Deserialize, Serialize};

use crate::truth::Outage;

/// Sample counts of consecutive batches, run-length encoded as `[first_seq, last_seq,
/// samples]`: a device of one model sends the same number of samples in every batch, so a
/// whole run is usually one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SampleCounts {
    runs: Vec<[u64; 3]>,
}

impl SampleCounts {
    /// Records that batch `seq` has `samples` samples; seqs are recorded in increasing order.
    pub fn record(&mut self, seq: u64, samples: u32) {
        let samples = u64::from(samples);
        match self.runs.last_mut() {
            Some(last) if last[1].checked_add(1) == Some(seq) && last[2] == samples => {
                last[1] = seq;
            }
            _ => self.runs.push([seq, seq, samples]),
        }
    }

    /// The sample count of batch `seq`, if it was recorded.
    pub fn get(&self, seq: u64) -> Option<u32> {
        let i = self.runs.partition_point(|r| r[1] < seq);
        let run = self.runs.get(i).filter(|r| r[0] <= seq)?;
        u32::try_from(run[2]).ok()
    }

    /// The runs, ascending.
    pub fn runs(&self) -> &[[u64; 3]] {
        &self.runs
    }

    /// Total samples of the batches in the inclusive `ranges`.
    pub fn total_in(&self, ranges: &[[u64; 2]]) -> u64 {
        ranges
            .iter()
            .flat_map(|r| r[0]..=r[1])
            .filter_map(|seq| self.get(seq))
            .map(u64::from)
            .sum()
    }
}

/// What one simulated device did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub device: String,
    /// `rpi4`, `gateway` or `battery-sensor`.
    pub model: String,
    pub site: String,
    pub boot_id: String,
    /// Seq of the device's first batch.
    pub first_seq: u64,
    /// Batches created: seqs `first_seq..first_seq + batches_produced`.
    pub batches_produced: u64,
    /// Distinct batches written to the network at least once.
    pub batches_sent: u64,
    /// Distinct batches the server acknowledged (PUBACK).
    pub batches_acked: u64,
    /// Scheduled batches not produced because too many were unacknowledged (no seq used).
    pub batches_skipped: u64,
    /// Times a batch was written again after a lost connection.
    pub resends: u64,
    /// Successful MQTT connections (CONNACK); more than one means reconnects.
    pub connections: u64,
    pub samples_sent: u64,
    pub samples_acked: u64,
    /// Samples of every produced batch.
    pub samples_per_batch: SampleCounts,
    /// Seqs written to the network at least once, as sorted disjoint inclusive ranges.
    pub sent_seqs: Vec<[u64; 2]>,
    /// Seqs whose PUBACK arrived, as sorted disjoint inclusive ranges.
    pub acked_seqs: Vec<[u64; 2]>,
    /// The final retained `offline` status was acknowledged and the session closed with
    /// DISCONNECT (otherwise the broker publishes the Last Will, also `offline`).
    pub clean_disconnect: bool,
    // Injected faults (see `faults.rs`); all empty or zero without them.
    /// Seqs dropped on the device after they got their seq (loss), ascending.
    #[serde(default)]
    pub lost_seqs: Vec<u64>,
    /// Extra copies of acknowledged batches that were acknowledged themselves.
    #[serde(default)]
    pub duplicated: u64,
    /// Extra copies written whose PUBACK never came because the connection broke; whether
    /// the server counted them is unknown (0 unless the connection broke unexpectedly).
    #[serde(default)]
    pub duplicates_unconfirmed: u64,
    /// Corrupted payloads written to the network.
    #[serde(default)]
    pub corrupted: u64,
    /// Offline windows (outage).
    #[serde(default)]
    pub outages: Vec<Outage>,
    /// How far the device clock was ahead (positive) or behind.
    #[serde(default)]
    pub clock_skew_ms: i64,
    /// Value faults of the scenario (see `scenario.rs`), as windows on the device's clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_faults: Vec<crate::scenario::FaultWindow>,
}

impl DeviceSummary {
    /// True when batch `seq` was acknowledged.
    pub fn is_acked(&self, seq: u64) -> bool {
        in_ranges(&self.acked_seqs, seq)
    }

    /// True when batch `seq` was written to the network at least once.
    pub fn is_sent(&self, seq: u64) -> bool {
        in_ranges(&self.sent_seqs, seq)
    }

    /// The highest seq produced, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (self.batches_produced > 0).then(|| self.first_seq + self.batches_produced - 1)
    }

    /// Seqs produced but never acknowledged (lost ones included).
    pub fn unacked_seqs(&self) -> Vec<u64> {
        (self.first_seq..self.first_seq + self.batches_produced)
            .filter(|seq| !self.is_acked(*seq))
            .collect()
    }
}

/// Membership in sorted disjoint inclusive ranges.
fn in_ranges(ranges: &[[u64; 2]], seq: u64) -> bool {
    let i = ranges.partition_point(|r| r[1] < seq);
    ranges.get(i).is_some_and(|r| r[0] <= seq)
}

/// What the whole fleet did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The seed of the run (0 when built with [`Summary::from_devices`] alone).
    #[serde(default)]
    pub seed: u64,
    pub devices: Vec<DeviceSummary>,
    pub batches_produced: u64,
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub batches_skipped: u64,
    pub resends: u64,
    pub samples_sent: u64,
    pub samples_acked: u64,
    /// Batches lost, duplicated and corrupted on purpose (see `faults.rs`).
    #[serde(default)]
    pub batches_lost: u64,
    #[serde(default)]
    pub batches_duplicated: u64,
    #[serde(default)]
    pub batches_corrupted: u64,
    /// Wall-clock length of the run, seconds.
    pub elapsed_secs: f64,
}

impl Summary {
    /// Adds up the per-device numbers.
    pub fn from_devices(devices: Vec<DeviceSummary>, elapsed_secs: f64) -> Self {
        let sum = |f: fn(&DeviceSummary) -> u64| devices.iter().map(f).sum();
        Self {
            seed: 0,
            batches_lost: devices.iter().map(|d| d.lost_seqs.len() as u64).sum(),
            batches_duplicated: sum(|d| d.duplicated),
            batches_corrupted: sum(|d| d.corrupted),
            batches_produced: sum(|d| d.batches_produced),
            batches_sent: sum(|d| d.batches_sent),
            batches_acked: sum(|d| d.batches_acked),
            batches_skipped: sum(|d| d.batches_skipped),
            resends: sum(|d| d.resends),
            samples_sent: sum(|d| d.samples_sent),
            samples_acked: sum(|d| d.samples_acked),
            elapsed_secs,
            devices,
        }
    }

    /// True when every produced batch of every device was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.batches_acked == self.batches_produced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_counts_run_length_encode() {
        let mut c = SampleCounts::default();
        for seq in 1..=5 {
            c.record(seq, 35);
        }
        c.record(6, 36);
        c.record(7, 35);
        c.record(9, 35);
        assert_eq!(c.runs(), &[[1, 5, 35], [6, 6, 36], [7, 7, 35], [9, 9, 35]]);
        assert_eq!(c.get(3), Some(35));
        assert_eq!(c.get(6), Some(36));
        assert_eq!(c.get(8), None);
        assert_eq!(c.get(10), None);
        assert_eq!(c.total_in(&[[1, 2], [6, 6], [8, 8]]), 35 + 35 + 36);
    }

    #[test]
    fn summaries_add_up_and_serialize() {
        let mut d = DeviceSummary {
            device: "sim-00000".into(),
            first_seq: 1,
            batches_produced: 3,
            batches_acked: 2,
            ..DeviceSummary::default()
        };
        d.acked_seqs = vec![[1, 1], [3, 3]];
        assert!(d.is_acked(3) && !d.is_acked(2) && !d.is_acked(4));
        assert_eq!(d.unacked_seqs(), vec![2]);
        let s = Summary::from_devices(vec![d.clone(), d], 1.5);
        assert_eq!(s.batches_produced, 6);
        assert!(!s.all_acked());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["devices"][0]["acked_seqs"],
            serde_json::json!([[1, 1], [3, 3]])
        );
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
