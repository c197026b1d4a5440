//! Long `*_over_time` windows read rollup rows where they are exact and give the raw answer:
//! one database, queried through its rollups and through a raw-only view of the same samples,
//! with compacted days, odd timestamps, a gap, a series too sparse for rollups, data still in
//! level-0 blocks and the head, and late samples that arrive after compaction.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use fleetmon_promql::{Engine, Series, Source, Value};
use fleetmon_tsdb::{Backend, Db, Labels, Matcher, MemBackend, Options, Sample, SeriesPoints};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// The same database with only the raw reads (the trait's default rollup methods).
struct Raw<'a>(&'a Db);

impl Source for Raw<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<SeriesPoints> {
        self.0.select(matchers, start, end)
    }
    fn series(&self, matchers: &[Matcher]) -> Vec<Labels> {
        self.0.series(matchers)
    }
    fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        self.0.label_names(matchers)
    }
    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        self.0.label_values(name, matchers)
    }
}

fn put(db: &Db, labels: &Labels, points: &[(i64, f64)]) {
    for chunk in points.chunks(2000) {
        let samples: Vec<Sample<'_>> = chunk
            .iter()
            .map(|&(ts_ms, value)| Sample {
                labels,
                ts_ms,
                value,
            })
            .collect();
        let r = db.append(&samples, None).expect("append");
        assert_eq!(r.accepted, chunk.len());
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Three days of data, days 1 and 2 compacted (with hourly rollups), day 3 in level-0 blocks
/// and the head, late samples into day 1 both flushed and still in the head.
fn database() -> Db {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let options = Options {
        flush_head_samples_per_series: 0,
        ..Options::default()
    };
    let db = Db::open(backend, options, &mut |_, _| {}).expect("open");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let l = |m: &str, d: &str| Labels::from_metric(m, [("device", d), ("site", "lab")]).unwrap();
    // Random walk, 10 s with 0–20 ms jitter, starting 7 s after the hour, with samples on
    // some hour boundaries exactly.
    let mut v = 50.0;
    let mut walk = Vec::new();
    for i in 0..3 * 8640 {
        v += (rng.next() % 2001) as f64 / 1000.0 - 1.0;
        let t = if i % 360 == 0 {
            T0 + i * 10_000
        } else {
            T0 + 7_000 + i * 10_000 + (rng.next() % 21) as i64
        };
        walk.push((t, v));
    }
    // Integers every 15 s with a 5-hour gap on day 2.
    let gap = (T0 + DAY + 5 * HOUR + 123)..(T0 + DAY + 10 * HOUR + 4567);
    let ints: Vec<(i64, f64)> = (0..3 * 5760)
        .map(|i| (T0 + 3_000 + i * 15_000, (rng.next() % 1000) as f64))
        .filter(|p| !gap.contains(&p.0))
        .collect();
    // Every 7 minutes: too sparse for an hourly rollup to be stored.
    let sparse: Vec<(i64, f64)> = (0..3 * 24 * 60 / 7)
        .map(|i| (T0 + 11_000 + i * 420_000, (i % 13) as f64 * 0.5))
        .collect();
    let end_day2 = |p: &&(i64, f64)| p.0 < T0 + 2 * DAY;
    let walk_l = l("temperature_celsius", "a");
    let ints_l = l("requests", "b");
    let sparse_l = l("battery_ratio", "c");
    for (labels, points) in [(&walk_l, &walk), (&ints_l, &ints), (&sparse_l, &sparse)] {
        let old: Vec<(i64, f64)> = points.iter().filter(end_day2).copied().collect();
        put(&db, labels, &old);
    }
    db.flush().expect("flush");
    db.compact(T0 + 2 * DAY + HOUR).expect("compact");
    assert!(db.compact(T0 + 2 * DAY + HOUR).expect("compact") == 0);
    // Day 3: most of it flushed into level-0 blocks, the last hours in the head.
    for (labels, points) in [(&walk_l, &walk), (&ints_l, &ints), (&sparse_l, &sparse)] {
        let day3: Vec<(i64, f64)> = points
            .iter()
            .filter(|p| p.0 >= T0 + 2 * DAY && p.0 < T0 + 2 * DAY + 20 * HOUR)
            .copied()
            .collect();
        put(&db, labels, &day3);
    }
    db.flush().expect("flush");
    for (labels, points) in [(&walk_l, &walk), (&ints_l, &ints), (&sparse_l, &sparse)] {
        let tail: Vec<(i64, f64)> = points
            .iter()
            .filter(|p| p.0 >= T0 + 2 * DAY + 20 * HOUR)
            .copied()
            .collect();
        put(&db, labels, &tail);
    }
    // Late samples after compaction: some flushed into a level-0 block overlapping the
    // compacted day, one replacing a compacted sample, some left in the head.
    put(
        &db,
        &walk_l,
        &[(T0 + 3 * HOUR + 1_234, 1000.0), (walk[400].0, -7.5)],
    );
    put(&db, &ints_l, &[(T0 + DAY + 2 * HOUR + 5, 77.0)]);
    db.flush().expect("flush");
    put(&db, &walk_l, &[(T0 + 30 * HOUR + 999, -300.0)]);
    put(&db, &ints_l, &[(T0 + 13 * HOUR + 1, 5.0)]);
    db.flush().expect("flush");
    put(&db, &ints_l, &[(T0 + 40 * HOUR + 17, 3.0)]);
    db
}

fn close(name: &str, got: f64, want: f64) -> bool {
    if name.starts_with("sum") || name.starts_with("avg") {
        got == want || (got - want).abs() <= 1e-9 * want.abs().max(1e-300)
    } else {
        got == want || (got.is_nan() && want.is_nan())
    }
}

fn check_range(db: &Db, q: &str, start: i64, end: i64, step: i64) {
    let engine = Engine::default();
    let got: Vec<Series> = engine.range(db, q, start, end, step).expect(q);
    let want: Vec<Series> = engine.range(&Raw(db), q, start, end, step).expect(q);
    assert_eq!(
        got.iter().map(|s| &s.labels).collect::<Vec<_>>(),
        want.iter().map(|s| &s.labels).collect::<Vec<_>>(),
        "{q}: series"
    );
    assert!(!want.is_empty(), "{q}: no result to compare");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.points.len(), w.points.len(), "{q} {:?}", g.labels);
        for (a, b) in g.points.iter().zip(&w.points) {
            assert_eq!(a.0, b.0, "{q}");
            assert!(close(q, a.1, b.1), "{q} at {}: {} vs raw {}", a.0, a.1, b.1);
        }
    }
}

