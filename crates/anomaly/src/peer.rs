//! Fleet peers: is a device's value unlike those of its group (same model and site)?
//!
//! The group's centre is its median and its spread the median absolute deviation (MAD), so a
//! few odd devices do not hide each other. A device's deviation is `|x − median| / (1.4826 ·
//! MAD)` — about a z-score for normally spread values — and its score rises smoothly from 0
//! at `ignore_below` deviations to 0.5 at `half_score` and towards 1 beyond. Groups smaller
//! than `min_group` are not judged: with three devices, "unlike the others" means little.

use crate::stats::median_in_place;

/// The score of one device of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerScore<'a> {
    pub device: &'a str,
    pub value: f64,
    /// Robust z-score against the group (0 when the group is too small).
    pub deviation: f64,
    /// In [0, 1].
    pub score: f64,
}

/// Scores each device of a group against its peers; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerDetector {
    /// Fewest devices with a finite value for a group to be judged.
    pub min_group: usize,
    /// Deviations up to this score 0.
    pub ignore_below: f64,
    /// The deviation that scores 0.5.
    pub half_score: f64,
    /// Smallest spread credited to a group, relative to the median's magnitude, so a group
    /// of identical values does not make a tiny difference infinitely anomalous.
    pub relative_floor: f64,
}

impl Default for PeerDetector {
    fn default() -> Self {
        Self {
            min_group: 5,
            ignore_below: 2.0,
            half_score: 6.0,
            relative_floor: 0.01,
        }
    }
}

/// The MAD of normally distributed values is this fraction of their standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;

impl PeerDetector {
    /// Scores `(device, value)` pairs of one metric for one group. Non-finite values score 0
    /// and do not count towards the group. The output follows the input order.
    pub fn score<'a>(&self, group: &[(&'a str, f64)]) -> Vec<PeerScore<'a>> {
        let mut values: Vec<f64> = group
            .iter()
            .map(|&(_, v)| v)
            .filter(|v| v.is_finite())
            .collect();
        let judged = values.len() >= self.min_group.max(3);
        let median = median_in_place(&mut values).unwrap_or(0.0);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        let mad = median_in_place(&mut deviations).unwrap_or(0.0);
        let spread = (MAD_TO_SIGMA * mad)
            .max(self.relative_floor * median.abs())
            .max(f64::MIN_POSITIVE);
        group
            .iter()
            .map(|&(device, value)| {
                let deviation = if judged && value.is_finite() {
                    (value - median).abs() / spread
                } else {
                    0.0
                };
                let excess = (deviation - self.ignore_below).max(0.0);
                let half = (self.half_score - self.ignore_below).max(f64::MIN_POSITIVE);
                let score = excess * excess / (excess * excess + half * half);
                PeerScore {
                    device,
                    value,
                    deviation,
                    score: score.clamp(0.0, 1.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(values: &[f64]) -> Vec<(String, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (format!("dev{i}"), v))
            .collect()
    }

    fn scores(values: &[f64]) -> Vec<f64> {
        let g = group(values);
        let refs: Vec<(&str, f64)> = g.iter().map(|(d, v)| (d.as_str(), *v)).collect();
        PeerDetector::default()
            .score(&refs)
            .iter()
            .map(|s| s.score)
            .collect()
    }

    #[test]
    fn the_odd_one_out_scores_high_and_the_rest_low() {
        let s = scores(&[50.0, 51.0, 49.5, 50.5, 49.0, 50.2, 80.0]);
        assert!(s[6] > 0.9, "{s:?}");
        assert!(s[..6].iter().all(|&x| x < 0.05), "{s:?}");
    }

    #[test]
    fn one_outlier_does_not_mask_another() {
        let s = scores(&[50.0, 51.0, 49.5, 50.5, 49.0, 50.2, 80.0, 20.0]);
        assert!(s[6] > 0.9 && s[7] > 0.9, "{s:?}");
    }

    #[test]
    fn small_groups_are_not_judged() {
        let s = scores(&[50.0, 51.0, 90.0, 50.0]);
        assert!(s.iter().all(|&x| x == 0.0), "{s:?}");
    }

    #[test]
    fn identical_values_and_non_finite_are_safe() {
        let s = scores(&[7.0, 7.0, 7.0, 7.0, 7.0, 7.0, f64::NAN, 7.01]);
        assert!(s.iter().all(|x| (0.0..=1.0).contains(x)), "{s:?}");
        assert_eq!(s[6], 0.0);
        assert!(s[7] < 0.5, "a 0.1 % difference is not an anomaly: {s:?}");
        let s = scores(&[0.0; 6]);
        assert!(s.iter().all(|&x| x == 0.0));
    }
}
