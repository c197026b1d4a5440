//! End-to-end behaviour of `Db`: appends, restarts, selectors, late data, flush, compaction,
//! rollups, retention and the metadata records the server rebuilds its dedupe state from.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use fleetmon_tsdb::{
    Agg, Backend, Db, Labels, MatchOp, Matcher, MemBackend, Meta, Options, Retention, Sample,
};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a multiple of an hour.

fn labels(metric: &str, device: &str) -> Labels {
    Labels::from_metric(metric, [("device", device), ("site", "lab")]).unwrap()
}

fn open(b: &MemBackend, options: Options) -> Db {
    let backend: Arc<dyn Backend> = Arc::new(b.clone());
    Db::open(backend, options, &mut |_, _| {}).unwrap()
}

fn put(db: &Db, l: &Labels, points: &[(i64, f64)]) {
    let samples: Vec<Sample<'_>> = points
        .iter()
        .map(|&(ts_ms, value)| Sample {
            labels: l,
            ts_ms,
            value,
        })
        .collect();
    let r = db.append(&samples, None).unwrap();
    assert_eq!(r.accepted, points.len());
}

fn points(db: &Db, metric: &str, device: &str, start: i64, end: i64) -> Vec<(i64, f64)> {
    let sel = [Matcher::metric(metric), Matcher::eq("device", device)];
    let mut r = db.select(&sel, start, end);
    assert!(r.len() <= 1);
    r.pop().map(|s| s.points).unwrap_or_default()
}

#[test]
fn appends_survive_restart_and_selectors_work() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let cpu_a = labels("cpu_usage_ratio", "a");
    let cpu_b = labels("cpu_usage_ratio", "b");
    let mem_a = labels("memory_used_ratio", "a");
    put(&db, &cpu_a, &[(T0, 0.1), (T0 + 10_000, 0.2)]);
    put(&db, &cpu_b, &[(T0, 0.5)]);
    put(&db, &mem_a, &[(T0, 0.7)]);
    drop(db);
    b.crash();
    let db = open(&b, Options::default());
    assert_eq!(
        points(&db, "cpu_usage_ratio", "a", T0, T0 + HOUR),
        vec![(T0, 0.1), (T0 + 10_000, 0.2)]
    );
    let re = Matcher::new("device", MatchOp::Regex, "a|b").unwrap();
    assert_eq!(
        db.select(&[Matcher::metric("cpu_usage_ratio"), re], 0, i64::MAX)
            .len(),
        2
    );
    let not_a = Matcher::new("device", MatchOp::NotRegex, "a").unwrap();
    let got = db.series(&[not_a]);
    assert_eq!(got, vec![cpu_b.clone()]);
    assert_eq!(db.label_values("device", &[]), vec!["a", "b"]);
    assert_eq!(
        db.label_values("__name__", &[Matcher::eq("device", "a")]),
        vec!["cpu_usage_ratio", "memory_used_ratio"]
    );
    assert_eq!(db.label_names(&[]), vec!["__name__", "device", "site"]);
    let last = db.last_values(&[Matcher::eq("device", "a")]);
    assert_eq!(last.len(), 2);
    assert_eq!((last[0].ts_ms, last[0].value), (T0 + 10_000, 0.2));
    // Rewriting a timestamp replaces its value (last write wins), also after restart.
    put(&db, &cpu_a, &[(T0, 0.9)]);
    assert_eq!(points(&db, "cpu_usage_ratio", "a", T0, T0)[0], (T0, 0.9));
    drop(db);
    let db = open(&b, Options::default());
    assert_eq!(points(&db, "cpu_usage_ratio", "a", T0, T0)[0], (T0, 0.9));
}

