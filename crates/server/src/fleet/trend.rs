//! A robust straight-line fit over a window of samples, for forecasts (battery empty, disk
//! full): the Theil–Sen estimator — the slope is the median of the pairwise slopes, so
//! quantised readings (whole percent) and outliers barely move it — with Sen's 95 % confidence
//! interval of the slope, which gives the forecast its uncertainty band.

/// Pairwise slopes are computed over at most this many evenly spread points (O(n²) pairs).
const MAX_POINTS: usize = 120;

/// A fitted line, time in hours relative to the last sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Change per hour.
    pub slope_per_hour: f64,
    /// The fitted value at the last sample's time.
    pub level_now: f64,
    /// Sen's 95 % confidence interval of the slope, low ≤ slope ≤ high.
    pub slope_low: f64,
    pub slope_high: f64,
}

impl Trend {
    /// Hours until the line, falling, reaches `floor`: `(best, soonest, latest)`; none when
    /// the best estimate does not fall (a `latest` of none: the slow end does not fall).
    pub fn hours_until(&self, floor: f64) -> Option<(f64, f64, Option<f64>)> {
        let left = (self.level_now - floor).max(0.0);
        let hours = |slope: f64| (slope < 0.0).then(|| left / -slope);
        let best = hours(self.slope_per_hour)?;
        let soonest = hours(self.slope_low.min(self.slope_per_hour)).unwrap_or(best);
        Some((
            best,
            soonest,
            hours(self.slope_high.min(self.slope_per_hour)),
        ))
    }
}

/// Fits `(ts_ms, value)` samples in time order; none with fewer than two distinct times.
pub fn fit(points: &[(i64, f64)]) -> Option<Trend> {
    let &(last_ts, _) = points.last()?;
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let sample: Vec<(f64, f64)> = points
        .iter()
        .step_by(step)
        .filter(|p| p.1.is_finite())
        .map(|&(t, v)| ((t - last_ts) as f64 / 3_600_000.0, v))
        .collect();
    let mut slopes = Vec::with_capacity(sample.len() * sample.len() / 2);
    for (i, a) in sample.iter().enumerate() {
        for b in &sample[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut intercepts: Vec<f64> = sample.iter().map(|(h, v)| v - slope * h).collect();
    let level_now = median(&mut intercepts)?;
    // `median` left the slopes sorted.
    let (lo, hi) = sen_interval(sample.len(), slopes.len());
    Some(Trend {
        slope_per_hour: slope,
        level_now,
        slope_low: slopes[lo],
        slope_high: slopes[hi],
    })
}

/// Ranks (0-based, into the sorted pairwise slopes of `n` points) bounding Sen's 95 %
/// confidence interval of the Theil–Sen slope: `(N ∓ z·√(n(n−1)(2n+5)/18)) / 2`.
fn sen_interval(n: usize, slopes: usize) -> (usize, usize) {
    let n = n as f64;
    let c = 1.96 * (n * (n - 1.0) * (2.0 * n + 5.0) / 18.0).sqrt();
    let total = slopes as f64;
    let last = slopes.saturating_sub(1);
    let lo = ((total - c) / 2.0).floor().max(0.0) as usize;
    let hi = ((total + c) / 2.0).ceil().max(0.0) as usize;
    (lo.min(last), hi.min(last))
}

/// Sorts `v` and returns its median; none when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_line_is_found_with_its_band() {
        // 2 units per hour down from 100, ±1 of deterministic noise, a reading a minute.
        let points: Vec<(i64, f64)> = (0..240)
            .map(|i| {
                let noise = ((i * 7919) % 21) as f64 / 10.0 - 1.0;
                (i * 60_000, 100.0 - 2.0 * i as f64 / 60.0 + noise)
            })
            .collect();
        let t = fit(&points).unwrap();
        assert!((t.slope_per_hour + 2.0).abs() < 0.1, "{t:?}");
        assert!(t.slope_low <= t.slope_per_hour && t.slope_per_hour <= t.slope_high);
        assert!(t.slope_high - t.slope_low < 0.5, "{t:?}");
        let (best, soonest, latest) = t.hours_until(0.0).unwrap();
        // At the last reading the line is at 92: 46 hours left at 2 an hour.
        assert!((best - 46.0).abs() < 2.0, "{best}");
        assert!(soonest <= best && best <= latest.unwrap());
    }

    #[test]
    fn a_rising_or_flat_line_never_reaches_the_floor() {
        let rising: Vec<(i64, f64)> = (0..50).map(|i| (i * 60_000, i as f64)).collect();
        assert_eq!(fit(&rising).unwrap().hours_until(0.0), None);
        let flat: Vec<(i64, f64)> = (0..50).map(|i| (i * 60_000, 5.0)).collect();
        assert_eq!(fit(&flat).unwrap().hours_until(0.0), None);
        assert_eq!(fit(&[(0, 1.0)]), None);
        assert_eq!(fit(&[]), None);
    }
}
