//! Where samples live once accepted. The ingest pipeline appends to a [`SampleStore`] after the
//! batch is durable in the WAL; the API reads from it. The skeleton's store is
//! [`MemoryStore`], rebuilt from the WAL on start; the time-series engine replaces it behind
//! this same trait.

mod memory;

use std::collections::BTreeMap;

pub use memory::MemoryStore;
use serde::Serialize;

/// A series' identity: metric name and labels, the `device` label included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
}

/// One stored point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub ts_ms: i64,
    pub value: f64,
}

/// Equality matchers on the metric name and labels; empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub metric: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.metric.as_ref().is_none_or(|m| *m == key.metric)
            && self
                .labels
                .iter()
                .all(|(k, v)| key.labels.get(k).is_some_and(|x| x == v))
    }
}

/// A series and its points in a time range, ascending by time.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesData {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Point>,
}

/// Counts for self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub series: u64,
    pub samples: u64,
}

/// A sample store. Appends arrive already durable (the WAL holds them); the store only has to
/// make them queryable. A point at an existing timestamp of a series replaces it.
pub trait SampleStore: Send + Sync {
    fn append(&self, key: SeriesKey, point: Point);
    /// Points of every matching series with `start_ms <= ts_ms <= end_ms`.
    fn select(&self, selector: &Selector, start_ms: i64, end_ms: i64) -> Vec<SeriesData>;
    fn stats(&self) -> StoreStats;
}
