//! Late and out-of-order samples: a sample older than its series' newest head sample cannot go
//! into the Gorilla chunk (which only grows forward), so it waits here, in arrival order, until
//! the next flush writes it into blocks. Queries merge it last, so a rewrite of an existing
//! timestamp wins (last write wins).
//!
//! The age limit keeps a broken device clock from scattering samples across years of blocks:
//! a sample more than `max_age_ms` older than the newest sample the database has seen is
//! refused and counted.

/// Default limit for late data: 7 days.
pub const DEFAULT_MAX_AGE_MS: i64 = 7 * 24 * 3_600_000;

/// Whether a sample at `ts` is young enough, given the newest timestamp seen so far.
pub fn accepts(ts: i64, newest: Option<i64>, max_age_ms: i64) -> bool {
    newest.is_none_or(|n| ts >= n.saturating_sub(max_age_ms))
}

/// One series' late samples, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct OooBuffer {
    samples: Vec<(i64, f64)>,
}

impl OooBuffer {
    /// Remembers a late sample.
    pub fn push(&mut self, t: i64, v: f64) {
        self.samples.push((t, v));
    }

    /// Number of samples held (rewrites included).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples in `[start, end]`, in arrival order (later ones win on equal timestamps).
    pub fn range(&self, start: i64, end: i64) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.samples
            .iter()
            .copied()
            .filter(move |&(t, _)| t >= start && t <= end)
    }

    /// The newest sample by timestamp (the latest arrival among equal timestamps).
    pub fn newest(&self) -> Option<(i64, f64)> {
        self.samples
            .iter()
            .copied()
            .reduce(|a, b| if b.0 >= a.0 { b } else { a })
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.samples = Vec::new();
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.samples.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_limit_is_relative_to_the_newest_sample() {
        assert!(accepts(0, None, 10));
        assert!(accepts(90, Some(100), 10));
        assert!(!accepts(89, Some(100), 10));
        assert!(accepts(i64::MIN, Some(i64::MIN + 5), 10));
    }

    #[test]
    fn range_keeps_arrival_order_and_newest_prefers_late_rewrites() {
        let mut b = OooBuffer::default();
        b.push(5, 1.0);
        b.push(3, 2.0);
        b.push(5, 3.0);
        assert_eq!(b.range(4, 9).collect::<Vec<_>>(), vec![(5, 1.0), (5, 3.0)]);
        assert_eq!(b.newest(), Some((5, 3.0)));
        b.clear();
        assert!(b.is_empty());
    }
}
