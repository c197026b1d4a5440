//! Anomaly scores, as series: a streaming detector (`fleetmon-anomaly`) per watched series
//! scores every incoming sample in [0, 1], written as `anomaly_score{metric="<name>", ...the
//! series' labels}`; and a peer score per device and watched metric, from how far the device's
//! latest value sits from its group's (same `model` and `site`), written as
//! `anomaly_peer_score{metric="<name>"}` with the derived series.
//!
//! Memory is bounded: at most `max_series` detectors (a fixed-size state each); series beyond
//! that are not scored and counted in [`Scorer::refused`].

use std::collections::{HashMap, HashSet};

use fleetmon_anomaly::{Detector, PeerDetector};

use super::{Device, Registry};
use crate::store::{Point, SeriesKey};

/// Metrics scored by default: the ones whose odd behaviour means trouble on a device.
pub const DEFAULT_METRICS: [&str; 3] = [
    "cpu_usage_ratio",
    "temperature_celsius",
    "probe_rtt_seconds",
];

/// Metrics compared across peers.
pub const PEER_METRICS: [&str; 3] = [
    "cpu_usage_ratio",
    "memory_used_ratio",
    "temperature_celsius",
];

/// The default cap on scored series: a detector keeps a few KB (its time-of-day profile is
/// most of it), so the cap bounds the scorer at roughly 200 MB.
pub const DEFAULT_MAX_SERIES: usize = 50_000;

/// Scores incoming samples of the watched metrics.
#[derive(Debug)]
pub struct Scorer {
    metrics: HashSet<String>,
    detectors: HashMap<SeriesKey, Box<Detector>>,
    max_series: usize,
    refused: u64,
}

impl Default for Scorer {
    fn default() -> Self {
        Self::new(
            DEFAULT_METRICS.iter().map(|m| (*m).to_owned()),
            DEFAULT_MAX_SERIES,
        )
    }
}

impl Scorer {
    pub fn new(metrics: impl IntoIterator<Item = String>, max_series: usize) -> Self {
        Self {
            metrics: metrics.into_iter().collect(),
            detectors: HashMap::new(),
            max_series,
            refused: 0,
        }
    }

    /// The `anomaly_score` samples for the watched ones among `samples`.
    pub fn score(&mut self, samples: &[(SeriesKey, Point)]) -> Vec<(SeriesKey, Point)> {
        let mut out = Vec::new();
        for (key, point) in samples {
            if !self.metrics.contains(&key.metric) {
                continue;
            }
            let full = self.detectors.len() >= self.max_series;
            let detector = match self.detectors.get_mut(key) {
                Some(d) => d,
                None if full => {
                    self.refused += 1;
                    continue;
                }
                None => self.detectors.entry(key.clone()).or_default(),
            };
            let score = detector.observe(point.ts_ms, point.value);
            let mut labels = key.labels.clone();
            labels.insert("metric".to_owned(), key.metric.clone());
            out.push((
                SeriesKey {
                    metric: "anomaly_score".to_owned(),
                    labels,
                },
                Point {
                    ts_ms: point.ts_ms,
                    value: score,
                },
            ));
        }
        out
    }

    /// Whether samples of `metric` are scored.
    pub fn watches(&self, metric: &str) -> bool {
        self.metrics.contains(metric)
    }

    /// Series being scored.
    pub fn series(&self) -> usize {
        self.detectors.len()
    }

