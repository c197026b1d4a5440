//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar`,
//! `topk`, `bottomk`, `quantile`, `count_values`) with `by`/`without` grouping.
//!
//! Groups are keyed by their output labels: `by (l...)` keeps only those labels, `without
//! (l...)` drops them and the metric name. `topk`/`bottomk` keep each element's own labels.

use std::collections::BTreeMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK, TokenId,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::error::{Error, Result};
use crate::eval::{Evaluator, valid_label_name};
use crate::functions::range::{extreme, incremental_mean, variance};
use crate::value::{LabelSet, Sample, Value, format_value, project};

/// Prometheus's `quantile`: linear interpolation between the closest ranks; `phi` outside
/// `[0, 1]` gives `-Inf`/`+Inf`, no values `NaN`.
pub fn quantile(phi: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// The output labels of an element's group.
pub(crate) fn group_key(labels: &LabelSet, modifier: &Option<LabelModifier>) -> LabelSet {
    match modifier {
        None => LabelSet::new(),
        Some(m) => project(labels, m).collect(),
    }
}

/// `k` of `topk`/`bottomk` samples of a group, best first; NaN ranks last.
fn top(mut group: Vec<Sample>, k: usize, bottom: bool) -> Vec<Sample> {
    group.sort_by(|a, b| rank(a.v, b.v, bottom));
    group.truncate(k);
    group
}

/// The order of `topk` (`bottom`: `bottomk`) values, best first; NaN ranks last.
pub(crate) fn rank(a: f64, b: f64, bottom: bool) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if bottom => a.total_cmp(&b),
        _ => b.total_cmp(&a),
    }
}

/// One group's value for the aggregations that reduce a group's `len` values to one number
/// (`phi` is `quantile`'s parameter); `None` for any other operator.
pub(crate) fn reduce<I: Iterator<Item = f64>>(
    op: TokenId,
    vals: impl Fn() -> I,
    len: usize,
    phi: f64,
) -> Option<f64> {
    Some(match op {
        T_SUM => vals().sum(),
        T_AVG => incremental_mean(vals()),
        T_MIN => extreme(vals(), false),
        T_MAX => extreme(vals(), true),
        T_COUNT => len as f64,
        T_GROUP => 1.0,
        T_STDDEV => variance(vals()).sqrt(),
        T_STDVAR => variance(vals()),
        T_QUANTILE => quantile(phi, vals().collect()),
        _ => return None,
    })
}

/// `k` of `topk`/`bottomk` from a parameter value; `None` when it selects nothing.
pub(crate) fn top_count(k: f64) -> Option<usize> {
    if k.is_nan() || k < 1.0 {
        return None;
    }
    Some(if k > 1e9 { usize::MAX } else { k as usize })
}

/// Evaluates an aggregation at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, a: &AggregateExpr, t: i64) -> Result<Value> {
    let op = a.op.id();
    let param = a.param.as_deref();
    let input = ev.vector(&a.expr, t)?;
    let mut groups: BTreeMap<LabelSet, Vec<Sample>> = BTreeMap::new();
    for s in input {
        groups
            .entry(group_key(&s.labels, &a.modifier))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    match op {
        T_TOPK | T_BOTTOMK => {
            let Some(p) = param else {
                return Err(Error::BadData("topk/bottomk need a parameter".into()));
            };
            let Some(k) = top_count(ev.scalar(p, t)?) else {
                return Ok(Value::Vector(out));
            };
            for (_, g) in groups {
                out.extend(top(g, k, op == T_BOTTOMK));
            }
        }
        T_COUNT_VALUES => {
            let label = match param.map(|p| ev.eval(p, t)).transpose()? {
                Some(Value::String(s)) => s,
                _ => return Err(Error::BadData("count_values needs a label name".into())),
            };
            if !valid_label_name(&label) {
                return Err(Error::BadData(format!("invalid label name {label:?}")));
            }
            let mut counts: BTreeMap<LabelSet, f64> = BTreeMap::new();
            for (key, g) in groups {
                for s in g {
                    let mut l = key.clone();
                    l.insert(label.clone(), format_value(s.v));
                    *counts.entry(l).or_default() += 1.0;
                }
            }
            out.extend(counts.into_iter().map(|(labels, v)| Sample { labels, v }));
        }
        _ => {
            let phi = match (op, param) {
                (T_QUANTILE, Some(p)) => ev.scalar(p, t)?,
                _ => f64::NAN,
            };
            for (labels, g) in groups {
                let Some(v) = reduce(op, || g.iter().map(|s| s.v), g.len(), phi) else {
                    return Err(Error::Unsupported(format!("aggregation {}", a.op)));
                };
                out.push(Sample { labels, v });
            }
        }
    }
    Ok(Value::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_between_ranks() {
        let v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(0.5, v.clone()), 2.5);
        assert_eq!(quantile(0.0, v.clone()), 1.0);
        assert_eq!(quantile(1.0, v.clone()), 4.0);
        assert!((quantile(0.9, v.clone()) - 3.7).abs() < 1e-12);
        assert_eq!(quantile(-1.0, v.clone()), f64::NEG_INFINITY);
        assert_eq!(quantile(2.0, v), f64::INFINITY);
        assert!(quantile(0.5, vec![]).is_nan());
    }

    #[test]
    fn topk_ranks_nan_last() {
        let s = |v: f64| Sample {
            labels: LabelSet::new(),
            v,
        };
        let got: Vec<f64> = top(vec![s(1.0), s(f64::NAN), s(3.0), s(2.0)], 2, false)
            .iter()
            .map(|s| s.v)
            .collect();
        assert_eq!(got, vec![3.0, 2.0]);
        let got: Vec<f64> = top(vec![s(f64::NAN), s(3.0)], 2, true)
            .iter()
            .map(|s| s.v)
            .collect();
        assert_eq!(got[0], 3.0);
        assert!(got[1].is_nan());
    }
}
