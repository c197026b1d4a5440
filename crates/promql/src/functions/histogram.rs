//! `histogram_quantile(φ, buckets)` over classic histograms: series with an `le` label, grouped
//! by their other labels (the metric name dropped), interpolated linearly inside the bucket
//! holding the rank, as Prometheus 2.x does.

use std::collections::BTreeMap;

use promql_parser::parser::Expr;

use crate::error::Result;
use crate::eval::Evaluator;
use crate::value::{LabelSet, Sample, Value, drop_name};

/// The φ-quantile of cumulative `(upper bound, count)` buckets.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Merge equal bounds, then force the counts to be monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    let n = merged.len();
    if n < 2 {
        return f64::NAN;
    }
    let observations = merged[n - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let mut start = 0.0;
    let end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Evaluates `histogram_quantile`, or `None` for other names.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Option<Value>> {
    if name != "histogram_quantile" {
        return Ok(None);
    }
    let q = ev.scalar(args[0], t)?;
    let mut groups: BTreeMap<LabelSet, Vec<(f64, f64)>> = BTreeMap::new();
    for s in ev.vector(args[1], t)? {
        let Some(le) = s.labels.get("le").and_then(|le| parse_bound(le)) else {
            continue;
        };
        let mut labels = s.labels;
        labels.remove("le");
        drop_name(&mut labels);
        groups.entry(labels).or_default().push((le, s.v));
    }
    Ok(Some(Value::Vector(
        groups
            .into_iter()
            .map(|(labels, b)| Sample {
                labels,
                v: bucket_quantile(q, b),
            })
            .collect(),
    )))
}

/// An `le` value as Go's `ParseFloat` reads it (`+Inf`, `Inf`, numbers).
pub(crate) fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_inside_the_bucket() {
        let b = vec![(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        // rank 20 falls in (0.1, 0.5]: 0.1 + 0.4 * (10 / 20).
        assert!((bucket_quantile(0.5, b.clone()) - 0.3).abs() < 1e-12);
        // rank 5 in the first bucket, from 0.
        assert!((bucket_quantile(0.125, b.clone()) - 0.05).abs() < 1e-12);
        // The +Inf bucket answers the largest finite bound.
        let b2 = vec![(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.99, b2), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).is_nan());
        assert_eq!(bucket_quantile(2.0, b), f64::INFINITY);
    }
}
