//! Model check: random interleavings of appends (in and out of order, rewrites, too-old
//! samples), flushes, compactions, restarts (with a power cut) and queries must answer exactly
//! like a `BTreeMap` of what was acknowledged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetmon_tsdb::{Agg, Backend, Db, Labels, Matcher, MemBackend, Options, Sample};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone)]
enum Op {
    /// Samples for one device: (10-minute slot, value).
    Append(u8, Vec<(u16, i8)>),
    /// A dense hour: 400 samples 9 s apart, so compaction writes 1-hour rollups.
    Dense(u8, u8, i8),
    /// A sample 8 days older than the newest: refused.
    Ancient(u8),
    Flush,
    Compact,
    Restart,
    Select(u8, u16, u16),
    Aggregate(u8, u8),
    Last,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, prop::collection::vec((0u16..432, any::<i8>()), 1..12)).prop_map(|(d, s)| Op::Append(d, s)),
        1 => (0u8..4, 0u8..72, any::<i8>()).prop_map(|(d, h, v)| Op::Dense(d, h, v)),
        1 => (0u8..4).prop_map(Op::Ancient),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        2 => Just(Op::Restart),
        2 => (0u8..5, 0u16..432, 0u16..432).prop_map(|(d, a, b)| Op::Select(d, a.min(b), a.max(b))),
        2 => (0u8..3, 0u8..6).prop_map(|(s, a)| Op::Aggregate(s, a)),
        1 => Just(Op::Last),
    ]
}

type Model = BTreeMap<u8, BTreeMap<i64, f64>>;

fn labels(d: u8) -> Labels {
    Labels::from_metric("m", [("device", format!("d{d}"))]).unwrap()
}

fn open(mem: &MemBackend) -> Db {
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    Db::open(b, Options::default(), &mut |_, _| {}).unwrap()
}

fn model_buckets(
    points: &BTreeMap<i64, f64>,
    start: i64,
    end: i64,
    step: i64,
    agg: Agg,
) -> Vec<(i64, f64)> {
    let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (&t, &v) in points.range(start..=end) {
        buckets
            .entry(start + (t - start) / step * step)
            .or_default()
            .push(v);
    }
    buckets
        .into_iter()
        .map(|(b, vs)| {
            let v = match agg {
                Agg::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Sum => vs.iter().sum(),
                Agg::Count => vs.len() as f64,
                Agg::Avg => vs.iter().sum::<f64>() / vs.len() as f64,
                Agg::Last => vs[vs.len() - 1],
            };
            (b, v)
        })
        .collect()
}

