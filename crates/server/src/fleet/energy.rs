//! Energy: how fast a device's battery drains and when it will be empty.
//!
//! From the `battery_charge_ratio` history: the **current discharge** is the run of samples
//! since the charge last went up (a rise of more than [`CHARGE_RISE`] means the charger was on,
//! so earlier samples belong to another discharge). Its slope is fitted with the Theil–Sen
//! estimator ([`trend`]: the median of pairwise slopes), which shrugs off quantised readings (most gauges
//! report whole percent) and outliers; the fitted line, not the noisy last reading, gives the
//! charge now. Time to empty is that charge divided by the drain rate.

use serde::Serialize;

use super::trend::{self, Trend};

/// A rise in charge larger than this between two samples means charging.
pub const CHARGE_RISE: f64 = 0.005;
/// At least this much discharge history before estimating.
pub const MIN_SPAN_MS: i64 = 10 * 60 * 1000;
const MIN_POINTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Charge now, from the fitted line, 0..1.
    pub charge_ratio: f64,
    /// Charge lost per hour, as a ratio (0.05 = 5 % per hour); ≤ 0 when not draining.
    pub drain_ratio_per_hour: f64,
    /// Seconds until empty at the current drain; none while charging or not draining.
    pub time_to_empty_seconds: Option<f64>,
    /// The uncertainty band of the time to empty, from Sen's 95 % confidence interval of the
    /// slope (ranks of the sorted pairwise slopes): the faster drain gives the low end; no high
    /// end when the slow end of the interval does not drain at all.
    pub time_to_empty_low_seconds: Option<f64>,
    pub time_to_empty_high_seconds: Option<f64>,
    /// The latest samples show the charge going up.
    pub charging: bool,
    /// How much discharge history the estimate rests on, seconds.
    pub observed_seconds: f64,
}

/// Estimates from `(ts_ms, charge_ratio)` samples in time order.
pub fn estimate(points: &[(i64, f64)]) -> Option<Estimate> {
    let points: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let &(last_ts, last_charge) = points.last()?;
    // Walk back while the charge (going back in time) does not fall: that is the current
    // discharge. A drop going backwards is a rise going forwards: the charger.
    let mut start = points.len() - 1;
    let mut high = last_charge;
    while start > 0 {
        let prev = points[start - 1].1;
        if prev + CHARGE_RISE < high {
            break;
        }
        high = high.max(prev);
        start -= 1;
    }
    let charging = start == points.len() - 1 && points.len() > 1;
    let segment = &points[start..];
    let span = last_ts - segment[0].0;
    if charging || segment.len() < MIN_POINTS || span < MIN_SPAN_MS {
        return Some(Estimate {
            charge_ratio: last_charge,
            drain_ratio_per_hour: 0.0,
            time_to_empty_seconds: None,
            time_to_empty_low_seconds: None,
            time_to_empty_high_seconds: None,
            charging,
            observed_seconds: span as f64 / 1000.0,
        });
    }
    let trend = trend::fit(segment)?;
    let now = trend.level_now.clamp(0.0, 1.0);
    let drain = -trend.slope_per_hour;
    // Below 0.01 % an hour the battery is, for all purposes, not draining.
    let hours = (drain > 1e-4)
        .then(|| {
            Trend {
                level_now: now,
                ..trend
            }
            .hours_until(0.0)
        })
        .flatten();
    let secs = |h: f64| h * 3600.0;
    Some(Estimate {
        charge_ratio: now,
        drain_ratio_per_hour: drain,
        time_to_empty_seconds: hours.map(|h| secs(h.0)),
        time_to_empty_low_seconds: hours.map(|h| secs(h.1)),
        time_to_empty_high_seconds: hours.and_then(|h| h.2).map(secs),
        charging: false,
        observed_seconds: span as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// A discharge from `start`: the load jumps around minute to minute (±50 %, busy and
    /// idle spells) and swings ±5 % over the day; read every minute and reported in whole
    /// percent, as most gauges do, until empty. Returns the readings and the true time of empty.
    fn discharge(start: f64, per_hour: f64, t0: i64) -> (Vec<(i64, f64)>, i64) {
        let mut charge = start;
        let mut t = t0;
        let mut out = Vec::new();
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ t0.unsigned_abs();
        while charge > 0.0 {
            out.push((t, (charge * 100.0).round() / 100.0));
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let jitter = ((rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1.0;
            let daily = 0.05 * ((t as f64 / 86_400_000.0) * std::f64::consts::TAU).sin();
            charge -= per_hour * (1.0 + jitter + daily) / 60.0;
            t += MIN;
        }
        (out, t)
    }

    #[test]
    fn time_to_empty_within_ten_percent_after_a_fifth_of_the_discharge() {
        for (start, per_hour) in [(0.9, 0.05), (0.6, 0.02), (1.0, 0.10)] {
            let (readings, empty_at) = discharge(start, per_hour, 1_700_000_000_000);
            let fifth = readings
                .iter()
                .position(|&(_, c)| c <= start - 0.2 * start)
                .unwrap();
            // From a fifth of the discharge observed to four fifths (near empty, whole-percent
            // readings alone are ±0.5 points of a few points left).
            for i in (fifth..readings.len() * 4 / 5).step_by(30) {
                let e = estimate(&readings[..=i]).unwrap();
                let truth = (empty_at - readings[i].0) as f64 / 1000.0;
                let got = e.time_to_empty_seconds.unwrap();
                let (low, high) = (
                    e.time_to_empty_low_seconds.unwrap(),
                    e.time_to_empty_high_seconds.unwrap_or(f64::INFINITY),
                );
                assert!(low <= got && got <= high, "band {low}..{high} around {got}");
                assert!(
                    (got - truth).abs() <= 0.10 * truth,
                    "start {start}, {per_hour}/h, at {i}: estimated {got:.0} s, truth {truth:.0} s"
                );
            }
        }
    }

    #[test]
    fn a_charging_period_starts_a_new_discharge() {
        // Drain fast, charge back up, then drain slowly: only the slow drain counts.
        let (fast, _) = discharge(0.9, 0.20, 0);
        let fast: Vec<_> = fast.into_iter().take(120).collect();
        let mut t = fast.last().unwrap().0;
        let mut c = fast.last().unwrap().1;
        let mut all = fast.clone();
        while c < 0.95 {
            t += MIN;
            c += 0.01;
            all.push((t, c));
        }
        let (slow, empty_at) = discharge(0.95, 0.03, t + MIN);
        let upto = slow.len() / 2;
        all.extend_from_slice(&slow[..upto]);
        let e = estimate(&all).unwrap();
        assert!((e.drain_ratio_per_hour - 0.03).abs() < 0.006, "{e:?}");
        let truth = (empty_at - slow[upto - 1].0) as f64 / 1000.0;
        assert!(
            (e.time_to_empty_seconds.unwrap() - truth).abs() <= 0.1 * truth,
            "{e:?}"
        );
    }

    #[test]
    fn while_charging_there_is_no_time_to_empty() {
        let points: Vec<_> = (0..30).map(|i| (i * MIN, 0.5 + 0.01 * i as f64)).collect();
        let e = estimate(&points).unwrap();
        assert!(e.charging);
        assert_eq!(e.time_to_empty_seconds, None);
        // Too little history: an answer, but no estimate yet.
        let e = estimate(&[(0, 0.5), (MIN, 0.5)]).unwrap();
        assert_eq!(e.time_to_empty_seconds, None);
        assert!(estimate(&[]).is_none());
    }
}
