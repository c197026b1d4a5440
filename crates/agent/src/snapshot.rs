//! `fleetmon-agent snapshot --json`: one collection printed as a JSON array of
//! `{"metric", "labels", "value"}`, for comparing with psutil or node_exporter by hand.
//!
//! CPU usage is a rate, so a snapshot reads the cpu times, waits `window` (250 ms by default),
//! then collects: like psutil's `cpu_percent(interval=0.25)`, not usage since boot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::collect::Collector;

/// One line of the snapshot.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Takes one collection, `window` after priming the cpu times.
pub fn take(collector: &mut Collector, window: Duration, ts_ms: i64) -> Vec<Entry> {
    collector.prime();
    std::thread::sleep(window);
    collector
        .collect(ts_ms)
        .into_iter()
        .map(|s| Entry {
            metric: s.metric,
            labels: s.labels,
            value: s.value,
        })
        .collect()
}

/// The snapshot as pretty JSON.
pub fn to_json(entries: &[Entry]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(entries)
}
