//! Integrity accounting for one device: what happened to every batch number it used.
//!
//! The delivery guarantee (DESIGN.md) makes every batch either stored exactly once or
//! accounted for. This module does the accounting, from what the server sees:
//!
//! | counter | a batch that ... |
//! |---|---|
//! | `received` | was stored (first arrival of its seq) |
//! | `duplicate` | arrived again after it was stored |
//! | `out_of_order` | was stored although a higher seq was already stored |
//! | `missing` | never arrived, though a higher seq did, more than the grace period ago |
//! | `late` | arrived after it had been counted missing (it leaves `missing`) |
//! | `corrupt` | was rejected: bad checksum, undecodable, invalid |
//! | `device_dropped` | the device dropped from its own spool (its `dropped_before` reports) |
//!
//! Gaps are every unstored seq between the lowest and the highest stored one, kept as ranges
//! with the time they were found, so memory grows with the number of gaps, not of batches.

use std::collections::BTreeMap;

use fleetmon_protocol::SeqSet;
use serde::Serialize;

/// The counters, as the API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub received: u64,
    pub duplicate: u64,
    pub missing: u64,
    pub out_of_order: u64,
    pub late: u64,
    pub corrupt: u64,
    pub device_dropped: u64,
}

/// Saturating: a device may claim any drop count and any batch numbers (up to `u64::MAX`), so
/// fleet totals stop at the top instead of overflowing.
impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.received = self.received.saturating_add(o.received);
        self.duplicate = self.duplicate.saturating_add(o.duplicate);
        self.missing = self.missing.saturating_add(o.missing);
        self.out_of_order = self.out_of_order.saturating_add(o.out_of_order);
        self.late = self.late.saturating_add(o.late);
        self.corrupt = self.corrupt.saturating_add(o.corrupt);
        self.device_dropped = self.device_dropped.saturating_add(o.device_dropped);
    }
}

/// What a stored batch was, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    OutOfOrder,
    /// Out of order, and after it had been counted missing.
    Late,
}

#[derive(Debug, Clone, Default)]
pub struct Integrity {
    stored: SeqSet,
    /// Unfilled gaps below the highest stored seq: start → (end inclusive, found at ms).
    gaps: BTreeMap<u64, (u64, i64)>,
    received: u64,
    duplicate: u64,
    out_of_order: u64,
    late: u64,
    corrupt: u64,
    device_dropped: u64,
}

impl Integrity {
    pub fn is_stored(&self, seq: u64) -> bool {
        self.stored.contains(seq)
    }

    pub fn stored(&self) -> &SeqSet {
        &self.stored
    }

    /// Records a stored batch `seq` that arrived at `now_ms`.
    pub fn stored_batch(
        &mut self,
        seq: u64,
        dropped_before: u64,
        now_ms: i64,
        grace_ms: i64,
    ) -> Arrival {
        // The device says how many it dropped; the claim is not trusted to fit.
        self.device_dropped = self.device_dropped.saturating_add(dropped_before);
        let highest = self.stored.last();
        let first = self.stored.first();
        if !self.stored.insert(seq) {
            // Callers dedupe first; a repeat here is a duplicate all the same.
            self.duplicate += 1;
            return Arrival::InOrder;
        }
        self.received += 1;
        match highest {
            None => Arrival::InOrder,
            Some(h) if seq > h => {
                if seq > h + 1 {
                    self.gaps.insert(h + 1, (seq - 1, now_ms));
                }
                Arrival::InOrder
            }
            Some(_) => {
                self.out_of_order += 1;
                if let Some(f) = first
                    && seq < f
                {
                    if seq + 1 < f {
                        self.gaps.insert(seq + 1, (f - 1, now_ms));
                    }
                    return Arrival::OutOfOrder;
                }
                let Some((&start, &(end, found_ms))) = self.gaps.range(..=seq).next_back() else {
                    return Arrival::OutOfOrder;
                };
                if seq > end {
                    return Arrival::OutOfOrder;
                }
                self.gaps.remove(&start);
                if start < seq {
                    self.gaps.insert(start, (seq - 1, found_ms));
                }
                if seq < end {
                    self.gaps.insert(seq + 1, (end, found_ms));
                }
                if now_ms.saturating_sub(found_ms) > grace_ms {
                    self.late += 1;
                    Arrival::Late
                } else {
                    Arrival::OutOfOrder
                }
            }
        }
    }

    pub fn duplicate_batch(&mut self) {
        self.duplicate += 1;
    }

