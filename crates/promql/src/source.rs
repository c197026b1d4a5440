//! Where the engine reads samples: a small trait over the time-series engine, so the server can
//! hand in its store and tests an in-memory database. Implemented for [`fleetmon_tsdb::Db`].

use fleetmon_tsdb::{Db, Labels, Matcher, SeriesPoints};

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
}