#[test]
fn metadata_comes_back_on_replay_and_survives_checkpoints() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let l = labels("load1", "d1");
    for seq in 1..=3u64 {
        let meta = Meta {
            key: b"d1".to_vec(),
            value: seq.to_le_bytes().to_vec(),
        };
        let s = [Sample {
            labels: &l,
            ts_ms: T0 + seq as i64 * 1000,
            value: 1.0,
        }];
        db.append(&s, Some(&meta)).unwrap();
    }
    db.append(
        &[],
        Some(&Meta {
            key: b"d2".to_vec(),
            value: b"x".to_vec(),
        }),
    )
    .unwrap();
    drop(db);
    let mut seen = Vec::new();
    let backend: Arc<dyn Backend> = Arc::new(b.clone());
    let db = Db::open(backend.clone(), Options::default(), &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()))
    })
    .unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2], (b"d1".to_vec(), 3u64.to_le_bytes().to_vec()));
    db.flush().unwrap();
    drop(db);
    let mut seen = Vec::new();
    let db = Db::open(backend, Options::default(), &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()))
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (b"d1".to_vec(), 3u64.to_le_bytes().to_vec()),
            (b"d2".to_vec(), b"x".to_vec())
        ],
        "after a checkpoint the latest value per key is replayed"
    );
    assert_eq!(points(&db, "load1", "d1", 0, i64::MAX).len(), 3);
}

#[test]
fn a_backlog_after_a_six_hour_outage_lands_and_too_old_data_is_refused() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let live = labels("cpu_usage_ratio", "other");
    let dev = labels("cpu_usage_ratio", "late");
    // The device reported until T0, went dark for 6 h; others kept reporting.
    put(&db, &dev, &[(T0, 1.0)]);
    let live_points: Vec<(i64, f64)> = (0..=360).map(|i| (T0 + i * 60_000, 0.5)).collect();
    put(&db, &live, &live_points);
    // Back online: it first sends a live sample, then its backlog, newest batches first.
    put(&db, &dev, &[(T0 + 6 * HOUR, 6.0)]);
    let backlog: Vec<(i64, f64)> = (1..360).map(|i| (T0 + i * 60_000, i as f64)).collect();
    for chunk in backlog.rchunks(60) {
        let samples: Vec<Sample<'_>> = chunk
            .iter()
            .map(|&(ts_ms, value)| Sample {
                labels: &dev,
                ts_ms,
                value,
            })
            .collect();
        let r = db.append(&samples, None).unwrap();
        assert_eq!(r.out_of_order, chunk.len());
    }
    let expect: Vec<(i64, f64)> = std::iter::once((T0, 1.0))
        .chain(backlog.iter().copied())
        .chain(std::iter::once((T0 + 6 * HOUR, 6.0)))
        .collect();
    assert_eq!(points(&db, "cpu_usage_ratio", "late", 0, i64::MAX), expect);
    assert_eq!(
        db.last_values(&[Matcher::eq("device", "late")])[0].value,
        6.0
    );
    // Into blocks, then compacted: the same answer.
    db.flush().unwrap();
    assert_eq!(points(&db, "cpu_usage_ratio", "late", 0, i64::MAX), expect);
    db.compact(T0 + 48 * HOUR).unwrap();
    drop(db);
    let db = open(&b, Options::default());
    assert_eq!(points(&db, "cpu_usage_ratio", "late", 0, i64::MAX), expect);
    // Older than 7 days before the newest sample: refused and counted.
    let r = db
        .append(
            &[Sample {
                labels: &dev,
                ts_ms: T0 - 8 * 24 * HOUR,
                value: 0.0,
            }],
            None,
        )
        .unwrap();
    assert_eq!((r.accepted, r.too_old), (0, 1));
    assert_eq!(db.stats().samples_too_old_total, 1);
}

#[test]
fn a_device_clock_far_in_the_future_does_not_make_everyone_late() {
    let b = MemBackend::new();
    let options = Options {
        clock: || T0,
        ..Options::default()
    };
    let db = open(&b, options.clone());
    let broken = labels("uptime_seconds", "year-2099");
    let fine = labels("uptime_seconds", "ok");
    put(&db, &fine, &[(T0, 1.0)]);
    put(&db, &broken, &[(4_070_908_800_000, 1.0)]);
    put(&db, &fine, &[(T0 + 1000, 2.0)]);
    drop(db);
    let db = open(&b, options);
    put(&db, &fine, &[(T0 + 2000, 3.0)]);
    assert_eq!(
        points(&db, "uptime_seconds", "year-2099", 0, i64::MAX).len(),
        1,
        "stored anyway"
    );
    assert_eq!(db.stats().samples_too_old_total, 0);
}

