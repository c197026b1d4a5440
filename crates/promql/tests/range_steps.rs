//! Range queries are evaluated across all steps at once; an instant query evaluates one time.
//! Every step of a range query must give what the instant query at that step's time gives:
//! over series with gaps longer than the lookback, series that start or stop inside the range,
//! counter resets, steps aligned and not aligned with subquery steps, and steps farther apart
//! than a subquery's range.

use std::collections::BTreeMap;

mod common;

use common::Mem;
use fleetmon_promql::{Engine, Error, LabelSet, Options, Value};
use fleetmon_tsdb::{Labels, SeriesPoints};

const S: i64 = 1000;
const M: i64 = 60 * S;

fn series(metric: &str, labels: &[(&str, &str)], points: Vec<(i64, f64)>) -> SeriesPoints {
    SeriesPoints {
        labels: Labels::from_metric(metric, labels.iter().copied()).expect("valid labels"),
        points,
    }
}

/// Samples every 15 s in `[from, to)` minutes, valued by `f(i)`.
fn every_15s(from: i64, to: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (from * 4..to * 4).map(|i| (i * 15 * S, f(i))).collect()
}

/// Three devices over 20 minutes. `up{dev=b}` stops from 5 to 12 min (longer than the
/// lookback); `up{dev=c}` starts at 8 min. `bytes_total{dev=b}` resets at 10 min and
/// `bytes_total{dev=a}` pauses from 6 to 7.5 min. `old_total{dev=a}` ends at 2 min and
/// `new_total{dev=a}` starts at 10 min, so they never meet once the name is dropped;
/// `dup_total{dev=a}` overlaps `bytes_total{dev=a}`.
fn source() -> Mem {
    let gauge = |i: i64| ((i * 7) % 10) as f64 / 10.0;
    let mut up_b = every_15s(0, 5, gauge);
    up_b.extend(every_15s(12, 20, gauge));
    let mut bytes_a = every_15s(0, 6, |i| (i * 30) as f64);
    bytes_a.extend(every_15s(0, 20, |i| (i * 30) as f64).into_iter().skip(30));
    let bytes_b = every_15s(
        0,
        20,
        |i| if i < 40 { i * 50 } else { (i - 40) * 50 } as f64,
    );
    let mut all = vec![
        series(
            "up",
            &[("dev", "a"), ("site", "x")],
            every_15s(0, 20, gauge),
        ),
        series("up", &[("dev", "b"), ("site", "x")], up_b),
        series(
            "up",
            &[("dev", "c"), ("site", "y")],
            every_15s(8, 20, |i| gauge(i + 3)),
        ),
        series("bytes_total", &[("dev", "a"), ("site", "x")], bytes_a),
        series("bytes_total", &[("dev", "b"), ("site", "x")], bytes_b),
        series(
            "old_total",
            &[("dev", "a"), ("site", "x")],
            every_15s(0, 2, |i| i as f64),
        ),
        series(
            "new_total",
            &[("dev", "a"), ("site", "x")],
            every_15s(10, 20, |i| i as f64),
        ),
        series(
            "dup_total",
            &[("dev", "a"), ("site", "x")],
            every_15s(0, 20, |i| i as f64),
        ),
    ];
    all.extend(histograms());
    Mem(all)
}

/// `lat_bucket{dev, le}`: cumulative bucket counters; dev=b's stop from 5 to 12 min.
fn histograms() -> Vec<SeriesPoints> {
    let mut out = Vec::new();
    for (dev, rate) in [("a", 1), ("b", 3)] {
        for (le, share) in [("0.1", 1), ("0.5", 4), ("1", 6), ("+Inf", 7)] {
            let count = move |i: i64| (i * rate * share) as f64;
            let points = if dev == "b" {
                let mut p = every_15s(0, 5, count);
                p.extend(every_15s(12, 20, count));
                p
            } else {
                every_15s(0, 20, count)
            };
            out.push(series("lat_bucket", &[("dev", dev), ("le", le)], points));
        }
    }
    out
}

