//! [`SampleStore`] on the `fleetmon-tsdb` engine, kept in `DATA_DIR/tsdb`.

use std::collections::BTreeMap;
use std::path::Path;

use fleetmon_tsdb::{Db, Labels, Matcher, Options, Sample};

use super::{
    Appended, Point, SampleStore, Selector, SeriesData, SeriesKey, SeriesRef, StoreError,
    StoreStats,
};

pub struct TsdbStore {
    db: Db,
}

impl TsdbStore {
    /// Opens (creating if needed) the engine in `dir`, replaying its WAL.
    pub fn open(dir: &Path, options: Options) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open_dir(dir, options)?,
        })
    }
}

fn labels_of(key: &SeriesKey) -> Result<Labels, StoreError> {
    Labels::from_metric(
        key.metric.as_str(),
        key.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| StoreError::Series(key.metric.clone(), e))
}

fn key_of(labels: &Labels) -> SeriesKey {
    SeriesKey {
        metric: labels.metric().to_owned(),
        labels: labels
            .iter()
            .filter(|(k, _)| *k != fleetmon_tsdb::METRIC_NAME)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn matchers(selector: &Selector) -> Vec<Matcher> {
    selector
        .metric
        .iter()
        .map(|m| Matcher::metric(m))
        .chain(selector.labels.iter().map(|(k, v)| Matcher::eq(k, v)))
        .collect()
}

impl SampleStore for TsdbStore {
    fn append(&self, samples: &[(SeriesKey, Point)]) -> Result<Appended, StoreError> {
        let labels: Vec<Labels> = samples
            .iter()
            .map(|(key, _)| labels_of(key))
            .collect::<Result<_, _>>()?;
        let batch: Vec<Sample<'_>> = labels
            .iter()
            .zip(samples)
            .map(|(labels, (_, p))| Sample {
                labels,
                ts_ms: p.ts_ms,
                value: p.value,
            })
            .collect();
        let report = self.db.append(&batch, None)?;
        Ok(Appended {
            stored: report.accepted,
            too_old: report.too_old,
        })
    }

    fn resolve(&self, key: &SeriesKey) -> Result<SeriesRef, StoreError> {
        Ok(self.db.resolve(&labels_of(key)?))
    }

    fn append_refs(&self, samples: &[(SeriesRef, Point)]) -> Result<Appended, StoreError> {
        let batch: Vec<(SeriesRef, i64, f64)> = samples
            .iter()
            .map(|&(series, p)| (series, p.ts_ms, p.value))
            .collect();
        let report = self.db.append_ids(&batch, None)?;
        Ok(Appended {
            stored: report.accepted,
            too_old: report.too_old,
        })
    }

    fn select(&self, selector: &Selector, start_ms: i64, end_ms: i64) -> Vec<SeriesData> {
        self.db
            .select(&matchers(selector), start_ms, end_ms)
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| {
                let key = key_of(&s.labels);
                SeriesData {
                    metric: key.metric,
                    labels: key.labels,
                    points: s
                        .points
                        .iter()
                        .map(|&(ts_ms, value)| Point { ts_ms, value })
                        .collect(),
                }
            })
            .collect()
    }

    fn last_values(&self, selector: &Selector) -> Vec<(SeriesKey, Point)> {
        self.db
            .last_values(&matchers(selector))
            .into_iter()
            .map(|v| {
                (
                    key_of(&v.labels),
                    Point {
                        ts_ms: v.ts_ms,
                        value: v.value,
                    },
                )
            })
            .collect()
    }

    fn stats(&self) -> StoreStats {
        let s = self.db.stats();
        StoreStats {
            series: s.series,
            samples: s.head_samples + s.block_samples,
            disk_bytes: s.block_bytes + s.wal_bytes,
        }
    }

    fn maintain(&self, now_ms: i64) -> Result<(), StoreError> {
        Ok(self.db.maintain(now_ms)?)
    }

    fn select_matching(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<fleetmon_tsdb::SeriesPoints> {
        self.db.select(matchers, start_ms, end_ms)
    }

    fn series_matching(&self, matchers: &[Matcher]) -> Vec<Labels> {
        self.db.series(matchers)
    }

    fn series_in_range(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.db.series_in_range(matchers, start_ms, end_ms)
    }

    fn estimate_samples(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Option<u64> {
        Some(self.db.estimate_samples(matchers, start_ms, end_ms))
    }

    fn rollup_resolutions(&self) -> Vec<i64> {
        self.db.rollup_resolutions()
    }

    fn select_rollups(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<fleetmon_tsdb::SeriesRollups> {
        self.db
            .select_rollups(matchers, start_ms, end_ms, resolution, raw_ranges)
    }

    fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        self.db.label_names(matchers)
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        self.db.label_values(name, matchers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str, device: &str) -> SeriesKey {
        SeriesKey {
            metric: metric.into(),
            labels: BTreeMap::from([("device".to_owned(), device.to_owned())]),
        }
    }

    #[test]
    fn appends_are_selected_back_and_repeats_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = TsdbStore::open(dir.path(), Options::default()).unwrap();
        let now = fleetmon_tsdb::db::system_clock();
        let p = |t: i64, v: f64| Point {
            ts_ms: now - 10_000 + t,
            value: v,
        };
        let batch = vec![
            (key("m", "d1"), p(0, 1.0)),
            (key("m", "d1"), p(10, 2.0)),
            (key("m", "d2"), p(0, 3.0)),
        ];
        store.append(&batch).unwrap();
        store.append(&batch).unwrap();
        let sel = Selector {
            metric: Some("m".into()),
            labels: BTreeMap::from([("device".to_owned(), "d1".to_owned())]),
        };
        let got = store.select(&sel, i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].points, vec![p(0, 1.0), p(10, 2.0)]);
        assert_eq!(got[0].labels["device"], "d1");
        let last = store.last_values(&Selector::default());
        assert_eq!(last.len(), 2);
        drop(store);
        let store = TsdbStore::open(dir.path(), Options::default()).unwrap();
        assert_eq!(store.select(&sel, i64::MIN, i64::MAX)[0].points.len(), 2);
        assert_eq!(store.stats().series, 2);
    }

    #[test]
    fn matcher_reads_for_the_query_engine() {
        let dir = tempfile::tempdir().unwrap();
        let store = TsdbStore::open(dir.path(), Options::default()).unwrap();
        let now = fleetmon_tsdb::db::system_clock();
        let p = |v: f64| Point {
            ts_ms: now - 1_000,
            value: v,
        };
        store
            .append(&[
                (key("m", "d1"), p(1.0)),
                (key("m", "d2"), p(2.0)),
                (key("n", "d1"), p(3.0)),
            ])
            .unwrap();
        let re = Matcher::new("device", fleetmon_tsdb::MatchOp::Regex, "d[2-9]").unwrap();
        let got = store.select_matching(&[Matcher::metric("m"), re], now - 10_000, now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.get("device"), Some("d2"));
        assert_eq!(
            store.series_matching(&[Matcher::eq("device", "d1")]).len(),
            2
        );
        assert_eq!(store.label_names(&[]), vec!["__name__", "device"]);
        assert_eq!(store.label_values("__name__", &[]), vec!["m", "n"]);
        assert_eq!(
            store.label_values("device", &[Matcher::metric("n")]),
            vec!["d1"]
        );
    }
}
