//! End-to-end queries over a small in-memory source, with hand-computed expectations.

mod common;

use common::Mem;
use fleetmon_promql::{Engine, Error, Options, Series, Value};
use fleetmon_tsdb::{Labels, SeriesPoints};

fn series(metric: &str, labels: &[(&str, &str)], points: Vec<(i64, f64)>) -> SeriesPoints {
    SeriesPoints {
        labels: Labels::from_metric(metric, labels.iter().copied()).expect("valid labels"),
        points,
    }
}

/// `http_requests{job=api,instance=a|b}`: a counter sampled every 10 s for 10 min, +1/s on
/// `a`, +2/s on `b`; `b` resets to 0 at 300 s. `temp{instance=a}`: 10 s samples of 20, 21,
/// 22, ... only until 120 s.
fn source() -> Mem {
    let a = (0..=60).map(|i| (i * 10_000, i as f64 * 10.0)).collect();
    let b = (0..=60)
        .map(|i| {
            let v = if i < 30 { i * 20 } else { (i - 30) * 20 };
            (i * 10_000, v as f64)
        })
        .collect();
    let temp = (0..=12).map(|i| (i * 10_000, 20.0 + i as f64)).collect();
    Mem(vec![
        series("http_requests", &[("job", "api"), ("instance", "a")], a),
        series("http_requests", &[("job", "api"), ("instance", "b")], b),
        series("temp", &[("instance", "a")], temp),
    ])
}

fn vector(q: &str, t: i64) -> Vec<(String, f64)> {
    let engine = Engine::default();
    match engine.instant(&source(), q, t).expect(q) {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> = v
                .into_iter()
                .map(|s| (format!("{:?}", s.labels), s.v))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("{q}: {other:?}"),
    }
}

fn values(q: &str, t: i64) -> Vec<f64> {
    vector(q, t).into_iter().map(|x| x.1).collect()
}

fn scalar(q: &str, t: i64) -> f64 {
    match Engine::default().instant(&source(), q, t).expect(q) {
        Value::Scalar(v) => v,
        other => panic!("{q}: {other:?}"),
    }
}

#[test]
fn selectors_lookback_offset_and_at() {
    assert_eq!(values("http_requests", 305_000), vec![300.0, 0.0]);
    assert_eq!(
        values("http_requests{instance=~\"b|c\"}", 300_000),
        vec![0.0]
    );
    assert_eq!(
        values("http_requests{instance!=\"b\"}", 300_000),
        vec![300.0]
    );
    assert_eq!(
        values("http_requests{instance!~\"a\"}", 290_000),
        vec![580.0]
    );
    assert_eq!(
        values("http_requests offset 1m", 300_000),
        vec![240.0, 480.0]
    );
    assert_eq!(values("http_requests @ 100", 600_000), vec![100.0, 200.0]);
    // temp stops at 120 s: present up to 120 + 300 s, absent after.
    assert_eq!(values("temp", 420_000), vec![32.0]);
    assert!(values("temp", 420_001).is_empty());
    let opts = Options {
        lookback_ms: 60_000,
        ..Options::default()
    };
    let v = Engine::new(opts)
        .instant(&source(), "temp", 200_000)
        .unwrap();
    assert_eq!(v, Value::Vector(vec![]));
}

#[test]
fn counters_and_gauges() {
    // 1/s, samples cover the whole window: no extrapolation beyond it.
    assert_eq!(
        values("rate(http_requests{instance=\"a\"}[1m])", 120_000),
        vec![1.0]
    );
    assert_eq!(
        values("increase(http_requests{instance=\"a\"}[1m])", 120_000),
        vec![60.0]
    );
    // Across the reset at 300 s: 520..580, then 0..40 (the drop to 0 adds nothing): 100/60 s.
    assert_eq!(
        values("rate(http_requests{instance=\"b\"}[1m])", 320_000),
        vec![100.0 / 60.0]
    );
    assert_eq!(
        values("irate(http_requests{instance=\"b\"}[1m])", 300_000),
        vec![0.0]
    );
    assert_eq!(values("resets(http_requests[5m])", 400_000), vec![0.0, 1.0]);
    assert_eq!(values("changes(temp[1m])", 60_000), vec![6.0]);
    assert_eq!(values("delta(temp[1m])", 60_000), vec![6.0]);
    assert_eq!(values("idelta(temp[1m])", 60_000), vec![1.0]);
    assert_eq!(values("deriv(temp[1m])", 60_000), vec![0.1]);
    assert_eq!(values("predict_linear(temp[1m], 60)", 60_000), vec![32.0]);
}

