//! Clock skew and data latency of one device.
//!
//! Each batch says when the device sent it (`sent_at_ms`, device clock); the server knows when
//! it arrived. `arrival − sent_at` is the network and queueing delay minus the device's clock
//! offset. Delay is never negative and is smallest for a batch sent straight away, so the
//! smallest difference over recent batches estimates the offset best: skew = −min(arrival −
//! sent_at). Resent backlog (old `sent_at`) only makes differences larger, so it cannot fool
//! the estimate. Latency is how old the newest sample of a batch is on arrival, measured on
//! the server's clock (the sample time corrected by the skew).

use std::collections::VecDeque;

/// Batches the skew estimate looks back over.
const WINDOW: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct Timing {
    deltas: VecDeque<i64>,
    last_latency_ms: Option<i64>,
}

impl Timing {
    /// Records a batch sent at `sent_at_ms` (0 = unknown) whose newest sample is
    /// `newest_ts_ms`, arriving at `received_ms`.
    pub fn observe(&mut self, received_ms: i64, sent_at_ms: i64, newest_ts_ms: Option<i64>) {
        if sent_at_ms > 0 {
            if self.deltas.len() == WINDOW {
                self.deltas.pop_front();
            }
            self.deltas
                .push_back(received_ms.saturating_sub(sent_at_ms));
        }
        if let Some(ts) = newest_ts_ms {
            let corrected = ts.saturating_sub(self.skew_ms().unwrap_or(0));
            self.last_latency_ms = Some(received_ms.saturating_sub(corrected));
        }
    }

    /// Device clock minus server clock, in ms (positive: the device is ahead).
    pub fn skew_ms(&self) -> Option<i64> {
        self.deltas.iter().min().map(|d| -d)
    }

    /// Age of the newest sample of the last batch on arrival, in ms.
    pub fn latency_ms(&self) -> Option<i64> {
        self.last_latency_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_found_through_delay_and_resends() {
        let mut t = Timing::default();
        let skew = 30_000; // device 30 s ahead
        for (i, delay) in [120, 40, 900, 35, 60].into_iter().enumerate() {
            let sent = 1_000_000 + i as i64 * 10_000;
            t.observe(sent - skew + delay, sent, Some(sent - 5_000));
        }
        // A backlog batch resent an hour later.
        t.observe(5_000_000, 1_000_000, Some(1_000_000));
        assert_eq!(t.skew_ms(), Some(skew - 35));
        assert_eq!(t.latency_ms(), Some(5_000_000 - (1_000_000 - (skew - 35))));
    }

    #[test]
    fn unknown_send_times_give_no_estimate() {
        let mut t = Timing::default();
        t.observe(10, 0, None);
        assert_eq!(t.skew_ms(), None);
    }
}
