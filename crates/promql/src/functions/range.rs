//! Functions of a range vector: counters (`rate`, `increase`, `irate`, `resets`), gauges
//! (`delta`, `idelta`, `deriv`, `predict_linear`, `changes`) and every `*_over_time`.
//!
//! `rate`, `increase` and `delta` extrapolate like Prometheus: the increase seen between the
//! first and last sample is stretched towards the window's edges, by at most half an average
//! sample interval where the samples stop short of an edge by more than 1.1 intervals, and for
//! counters never below zero.
//!
//! `min max sum count avg last present _over_time` of a range selector at least as long as a
//! rollup resolution of the source read through `crate::rollups` (rows where exact).

use promql_parser::parser::Expr;

use crate::aggregate::quantile;
use crate::error::{Error, Result};
use crate::eval::{Evaluator, duration_ms, unparen};
use crate::functions::labels::absent_labels;
use crate::rollups;
use crate::value::{Sample, Series, Value, drop_name};

/// A range argument's windows, its range and the time its window ends at.
fn windows(ev: &Evaluator<'_>, arg: &Expr, t: i64) -> Result<(Vec<Series>, i64, i64)> {
    match unparen(arg) {
        Expr::MatrixSelector(ms) => {
            let range = duration_ms(&ms.range);
            let end = ev.ref_time(&ms.vs.at, &ms.vs.offset, t);
            Ok((ev.range_selector(&ms.vs, range, t)?, range, end))
        }
        Expr::Subquery(sq) => {
            let range = duration_ms(&sq.range);
            let end = ev.ref_time(&sq.at, &sq.offset, t);
            Ok((ev.subquery(sq, t)?, range, end))
        }
        _ => Err(Error::BadData("expected a range vector argument".into())),
    }
}