    pub fn corrupt_batch(&mut self) {
        self.corrupt += 1;
    }

    /// Seqs below the highest stored one that never arrived, found more than `grace_ms` ago.
    pub fn missing(&self, now_ms: i64, grace_ms: i64) -> u64 {
        self.gaps
            .iter()
            .filter(|(_, (_, found))| now_ms.saturating_sub(*found) > grace_ms)
            .map(|(start, (end, _))| end - start + 1)
            .sum()
    }

    /// Every gap, found recently or not.
    pub fn gaps(&self) -> u64 {
        self.gaps
            .iter()
            .map(|(start, (end, _))| end - start + 1)
            .sum()
    }

    pub fn counts(&self, now_ms: i64, grace_ms: i64) -> Counts {
        Counts {
            received: self.received,
            duplicate: self.duplicate,
            missing: self.missing(now_ms, grace_ms),
            out_of_order: self.out_of_order,
            late: self.late,
            corrupt: self.corrupt,
            device_dropped: self.device_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GRACE: i64 = 1_000;

    #[test]
    fn drop_counts_and_totals_saturate_instead_of_overflowing() {
        let mut i = Integrity::default();
        i.stored_batch(1, u64::MAX, 0, GRACE);
        i.stored_batch(2, u64::MAX, 0, GRACE);
        assert_eq!(i.counts(0, GRACE).device_dropped, u64::MAX);
        // Two devices whose batch numbers span the whole range: each misses ~2^64 batches.
        let mut wide = Integrity::default();
        wide.stored_batch(0, 0, 0, GRACE);
        wide.stored_batch(u64::MAX, 0, 0, GRACE);
        let each = wide.counts(10 * GRACE, GRACE);
        assert_eq!(each.missing, u64::MAX - 1);
        let mut total = Counts::default();
        total += each;
        total += each;
        total += i.counts(0, GRACE);
        assert_eq!((total.missing, total.device_dropped), (u64::MAX, u64::MAX));
        assert_eq!(total.received, 6);
    }

    #[test]
    fn a_gap_becomes_missing_after_the_grace_and_late_when_filled() {
        let mut i = Integrity::default();
        assert_eq!(i.stored_batch(1, 0, 0, GRACE), Arrival::InOrder);
        assert_eq!(i.stored_batch(5, 0, 100, GRACE), Arrival::InOrder);
        assert_eq!(i.gaps(), 3);
        assert_eq!(i.missing(1_000, GRACE), 0, "still within the grace period");
        assert_eq!(i.missing(1_101, GRACE), 3);
        assert_eq!(i.stored_batch(3, 0, 500, GRACE), Arrival::OutOfOrder);
        assert_eq!(i.stored_batch(2, 0, 5_000, GRACE), Arrival::Late);
        let c = i.counts(10_000, GRACE);
        assert_eq!(
            (c.received, c.missing, c.out_of_order, c.late),
            (4, 1, 2, 1)
        );
    }

    #[test]
    fn a_seq_below_the_lowest_opens_a_gap_down_to_it() {
        let mut i = Integrity::default();
        i.stored_batch(100, 2, 0, GRACE);
        assert_eq!(i.stored_batch(50, 0, 10, GRACE), Arrival::OutOfOrder);
        assert_eq!(i.stored_batch(51, 0, 20, GRACE), Arrival::OutOfOrder);
        let c = i.counts(1_000_000, GRACE);
        assert_eq!((c.missing, c.late, c.device_dropped), (48, 0, 2));
    }

    proptest! {
        /// Whatever the arrival order, once every seq has arrived nothing is missing, and
        /// every seq is received once; with some never sent, missing equals the unsent seqs
        /// between the first and last stored.
        #[test]
        fn counts_match_a_model(mut order in Just((1u64..=60).collect::<Vec<_>>()).prop_shuffle(), lost in proptest::collection::btree_set(1u64..=60, 0..10)) {
            let mut i = Integrity::default();
            order.retain(|s| !lost.contains(s));
            for (t, &s) in order.iter().enumerate() {
                i.stored_batch(s, 0, t as i64, GRACE);
            }
            let c = i.counts(i64::MAX / 2, GRACE);
            prop_assert_eq!(c.received, order.len() as u64);
            let (lo, hi) = (order.iter().min().copied(), order.iter().max().copied());
            let expected = match (lo, hi) {
                (Some(lo), Some(hi)) => lost.iter().filter(|&&s| s > lo && s < hi).count() as u64,
                _ => 0,
            };
            prop_assert_eq!(c.missing, expected);
        }
    }
}
