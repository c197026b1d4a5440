//! Where samples live. The ingest pipeline appends each group of batches to a [`SampleStore`]
//! durably *before* it records the batches as stored, so a batch the server acknowledged always
//! has its samples on disk; the API reads from the store. The store is the time-series engine
//! ([`TsdbStore`] over `fleetmon-tsdb`); the trait keeps the server independent of it.

mod tsdb;

use std::collections::BTreeMap;

use serde::Serialize;
pub use tsdb::TsdbStore;

/// A series' identity: metric name and labels, the `device` label included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
}

/// A series the store resolved once ([`SampleStore::resolve`]), appended to by reference
/// after ([`SampleStore::append_refs`]) without building and hashing its labels each time.
/// Stable for the life of the store, across restarts.
pub type SeriesRef = fleetmon_tsdb::SeriesId;

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

/// A series and its points in a time range, ascending by time.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesData {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Point>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub stored: usize,
    /// Refused as older than the late-data limit (7 days by default).
    pub too_old: usize,
}

/// Counts for self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub series: u64,
    pub samples: u64,
    pub disk_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sample store: {0}")]
    Engine(#[from] fleetmon_tsdb::DbError),
    #[error("series {0:?} is invalid: {1}")]
    Series(String, fleetmon_tsdb::SeriesError),
}

/// A durable sample store. A point at an existing timestamp of a series replaces it, so
/// appending the same batch twice stores it once.
pub trait SampleStore: Send + Sync {
    /// Stores `samples` durably: returns only once they are on disk. On error none is stored.
    fn append(&self, samples: &[(SeriesKey, Point)]) -> Result<Appended, StoreError>;
    /// The reference of series `key`, creating it if new (it has no samples until appended).
    fn resolve(&self, key: &SeriesKey) -> Result<SeriesRef, StoreError>;
    /// As [`SampleStore::append`], with series resolved before.
    fn append_refs(&self, samples: &[(SeriesRef, Point)]) -> Result<Appended, StoreError>;
    /// Points of every matching series with `start_ms <= ts_ms <= end_ms`.
    fn select(&self, selector: &Selector, start_ms: i64, end_ms: i64) -> Vec<SeriesData>;
    /// The newest point of every matching series.
    fn last_values(&self, selector: &Selector) -> Vec<(SeriesKey, Point)>;
    fn stats(&self) -> StoreStats;
    /// Points of every series matching the engine's `matchers` (all four kinds, on `__name__`
    /// too) with `start_ms <= ts_ms <= end_ms`; what PromQL selectors read.
    fn select_matching(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<fleetmon_tsdb::SeriesPoints>;
    /// Label sets (`__name__` included) of the matching series.
    fn series_matching(&self, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<fleetmon_tsdb::Labels>;
    /// Label sets of the matching series with points in `[start_ms, end_ms]`.
    fn series_in_range(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<fleetmon_tsdb::Labels> {
        self.select_matching(matchers, start_ms, end_ms)
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| s.labels)
            .collect()
    }
    /// About how many points [`SampleStore::select_matching`] would return, when the store
    /// can tell cheaply (see [`fleetmon_promql::Source::estimate_samples`]).
    fn estimate_samples(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Option<u64> {
        let _ = (matchers, start_ms, end_ms);
        None
    }
    /// Rollup resolutions [`SampleStore::select_rollups`] may answer with rows (none by
    /// default).
    fn rollup_resolutions(&self) -> Vec<i64> {
        Vec::new()
    }
    /// [`SampleStore::select_matching`] with exact rollup rows where the store has them (see
    /// [`fleetmon_promql::Source::select_rollups`]); by default everything raw.
    fn select_rollups(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<fleetmon_tsdb::SeriesRollups> {
        let _ = (resolution, raw_ranges);
        self.select_matching(matchers, start_ms, end_ms)
            .into_iter()
            .map(|s| fleetmon_tsdb::SeriesRollups {
                labels: s.labels,
                rows: Vec::new(),
                raw: s.points,
            })
            .collect()
    }
    /// Label names used by the matching series (all with no matchers).
    fn label_names(&self, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<String>;
    /// Values of label `name` among the matching series.
    fn label_values(&self, name: &str, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<String>;
    /// Housekeeping: flush, compact, apply retention. Called now and then.
    fn maintain(&self, now_ms: i64) -> Result<(), StoreError>;
}

/// The store as the PromQL engine's [`fleetmon_promql::Source`]: what the query API and the
/// alert rules read.
pub struct StoreSource(pub std::sync::Arc<dyn SampleStore>);

impl fleetmon_promql::Source for StoreSource {
    fn select(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<fleetmon_tsdb::SeriesPoints> {
        self.0.select_matching(matchers, start_ms, end_ms)
    }
    fn series(&self, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<fleetmon_tsdb::Labels> {
        self.0.series_matching(matchers)
    }
    fn label_names(&self, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<String> {
        self.0.label_names(matchers)
    }
    fn label_values(&self, name: &str, matchers: &[fleetmon_tsdb::Matcher]) -> Vec<String> {
        self.0.label_values(name, matchers)
    }
    fn estimate_samples(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Option<u64> {
        self.0.estimate_samples(matchers, start_ms, end_ms)
    }
    fn rollup_resolutions(&self) -> Vec<i64> {
        self.0.rollup_resolutions()
    }
    fn select_rollups(
        &self,
        matchers: &[fleetmon_tsdb::Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<fleetmon_tsdb::SeriesRollups> {
        self.0
            .select_rollups(matchers, start_ms, end_ms, resolution, raw_ranges)
    }
}
