//! Engine options and the per-query budget: the lookback delta, the default subquery step,
//! the most samples a query may hold and its timeout. The budget is checked as samples are
//! loaded and as steps are evaluated, so a runaway query stops with an error instead of
//! exhausting memory or a thread.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How queries are evaluated and bounded.
#[derive(Debug, Clone)]
pub struct Options {
    /// How far back an instant selector looks for a sample (Prometheus: 5 m).
    pub lookback_ms: i64,
    /// Step of a subquery written without one (Prometheus: the global evaluation interval, 1 m).
    pub default_subquery_step_ms: i64,
    /// Most samples (loaded plus produced) one query may hold.
    pub max_samples: usize,
    /// Longest a query may run.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
            max_samples: 10_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What one query has used so far.
#[derive(Debug)]
pub(crate) struct Budget {
    max_samples: usize,
    deadline: Instant,
    held: Cell<usize>,
}

impl Budget {
    pub(crate) fn new(options: &Options) -> Self {
        Self {
            max_samples: options.max_samples,
            deadline: Instant::now() + options.timeout,
            held: Cell::new(0),
        }
    }

    /// Accounts for `added` more samples and `freed` fewer.
    pub(crate) fn take(&self, added: usize, freed: usize) -> Result<()> {
        let held = self.held.get().saturating_sub(freed).saturating_add(added);
        self.held.set(held);
        if held > self.max_samples {
            return Err(Error::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    /// Fails if `extra` more samples, held for a moment, would exceed the limit.
    pub(crate) fn peek(&self, extra: usize) -> Result<()> {
        if self.held.get().saturating_add(extra) > self.max_samples {
            return Err(Error::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    /// Samples that may still be taken.
    pub(crate) fn remaining(&self) -> usize {
        self.max_samples.saturating_sub(self.held.get())
    }

    /// Whether a read that returned `count` samples may be followed by one four times as
    /// long: it was empty, or four times as much would still leave half the budget.
    pub(crate) fn may_grow(&self, count: usize) -> bool {
        count == 0 || count.saturating_mul(8) <= self.remaining()
    }

    /// Whether a read estimated at `estimate` samples may be done in one go: it would leave
    /// half the budget.
    pub(crate) fn fits(&self, estimate: Option<u64>) -> bool {
        estimate.is_some_and(|n| {
            usize::try_from(n).is_ok_and(|n| n.saturating_mul(2) <= self.remaining())
        })
    }

    /// Fails once the deadline has passed.
    pub(crate) fn check_time(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(Error::Timeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_samples_and_time() {
        let b = Budget::new(&Options {
            max_samples: 10,
            ..Options::default()
        });
        assert!(b.take(8, 0).is_ok());
        assert!(b.take(4, 3).is_ok());
        assert!(matches!(
            b.take(2, 0),
            Err(Error::TooManySamples { limit: 10 })
        ));
        let b = Budget::new(&Options {
            timeout: Duration::ZERO,
            ..Options::default()
        });
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(b.check_time(), Err(Error::Timeout)));
    }
}