#[test]
fn over_time_functions() {
    // temp over [0, 60 s]: 20..=26.
    assert_eq!(values("avg_over_time(temp[1m])", 60_000), vec![23.0]);
    assert_eq!(values("min_over_time(temp[1m])", 60_000), vec![20.0]);
    assert_eq!(values("max_over_time(temp[1m])", 60_000), vec![26.0]);
    assert_eq!(values("sum_over_time(temp[1m])", 60_000), vec![161.0]);
    assert_eq!(values("count_over_time(temp[1m])", 60_000), vec![7.0]);
    assert_eq!(values("last_over_time(temp[1m])", 60_000), vec![26.0]);
    assert_eq!(
        values("quantile_over_time(0.5, temp[1m])", 60_000),
        vec![23.0]
    );
    assert_eq!(values("stdvar_over_time(temp[1m])", 60_000), vec![4.0]);
    assert_eq!(values("stddev_over_time(temp[1m])", 60_000), vec![2.0]);
    assert_eq!(values("present_over_time(temp[1m])", 60_000), vec![1.0]);
    assert!(values("absent_over_time(temp[1m])", 60_000).is_empty());
    assert_eq!(
        vector("absent_over_time(nope{a=\"x\"}[1m])", 60_000),
        vec![("{\"a\": \"x\"}".to_owned(), 1.0)]
    );
    // last_over_time keeps the name, the others drop it.
    assert!(
        vector("last_over_time(temp[1m])", 60_000)[0]
            .0
            .contains("__name__")
    );
    assert!(
        !vector("max_over_time(temp[1m])", 60_000)[0]
            .0
            .contains("__name__")
    );
}

#[test]
fn math_labels_and_time() {
    assert_eq!(values("sqrt(temp - 4)", 120_000), vec![(28.0f64).sqrt()]);
    assert_eq!(values("clamp(temp, 0, 25)", 120_000), vec![25.0]);
    assert_eq!(values("clamp_min(temp, 40)", 120_000), vec![40.0]);
    assert_eq!(values("round(temp / 3)", 120_000), vec![11.0]);
    assert_eq!(scalar("time()", 120_000), 120.0);
    assert_eq!(values("timestamp(temp)", 125_000), vec![120.0]);
    assert_eq!(values("vector(2)", 0), vec![2.0]);
    assert_eq!(scalar("scalar(temp)", 120_000), 32.0);
    assert!(scalar("scalar(http_requests)", 120_000).is_nan());
    assert_eq!(
        vector(
            "label_replace(temp, \"host\", \"h-$1\", \"instance\", \"(.*)\")",
            0
        )[0]
        .0,
        "{\"__name__\": \"temp\", \"host\": \"h-a\", \"instance\": \"a\"}"
    );
    assert_eq!(
        vector(
            "label_join(temp, \"x\", \"-\", \"instance\", \"__name__\")",
            0
        )[0]
        .0,
        "{\"__name__\": \"temp\", \"instance\": \"a\", \"x\": \"a-temp\"}"
    );
    assert_eq!(
        vector("absent(nope{job=\"x\"})", 0),
        vec![("{\"job\": \"x\"}".to_owned(), 1.0)]
    );
    assert_eq!(values("year()", 0), vec![1970.0]);
}

#[test]
fn aggregations() {
    assert_eq!(values("sum(http_requests)", 100_000), vec![300.0]);
    assert_eq!(
        values("sum by (instance) (http_requests)", 100_000),
        vec![100.0, 200.0]
    );
    assert_eq!(
        values("avg without (instance) (http_requests)", 100_000),
        vec![150.0]
    );
    assert_eq!(values("count(http_requests)", 100_000), vec![2.0]);
    assert_eq!(values("max(http_requests)", 100_000), vec![200.0]);
    assert_eq!(values("stddev(http_requests)", 100_000), vec![50.0]);
    assert_eq!(
        values("quantile(0.25, http_requests)", 100_000),
        vec![125.0]
    );
    assert_eq!(values("topk(1, http_requests)", 100_000), vec![200.0]);
    assert_eq!(values("bottomk(1, http_requests)", 100_000), vec![100.0]);
    assert_eq!(values("group(http_requests)", 100_000), vec![1.0]);
    assert_eq!(
        vector("count_values(\"v\", http_requests)", 100_000),
        vec![
            ("{\"v\": \"100\"}".to_owned(), 1.0),
            ("{\"v\": \"200\"}".to_owned(), 1.0)
        ]
    );
}

