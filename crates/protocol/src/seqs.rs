//! Sets of batch sequence numbers, kept as sorted disjoint inclusive ranges. Both ends of the
//! delivery guarantee count batches this way: the server to deduplicate by `(device, seq)` and
//! find gaps, a sender to record what was acknowledged. Memory grows with the number of gaps,
//! not the number of batches.

use serde::{Deserialize, Serialize};

/// A set of `u64` as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeqSet {
    ranges: Vec<[u64; 2]>,
}

impl SeqSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the first range whose end is >= `seq`.
    fn search(&self, seq: u64) -> usize {
        self.ranges.partition_point(|r| r[1] < seq)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .get(self.search(seq))
            .is_some_and(|r| r[0] <= seq)
    }

    /// Adds `seq`; returns false when it was already present.
    pub fn insert(&mut self, seq: u64) -> bool {
        let i = self.search(seq);
        if self.ranges.get(i).is_some_and(|r| r[0] <= seq) {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1][1].checked_add(1) == Some(seq);
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|r| seq.checked_add(1) == Some(r[0]));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1][1] = self.ranges[i][1];
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1][1] = seq,
            (false, true) => self.ranges[i][0] = seq,
            (false, false) => self.ranges.insert(i, [seq, seq]),
        }
        true
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r[1] - r[0] + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The inclusive ranges, ascending.
    pub fn ranges(&self) -> &[[u64; 2]] {
        &self.ranges
    }

    pub fn first(&self) -> Option<u64> {
        self.ranges.first().map(|r| r[0])
    }

    pub fn last(&self) -> Option<u64> {
        self.ranges.last().map(|r| r[1])
    }

    /// Members between the first and the last that are absent.
    pub fn gaps(&self) -> u64 {
        match (self.first(), self.last()) {
            (Some(a), Some(b)) => (b - a + 1) - self.len(),
            _ => 0,
        }
    }

    /// Every member, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|r| r[0]..=r[1])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn merges_neighbours() {
        let mut s = SeqSet::new();
        for seq in [5, 7, 6, 1, 3, 2, u64::MAX, 0] {
            assert!(s.insert(seq));
        }
        assert!(!s.insert(6));
        assert_eq!(s.ranges(), &[[0, 3], [5, 7], [u64::MAX, u64::MAX]]);
        assert!(s.contains(0) && s.contains(7) && !s.contains(4) && !s.contains(8));
        assert_eq!(s.len(), 8);
    }

    proptest! {
        /// The range set behaves exactly like a `BTreeSet` model.
        #[test]
        fn matches_a_btreeset(ops in proptest::collection::vec(0u64..64, 0..200)) {
            let mut s = SeqSet::new();
            let mut model = BTreeSet::new();
            for seq in ops {
                prop_assert_eq!(s.insert(seq), model.insert(seq));
            }
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(s.len(), model.len() as u64);
            for w in s.ranges().windows(2) {
                prop_assert!(w[0][1] + 1 < w[1][0], "ranges must be disjoint and not adjacent");
            }
            for seq in 0..70 {
                prop_assert_eq!(s.contains(seq), model.contains(&seq));
            }
        }
    }
}
