//! What the query tests share: a source over series in memory.

use fleetmon_promql::Source;
use fleetmon_tsdb::{Labels, Matcher, SeriesPoints};

/// Series in memory; select filters by matchers and time.
pub struct Mem(pub Vec<SeriesPoints>);

impl Source for Mem {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<SeriesPoints> {
        self.0
            .iter()
            .filter(|s| {
                matchers
                    .iter()
                    .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
            })
            .map(|s| SeriesPoints {
                labels: s.labels.clone(),
                points: s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.0 >= start && p.0 <= end)
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    }
    fn series(&self, _: &[Matcher]) -> Vec<Labels> {
        self.0.iter().map(|s| s.labels.clone()).collect()
    }
    fn label_names(&self, _: &[Matcher]) -> Vec<String> {
        Vec::new()
    }
    fn label_values(&self, _: &str, _: &[Matcher]) -> Vec<String> {
        Vec::new()
    }
}