#[test]
fn binary_operators_and_matching() {
    assert_eq!(values("http_requests > 150", 100_000), vec![200.0]);
    assert_eq!(values("http_requests > bool 150", 100_000), vec![0.0, 1.0]);
    assert_eq!(values("150 < http_requests", 100_000), vec![200.0]);
    assert_eq!(
        values("http_requests / on(instance) temp", 100_000),
        vec![100.0 / 30.0]
    );
    assert_eq!(
        values("http_requests * on(instance) group_left temp", 100_000),
        vec![3000.0]
    );
    assert_eq!(
        values("http_requests and on(instance) temp", 100_000),
        vec![100.0]
    );
    assert_eq!(
        values("http_requests unless on(instance) temp", 100_000),
        vec![200.0]
    );
    assert_eq!(
        values("temp or http_requests", 100_000),
        vec![100.0, 200.0, 30.0]
    );
    assert_eq!(scalar("2 + 3 * 2 ^ 2", 0), 14.0);
    assert_eq!(scalar("1 > bool 0", 0), 1.0);
    assert_eq!(values("-temp", 100_000), vec![-30.0]);
    let err = Engine::default()
        .instant(&source(), "http_requests + on() temp", 100_000)
        .unwrap_err();
    assert!(matches!(err, Error::Execution(_)), "{err}");
}

#[test]
fn subqueries_and_range_queries() {
    // Aligned 10 s steps in [60 s, 120 s]: temp 26..=32.
    assert_eq!(values("max_over_time(temp[1m:10s])", 120_000), vec![32.0]);
    assert_eq!(values("count_over_time(temp[1m:10s])", 120_000), vec![7.0]);
    let got: Vec<Series> = Engine::default()
        .range(&source(), "temp * 2", 0, 30_000, 10_000)
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].points,
        vec![(0, 40.0), (10_000, 42.0), (20_000, 44.0), (30_000, 46.0)]
    );
    let got = Engine::default()
        .range(&source(), "time()", 0, 20_000, 10_000)
        .unwrap();
    assert_eq!(
        got[0].points,
        vec![(0, 0.0), (10_000, 10.0), (20_000, 20.0)]
    );
    assert!(matches!(
        Engine::default().range(&source(), "temp[1m]", 0, 1, 1),
        Err(Error::BadData(_))
    ));
}

#[test]
fn limits_and_parse_errors() {
    let opts = Options {
        max_samples: 10,
        ..Options::default()
    };
    let err = Engine::new(opts)
        .instant(&source(), "sum_over_time(http_requests[10m])", 600_000)
        .unwrap_err();
    assert!(matches!(err, Error::TooManySamples { limit: 10 }), "{err}");
    let err = Engine::default().instant(&source(), "sum(", 0).unwrap_err();
    assert!(matches!(err, Error::Parse(_)), "{err}");
    let opts = Options {
        timeout: std::time::Duration::ZERO,
        ..Options::default()
    };
    std::thread::sleep(std::time::Duration::from_millis(2));
    let err = Engine::new(opts)
        .range(&source(), "rate(http_requests[1m])", 0, 600_000, 1_000)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err}");
}

#[test]
fn parse_errors_carry_a_position() {
    let msg = |q: &str| fleetmon_promql::parse(q).unwrap_err().to_string();
    assert_eq!(msg("sum("), "1:5: parse error: unclosed left parenthesis");
    assert!(
        msg("x + rate(x)").starts_with("1:5: "),
        "{}",
        msg("x + rate(x)")
    );
    assert!(msg("nope_fn(x)").starts_with("1:1: "));
}

#[test]
fn long_ranges_load_in_slices_and_stop_at_the_limit() {
    // One sample a minute for 10 days: 14,401 samples.
    let points = (0..=14_400).map(|i| (i * 60_000, i as f64)).collect();
    let src = Mem(vec![series("m", &[], points)]);
    let t = 14_400 * 60_000;
    let got = Engine::default()
        .instant(&src, "count_over_time(m[10d])", t)
        .expect("count");
    assert_eq!(
        got,
        Value::Vector(vec![fleetmon_promql::Sample {
            labels: Default::default(),
            v: 14_401.0
        }])
    );
    let opts = Options {
        max_samples: 1_000,
        ..Options::default()
    };
    let err = Engine::new(opts)
        .instant(&src, "count_over_time(m[10d])", t)
        .unwrap_err();
    assert!(matches!(err, Error::TooManySamples { .. }), "{err}");
}