#[test]
fn late_data_after_a_flush_overrides_block_values() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let l = labels("temperature_celsius", "d");
    put(&db, &l, &[(T0, 1.0), (T0 + 1000, 2.0)]);
    db.flush().unwrap();
    put(&db, &l, &[(T0 + 1000, 20.0), (T0 + 500, 5.0)]);
    let want = vec![(T0, 1.0), (T0 + 500, 5.0), (T0 + 1000, 20.0)];
    assert_eq!(points(&db, "temperature_celsius", "d", 0, i64::MAX), want);
    db.flush().unwrap();
    assert_eq!(points(&db, "temperature_celsius", "d", 0, i64::MAX), want);
    // An explicit flush merges the window's two level-0 blocks into one.
    assert_eq!(db.stats().blocks, 1);
    assert_eq!(db.stats().compactions_total, 0);
    db.compact(T0 + 48 * HOUR).unwrap();
    assert_eq!(db.stats().blocks, 1);
    assert_eq!(points(&db, "temperature_celsius", "d", 0, i64::MAX), want);
    drop(db);
    assert_eq!(
        points(
            &open(&b, Options::default()),
            "temperature_celsius",
            "d",
            0,
            i64::MAX
        ),
        want
    );
}

#[test]
fn bucketed_queries_use_rollups_and_agree_with_raw_samples() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let l = labels("cpu_usage_ratio", "r");
    let samples: Vec<(i64, f64)> = (0..3 * 24 * 360)
        .map(|i| (T0 + i * 10_000, ((i * 37) % 101) as f64 / 100.0))
        .collect();
    for c in samples.chunks(1000) {
        put(&db, &l, c);
    }
    let sel = [Matcher::metric("cpu_usage_ratio")];
    let end = T0 + 3 * 24 * HOUR - 1;
    let aggs = [
        Agg::Min,
        Agg::Max,
        Agg::Sum,
        Agg::Count,
        Agg::Avg,
        Agg::Last,
    ];
    let before: Vec<_> = aggs
        .iter()
        .map(|&a| db.aggregate(&sel, T0, end, HOUR, a).unwrap())
        .collect();
    db.flush().unwrap();
    db.compact(T0 + 4 * 24 * HOUR).unwrap();
    assert_eq!(db.stats().rollup_rows_read_total, 0);
    for (a, want) in aggs.iter().zip(&before) {
        let got = db.aggregate(&sel, T0, end, HOUR, *a).unwrap();
        assert_eq!(got[0].points.len(), 72);
        for (g, w) in got[0].points.iter().zip(&want[0].points) {
            assert_eq!(g.0, w.0);
            assert!((g.1 - w.1).abs() < 1e-9, "{a:?}: {g:?} vs {w:?}");
        }
    }
    assert!(db.stats().rollup_rows_read_total > 0, "rollups were used");
    // Check one bucket against a hand computation.
    let first_hour: Vec<f64> = samples.iter().take(360).map(|s| s.1).collect();
    let avg = db.aggregate(&sel, T0, end, HOUR, Agg::Avg).unwrap();
    let want = first_hour.iter().sum::<f64>() / 360.0;
    assert!((avg[0].points[0].1 - want).abs() < 1e-12);
    // A step that is not a rollup multiple reads raw samples and still agrees.
    let raw = db
        .aggregate(&sel, T0, T0 + HOUR - 1, 90_000, Agg::Count)
        .unwrap();
    assert_eq!(raw[0].points.len(), 40);
    assert!(raw[0].points.iter().all(|p| p.1 == 9.0));
}