fn check_instant(db: &Db, q: &str, t: i64) {
    let engine = Engine::default();
    let (Value::Vector(mut got), Value::Vector(mut want)) = (
        engine.instant(db, q, t).expect(q),
        engine.instant(&Raw(db), q, t).expect(q),
    ) else {
        panic!("{q}: not vectors");
    };
    got.sort_by(|a, b| a.labels.cmp(&b.labels));
    want.sort_by(|a, b| a.labels.cmp(&b.labels));
    assert_eq!(got.len(), want.len(), "{q} at {t}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.labels, w.labels, "{q}");
        assert!(close(q, g.v, w.v), "{q} at {t}: {} vs raw {}", g.v, w.v);
    }
}

const FUNCTIONS: [&str; 7] = [
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "avg_over_time",
    "last_over_time",
    "present_over_time",
];

#[test]
fn rollup_windows_equal_raw_windows() {
    let db = database();
    let selector = "{site=\"lab\"}";
    for f in FUNCTIONS {
        for range in [
            "1h",
            "90m",
            "3h",
            "1d",
            "2h] offset 30m",
            "2h] @ 1767312000",
        ] {
            let (range, modifier) = match range.split_once("] ") {
                Some((r, m)) => (r, m),
                None => (range, ""),
            };
            let q = format!("{f}({selector}[{range}] {modifier})");
            // Hourly steps on the hour, over all three days and past the end.
            check_range(&db, &q, T0 + HOUR, T0 + 3 * DAY + 2 * HOUR, HOUR);
            // Unaligned steps and start.
            check_range(&db, &q, T0 + 13_000, T0 + 3 * DAY, 37 * 60_000 + 11);
            for t in [T0 + 26 * HOUR, T0 + 2 * DAY - 1, T0 + 47 * HOUR + 30_007] {
                check_instant(&db, &q, t);
            }
        }
    }
    // Windows inside subqueries (cut parts the plan does not foresee) and under aggregation.
    for q in [
        "max_over_time(max_over_time({site=\"lab\"}[2h])[6h:25m])",
        "sum_over_time(count_over_time({site=\"lab\"}[1h])[5h:1h])",
        "sum by (site) (avg_over_time({site=\"lab\"}[1d]))",
        "avg_over_time(requests[3h]) - avg_over_time(requests[3h] offset 1h)",
    ] {
        check_range(&db, q, T0 + HOUR, T0 + 3 * DAY, HOUR);
        check_range(&db, q, T0 + 13_000, T0 + 3 * DAY, 53 * 60_000 + 7);
    }
}

#[test]
fn long_windows_read_rows_instead_of_samples() {
    let db = database();
    let engine = Engine::default();
    let q = "count_over_time(temperature_celsius[1d])";
    let before = db.stats().rollup_rows_read_total;
    engine
        .range(&Raw(&db), q, T0 + DAY, T0 + 2 * DAY, HOUR)
        .expect(q);
    assert_eq!(
        db.stats().rollup_rows_read_total,
        before,
        "raw view reads no rows"
    );
    let got = engine.range(&db, q, T0 + DAY, T0 + 2 * DAY, HOUR).expect(q);
    let rows = db.stats().rollup_rows_read_total - before;
    // Two compacted days of one series: 48 hourly rows, bar the hours late samples touched.
    assert!(rows >= 40, "rollup rows read: {rows}");
    assert_eq!(got.len(), 1);
    // [T0, T0 + 1d], both ends closed: 8,640 samples, one late sample (another replaced
    // one), and the sample exactly at T0 + 1d.
    assert_eq!(got[0].points[0], (T0 + DAY, 8642.0));
    // The read itself: rows for the compacted hours, raw samples only where needed.
    let read = db.select_rollups(
        &[Matcher::metric("temperature_celsius")],
        T0,
        T0 + 2 * DAY - 1,
        HOUR,
        &[],
    );
    assert_eq!(read.len(), 1);
    let raw_in_rows = read[0]
        .raw
        .iter()
        .filter(|p| {
            read[0]
                .rows
                .iter()
                .any(|r| r.t == p.0 - p.0.rem_euclid(HOUR))
        })
        .count();
    assert_eq!(raw_in_rows, 0, "no raw sample inside a row used");
    // Raw: the hours late samples overlap (1 h to 3 h and 30 h of the walk).
    assert!(
        read[0].raw.len() <= 4 * 361,
        "raw samples: {}",
        read[0].raw.len()
    );
    let counted: u64 = read[0].rows.iter().map(|r| r.count).sum::<u64>() + read[0].raw.len() as u64;
    assert_eq!(counted, 2 * 8640 + 2);
    // The sparse series has no rows at all, and still answers.
    let sparse = db.select_rollups(&[Matcher::metric("battery_ratio")], T0, T0 + DAY, HOUR, &[]);
    assert!(sparse[0].rows.is_empty());
}
