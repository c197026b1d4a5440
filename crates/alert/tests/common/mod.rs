//! Test support: an in-memory tsdb to write samples into, and small builders.
#![allow(dead_code)]

use std::sync::Arc;

use fleetmon_alert::{Alert, AlertState, LabelSet, fingerprint};
use fleetmon_tsdb::{Db, Labels, MemBackend, Options, Sample};

/// A fixed base time (2023-11-14T22:13:20Z); tests count from it.
pub const T0: i64 = 1_700_000_000_000;
pub const MIN: i64 = 60_000;

/// An empty in-memory database.
pub fn store() -> Db {
    let options = Options {
        clock: || T0,
        ..Options::default()
    };
    Db::open(Arc::new(MemBackend::new()), options, &mut |_, _| {}).expect("in-memory db opens")
}

/// Writes one sample.
pub fn put(db: &Db, metric: &str, labels: &[(&str, &str)], ts_ms: i64, value: f64) {
    let l = Labels::from_metric(metric, labels.iter().copied()).expect("valid labels");
    db.append(
        &[Sample {
            labels: &l,
            ts_ms,
            value,
        }],
        None,
    )
    .expect("append");
}

/// Writes `value` every minute from `from` to `to` inclusive.
pub fn put_range(db: &Db, metric: &str, labels: &[(&str, &str)], from: i64, to: i64, value: f64) {
    let mut t = from;
    while t <= to {
        put(db, metric, labels, t, value);
        t += MIN;
    }
}

pub fn ls(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A firing alert as the manager would hand it over.
pub fn firing(pairs: &[(&str, &str)], active_at: i64) -> Alert {
    let labels = ls(pairs);
    Alert {
        group: "g".into(),
        rule: labels.get("alertname").cloned().unwrap_or_default(),
        fingerprint: fingerprint(&labels),
        labels,
        annotations: ls(&[("summary", "something")]),
        state: AlertState::Firing,
        active_at,
        fired_at: Some(active_at),
        resolved_at: None,
        keep_firing_since: None,
        value: 1.0,
    }
}