/// Prometheus's extrapolated rate over the window `[end - range, end]`.
pub fn extrapolated_rate(
    points: &[(i64, f64)],
    range_ms: i64,
    end_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = 0.0;
        for &(_, v) in points {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let start_ms = end_ms - range_ms;
    let mut to_start = (first_t - start_ms) as f64 / 1000.0;
    let to_end = (end_ms - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if is_rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` (`is_rate`) or `idelta` from the last two samples.
pub fn instant_delta(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let (pt, pv) = points[n - 2];
    let (lt, lv) = points[n - 1];
    let mut d = lv - pv;
    if is_rate && lv < pv {
        d = lv;
    }
    if !is_rate {
        return Some(d);
    }
    let secs = (lt - pt) as f64 / 1000.0;
    if secs == 0.0 {
        return None;
    }
    Some(d / secs)
}

/// Least-squares slope and intercept with `x` in seconds from `intercept_ms`.
pub fn linear_regression(points: &[(i64, f64)], intercept_ms: i64) -> (f64, f64) {
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let first = points[0].1;
    let mut const_y = true;
    for &(t, v) in points {
        if const_y && v != first {
            const_y = false;
        }
        let x = (t - intercept_ms) as f64 / 1000.0;
        n += 1.0;
        sy += v;
        sx += x;
        sxy += x * v;
        sx2 += x * x;
    }
    if const_y {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Mean as Prometheus computes it incrementally (keeps infinities stable).
pub fn incremental_mean(values: impl Iterator<Item = f64>) -> f64 {
    let mut mean = 0.0;
    let mut count = 0.0;
    for v in values {
        count += 1.0;
        if count == 1.0 {
            mean = v;
            continue;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        mean += v / count - mean / count;
    }
    mean
}

/// Population variance (Welford), as Prometheus computes it.
pub fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    m2 / count
}

/// The minimum (`max == false`) or maximum; NaN only when every value is NaN.
pub fn extreme(values: impl Iterator<Item = f64>, max: bool) -> f64 {
    let mut out = f64::NAN;
    for v in values {
        if out.is_nan() || (max && v > out) || (!max && v < out) {
            out = v;
        }
    }
    out
}

/// The index of a range function's range-vector argument.
pub(crate) fn range_arg_index(name: &str) -> Option<usize> {
    match name {
        "quantile_over_time" => Some(1),
        "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "predict_linear"
        | "resets" | "changes" | "avg_over_time" | "min_over_time" | "max_over_time"
        | "sum_over_time" | "count_over_time" | "last_over_time" | "stddev_over_time"
        | "stdvar_over_time" | "present_over_time" | "absent_over_time" => Some(0),
        _ => None,
    }
}

/// Every range function but `last_over_time` drops the metric name.
pub(crate) fn drops_name(name: &str) -> bool {
    name != "last_over_time"
}

/// Function `name` of one series' window `p` (samples in `[end - range, end]`), evaluated at
/// `t`; `scalar_arg` is the φ of `quantile_over_time` or the seconds of `predict_linear`.
/// `None` when the window gives no value.
pub(crate) fn window_value(
    name: &str,
    p: &[(i64, f64)],
    range: i64,
    end: i64,
    t: i64,
    scalar_arg: Option<f64>,
) -> Option<f64> {
    let vals = || p.iter().map(|x| x.1);
    match name {
        "rate" => extrapolated_rate(p, range, end, true, true),
        "increase" => extrapolated_rate(p, range, end, true, false),
        "delta" => extrapolated_rate(p, range, end, false, false),
        "irate" => instant_delta(p, true),
        "idelta" => instant_delta(p, false),
        "deriv" => (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
        "predict_linear" => (p.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(p, t);
            slope * scalar_arg.unwrap_or(0.0) + intercept
        }),
        "resets" => Some(p.windows(2).filter(|x| x[1].1 < x[0].1).count() as f64),
        "changes" => Some(
            p.windows(2)
                .filter(|x| !(x[1].1 == x[0].1 || (x[1].1.is_nan() && x[0].1.is_nan())))
                .count() as f64,
        ),
        "avg_over_time" => Some(incremental_mean(vals())),
        "min_over_time" => Some(extreme(vals(), false)),
        "max_over_time" => Some(extreme(vals(), true)),
        "sum_over_time" => Some(vals().sum()),
        "count_over_time" => Some(p.len() as f64),
        "last_over_time" => p.last().map(|x| x.1),
        "stddev_over_time" => Some(variance(vals()).sqrt()),
        "stdvar_over_time" => Some(variance(vals())),
        "present_over_time" => Some(1.0),
        "quantile_over_time" => Some(quantile(scalar_arg.unwrap_or(f64::NAN), vals().collect())),
        _ => None,
    }
}

/// Evaluates a range-vector function, or `None` when `name` is not one.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Option<Value>> {
    let Some(arg) = range_arg_index(name) else {
        return Ok(None);
    };
    let Some(range_arg) = args.get(arg) else {
        return Err(Error::BadData(format!("{name}() needs a range vector")));
    };
    if name == "absent_over_time" {
        let (w, _, _) = windows(ev, range_arg, t)?;
        if !w.is_empty() {
            return Ok(Some(Value::Vector(Vec::new())));
        }
        let labels = match unparen(range_arg) {
            Expr::MatrixSelector(ms) => absent_labels(&ms.vs),
            _ => Default::default(),
        };
        return Ok(Some(Value::Vector(vec![Sample { labels, v: 1.0 }])));
    }
    if rollups::answers(name)
        && let Expr::MatrixSelector(ms) = unparen(range_arg)
    {
        let range = duration_ms(&ms.range);
        if let Some(resolution) = ev.rollup_resolution(range) {
            let mut out = Vec::new();
            for (mut labels, summary) in ev.window_summaries(&ms.vs, range, resolution, t)? {
                if drops_name(name) {
                    drop_name(&mut labels);
                }
                out.push(Sample {
                    labels,
                    v: summary.value(name),
                });
            }
            return Ok(Some(Value::Vector(out)));
        }
    }
    let scalar_arg = match name {
        "quantile_over_time" => Some(ev.scalar(args[0], t)?),
        "predict_linear" => match args.get(1) {
            Some(a) => Some(ev.scalar(a, t)?),
            None => return Err(Error::BadData("predict_linear() needs a duration".into())),
        },
        _ => None,
    };
    let (windows, range, end) = windows(ev, range_arg, t)?;
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
        if let Some(v) = window_value(name, &w.points, range, end, t, scalar_arg) {
            let mut labels = w.labels;
            if drops_name(name) {
                drop_name(&mut labels);
            }
            out.push(Sample { labels, v });
        }
    }
    Ok(Some(Value::Vector(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_to_the_window_edges() {
        // Samples every 10 s from 10 s to 50 s in a 60 s window ending at 60 s.
        let p: Vec<(i64, f64)> = (1..=5).map(|i| (i * 10_000, i as f64 * 10.0)).collect();
        // 40 over 40 s, extended by 10 s at each end (within 1.1 intervals) but to zero at
        // 0 s only: to_zero = 40 * 10/40 = 10 s, so 60 s in all: 60 increase, 1/s.
        assert_eq!(
            extrapolated_rate(&p, 60_000, 60_000, true, false),
            Some(60.0)
        );
        assert_eq!(extrapolated_rate(&p, 60_000, 60_000, true, true), Some(1.0));
        // Far from the end: only half an interval (5 s) is added there: 40 * 55/40.
        let v = extrapolated_rate(&p, 120_000, 120_000, true, false);
        assert_eq!(v, Some(55.0));
    }

    #[test]
    fn counter_resets_add_the_value_before_the_reset() {
        let p = vec![(0, 5.0), (10_000, 8.0), (20_000, 2.0), (30_000, 4.0)];
        // 8 - 5 + 2 + 2 = 7 raw increase; window exactly covers the samples.
        assert_eq!(
            extrapolated_rate(&p, 30_000, 30_000, true, false),
            Some(7.0)
        );
        assert_eq!(instant_delta(&p, true), Some(0.2));
        assert_eq!(instant_delta(&p, false), Some(2.0));
        assert_eq!(p.windows(2).filter(|x| x[1].1 < x[0].1).count(), 1);
    }

    #[test]
    fn delta_is_not_a_counter() {
        let p = vec![(0, 5.0), (10_000, 2.0)];
        assert_eq!(
            extrapolated_rate(&p, 10_000, 10_000, false, false),
            Some(-3.0)
        );
        assert_eq!(
            extrapolated_rate(&p[..1], 10_000, 10_000, false, false),
            None
        );
    }

    #[test]
    fn regression_and_statistics() {
        let p = vec![(0, 1.0), (1000, 3.0), (2000, 5.0)];
        assert_eq!(linear_regression(&p, 0), (2.0, 1.0));
        assert_eq!(linear_regression(&p, 2000), (2.0, 5.0));
        assert_eq!(linear_regression(&[(0, 4.0), (1000, 4.0)], 0), (0.0, 4.0));
        assert_eq!(incremental_mean([1.0, 2.0, 6.0].into_iter()), 3.0);
        assert_eq!(
            variance([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter()),
            4.0
        );
        assert_eq!(extreme([f64::NAN, 1.0, 3.0].into_iter(), true), 3.0);
        assert!(extreme([f64::NAN].into_iter(), false).is_nan());
    }
}
