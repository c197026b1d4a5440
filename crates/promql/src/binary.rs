//! Binary operators: arithmetic (`+ - * / % ^ atan2`), comparisons (filtering, or 0/1 with
//! `bool`) and the set operators `and`, `or`, `unless`, with vector matching (`on`,
//! `ignoring`, `group_left`, `group_right`) as Prometheus does it.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{LabelSet, METRIC_NAME, Sample, Value, drop_name, project};

/// Applies `op`: (value, keep). Comparisons return the left value and whether it holds.
pub fn apply(op: TokenId, l: f64, r: f64) -> Result<(f64, bool)> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => return Err(Error::Unsupported(format!("binary operator {op}"))),
    })
}

/// An operator between two vector elements' values: the result, or `None` when a
/// comparison drops the element (with `bool`, a comparison gives 1 or 0 and keeps it).
pub(crate) fn between_elements(op: TokenId, l: f64, r: f64, ret_bool: bool) -> Result<Option<f64>> {
    let (value, keep) = apply(op, l, r)?;
    Ok(kept(value, keep, ret_bool))
}

/// An operator's value and whether a comparison keeps it, as a vector element's result.
fn kept(value: f64, keep: bool, ret_bool: bool) -> Option<f64> {
    if ret_bool {
        Some(if keep { 1.0 } else { 0.0 })
    } else {
        keep.then_some(value)
    }
}

/// An operator between two scalars: comparisons give 1 or 0.
pub(crate) fn between_scalars(op: TokenId, l: f64, r: f64) -> Result<f64> {
    let (v, keep) = apply(op, l, r)?;
    Ok(if is_comparison(op) {
        if keep { 1.0 } else { 0.0 }
    } else {
        v
    })
}

pub(crate) fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic drops the metric name; comparisons and set operators keep it.
pub(crate) fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW)
}

/// The matching signature of an element.
pub(crate) fn signature(
    labels: &LabelSet,
    matching: Option<&LabelModifier>,
) -> Vec<(String, String)> {
    match matching {
        Some(m) => project(labels, m).collect(),
        None => labels
            .iter()
            .filter(|(k, _)| *k != METRIC_NAME)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Evaluates a binary expression at `t`.
pub(crate) fn eval(ev: &Evaluator<'_>, b: &BinaryExpr, t: i64) -> Result<Value> {
    let op = b.op.id();
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    let ret_bool = b.return_bool();
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(between_scalars(op, l, r)?)),
        (Value::Vector(v), Value::Scalar(s)) => vector_scalar(op, v, s, false, ret_bool),
        (Value::Scalar(s), Value::Vector(v)) => vector_scalar(op, v, s, true, ret_bool),
        (Value::Vector(l), Value::Vector(r)) => match op {
            T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(set_op(op, l, r, b))),
            _ => vector_vector(op, l, r, b, ret_bool),
        },
        (l, r) => Err(Error::BadData(format!(
            "binary operator between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenId,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    ret_bool: bool,
) -> Result<Value> {
    let mut out = Vec::with_capacity(v.len());
    for mut e in v {
        if let Some(value) = with_scalar(op, e.v, s, scalar_left, ret_bool)? {
            e.v = value;
            if drops_name(op) || ret_bool {
                drop_name(&mut e.labels);
            }
            out.push(e);
        }
    }
    Ok(Value::Vector(out))
}

/// A vector element's value `v` against the scalar `s` (on the left when `scalar_left`): the
/// result, or None where a comparison without `bool` drops the element. A comparison keeps
/// the vector's value.
pub(crate) fn with_scalar(
    op: TokenId,
    v: f64,
    s: f64,
    scalar_left: bool,
    ret_bool: bool,
) -> Result<Option<f64>> {
    let (l, r) = if scalar_left { (s, v) } else { (v, s) };
    let (mut value, keep) = apply(op, l, r)?;
    if is_comparison(op) && scalar_left {
        value = r;
    }
    Ok(kept(value, keep, ret_bool))
}

pub(crate) fn set_op(op: TokenId, l: Vec<Sample>, r: Vec<Sample>, b: &BinaryExpr) -> Vec<Sample> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    match op {
        T_LAND | T_LUNLESS => {
            let right: HashSet<_> = r.iter().map(|s| signature(&s.labels, matching)).collect();
            l.into_iter()
                .filter(|s| right.contains(&signature(&s.labels, matching)) == (op == T_LAND))
                .collect()
        }
        _ => {
            let left: HashSet<_> = l.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, matching))),
            );
            out
        }
    }
}

