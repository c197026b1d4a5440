//! Fault injection: which batches a device loses, duplicates or corrupts, when it goes
//! offline and how wrong its clock is, all decided from the seed so a run can be repeated and
//! its ground truth (see [`crate::truth`]) compared exactly with what a server counted.
//!
//! # The faults
//! - **loss** `P`: after a batch got its seq, it is dropped on the device and never sent, as if
//!   lost on the way while the device believed it sent (not reported in `dropped_before`).
//!   The device's first and last seq of the run are never lost, because a server sees a hole
//!   only between the first and the last seq it stored.
//! - **duplicate** `P`: after its PUBACK, a batch is published once more (same bytes, same seq).
//! - **corrupt** `P`: a batch is first sent with one byte of its protobuf frame body flipped
//!   (so the CRC-32C check fails; a JSON payload gets its first byte flipped instead, so it is
//!   neither JSON nor a frame). A fleetmon server closes the connection without acknowledging;
//!   the device reconnects and sends the correct batch.
//! - **outage**: devices are split by index into `outage_groups` groups (`index % groups`);
//!   group `g` goes offline at `outage_at + g × outage / groups` for `outage`. Offline means
//!   the connection is dropped without DISCONNECT (the broker publishes the Last Will), the
//!   device keeps producing into its outbox and sends the backlog, in order, when it is back.
//!   The device first lets what is in flight be acknowledged, so a window may begin a little
//!   late; it always lasts `outage`.
//! - **clock skew**: devices with `index % 4 == 0` run `clock_skew` ahead, `index % 4 == 1`
//!   behind; both `sent_at_ms` and the samples' `ts_ms` are shifted.
//!
//! Each yes/no decision is a hash of `(seed, device index, seq, fault)`, not a draw from a
//! stream, so it does not depend on the order in which events happened to arrive.

use std::time::Duration;

use fleetmon_protocol::Format;

use crate::error::SimError;
use crate::signal::mix;

/// Frame header before the protobuf body: magic, version, CRC-32C (see docs/protocol.md).
const FRAME_HEADER: usize = 8;

/// Which faults to inject. The default injects none.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Probability that a batch is lost after getting its seq.
    pub loss: f64,
    /// Probability that an acknowledged batch is published once more.
    pub duplicate: f64,
    /// Probability that a batch is first sent corrupted.
    pub corrupt: f64,
    /// Length of each device's offline window; `None` for no outage.
    pub outage: Option<Duration>,
    /// Devices are split into this many outage groups by `index % outage_groups`.
    pub outage_groups: usize,
    /// When group 0's window starts, from the start of the run; `None` for two intervals.
    pub outage_at: Option<Duration>,
    /// How far ahead (`index % 4 == 0`) or behind (`index % 4 == 1`) device clocks are.
    pub clock_skew: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            outage: None,
            outage_groups: 1,
            outage_at: None,
            clock_skew: Duration::ZERO,
        }
    }
}

impl Faults {
    /// True when nothing is injected.
    pub fn is_none(&self) -> bool {
        self.loss == 0.0
            && self.duplicate == 0.0
            && self.corrupt == 0.0
            && self.outage.is_none()
            && self.clock_skew.is_zero()
    }