const QUERIES: &[&str] = &[
    // Selectors and arithmetic with scalars.
    "up",
    "up offset 2m",
    "up @ 600",
    "-up",
    "up * 2",
    "2 - up",
    "up > 0.5",
    "0.5 < up",
    "up > bool 0.5",
    "1 + 2 * 3",
    // Range functions.
    "rate(bytes_total[1m])",
    "increase(bytes_total[2m] offset 1m)",
    "irate(bytes_total[1m])",
    "idelta(up[1m])",
    "delta(up[3m])",
    "deriv(up[3m])",
    "predict_linear(up[3m], 60)",
    "predict_linear(up[3m], scalar(up{dev=\"a\"}) * 100)",
    "resets(bytes_total[5m])",
    "changes(up[5m])",
    "avg_over_time(up[2m])",
    "min_over_time(up[2m])",
    "max_over_time(up[2m])",
    "sum_over_time(up[2m])",
    "count_over_time(up[2m])",
    "last_over_time(up[2m])",
    "stddev_over_time(up[2m])",
    "stdvar_over_time(up[2m])",
    "present_over_time(up[2m])",
    "quantile_over_time(0.9, up[3m])",
    "absent_over_time(up{dev=\"b\"}[1m])",
    "max_over_time(up[1m] @ 300)",
    // Subqueries: aligned to their own step, not to the query's.
    "max_over_time(rate(bytes_total[1m])[5m:30s])",
    "avg_over_time(up[4m:45s])",
    "sum_over_time(up[10m:1m] offset 3m)",
    "max_over_time(up[3m:20s] @ 700)",
    "count_over_time((up > 0.5)[6m:])",
    "min_over_time(max_over_time(up[1m:15s])[3m:1m])",
    "sum_over_time(vector(1)[2m:30s])",
    "max_over_time(vector(scalar(up{dev=\"a\"}))[2m:30s])",
    "rate(sum(bytes_total)[3m:15s])",
    // Windows far apart (the 7 min grid): evaluated per step.
    "max_over_time(up[30s:10s])",
    // Aggregations.
    "sum(up)",
    "sum by (dev) (rate(bytes_total[1m]))",
    "avg without (dev) (up)",
    "count(up)",
    "min(up)",
    "max by (site) (up)",
    "group(up)",
    "stddev(up)",
    "stdvar(up)",
    "quantile(0.5, up)",
    "quantile by (site) (scalar(up{dev=\"a\"}), up)",
    "topk(1, up)",
    "bottomk(2, up)",
    "topk by (site) (1, up)",
    "topk(scalar(count(up)) - 1, up)",
    "count_values(\"v\", round(up))",
    // Two vectors.
    "up * on(dev) group_left rate(bytes_total[1m])",
    "up + ignoring(site) up",
    "up and bytes_total",
    "up or bytes_total",
    "up unless on(dev) bytes_total",
    "up and on(site) bytes_total",
    "up or on(site) bytes_total",
    "bytes_total unless ignoring(dev) up",
    "up * on(site) bytes_total",
    "bytes_total / on(site) group_left up",
    "up * on(site) group_left max by (site) (up)",
    "max by (site) (up) - on(site) group_right up",
    "up + on(site) group_left(dev) max by (site) (up)",
    "up > on(dev) rate(bytes_total[1m])",
    "up > bool on(dev) rate(bytes_total[1m])",
    "up == ignoring(site) up",
    "up / on() group_left vector(2)",
    "sum by (site) (up) / on(site) count by (site) (up)",
    // Functions evaluated step by step.
    "abs(up - 1)",
    "sqrt(up)",
    "round(up * 10, 3)",
    "clamp(up, 0.2, 0.6)",
    "clamp(up, 0.6, 0.2)",
    "clamp_min(up, scalar(up{dev=\"a\"}))",
    "clamp_max(up, 0.5)",
    "minute()",
    "hour(up * 100000)",
    "day_of_week(timestamp(up))",
    "scalar(up{site=\"y\"})",
    "label_join(up, \"x\", \"-\", \"dev\", \"site\")",
    "label_replace(up, \"dev\", \"z\", \"dev\", \".*\")",
    "label_replace(rate(bytes_total[1m]), \"site\", \"$1\", \"dev\", \"(a)\")",
    "histogram_quantile(0.5, up)",
    "histogram_quantile(0.9, rate(lat_bucket[2m]))",
    "histogram_quantile(0.5, sum by (le) (rate(lat_bucket[2m])))",
    "histogram_quantile(scalar(up{dev=\"a\"}), lat_bucket)",
    "histogram_quantile(0.99, lat_bucket{le!=\"+Inf\"})",
    "label_replace(up, \"x\", \"$1\", \"dev\", \"(.*)\")",
    "time()",
    "vector(time())",
    "scalar(sum(up))",
    "timestamp(up)",
    "absent(nope)",
    "sort(up)",
    // The name dropped: two series meet only where both have samples.
    "rate({__name__=~\"old_total|new_total\"}[1m])",
    "rate({__name__=~\"bytes_total|dup_total\"}[1m])",
    "-{__name__=~\"bytes_total|dup_total\"}",
];