    /// Samples not scored because the cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Devices compared with each other: same model and site.
type PeerGroup<'a> = (Option<&'a str>, Option<&'a str>);

/// Peer scores at `now_ms` of every device with a `model` or `site` and a latest value of a
/// peer metric (the highest over its series, e.g. the hottest sensor), each handed to `put`
/// as (device id, device, metric, score).
pub fn peer_scores<'r>(
    registry: &'r Registry,
    now_ms: i64,
    stale_after_ms: i64,
    put: &mut dyn FnMut(&'r str, &'r Device, &'static str, f64),
) {
    let detector = PeerDetector::default();
    for metric in PEER_METRICS {
        let mut groups: HashMap<PeerGroup<'_>, Vec<(&str, f64)>> = HashMap::new();
        for (id, d) in registry.iter() {
            let latest = d
                .last_values
                .of(metric)
                .filter(|&(_, ts, v)| now_ms - ts <= stale_after_ms && v.is_finite())
                .map(|(_, _, v)| v)
                .reduce(f64::max);
            let group = (
                d.tag_or_info("model"),
                d.tags.get("site").map(String::as_str),
            );
            if let (Some(v), (Some(_), _) | (_, Some(_))) = (latest, group) {
                groups.entry(group).or_default().push((id.as_str(), v));
            }
        }
        for members in groups.values() {
            for s in detector.score(members) {
                if let Some((id, d)) = registry.get_key_value(s.device) {
                    put(id, d, metric, s.score);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(device: &str, metric: &str) -> SeriesKey {
        SeriesKey {
            metric: metric.to_owned(),
            labels: BTreeMap::from([("device".to_owned(), device.to_owned())]),
        }
    }

    #[test]
    fn watched_series_are_scored_and_the_cap_holds() {
        let mut s = Scorer::new(["cpu_usage_ratio".to_owned()], 2);
        let mut scores = Vec::new();
        for i in 0..400 {
            let v = if i == 350 {
                0.99
            } else {
                0.2 + 0.01 * f64::from(i % 3)
            };
            let batch = [
                (
                    key("a", "cpu_usage_ratio"),
                    Point {
                        ts_ms: i64::from(i) * 10_000,
                        value: v,
                    },
                ),
                (
                    key("a", "load1"),
                    Point {
                        ts_ms: i64::from(i) * 10_000,
                        value: v,
                    },
                ),
            ];
            let out = s.score(&batch);
            assert_eq!(out.len(), 1, "only the watched metric");
            assert_eq!(out[0].0.metric, "anomaly_score");
            assert_eq!(out[0].0.labels["metric"], "cpu_usage_ratio");
            scores.push(out[0].1.value);
        }
        assert!(scores.iter().all(|v| (0.0..=1.0).contains(v)));
        let spike = scores[350];
        let calm = scores[300..349].iter().copied().fold(0.0, f64::max);
        assert!(spike > 0.5 && spike > calm, "spike {spike}, calm {calm}");
        s.score(&[(
            key("b", "cpu_usage_ratio"),
            Point {
                ts_ms: 0,
                value: 1.0,
            },
        )]);
        s.score(&[(
            key("c", "cpu_usage_ratio"),
            Point {
                ts_ms: 0,
                value: 1.0,
            },
        )]);
        assert_eq!((s.series(), s.refused()), (2, 1));
    }

    #[test]
    fn a_device_unlike_its_peers_scores_high() {
        let mut reg = Registry::default();
        for i in 0..8 {
            let d = reg.entry(&format!("d{i}"));
            d.tags.insert("model".into(), "pi4".into());
            d.tags.insert("site".into(), "berlin".into());
            let v = if i == 7 { 85.0 } else { 50.0 + f64::from(i) };
            d.last_values
                .insert(("temperature_celsius".into(), BTreeMap::new()), (1_000, v));
        }
        let scores = |now_ms| {
            let mut out = Vec::new();
            peer_scores(&reg, now_ms, 60_000, &mut |id, _, metric, score| {
                out.push((id.to_owned(), metric, score));
            });
            out
        };
        let out = scores(2_000);
        let score = |id: &str| {
            out.iter()
                .find(|(d, _, _)| d == id)
                .map(|(_, _, s)| *s)
                .unwrap()
        };
        assert!(score("d7") > 0.5, "{}", score("d7"));
        assert!(score("d3") < 0.5, "{}", score("d3"));
        assert!(out.iter().all(|(_, m, _)| *m == "temperature_celsius"));
        // Stale values are left out.
        assert!(scores(1_000_000).is_empty());
    }
}
