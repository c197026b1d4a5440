//! Each device's derived series, resolved in the store once. The derivation writes about
//! twenty series per device every few seconds; building, validating and hashing their label
//! sets on every pass cost more than everything else it does (BENCHMARKS.md, "100,000
//! devices"). A device's references are forgotten when its labels (its label tags) change.

use std::collections::{BTreeMap, HashMap};

use super::Device;
use super::derived::{LABEL_TAGS, device_labels};
use crate::store::{SampleStore, SeriesKey, SeriesRef, StoreError};

/// Most series remembered per device; past it the device's references start over (a device
/// whose interfaces or advisories keep changing cannot grow the cache without bound).
const MAX_SERIES_PER_DEVICE: usize = 256;

/// The derived series of every device, by device id.
#[derive(Debug, Default)]
pub struct SeriesRefs {
    devices: HashMap<String, DeviceRefs>,
}

/// One device's derived series.
#[derive(Debug)]
pub struct DeviceRefs {
    /// `device` and the label tags the references were resolved with.
    labels: BTreeMap<String, String>,
    series: Vec<Resolved>,
}

#[derive(Debug)]
struct Resolved {
    metric: &'static str,
    extra: Box<[(&'static str, Box<str>)]>,
    series: SeriesRef,
}

impl SeriesRefs {
    /// The references of device `id`, started over if its labels changed since.
    pub fn device(&mut self, id: &str, d: &Device) -> &mut DeviceRefs {
        if !self.devices.contains_key(id) {
            self.devices.insert(
                id.to_owned(),
                DeviceRefs {
                    labels: device_labels(id, d),
                    series: Vec::new(),
                },
            );
        }
        let refs = self
            .devices
            .get_mut(id)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if !refs.labels_match(d) {
            refs.labels = device_labels(id, d);
            refs.series.clear();
        }
        refs
    }
}

impl DeviceRefs {
    fn labels_match(&self, d: &Device) -> bool {
        let tags = LABEL_TAGS
            .iter()
            .filter(|t| d.tags.contains_key(**t))
            .count();
        self.labels.len() == tags + 1
            && LABEL_TAGS
                .iter()
                .all(|t| self.labels.get(*t) == d.tags.get(*t))
    }

    /// The series `metric` with the device's labels and `extra`, resolved in `store` the
    /// first time.
    pub fn series(
        &mut self,
        store: &dyn SampleStore,
        metric: &'static str,
        extra: &[(&'static str, &str)],
    ) -> Result<SeriesRef, StoreError> {
        let same = |r: &Resolved| {
            r.metric == metric
                && r.extra.len() == extra.len()
                && r.extra
                    .iter()
                    .zip(extra)
                    .all(|((k, v), (k2, v2))| k == k2 && **v == **v2)
        };
        if let Some(r) = self.series.iter().find(|r| same(r)) {
            return Ok(r.series);
        }
        let mut labels = self.labels.clone();
        for (k, v) in extra {
            labels.insert((*k).to_owned(), (*v).to_owned());
        }
        let series = store.resolve(&SeriesKey {
            metric: metric.to_owned(),
            labels,
        })?;
        if self.series.len() >= MAX_SERIES_PER_DEVICE {
            self.series.clear();
        }
        self.series.push(Resolved {
            metric,
            extra: extra.iter().map(|(k, v)| (*k, Box::from(*v))).collect(),
            series,
        });
        Ok(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Point, Selector, TsdbStore};

    #[test]
    fn references_are_resolved_once_and_follow_label_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = TsdbStore::open(dir.path(), fleetmon_tsdb::Options::default()).unwrap();
        let mut refs = SeriesRefs::default();
        let mut d = Device::default();
        d.tags.insert("site".into(), "berlin".into());
        let up = refs
            .device("d1", &d)
            .series(&store, "device_up", &[])
            .unwrap();
        let eth = refs
            .device("d1", &d)
            .series(
                &store,
                "network_utilization_ratio",
                &[("interface", "eth0")],
            )
            .unwrap();
        assert_ne!(up, eth);
        assert_eq!(
            refs.device("d1", &d)
                .series(&store, "device_up", &[])
                .unwrap(),
            up
        );
        // A new site: new labels, so a new series.
        d.tags.insert("site".into(), "paris".into());
        let moved = refs
            .device("d1", &d)
            .series(&store, "device_up", &[])
            .unwrap();
        assert_ne!(moved, up);
        for (series, value) in [(up, 1.0), (eth, 0.5), (moved, 0.0)] {
            store
                .append_refs(&[(
                    series,
                    Point {
                        ts_ms: 1_000,
                        value,
                    },
                )])
                .unwrap();
        }
        let all = store.select(&Selector::default(), 0, 2_000);
        let found: Vec<(String, Option<String>, Option<String>, f64)> = all
            .iter()
            .map(|s| {
                (
                    s.metric.clone(),
                    s.labels.get("site").cloned(),
                    s.labels.get("interface").cloned(),
                    s.points[0].value,
                )
            })
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.contains(&("device_up".into(), Some("berlin".into()), None, 1.0)));
        assert!(found.contains(&("device_up".into(), Some("paris".into()), None, 0.0)));
        assert!(found.contains(&(
            "network_utilization_ratio".into(),
            Some("berlin".into()),
            Some("eth0".into()),
            0.5
        )));
        assert!(all.iter().all(|s| s.labels["device"] == "d1"));
    }
}