/// The labels of a matched pair's result: the "many" side's, without the name where the
/// operator drops it, kept to the `on`/`ignoring` labels for one-to-one matching, with the
/// `group_left`/`group_right` labels taken from the "one" side (removed where it has none).
pub(crate) fn result_labels(
    mut labels: LabelSet,
    one: &LabelSet,
    op: TokenId,
    ret_bool: bool,
    one_to_one_matching: Option<&LabelModifier>,
    include: &[String],
) -> LabelSet {
    if drops_name(op) || ret_bool {
        drop_name(&mut labels);
    }
    match one_to_one_matching {
        Some(LabelModifier::Include(ls)) => {
            labels.retain(|k, _| ls.labels.iter().any(|l| l == k));
        }
        Some(LabelModifier::Exclude(ls)) => {
            labels.retain(|k, _| !ls.labels.iter().any(|l| l == k));
        }
        None => {}
    }
    for name in include {
        match one.get(name) {
            Some(v) => {
                labels.insert(name.clone(), v.clone());
            }
            None => {
                labels.remove(name);
            }
        }
    }
    labels
}

pub(crate) fn vector_vector(
    op: TokenId,
    l: Vec<Sample>,
    r: Vec<Sample>,
    b: &BinaryExpr,
    ret_bool: bool,
) -> Result<Value> {
    let modifier = b.modifier.as_ref();
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let mut one_by_sig: HashMap<Vec<(String, String)>, &Sample> = HashMap::new();
    for s in &one {
        let sig = signature(&s.labels, matching);
        if one_by_sig.insert(sig, s).is_some() {
            let side = if one_to_many { "left" } else { "right" };
            return Err(Error::Execution(format!(
                "found duplicate series for the match group on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let include: &[String] = card.labels().map_or(&[], |ls| &ls.labels);
    let mut matched: HashSet<Vec<(String, String)>> = HashSet::new();
    let mut seen_out: HashSet<LabelSet> = HashSet::new();
    let mut out = Vec::new();
    for m in many {
        let sig = signature(&m.labels, matching);
        let Some(o) = one_by_sig.get(&sig) else {
            continue;
        };
        if matches!(card, VectorMatchCardinality::OneToOne) && !matched.insert(sig) {
            return Err(Error::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        let (vl, vr) = if one_to_many { (o.v, m.v) } else { (m.v, o.v) };
        let Some(value) = between_elements(op, vl, vr, ret_bool)? else {
            continue;
        };
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        let labels = result_labels(
            m.labels,
            &o.labels,
            op,
            ret_bool,
            one_to_one.then_some(matching).flatten(),
            include,
        );
        if !matches!(card, VectorMatchCardinality::OneToOne) && !seen_out.insert(labels.clone()) {
            return Err(Error::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(Sample { labels, v: value });
    }
    Ok(Value::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_follow_go_float_semantics() {
        assert_eq!(apply(T_MOD, -7.0, 3.0).ok(), Some((-1.0, true)));
        assert_eq!(apply(T_POW, 2.0, 10.0).ok(), Some((1024.0, true)));
        assert_eq!(apply(T_GTR, 3.0, 2.0).ok(), Some((3.0, true)));
        assert_eq!(apply(T_LSS, 3.0, 2.0).ok(), Some((3.0, false)));
        let (v, keep) = apply(T_EQLC, f64::NAN, f64::NAN).expect("==");
        assert!(v.is_nan() && !keep);
        assert_eq!(apply(T_DIV, 1.0, 0.0).ok(), Some((f64::INFINITY, true)));
    }

    #[test]
    fn signatures_ignore_the_name_unless_on_lists_it() {
        let l: LabelSet = [("__name__", "m"), ("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(signature(&l, None).len(), 2);
        let on = LabelModifier::include(vec!["a"]);
        assert_eq!(signature(&l, Some(&on)), vec![("a".into(), "1".into())]);
        let ignoring = LabelModifier::exclude(vec!["a"]);
        assert_eq!(
            signature(&l, Some(&ignoring)),
            vec![("b".into(), "2".into())]
        );
    }
}
