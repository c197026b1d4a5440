//! Energy: how fast a device's battery drains and when it will be empty.
//!
//! From the `battery_charge_ratio` history: the **current discharge** is the run of samples
//! since the charge last went up (a rise of more than [`CHARGE_RISE`] means the charger was on,
//! so earlier samples belong to another discharge). Its slope is fitted with the Theil–Sen
//! estimator (the median of pairwise slopes), which shrugs off quantised readings (most gauges
//! report whole percent) and outliers; the fitted line, not the noisy last reading, gives the
//! charge now. Time to empty is that charge divided by the drain rate.

use serde::Serialize;

/// A rise in charge larger than this between two samples means charging.
pub const CHARGE_RISE: f64 = 0.005;
/// At least this much discharge history before estimating.
pub const MIN_SPAN_MS: i64 = 10 * 60 * 1000;
const MIN_POINTS: usize = 5;
/// Pairwise slopes are computed over at most this many evenly spread points.
const MAX_POINTS: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Charge now, from the fitted line, 0..1.
    pub charge_ratio: f64,
    /// Charge lost per hour, as a ratio (0.05 = 5 % per hour); ≤ 0 when not draining.
    pub drain_ratio_per_hour: f64,
    /// Seconds until empty at the current drain; none while charging or not draining.
    pub time_to_empty_seconds: Option<f64>,
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
            charging,
            observed_seconds: span as f64 / 1000.0,
        });
    }
    let step = segment.len().div_ceil(MAX_POINTS);
    let sample: Vec<(f64, f64)> = segment
        .iter()
        .step_by(step)
        .map(|&(t, c)| ((t - last_ts) as f64 / 3_600_000.0, c))
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
    let mut intercepts: Vec<f64> = sample.iter().map(|(h, c)| c - slope * h).collect();
    let now = median(&mut intercepts)?.clamp(0.0, 1.0);
    let drain = -slope;
    Some(Estimate {
        charge_ratio: now,
        drain_ratio_per_hour: drain,
        time_to_empty_seconds: (drain > 1e-4).then(|| now / drain * 3600.0),
        charging: false,
        observed_seconds: span as f64 / 1000.0,
    })
}

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