#[test]
fn retention_deletes_old_blocks_by_age_and_size() {
    let b = MemBackend::new();
    let options = Options {
        retention: Retention {
            max_age_ms: Some(24 * HOUR),
            max_bytes: None,
        },
        ..Options::default()
    };
    let db = open(&b, options);
    let l = labels("uptime_seconds", "u");
    let pts: Vec<(i64, f64)> = (0..96).map(|i| (T0 + i * HOUR / 2, i as f64)).collect();
    put(&db, &l, &pts);
    db.flush().unwrap();
    assert_eq!(db.stats().blocks, 24);
    let deleted = db.apply_retention(T0 + 48 * HOUR).unwrap();
    assert_eq!(deleted, 12);
    let left = points(&db, "uptime_seconds", "u", 0, i64::MAX);
    assert_eq!(left.first().unwrap().0, T0 + 24 * HOUR);
    assert_eq!(
        b.list()
            .unwrap()
            .iter()
            .filter(|n| n.ends_with(".blk"))
            .count(),
        12
    );
    drop(db);
    let options = Options {
        retention: Retention {
            max_age_ms: None,
            max_bytes: Some(1),
        },
        ..Options::default()
    };
    let db = open(&b, options);
    db.maintain(T0).unwrap();
    assert_eq!(db.stats().blocks, 0);
    // The series and its last value are still known.
    assert_eq!(db.last_values(&[]).len(), 1);
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let b = MemBackend::new();
    let options = Options {
        flush_interval: std::time::Duration::from_millis(1),
        ..Options::default()
    };
    let db = Arc::new(open(&b, options));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let l = labels("load1", &format!("t{t}"));
                for i in 0..200 {
                    put(&db, &l, &[(T0 + i, i as f64)]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.samples_appended_total, 800);
    assert!(
        stats.wal_syncs_total < 800,
        "{} syncs",
        stats.wal_syncs_total
    );
    drop(db);
    b.crash();
    let db = open(&b, Options::default());
    for t in 0..4 {
        assert_eq!(
            points(&db, "load1", &format!("t{t}"), 0, i64::MAX).len(),
            200
        );
    }
}

#[test]
fn real_filesystem_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path(), Options::default()).unwrap();
    let l = labels("processes", "fs");
    put(&db, &l, &[(T0, 1.0), (T0 + 1, 2.0)]);
    db.flush().unwrap();
    put(&db, &l, &[(T0 + 2, 3.0)]);
    drop(db);
    let db = Db::open_dir(dir.path(), Options::default()).unwrap();
    assert_eq!(
        points(&db, "processes", "fs", 0, i64::MAX),
        vec![(T0, 1.0), (T0 + 1, 2.0), (T0 + 2, 3.0)]
    );
}

#[test]
fn queries_during_flushes_and_compactions_never_see_holes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_dir(dir.path(), Options::default()).unwrap());
    let l = labels("processes", "race");
    let n = 1500i64;
    let writer = {
        let db = db.clone();
        let l = l.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                // A minute apart: spans many 2 h blocks and a day.
                let t = T0 + i * 60_000;
                db.append(
                    &[Sample {
                        labels: &l,
                        ts_ms: t,
                        value: i as f64,
                    }],
                    None,
                )
                .unwrap();
            }
        })
    };
    let maintainer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..30 {
                db.flush().unwrap();
                db.compact(T0 + 10 * 24 * HOUR).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() || checks < 50 {
        let got = points(&db, "processes", "race", 0, i64::MAX);
        for (i, &(t, v)) in got.iter().enumerate() {
            assert_eq!(
                (t, v),
                (T0 + i as i64 * 60_000, i as f64),
                "hole or ghost at {i}"
            );
        }
        checks += 1;
    }
    writer.join().unwrap();
    maintainer.join().unwrap();
    assert_eq!(
        points(&db, "processes", "race", 0, i64::MAX).len(),
        n as usize
    );
}

/// Options whose background flusher runs every few hundred samples.
fn small_head() -> Options {
    Options {
        flush_head_samples_per_series: 1,
        flush_head_min_samples: 200,
        ..Options::default()
    }
}

