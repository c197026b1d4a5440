//! A device's last value per series, keyed by metric, then by the series' labels (without the
//! device label). Two levels so that recording a batch looks a series up by borrowed metric
//! and labels: a single map keyed by owned `(metric, labels)` pairs cloned both for every
//! sample of every batch, and those clones were the largest cost of applying a batch at
//! 100,000 devices.

use std::collections::BTreeMap;

/// Labels of a series without the device label.
pub type SeriesLabels = BTreeMap<String, String>;

/// Last `(ts_ms, value)` per series of one device.
#[derive(Debug, Clone, Default)]
pub struct LastValues {
    by_metric: BTreeMap<String, BTreeMap<SeriesLabels, (i64, f64)>>,
    len: usize,
}

impl LastValues {
    /// Keeps `(ts_ms, value)` as the series' last value unless it already has a newer one.
    pub fn record(&mut self, metric: &str, labels: &SeriesLabels, ts_ms: i64, value: f64) {
        let series = match self.by_metric.get_mut(metric) {
            Some(series) => series,
            None => self.by_metric.entry(metric.to_owned()).or_default(),
        };
        match series.get_mut(labels) {
            Some(last) if ts_ms >= last.0 => *last = (ts_ms, value),
            Some(_) => {}
            None => {
                series.insert(labels.clone(), (ts_ms, value));
                self.len += 1;
            }
        }
    }

    /// Sets a series' last value, whatever it was.
    pub fn insert(&mut self, (metric, labels): (String, SeriesLabels), last: (i64, f64)) {
        if self
            .by_metric
            .entry(metric)
            .or_default()
            .insert(labels, last)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the device has no series.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the device has a series of `metric` with exactly these labels.
    pub fn contains(&self, metric: &str, labels: &SeriesLabels) -> bool {
        self.by_metric
            .get(metric)
            .is_some_and(|series| series.contains_key(labels))
    }

    /// Whether the device has any series of `metric`.
    pub fn has_metric(&self, metric: &str) -> bool {
        self.by_metric.contains_key(metric)
    }

    /// The metrics the device has series of, in order.
    pub fn metrics(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_metric.keys().map(String::as_str)
    }

    /// The last values of `metric`, one per series: (labels, ts_ms, value).
    pub fn of<'a>(
        &'a self,
        metric: &str,
    ) -> impl Iterator<Item = (&'a SeriesLabels, i64, f64)> + 'a {
        self.by_metric
            .get(metric)
            .into_iter()
            .flatten()
            .map(|(labels, &(ts, v))| (labels, ts, v))
    }

    /// Every series: (metric, labels, ts_ms, value), by metric then labels.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SeriesLabels, i64, f64)> + '_ {
        self.by_metric.iter().flat_map(|(metric, series)| {
            series
                .iter()
                .map(move |(labels, &(ts, v))| (metric.as_str(), labels, ts, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_value_per_series() {
        let mut lv = LastValues::default();
        let eth0 = SeriesLabels::from([("interface".to_owned(), "eth0".to_owned())]);
        let eth1 = SeriesLabels::from([("interface".to_owned(), "eth1".to_owned())]);
        lv.record("rx", &eth0, 10, 1.0);
        lv.record("rx", &eth0, 5, 9.0);
        lv.record("rx", &eth1, 10, 2.0);
        lv.record("cpu", &SeriesLabels::new(), 10, 0.5);
        assert_eq!(lv.len(), 3);
        assert!(lv.contains("rx", &eth1) && !lv.contains("tx", &eth1));
        assert!(lv.has_metric("cpu") && !lv.has_metric("tx"));
        let rx: Vec<_> = lv
            .of("rx")
            .map(|(l, t, v)| (l["interface"].clone(), t, v))
            .collect();
        assert_eq!(
            rx,
            [("eth0".to_owned(), 10, 1.0), ("eth1".to_owned(), 10, 2.0)]
        );
        lv.record("rx", &eth0, 20, 3.0);
        assert_eq!(lv.of("rx").next().map(|(_, t, v)| (t, v)), Some((20, 3.0)));
        lv.insert(("rx".to_owned(), eth0.clone()), (1, 0.0));
        assert_eq!(lv.len(), 3, "insert replaces");
        let all: Vec<_> = lv.iter().map(|(m, _, t, _)| (m.to_owned(), t)).collect();
        assert_eq!(
            all,
            [
                ("cpu".to_owned(), 10),
                ("rx".to_owned(), 1),
                ("rx".to_owned(), 10)
            ]
        );
    }
}
