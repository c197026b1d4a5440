//! The store's series of each device's samples, remembered by position. A sample's series is
//! its metric and labels plus the device's tags and `device`; resolving it means building that
//! label set and looking it up in the store's index, which at 100,000 devices cost more than
//! the rest of ingest. A device sends the same series in the same order batch after batch, so
//! the WAL writer keeps, per device and position in the batch, a keyed 64-bit hash of (tags,
//! metric, labels) and the series it resolved to; a sample whose hash is found reuses it.
//!
//! The hash is SipHash with a random key per process: a wrong match needs two of one device's
//! label sets to collide in 64 bits, which no input can be made to do without the key, and by
//! chance is about one in 10^14 for a device with 1,000 series.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use fleetmon_protocol::{Batch, Sample};

use crate::fleet::Tags;
use crate::store::{Point, SampleStore, SeriesKey, SeriesRef, StoreError};

/// Series remembered per device; past it, positions beyond are resolved every time.
const MAX_SERIES_PER_DEVICE: usize = 1024;

/// Each device's series by position in its batches.
#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    key: RandomState,
    devices: HashMap<String, Vec<(u64, SeriesRef)>>,
}

impl SeriesCache {
    /// Appends to `out` the series and point of every sample of `batch`, its device tagged
    /// `tags`, resolving in `store` the series not seen before.
    pub(crate) fn resolve(
        &mut self,
        store: &dyn SampleStore,
        batch: &Batch,
        tags: &Tags,
        out: &mut Vec<(SeriesRef, Point)>,
    ) -> Result<(), StoreError> {
        let mut tagged = self.key.build_hasher();
        tags.hash(&mut tagged);
        if !self.devices.contains_key(&batch.device) {
            self.devices.insert(batch.device.clone(), Vec::new());
        }
        let slots = self
            .devices
            .get_mut(&batch.device)
            .unwrap_or_else(|| unreachable!("inserted above"));
        for (i, s) in batch.samples.iter().enumerate() {
            let mut h = tagged.clone();
            s.metric.hash(&mut h);
            s.labels.hash(&mut h);
            let h = h.finish();
            let known = match slots.get(i) {
                Some(&(slot, series)) if slot == h => Some(series),
                _ => slots.iter().find(|(slot, _)| *slot == h).map(|&(_, r)| r),
            };
            let series = match known {
                Some(series) => series,
                None => {
                    let series = store.resolve(&series_key(s, &batch.device, tags))?;
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = (h, series);
                    } else if slots.len() < MAX_SERIES_PER_DEVICE {
                        slots.push((h, series));
                    }
                    series
                }
            };
            out.push((
                series,
                Point {
                    ts_ms: s.ts_ms,
                    value: s.value,
                },
            ));
        }
        Ok(())
    }
}

/// A sample's series: its labels, the device's tags (a label the sample sets wins), and
/// `device`.
pub(crate) fn series_key(s: &Sample, device: &str, tags: &Tags) -> SeriesKey {
    let mut labels = s.labels.clone();
    for (k, v) in tags {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels.insert("device".to_owned(), device.to_owned());
    SeriesKey {
        metric: s.metric.clone(),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::{Selector, TsdbStore};

    fn sample(metric: &str, labels: &[(&str, &str)], ts_ms: i64, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ts_ms,
            value,
        }
    }

    fn batch(samples: Vec<Sample>) -> Batch {
        Batch {
            device: "d1".into(),
            boot_id: "b".into(),
            seq: 1,
            sent_at_ms: 0,
            dropped_before: 0,
            samples,
        }
    }

    /// A stored series: metric, labels, points.
    type Stored = (String, BTreeMap<String, String>, Vec<(i64, f64)>);

    #[test]
    fn samples_land_in_their_series_whatever_the_order_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = TsdbStore::open(dir.path(), fleetmon_tsdb::Options::default()).unwrap();
        let mut cache = SeriesCache::default();
        let mut tags = Tags::new();
        tags.insert("site".into(), "berlin".into());
        let mut append = |b: &Batch, tags: &Tags| {
            let mut refs = Vec::new();
            cache.resolve(&store, b, tags, &mut refs).unwrap();
            store.append_refs(&refs).unwrap();
            refs
        };
        let first = append(
            &batch(vec![
                sample("temp", &[("sensor", "a")], 1_000, 1.0),
                sample("temp", &[("sensor", "b")], 1_000, 2.0),
            ]),
            &tags,
        );
        // Swapped order, a new series in between: each sample still finds its own series.
        let second = append(
            &batch(vec![
                sample("temp", &[("sensor", "b")], 2_000, 20.0),
                sample("humidity", &[], 2_000, 0.5),
                sample("temp", &[("sensor", "a")], 2_000, 10.0),
            ]),
            &tags,
        );
        assert_eq!(second[0].0, first[1].0);
        assert_eq!(second[2].0, first[0].0);
        // New tags: new series.
        tags.insert("site".into(), "paris".into());
        let third = append(
            &batch(vec![sample("temp", &[("sensor", "a")], 3_000, 100.0)]),
            &tags,
        );
        assert_ne!(third[0].0, first[0].0);
        let mut got: Vec<Stored> = store
            .select(&Selector::default(), 0, 10_000)
            .into_iter()
            .map(|s| {
                let points = s.points.iter().map(|p| (p.ts_ms, p.value)).collect();
                (s.metric, s.labels, points)
            })
            .collect();
        got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            got,
            vec![
                (
                    "humidity".into(),
                    labels(&[("device", "d1"), ("site", "berlin")]),
                    vec![(2_000, 0.5)]
                ),
                (
                    "temp".into(),
                    labels(&[("device", "d1"), ("sensor", "a"), ("site", "berlin")]),
                    vec![(1_000, 1.0), (2_000, 10.0)]
                ),
                (
                    "temp".into(),
                    labels(&[("device", "d1"), ("sensor", "a"), ("site", "paris")]),
                    vec![(3_000, 100.0)]
                ),
                (
                    "temp".into(),
                    labels(&[("device", "d1"), ("sensor", "b"), ("site", "berlin")]),
                    vec![(1_000, 2.0), (2_000, 20.0)]
                ),
            ]
        );
    }

    #[test]
    fn a_label_the_sample_sets_wins_over_a_tag() {
        let mut tags = Tags::new();
        tags.insert("site".into(), "berlin".into());
        let key = series_key(&sample("temp", &[("site", "lab")], 0, 1.0), "d1", &tags);
        assert_eq!(key.labels["site"], "lab");
        assert_eq!(key.labels["device"], "d1");
    }
}