    /// Checks the rates and the outage layout.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (option, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::InvalidOption {
                    option,
                    reason: format!("{p} is not a probability; expected 0 to 1, e.g. 0.05"),
                });
            }
        }
        if self.outage_groups == 0 {
            return Err(SimError::InvalidOption {
                option: "outage_groups",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.outage.is_some_and(|d| d.is_zero()) {
            return Err(SimError::InvalidOption {
                option: "outage",
                reason: "must be greater than zero when set, e.g. 60s".to_owned(),
            });
        }
        if i64::try_from(self.clock_skew.as_millis()).is_err() {
            return Err(SimError::InvalidOption {
                option: "clock_skew",
                reason: "too large".to_owned(),
            });
        }
        Ok(())
    }

    /// The fault plan of device number `index`, whose first seq is `first_seq`.
    pub(crate) fn plan(
        &self,
        seed: u64,
        index: usize,
        first_seq: u64,
        interval: Duration,
    ) -> FaultPlan {
        let skew_ms = i64::try_from(self.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let clock_skew_ms = match index % 4 {
            0 => skew_ms,
            1 => -skew_ms,
            _ => 0,
        };
        let outage = self.outage.map(|length| {
            let groups = self.outage_groups.max(1);
            let group = index % groups;
            let at = self.outage_at.unwrap_or(interval * 2);
            let offset = length.mul_f64(group as f64 / groups as f64);
            OutageWindow {
                start: at + offset,
                length,
            }
        });
        FaultPlan {
            seed: mix(mix(seed, 0xFA_0175), index as u64),
            first_seq,
            loss: self.loss,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            clock_skew_ms,
            outage,
        }
    }
}

/// When a device is offline, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutageWindow {
    pub start: Duration,
    pub length: Duration,
}

/// The faults of one device.
#[derive(Debug, Clone)]
pub(crate) struct FaultPlan {
    seed: u64,
    first_seq: u64,
    loss: f64,
    duplicate: f64,
    corrupt: f64,
    pub clock_skew_ms: i64,
    pub outage: Option<OutageWindow>,
}

/// What a decision is about; part of the hash, so the decisions are independent.
#[derive(Debug, Clone, Copy)]
enum Decision {
    Loss = 1,
    Duplicate = 2,
    Corrupt = 3,
    CorruptByte = 4,
}

impl FaultPlan {
    /// A uniform number in `[0, 1)` for `(seq, decision)`.
    fn unit(&self, seq: u64, decision: Decision) -> f64 {
        let h = mix(mix(self.seed, seq), decision as u64);
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether batch `seq` is to be lost. The first seq never is; the last one is protected by
    /// [`LossGate`], since only the end of the run knows which seq is last.
    pub fn lost(&self, seq: u64) -> bool {
        seq != self.first_seq && self.unit(seq, Decision::Loss) < self.loss
    }

    /// Whether batch `seq` is published once more after its PUBACK.
    pub fn duplicated(&self, seq: u64) -> bool {
        self.unit(seq, Decision::Duplicate) < self.duplicate
    }

    /// Whether batch `seq` is first sent corrupted.
    pub fn corrupted(&self, seq: u64) -> bool {
        self.unit(seq, Decision::Corrupt) < self.corrupt
    }

    /// The payload of batch `seq` with one byte flipped: a byte of the frame body for
    /// either frame version (the CRC-32C then fails), the first byte for JSON (then it is neither JSON
    /// nor a frame).
    pub fn corrupt_payload(&self, seq: u64, payload: &[u8], format: Format) -> Vec<u8> {
        let mut out = payload.to_vec();
        let at = match format {
            Format::Protobuf | Format::Columnar if out.len() > FRAME_HEADER => {
                let body = (out.len() - FRAME_HEADER) as f64;
                FRAME_HEADER + (self.unit(seq, Decision::CorruptByte) * body) as usize
            }
            _ => 0,
        };
        if let Some(byte) = out.get_mut(at) {
            *byte = !*byte;
        }
        out
    }
}

/// Holds back the most recent batch chosen to be lost until the next one is produced: only
/// then is it certain not to be the device's last seq. At the end of the run a held batch is
/// sent after all.
#[derive(Debug)]
pub(crate) struct LossGate<T> {
    held: Option<(u64, T)>,
}

impl<T> Default for LossGate<T> {
    fn default() -> Self {
        Self { held: None }
    }
}

/// What [`LossGate::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admitted<T> {
    /// A batch held earlier is lost for good: its seq.
    pub lost: Option<u64>,
    /// The new batch, to be sent now (`None`: held, to be lost).
    pub send: Option<T>,
}

impl<T> LossGate<T> {
    /// A new batch `seq`; `lose` is the plan's decision for it.
    pub fn admit(&mut self, seq: u64, batch: T, lose: bool) -> Admitted<T> {
        let lost = self.held.take().map(|(seq, _)| seq);
        let send = if lose {
            self.held = Some((seq, batch));
            None
        } else {
            Some(batch)
        };
        Admitted { lost, send }
    }

    /// The run is over: the held batch, if any, is the last one and is sent after all.
    pub fn finish(&mut self) -> Option<(u64, T)> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(loss: f64, duplicate: f64, corrupt: f64) -> Faults {
        Faults {
            loss,
            duplicate,
            corrupt,
            ..Faults::default()
        }
    }

    fn plan(f: &Faults, seed: u64, index: usize) -> FaultPlan {
        f.plan(seed, index, 1, Duration::from_secs(10))
    }

    #[test]
    fn the_default_injects_nothing() {
        let f = Faults::default();
        assert!(f.is_none());
        assert!(f.validate().is_ok());
        let p = plan(&f, 1, 0);
        assert!((1..10_000).all(|s| !p.lost(s) && !p.duplicated(s) && !p.corrupted(s)));
        assert_eq!(p.clock_skew_ms, 0);
        assert_eq!(p.outage, None);
    }

    #[test]
    fn decisions_are_deterministic_per_seed_and_device() {
        let f = faults(0.3, 0.3, 0.3);
        let decisions = |seed, index| {
            let p = plan(&f, seed, index);
            (1..500)
                .map(|s| (p.lost(s), p.duplicated(s), p.corrupted(s)))
                .collect::<Vec<_>>()
        };
        assert_eq!(decisions(7, 3), decisions(7, 3));
        assert_ne!(decisions(7, 3), decisions(8, 3), "another seed");
        assert_ne!(decisions(7, 3), decisions(7, 4), "another device");
        // The three faults are independent draws, not the same one.
        let p = plan(&f, 7, 3);
        assert!((1..500).any(|s| p.lost(s) != p.duplicated(s)));
        assert!((1..500).any(|s| p.corrupted(s) != p.duplicated(s)));
    }

    #[test]
    fn rates_are_close_to_the_probabilities() {
        let f = faults(0.05, 0.02, 0.01);
        let n = 200_000u64;
        let (mut lost, mut dup, mut bad) = (0u64, 0u64, 0u64);
        for index in 0..20 {
            let p = plan(&f, 42, index);
            for seq in 1..=n / 20 {
                lost += u64::from(p.lost(seq));
                dup += u64::from(p.duplicated(seq));
                bad += u64::from(p.corrupted(seq));
            }
        }
        let rate = |k: u64| k as f64 / n as f64;
        assert!((rate(lost) - 0.05).abs() < 0.003, "loss {}", rate(lost));
        assert!((rate(dup) - 0.02).abs() < 0.002, "duplicate {}", rate(dup));
        assert!((rate(bad) - 0.01).abs() < 0.0015, "corrupt {}", rate(bad));
        let all = plan(&faults(1.0, 1.0, 1.0), 42, 0);
        assert!((2..100).all(|s| all.lost(s) && all.duplicated(s) && all.corrupted(s)));
    }

    #[test]
    fn the_first_seq_is_never_lost() {
        let f = faults(1.0, 0.0, 0.0);
        for first in [1, 17, 1_700_000_000_000] {
            let p = f.plan(3, 0, first, Duration::from_secs(1));
            assert!(!p.lost(first));
            assert!(p.lost(first + 1));
        }
    }

    /// Feeds seqs first..=last through a gate with the plan's decisions, like a device does.
    fn run_gate(p: &FaultPlan, first: u64, last: u64) -> (Vec<u64>, Vec<u64>) {
        let mut gate = LossGate::default();
        let (mut lost, mut sent) = (Vec::new(), Vec::new());
        for seq in first..=last {
            let a = gate.admit(seq, seq, p.lost(seq));
            lost.extend(a.lost);
            sent.extend(a.send);
        }
        sent.extend(gate.finish().map(|(_, s)| s));
        (lost, sent)
    }

    #[test]
    fn the_highest_seq_is_never_lost() {
        let certain = faults(1.0, 0.0, 0.0);
        let p = certain.plan(1, 0, 1, Duration::from_secs(1));
        let (lost, sent) = run_gate(&p, 1, 10);
        assert_eq!(lost, (2..=9).collect::<Vec<_>>());
        assert_eq!(sent, vec![1, 10]);
        let p = plan(&faults(0.5, 0.0, 0.0), 9, 2);
        for last in 1..200 {
            let (lost, sent) = run_gate(&p, 1, last);
            assert_eq!(sent.last(), Some(&last), "last {last}");
            assert_eq!(sent.first(), Some(&1));
            assert_eq!(lost.len() + sent.len(), last as usize);
            // Lost is exactly what the plan chose, minus the last seq.
            let chosen: Vec<u64> = (1..last).filter(|s| p.lost(*s)).collect();
            assert_eq!(lost, chosen);
        }
    }

    #[test]
    fn a_corrupted_frame_fails_its_checksum() {
        use fleetmon_protocol::{Batch, DecodeError, Limits, Sample, decode, encode_protobuf};
        let batch = Batch {
            device: "d".into(),
            boot_id: "b".into(),
            seq: 5,
            sent_at_ms: 1_700_000_000_000,
            dropped_before: 0,
            samples: vec![Sample {
                metric: "m".into(),
                labels: Default::default(),
                ts_ms: 1_700_000_000_000,
                value: 1.5,
            }],
        };
        let good = encode_protobuf(&batch);
        let p = plan(&faults(0.0, 0.0, 1.0), 1, 0);
        for seq in 1..50 {
            let bad = p.corrupt_payload(seq, &good, Format::Protobuf);
            assert_eq!(bad.len(), good.len());
            assert_eq!(good.iter().zip(&bad).filter(|(a, b)| a != b).count(), 1);
            assert_eq!(bad[..FRAME_HEADER], good[..FRAME_HEADER], "header intact");
            assert!(matches!(
                decode(&bad, &Limits::default()),
                Err(DecodeError::Checksum { .. })
            ));
        }
        let json = fleetmon_protocol::encode_json(&batch);
        assert!(
            decode(
                &p.corrupt_payload(1, &json, Format::Json),
                &Limits::default()
            )
            .is_err()
        );
    }

    #[test]
    fn skew_and_outages_follow_the_index() {
        let f = Faults {
            clock_skew: Duration::from_secs(90),
            outage: Some(Duration::from_secs(60)),
            outage_groups: 3,
            outage_at: Some(Duration::from_secs(30)),
            ..Faults::default()
        };
        let skews: Vec<i64> = (0..8).map(|i| plan(&f, 1, i).clock_skew_ms).collect();
        assert_eq!(skews, [90_000, -90_000, 0, 0, 90_000, -90_000, 0, 0]);
        let starts: Vec<u64> = (0..6)
            .map(|i| plan(&f, 1, i).outage.map_or(0, |w| w.start.as_secs()))
            .collect();
        assert_eq!(starts, [30, 50, 70, 30, 50, 70]);
        assert!(
            plan(&f, 1, 0)
                .outage
                .is_some_and(|w| w.length.as_secs() == 60)
        );
        let default_at = Faults {
            outage: Some(Duration::from_secs(5)),
            ..Faults::default()
        };
        assert_eq!(
            plan(&default_at, 1, 0).outage.map(|w| w.start),
            Some(Duration::from_secs(20)),
            "two intervals"
        );
    }

    #[test]
    fn bad_options_are_refused() {
        for f in [
            faults(1.5, 0.0, 0.0),
            faults(0.0, -0.1, 0.0),
            faults(0.0, 0.0, f64::NAN),
            Faults {
                outage_groups: 0,
                ..Faults::default()
            },
            Faults {
                outage: Some(Duration::ZERO),
                ..Faults::default()
            },
        ] {
            assert!(f.validate().is_err(), "{f:?}");
        }
    }
}