#[test]
fn background_flushes_keep_the_head_bounded_without_holes_or_losses() {
    let mem = MemBackend::new();
    let db = Arc::new(open(&mem, small_head()));
    let ls: Vec<Labels> = (0..4).map(|d| labels("temp", &format!("d{d}"))).collect();
    let ids: Vec<_> = ls.iter().map(|l| db.resolve(l)).collect();
    assert_eq!(
        db.resolve(&ls[2]),
        ids[2],
        "resolving again gives the same id"
    );
    let n = 3000i64;
    let writer = {
        let db = db.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            let mut max_head = 0;
            for i in 0..n {
                // Ten seconds apart: ~8 h, several flush windows, so level-0 merges happen.
                let t = T0 + i * 10_000;
                let batch: Vec<_> = ids.iter().map(|&id| (id, t, i as f64)).collect();
                let r = db.append_ids(&batch, None).unwrap();
                assert_eq!(r.accepted, ids.len());
                max_head = max_head.max(db.stats().head_samples);
            }
            max_head
        })
    };
    let mut checks = 0;
    while !writer.is_finished() || checks < 20 {
        let got = points(&db, "temp", "d3", 0, i64::MAX);
        for (i, &(t, v)) in got.iter().enumerate() {
            assert_eq!((t, v), (T0 + i as i64 * 10_000, i as f64), "hole at {i}");
        }
        checks += 1;
    }
    let max_head = writer.join().unwrap();
    let stats = db.stats();
    assert!(
        stats.flushes_total > 5,
        "{} background flushes",
        stats.flushes_total
    );
    // Live plus frozen head: each at most two thresholds (appends wait beyond that).
    assert!(max_head <= 4 * 200 + 8, "head grew to {max_head} samples");
    let flushed_blocks = stats.blocks;
    assert!(
        flushed_blocks < stats.flushes_total,
        "level-0 blocks of past windows were merged: {flushed_blocks} blocks after {} flushes",
        stats.flushes_total
    );
    for d in 0..4 {
        assert_eq!(
            points(&db, "temp", &format!("d{d}"), 0, i64::MAX).len(),
            n as usize
        );
    }
    // A power cut at any point: everything acknowledged comes back.
    drop(db);
    mem.crash();
    let db = open(&mem, small_head());
    for d in 0..4 {
        let got = points(&db, "temp", &format!("d{d}"), 0, i64::MAX);
        assert_eq!(got.len(), n as usize);
        assert_eq!(got[n as usize - 1], (T0 + (n - 1) * 10_000, (n - 1) as f64));
    }
    assert!(matches!(
        db.append_ids(&[(999, T0, 1.0)], None),
        Err(fleetmon_tsdb::DbError::UnknownSeries(999))
    ));
}

#[test]
fn a_failed_background_flush_keeps_the_frozen_head_readable_and_retries() {
    use fleetmon_tsdb::{Fault, FaultBackend, FaultOp};
    let mem = MemBackend::new();
    let fault = Arc::new(FaultBackend::new(mem.clone()));
    let backend: Arc<dyn Backend> = fault.clone();
    let options = Options {
        flush_head_samples_per_series: 0,
        ..Options::default()
    };
    let db = Db::open(backend.clone(), options.clone(), &mut |_, _| {}).unwrap();
    let l = labels("temp", "x");
    let pts: Vec<(i64, f64)> = (0..50).map(|i| (T0 + i * 1000, i as f64)).collect();
    put(&db, &l, &pts[..40]);
    // The first block write fails: the frozen head stays, queries still see it, and new
    // appends land in the live head.
    fault.set(Fault {
        op: FaultOp::Write,
        nth: 2,
        persistent: false,
        short_write: false,
    });
    assert!(db.flush().is_err());
    put(&db, &l, &pts[40..]);
    assert_eq!(points(&db, "temp", "x", 0, i64::MAX), pts);
    db.flush().unwrap();
    assert_eq!(points(&db, "temp", "x", 0, i64::MAX), pts);
    drop(db);
    mem.crash();
    let db = Db::open(backend, options, &mut |_, _| {}).unwrap();
    assert_eq!(points(&db, "temp", "x", 0, i64::MAX), pts);
}

