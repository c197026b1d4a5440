//! Where the engine reads samples: a small trait over the time-series engine, so the server can
//! hand in its store and tests an in-memory database. Implemented for [`fleetmon_tsdb::Db`].
//!
//! Long windows of `min max sum count avg last present _over_time` read through
//! [`Source::select_rollups`]: exact rollup rows where the store has them, raw samples
//! elsewhere. A source without rollups keeps the defaults (no resolutions, everything raw).

use fleetmon_tsdb::{Db, Labels, Matcher, SeriesPoints, SeriesRollups};

/// Read access to stored series.
pub trait Source {
    /// Samples of every matching series with `start_ms <= t <= end_ms`, ascending by time;
    /// series without samples there may be left out.
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<SeriesPoints>;
    /// Label sets of the matching series.
    fn series(&self, matchers: &[Matcher]) -> Vec<Labels>;
    /// Label names used by the matching series.
    fn label_names(&self, matchers: &[Matcher]) -> Vec<String>;
    /// Values of label `name` among the matching series.
    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String>;

    /// About how many samples [`Source::select`] would return, if the source can tell
    /// cheaply; the engine then reads a selector in one go when that fits its sample limit,
    /// instead of in slices of time. `None` (the default): slices.
    fn estimate_samples(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Option<u64> {
        let _ = (matchers, start_ms, end_ms);
        None
    }

    /// Resolutions (ms, ascending) at which [`Source::select_rollups`] may return rows; empty
    /// (the default) means the engine always reads raw samples.
    fn rollup_resolutions(&self) -> Vec<i64> {
        Vec::new()
    }

    /// The samples [`Source::select`] would return, with rows of `resolution` standing in for
    /// every sample of their interval `[t, t + resolution)` where the source has an exact row
    /// whose interval lies inside `[start_ms, end_ms]`; everything else raw, and the samples
    /// in `raw_ranges` (closed, ascending, disjoint) raw even inside rows. The default has no
    /// rows.
    fn select_rollups(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<SeriesRollups> {
        let _ = (resolution, raw_ranges);
        self.select(matchers, start_ms, end_ms)
            .into_iter()
            .map(|s| SeriesRollups {
                labels: s.labels,
                rows: Vec::new(),
                raw: s.points,
            })
            .collect()
    }
}

impl Source for Db {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<SeriesPoints> {
        Db::select(self, matchers, start_ms, end_ms)
    }

    fn series(&self, matchers: &[Matcher]) -> Vec<Labels> {
        Db::series(self, matchers)
    }

    fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        Db::label_names(self, matchers)
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        Db::label_values(self, name, matchers)
    }

    fn estimate_samples(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Option<u64> {
        Some(Db::estimate_samples(self, matchers, start_ms, end_ms))
    }

    fn rollup_resolutions(&self) -> Vec<i64> {
        Db::rollup_resolutions(self)
    }

    fn select_rollups(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<SeriesRollups> {
        Db::select_rollups(self, matchers, start_ms, end_ms, resolution, raw_ranges)
    }
}
