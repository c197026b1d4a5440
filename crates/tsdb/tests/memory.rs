//! Memory per active series: 10 020 series (334 devices × 30) with 120 samples each in the
//! head. Prints the engine's own accounting and the process's resident-set growth, and holds
//! the accounting to a budget. Run with `--release -- --nocapture` to see the figures.
//!
//! The compressed samples themselves cost what the data's entropy dictates (the generator's
//! ratios are full-precision random walks, ~7 bytes/sample under Gorilla); everything else —
//! the per-series overhead of head and index — must stay under 320 bytes, and the total under
//! the 1 KB goal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

#[path = "common/fleet.rs"]
mod fleet;

use fleet::Device;
use fleetmon_tsdb::{Db, MemBackend, Options, Sample};
use std::sync::Arc;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn memory_per_active_series_is_measured_and_bounded() {
    const DEVICES: usize = 334;
    const STEPS: i64 = 120;
    let mem = MemBackend::new();
    let db = Db::open(Arc::new(mem.clone()), Options::default(), &mut |_, _| {}).unwrap();
    let mut devices: Vec<Device> = (0..DEVICES).map(Device::new).collect();
    // Keep the WAL small so the resident-set figure is the head, not the WAL's bytes.
    let before = rss_bytes();
    for step in 0..STEPS {
        for d in &mut devices {
            let ts = 1_767_225_600_000 + step * 10_000 + d.jitter();
            let values = d.step(10_000);
            let samples: Vec<Sample<'_>> = d
                .labels
                .iter()
                .zip(&values)
                .map(|(labels, &value)| Sample {
                    labels,
                    ts_ms: ts,
                    value,
                })
                .collect();
            db.append(&samples, None).unwrap();
        }
        // Drop WAL bytes held by the in-memory backend: they are the disk's, not the head's.
        for name in mem.list_wal() {
            mem.forget(&name);
        }
    }
    let after = rss_bytes();
    let stats = db.stats();
    let series = stats.series as f64;
    assert_eq!(stats.series, DEVICES as u64 * 30);
    let head = stats.head_heap_bytes as f64 / series;
    let index = stats.index_heap_bytes as f64 / series;
    let chunks = stats.head_chunk_bytes as f64 / series;
    let total = head + index;
    let overhead = total - chunks;
    println!(
        "memory: {} series x {STEPS} samples: head {head:.0} B/series (of which compressed samples {chunks:.0} = {:.2} B/sample) + index {index:.0} B/series = {total:.0} B/series; overhead without sample bytes {overhead:.0} B/series",
        stats.series,
        chunks / STEPS as f64,
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory: resident set grew {:.0} B/series (allocator slack included)",
            a.saturating_sub(b) as f64 / series
        );
    }
    assert!(overhead <= 320.0, "{overhead:.0} B/series of overhead");
    assert!(
        total <= 1024.0,
        "{total:.0} B/series in all: over the 1 KB goal"
    );
}