#[test]
fn series_in_range_lists_only_series_with_samples_there() {
    let b = MemBackend::new();
    let db = open(&b, Options::default());
    let (early, late, spans) = (
        labels("temp", "early"),
        labels("temp", "late"),
        labels("temp", "spans"),
    );
    put(&db, &early, &[(T0, 1.0), (T0 + HOUR, 2.0)]);
    // One block holds both samples of "spans": its span covers the hour between them.
    put(&db, &spans, &[(T0 + 10_000, 1.0), (T0 + 110 * 60_000, 2.0)]);
    db.flush().unwrap();
    put(&db, &late, &[(T0 + 2 * HOUR, 3.0)]);
    let names = |start: i64, end: i64| -> Vec<String> {
        let mut v: Vec<String> = db
            .series_in_range(&[Matcher::metric("temp")], start, end)
            .iter()
            .map(|l| l.get("device").unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(T0, T0 + 4 * 24 * HOUR), ["early", "late", "spans"]);
    // Inside the span of "spans" but between its samples: not listed.
    assert_eq!(names(T0 + HOUR, T0 + HOUR), ["early"]);
    assert_eq!(names(T0 + 1, T0 + 20_000), ["spans"]);
    assert_eq!(names(T0 + 2 * HOUR, T0 + 2 * HOUR + 5), ["late"]);
    assert_eq!(
        names(T0 + 2 * HOUR + 1, T0 + 24 * HOUR),
        Vec::<String>::new()
    );
    assert_eq!(names(T0 + 24 * HOUR, T0), Vec::<String>::new());
    assert_eq!(db.series(&[Matcher::metric("temp")]).len(), 3);
    // The estimate a reader sizes its reads by: exact when the range covers everything.
    let temp = [Matcher::metric("temp")];
    assert_eq!(db.estimate_samples(&temp, T0, T0 + 4 * 24 * HOUR), 5);
    assert_eq!(db.estimate_samples(&temp, T0 + 5, T0), 0);
}

#[test]
fn a_large_wal_is_flushed_by_maintain_only_once_the_head_is_worth_a_block() {
    let b = MemBackend::new();
    let options = Options {
        flush_wal_bytes: 1,
        flush_head_samples_per_series: 0,
        ..Options::default()
    };
    let db = open(&b, options);
    let series: Vec<Labels> = (0..50)
        .map(|i| labels("temperature_celsius", &format!("d{i}")))
        .collect();
    let per_series = fleetmon_tsdb::WAL_FLUSH_MIN_SAMPLES_PER_SERIES as i64;
    // A few samples of many series: the WAL is over its limit, the head is not worth a block.
    for l in &series {
        put(&db, l, &[(T0, 1.0), (T0 + 10_000, 2.0)]);
    }
    db.maintain(T0).unwrap();
    assert_eq!(db.stats().flushes_total, 0);
    for l in &series {
        let more: Vec<(i64, f64)> = (2..per_series)
            .map(|i| (T0 + i * 10_000, i as f64))
            .collect();
        put(&db, l, &more);
    }
    db.maintain(T0).unwrap();
    assert_eq!(db.stats().flushes_total, 1);
    assert!(db.stats().blocks > 0);
    assert_eq!(
        points(&db, "temperature_celsius", "d7", T0, T0 + HOUR).len(),
        per_series as usize
    );
}

#[test]
fn concurrent_appends_and_flushes_then_a_crash_lose_nothing() {
    // Each freeze starts a WAL segment in which no series is defined yet; appends from two
    // threads racing three flushes a round, then a crash (no last flush): every acknowledged
    // sample comes back from blocks and WAL. (The exact interleaving of an append prepared
    // before a freeze and written after it is a unit test in `db.rs`.)
    let b = MemBackend::new();
    let mut want: std::collections::BTreeMap<(String, i64), f64> = Default::default();
    for round in 0..40i64 {
        let db = Arc::new(open(&b, Options::default()));
        let acked = std::thread::scope(|s| {
            let appenders: Vec<_> = (0..2)
                .map(|w| {
                    let db = db.clone();
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0..60i64 {
                            let device = format!("d{}", (i * 7 + w) % 25);
                            let l = labels("cpu", &device);
                            let t = T0 + round * 1_000_000 + i * 100 + w;
                            let v = (round * 1000 + i) as f64;
                            let s = [Sample {
                                labels: &l,
                                ts_ms: t,
                                value: v,
                            }];
                            if db.append(&s, None).is_ok() {
                                acked.push(((device, t), v));
                            }
                        }
                        acked
                    })
                })
                .collect();
            let flusher = {
                let db = db.clone();
                s.spawn(move || {
                    for _ in 0..3 {
                        db.flush().unwrap();
                    }
                })
            };
            flusher.join().unwrap();
            appenders
                .into_iter()
                .flat_map(|a| a.join().unwrap())
                .collect::<Vec<_>>()
        });
        want.extend(acked);
        // A crash: the database goes away without a last flush; the WAL holds the rest.
        drop(db);
        let db = open(&b, Options::default());
        let got: std::collections::BTreeMap<(String, i64), f64> = db
            .select(&[], i64::MIN, i64::MAX)
            .into_iter()
            .flat_map(|s| {
                let device = s.labels.get("device").unwrap().to_owned();
                s.points
                    .into_iter()
                    .map(move |(t, v)| ((device.clone(), t), v))
            })
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "round {round}: samples lost on replay"
        );
        assert_eq!(got, want, "round {round}");
    }
}
