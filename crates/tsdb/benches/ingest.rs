//! Ingest benchmark on realistic fleet data (see `tests/common/fleet.rs`): 10 020 series
//! (334 devices × 30), 720 points per series at 10 s, on the real filesystem with real fsyncs.
//! Prints append throughput (bulk import and concurrent per-device batches with group
//! commit), bytes per sample on disk after flush and after compaction (rollups included),
//! memory, and a few query latencies.
//!
//! A plain `harness = false` program, not criterion: the figures are whole-dataset rates, and
//! one pass over 7.2 M samples is the measurement. Run:
//! `CARGO_TARGET_DIR=/work/target-tsdb cargo bench -p fleetmon-tsdb --bench ingest`
//! (`TSDB_BENCH_DEVICES` and `TSDB_BENCH_STEPS` scale it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program: failing loudly and printing figures is its job"
)]

#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet::Device;
use fleetmon_tsdb::{Agg, Db, Matcher, Options, Sample};

const T0: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 10_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024
}

fn dir_bytes(dir: &std::path::Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    println!("  {label}: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    out
}

fn main() {
    let devices_n = env("TSDB_BENCH_DEVICES", 334);
    let steps = env("TSDB_BENCH_STEPS", 720) as i64;
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(&base).unwrap();

    // Pre-generate the data so the generator's cost is not measured.
    let mut devices: Vec<Device> = (0..devices_n).map(Device::new).collect();
    let mut rows: Vec<Vec<(i64, Vec<f64>)>> = vec![Vec::with_capacity(steps as usize); devices_n];
    for step in 0..steps {
        for (d, dev) in devices.iter_mut().enumerate() {
            let ts = T0 + step * STEP_MS + dev.jitter();
            rows[d].push((ts, dev.step(STEP_MS)));
        }
    }
    let series = devices_n * 30;
    let total = series as u64 * steps as u64;
    println!(
        "dataset: {devices_n} devices, {series} series, {steps} points/series, {total} samples"
    );

    // 1. Bulk import: one append (one fsync) per time step for the whole fleet.
    let rss0 = rss_bytes();
    let db = Db::open_dir(dir.path(), Options::default()).unwrap();
    let start = Instant::now();
    for step in 0..steps as usize {
        let mut samples = Vec::with_capacity(series);
        for (dev, row) in devices.iter().zip(&rows) {
            let (ts, values) = &row[step];
            for (labels, &value) in dev.labels.iter().zip(values) {
                samples.push(Sample {
                    labels,
                    ts_ms: *ts,
                    value,
                });
            }
        }
        db.append(&samples, None).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = db.stats();
    println!(
        "bulk ingest: {:.0} samples/s ({total} samples in {secs:.2} s, {} fsyncs)",
        total as f64 / secs,
        stats.wal_syncs_total
    );
    println!(
        "memory: head {:.0} B/series + index {:.0} B/series (accounted); RSS grew {:.0} B/series",
        stats.head_heap_bytes as f64 / series as f64,
        stats.index_heap_bytes as f64 / series as f64,
        rss_bytes().saturating_sub(rss0) as f64 / series as f64
    );
    println!(
        "wal: {:.2} bytes/sample",
        dir_bytes(dir.path(), ".seg") as f64 / total as f64
    );

    let start = Instant::now();
    db.flush().unwrap();
    println!("flush: {:.2} s", start.elapsed().as_secs_f64());
    let blocks = dir_bytes(dir.path(), ".blk");
    println!(
        "disk after flush: {:.3} bytes/sample in blocks ({blocks} bytes, {} blocks)",
        blocks as f64 / total as f64,
        db.stats().blocks
    );
    let start = Instant::now();
    db.compact(T0 + 100 * 86_400_000).unwrap();
    let blocks = dir_bytes(dir.path(), ".blk");
    println!(
        "disk after compaction (rollups included where worth storing; 1 h here): {:.3} bytes/sample ({blocks} bytes, {} blocks, {:.2} s)",
        blocks as f64 / total as f64,
        db.stats().blocks,
        start.elapsed().as_secs_f64()
    );

    println!("queries:");
    let end = T0 + steps * STEP_MS;
    let one = [
        Matcher::metric("cpu_usage_ratio"),
        Matcher::eq("device", "dev-00007"),
    ];
    timed("one series, whole range raw", || db.select(&one, T0, end));
    let dev = [Matcher::eq("device", "dev-00007")];
    timed("one device's 30 series, whole range raw", || {
        db.select(&dev, T0, end)
    });
    let fleet = [Matcher::metric("cpu_usage_ratio")];
    timed("fleet cpu avg per 1 h bucket (rollups)", || {
        db.aggregate(&fleet, T0, end, 3_600_000, Agg::Avg).unwrap()
    });
    timed("last value of every series", || db.last_values(&[]));
    println!("  rollup rows read: {}", db.stats().rollup_rows_read_total);
    drop(db);

    // 2. Concurrent per-device batches (as the server receives them), group commit.
    let dir2 = tempfile::tempdir_in(&base).unwrap();
    let options = Options {
        flush_interval: Duration::from_millis(2),
        ..Options::default()
    };
    let db = Arc::new(Db::open_dir(dir2.path(), options).unwrap());
    let conc_steps = (steps as usize).min(60);
    let threads = 8;
    let devices = Arc::new(devices);
    let rows = Arc::new(rows);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (db, devices, rows) = (db.clone(), devices.clone(), rows.clone());
            std::thread::spawn(move || {
                for step in 0..conc_steps {
                    for d in (t..devices.len()).step_by(threads) {
                        let (ts, values) = &rows[d][step];
                        let samples: Vec<Sample<'_>> = devices[d]
                            .labels
                            .iter()
                            .zip(values)
                            .map(|(labels, &value)| Sample {
                                labels,
                                ts_ms: *ts,
                                value,
                            })
                            .collect();
                        db.append(&samples, None).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = db.stats();
    let n = stats.samples_appended_total;
    println!(
        "concurrent ingest ({threads} threads, one 30-sample batch per append, 2 ms group-commit interval): {:.0} samples/s, {:.0} batches/s, {} appends shared {} fsyncs",
        n as f64 / secs,
        (n / 30) as f64 / secs,
        n / 30,
        stats.wal_syncs_total
    );
}