/// (start, end, step) in ms.
const GRIDS: &[(i64, i64, i64)] = &[
    (0, 20 * M, M),
    (11_500, 19 * M, 37 * S),
    (3 * M, 20 * M, 7 * M),
    (10 * M, 10 * M, M),
];

type Points = BTreeMap<String, Vec<(i64, f64)>>;

fn key(labels: &LabelSet) -> String {
    format!("{labels:?}")
}

/// The range query's answer, step by step from instant queries.
fn by_instants(src: &Mem, q: &str, (start, end, step): (i64, i64, i64)) -> Result<Points, Error> {
    let engine = Engine::default();
    let mut out = Points::new();
    let mut t = start;
    while t <= end {
        match engine.instant(src, q, t)? {
            Value::Vector(v) => {
                for s in v {
                    out.entry(key(&s.labels)).or_default().push((t, s.v));
                }
            }
            Value::Scalar(v) => out.entry(key(&LabelSet::new())).or_default().push((t, v)),
            other => panic!("{q}: {other:?}"),
        }
        t += step;
    }
    Ok(out)
}

fn by_range(src: &Mem, q: &str, (start, end, step): (i64, i64, i64)) -> Result<Points, Error> {
    let got = Engine::default().range(src, q, start, end, step)?;
    let mut out = Points::new();
    for s in got {
        let previous = out.insert(key(&s.labels), s.points);
        assert!(previous.is_none(), "{q}: {:?} twice", s.labels);
    }
    Ok(out)
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn every_step_of_a_range_query_is_the_instant_query_at_its_time() {
    let src = source();
    let mut compared = 0;
    for q in QUERIES {
        for &grid in GRIDS {
            let want = by_instants(&src, q, grid);
            let got = by_range(&src, q, grid);
            match (want, got) {
                (Ok(want), Ok(got)) => {
                    assert_eq!(
                        want.keys().collect::<Vec<_>>(),
                        got.keys().collect::<Vec<_>>(),
                        "{q} {grid:?}"
                    );
                    for (labels, w) in &want {
                        let g = &got[labels];
                        let same = w.len() == g.len()
                            && w.iter()
                                .zip(g)
                                .all(|(a, b)| a.0 == b.0 && same_value(a.1, b.1));
                        assert!(same, "{q} {grid:?} {labels}:\n{w:?}\n{g:?}");
                        compared += w.len();
                    }
                }
                (Err(w), Err(g)) => {
                    assert_eq!(w.to_string(), g.to_string(), "{q} {grid:?}");
                }
                (w, g) => panic!("{q} {grid:?}: instants {w:?}, range {g:?}"),
            }
        }
    }
    assert!(compared > 5_000, "{compared} points compared");
}

#[test]
fn names_dropped_across_a_range_merge_or_collide() {
    let src = source();
    let engine = Engine::default();
    // old_total ends at 2 min, new_total starts at 10: one series after the name is dropped.
    let got = engine
        .range(
            &src,
            "rate({__name__=~\"old_total|new_total\"}[1m])",
            0,
            20 * M,
            M,
        )
        .expect("disjoint in time");
    assert_eq!(got.len(), 1);
    let times: Vec<i64> = got[0].points.iter().map(|p| p.0 / M).collect();
    assert_eq!(times, vec![1, 2, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    let err = engine
        .range(&src, "-{__name__=~\"bytes_total|dup_total\"}", 0, 5 * M, M)
        .expect_err("same labels at one step");
    assert!(err.to_string().contains("same labelset"), "{err}");
}

#[test]
fn the_sample_limit_and_the_timeout_hold_for_whole_range_evaluation() {
    let src = source();
    // Windows of 2 min hold 9 samples per series; three series.
    let small = Engine::new(Options {
        max_samples: 20,
        ..Options::default()
    });
    for q in [
        "sum_over_time(up[2m])",
        "max_over_time(rate(bytes_total[1m])[10m:15s])",
        "sum by (dev) (up)",
        "up",
    ] {
        let err = small.range(&src, q, 0, 20 * M, M).expect_err(q);
        assert!(
            matches!(err, Error::TooManySamples { limit: 20 }),
            "{q}: {err}"
        );
    }
    // Grids of billions of steps are refused, not allocated.
    for q in [
        "max_over_time(up[1y:1ms])",
        "count_over_time(vector(1)[1y:1ms])",
    ] {
        let err = Engine::default().range(&src, q, 0, 20 * M, M).expect_err(q);
        assert!(matches!(err, Error::TooManySamples { .. }), "{q}: {err}");
        let err = Engine::default().instant(&src, q, 20 * M).expect_err(q);
        assert!(matches!(err, Error::TooManySamples { .. }), "{q}: {err}");
    }
    let err = Engine::default()
        .range(&src, "vector(1)", 0, i64::MAX, 1)
        .expect_err("steps");
    assert!(matches!(err, Error::TooManySamples { .. }), "{err}");
    let late = Engine::new(Options {
        timeout: std::time::Duration::ZERO,
        ..Options::default()
    });
    std::thread::sleep(std::time::Duration::from_millis(2));
    let err = late
        .range(&src, "max_over_time(up[3m:20s])", 0, 20 * M, M)
        .expect_err("timeout");
    assert!(matches!(err, Error::Timeout), "{err}");
}

#[test]
fn histogram_quantiles_over_a_range() {
    let src = source();
    let got = Engine::default()
        .range(
            &src,
            "histogram_quantile(0.5, rate(lat_bucket[2m]))",
            0,
            20 * M,
            M,
        )
        .expect("quantiles");
    // Rank 3.5 of 7 falls in (0.1, 0.5] holding 3 of them: 0.1 + 0.4 × 2.5 / 3.
    let want = 0.1 + 0.4 * 2.5 / 3.0;
    assert_eq!(got.len(), 2);
    for s in &got {
        assert!(s.points.iter().all(|p| (p.1 - want).abs() < 1e-9), "{s:?}");
    }
    // dev=a from the second step on; dev=b not while its buckets stop (5 to 12 min, plus the
    // window).
    let steps = |dev: &str| {
        got.iter()
            .find(|s| s.labels.get("dev").map(String::as_str) == Some(dev))
            .map(|s| s.points.iter().map(|p| p.0 / M).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(steps("a"), (1..=20).collect::<Vec<_>>());
    let b = steps("b");
    assert!(
        b.contains(&5) && !b.contains(&8) && b.contains(&13),
        "{b:?}"
    );
}
