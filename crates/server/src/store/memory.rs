//! The skeleton's sample store: every series' points in memory, sorted by time. Durability comes
//! from the ingest WAL, which is replayed into it on start. Simple and exact; memory grows with
//! every sample, which is why the time-series engine replaces it.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Point, SampleStore, Selector, SeriesData, SeriesKey, StoreStats};

#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    series: HashMap<SeriesKey, Vec<Point>>,
    samples: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SampleStore for MemoryStore {
    fn append(&self, key: SeriesKey, point: Point) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let points = inner.series.entry(key).or_default();
        let added = match points.last() {
            Some(last) if last.ts_ms < point.ts_ms => {
                points.push(point);
                true
            }
            None => {
                points.push(point);
                true
            }
            Some(_) => match points.binary_search_by_key(&point.ts_ms, |p| p.ts_ms) {
                Ok(i) => {
                    points[i] = point;
                    false
                }
                Err(i) => {
                    points.insert(i, point);
                    true
                }
            },
        };
        if added {
            inner.samples += 1;
        }
    }

    fn select(&self, selector: &Selector, start_ms: i64, end_ms: i64) -> Vec<SeriesData> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SeriesData> = inner
            .series
            .iter()
            .filter(|(key, _)| selector.matches(key))
            .map(|(key, points)| {
                let from = points.partition_point(|p| p.ts_ms < start_ms);
                let to = points.partition_point(|p| p.ts_ms <= end_ms);
                SeriesData {
                    metric: key.metric.clone(),
                    labels: key.labels.clone(),
                    points: points[from..to].to_vec(),
                }
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        out.sort_by(|a, b| (&a.metric, &a.labels).cmp(&(&b.metric, &b.labels)));
        out
    }

    fn stats(&self) -> StoreStats {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        StoreStats {
            series: inner.series.len() as u64,
            samples: inner.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(metric: &str, device: &str) -> SeriesKey {
        SeriesKey {
            metric: metric.into(),
            labels: BTreeMap::from([("device".to_owned(), device.to_owned())]),
        }
    }

    #[test]
    fn out_of_order_points_land_sorted_and_same_time_replaces() {
        let store = MemoryStore::new();
        for (ts, v) in [(30, 3.0), (10, 1.0), (20, 2.0), (20, 2.5)] {
            store.append(
                key("m", "d"),
                Point {
                    ts_ms: ts,
                    value: v,
                },
            );
        }
        let got = store.select(&Selector::default(), 0, 100);
        let ts: Vec<_> = got[0].points.iter().map(|p| (p.ts_ms, p.value)).collect();
        assert_eq!(ts, vec![(10, 1.0), (20, 2.5), (30, 3.0)]);
        assert_eq!(
            store.stats(),
            StoreStats {
                series: 1,
                samples: 3
            }
        );
    }

    #[test]
    fn selector_and_range_filter() {
        let store = MemoryStore::new();
        store.append(
            key("a", "d1"),
            Point {
                ts_ms: 5,
                value: 1.0,
            },
        );
        store.append(
            key("a", "d2"),
            Point {
                ts_ms: 5,
                value: 1.0,
            },
        );
        store.append(
            key("b", "d1"),
            Point {
                ts_ms: 50,
                value: 1.0,
            },
        );
        let sel = Selector {
            metric: None,
            labels: BTreeMap::from([("device".to_owned(), "d1".to_owned())]),
        };
        assert_eq!(store.select(&sel, 0, 100).len(), 2);
        assert_eq!(store.select(&sel, 0, 10).len(), 1);
        let sel = Selector {
            metric: Some("a".into()),
            ..Selector::default()
        };
        assert_eq!(store.select(&sel, 0, 100).len(), 2);
    }
}
