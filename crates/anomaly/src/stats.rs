//! Running statistics with a fixed-size state.
//!
//! Everything the detectors remember about the past lives in these: exponentially weighted
//! means and variances, whose weight starts as a plain average (`1/n`) and settles at a floor
//! (`alpha`), so early estimates are not dominated by the first sample and later ones keep
//! following a drifting series.

/// An exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy)]
pub struct Ewm {
    alpha: f64,
    mean: f64,
    var: f64,
    n: u64,
}

impl Ewm {
    /// A statistic whose weight on a new sample never falls below `alpha` (0 < alpha <= 1).
    pub const fn new(alpha: f64) -> Self {
        Self {
            alpha,
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    /// Adds one sample. Non-finite samples are ignored.
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        let a = self.alpha.max(1.0 / self.n as f64);
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    /// Moves the mean to `mean`, keeping the spread and the count.
    pub fn rebase(&mut self, mean: f64) {
        if mean.is_finite() {
            self.mean = mean;
        }
    }

    /// The weighted mean (0 before the first sample).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The weighted variance.
    pub fn var(&self) -> f64 {
        self.var
    }

    /// The weighted standard deviation.
    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// How many samples have been added.
    pub fn count(&self) -> u64 {
        self.n
    }
}

/// The median of a slice, which it reorders. `None` when empty.
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_as_a_plain_average() {
        let mut e = Ewm::new(0.01);
        for x in [1.0, 2.0, 3.0] {
            e.update(x);
        }
        assert!((e.mean() - 2.0).abs() < 1e-12);
        assert!((e.var() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ignores_non_finite() {
        let mut e = Ewm::new(0.5);
        e.update(f64::NAN);
        e.update(f64::INFINITY);
        assert_eq!(e.count(), 0);
    }

    #[test]
    fn median() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_in_place(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median_in_place(&mut []), None);
    }
}