fn run(ops: Vec<Op>) -> Result<u64, TestCaseError> {
    let mem = MemBackend::new();
    let mut db = open(&mem);
    let mut model = Model::new();
    let newest = |m: &Model| {
        m.values()
            .filter_map(|p| p.keys().next_back().copied())
            .max()
    };
    for op in ops {
        match op {
            Op::Append(d, samples) => {
                let l = labels(d);
                let s: Vec<Sample<'_>> = samples
                    .iter()
                    .map(|&(slot, v)| Sample {
                        labels: &l,
                        ts_ms: T0 + i64::from(slot) * 600_000,
                        value: f64::from(v),
                    })
                    .collect();
                let r = db.append(&s, None).unwrap();
                prop_assert_eq!(r.accepted, s.len());
                let m = model.entry(d).or_default();
                for x in &s {
                    m.insert(x.ts_ms, x.value);
                }
            }
            Op::Dense(d, hour, v) => {
                let l = labels(d);
                let base = T0 + i64::from(hour) * HOUR;
                let pts: Vec<(i64, f64)> = (0..400)
                    .map(|i| (base + i * 9_000, f64::from(v) + (i % 13) as f64 * 0.25))
                    .collect();
                let s: Vec<Sample<'_>> = pts
                    .iter()
                    .map(|&(ts_ms, value)| Sample {
                        labels: &l,
                        ts_ms,
                        value,
                    })
                    .collect();
                db.append(&s, None).unwrap();
                model.entry(d).or_default().extend(pts);
            }
            Op::Ancient(d) => {
                let l = labels(d);
                let t = newest(&model).unwrap_or(T0) - 8 * DAY;
                let r = db
                    .append(
                        &[Sample {
                            labels: &l,
                            ts_ms: t,
                            value: 1.0,
                        }],
                        None,
                    )
                    .unwrap();
                if newest(&model).is_some() {
                    prop_assert_eq!((r.accepted, r.too_old), (0, 1));
                } else {
                    model.entry(d).or_default().insert(t, 1.0);
                }
            }
            Op::Flush => {
                db.flush().unwrap();
            }
            Op::Compact => {
                db.compact(T0 + 10 * DAY).unwrap();
            }
            Op::Restart => {
                drop(db);
                mem.crash();
                db = open(&mem);
            }
            Op::Select(d, a, b) => {
                let (start, end) = (T0 + i64::from(a) * 600_000, T0 + i64::from(b) * 600_000);
                let sel = if d == 4 {
                    vec![]
                } else {
                    vec![Matcher::eq("device", &format!("d{d}"))]
                };
                let got: BTreeMap<u8, Vec<(i64, f64)>> = db
                    .select(&sel, start, end)
                    .into_iter()
                    .map(|s| {
                        (
                            s.labels.get("device").unwrap()[1..].parse().unwrap(),
                            s.points,
                        )
                    })
                    .collect();
                let want: BTreeMap<u8, Vec<(i64, f64)>> = model
                    .iter()
                    .filter(|(k, _)| d == 4 || **k == d)
                    .map(|(k, p)| {
                        (
                            *k,
                            p.range(start..=end)
                                .map(|(a, b)| (*a, *b))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .filter(|(_, p)| !p.is_empty())
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Aggregate(s, a) => {
                let step = [HOUR, 7 * 60_000, 3 * HOUR][usize::from(s)];
                let agg = [
                    Agg::Min,
                    Agg::Max,
                    Agg::Sum,
                    Agg::Count,
                    Agg::Avg,
                    Agg::Last,
                ][usize::from(a)];
                let (start, end) = (T0, T0 + 3 * DAY);
                for series in db.aggregate(&[], start, end, step, agg).unwrap() {
                    let d: u8 = series.labels.get("device").unwrap()[1..].parse().unwrap();
                    let want = model_buckets(&model[&d], start, end, step, agg);
                    prop_assert_eq!(series.points.len(), want.len());
                    for (g, w) in series.points.iter().zip(&want) {
                        prop_assert_eq!(g.0, w.0);
                        prop_assert!((g.1 - w.1).abs() < 1e-9, "{:?} {:?} vs {:?}", agg, g, w);
                    }
                }
            }
            Op::Last => {
                for lv in db.last_values(&[]) {
                    let d: u8 = lv.labels.get("device").unwrap()[1..].parse().unwrap();
                    let (t, v) = model[&d].iter().next_back().map(|(a, b)| (*a, *b)).unwrap();
                    prop_assert_eq!((lv.ts_ms, lv.value), (t, v));
                }
            }
        }
    }
    Ok(db.stats().rollup_rows_read_total)
}

proptest! {
    // 96 cases by default; `PROPTEST_CASES=5000` for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]
    #[test]
    fn db_matches_a_btreemap_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

#[test]
fn the_model_check_reaches_rollups() {
    // A fixed interleaving that must be answered from rollups, so the random runs above do
    // exercise that path when they generate it.
    let ops = vec![
        Op::Dense(0, 2, 5),
        Op::Dense(0, 3, -7),
        Op::Append(0, vec![(100, 1)]),
        Op::Flush,
        Op::Compact,
        Op::Restart,
        Op::Aggregate(0, 4),
        Op::Aggregate(2, 5),
    ];
    let rows = run(ops).unwrap();
    assert!(rows > 0, "rollups were read");
}
