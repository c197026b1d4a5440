//! Functions that work on labels or change a value's type: `label_replace`, `label_join`,
//! `sort`, `sort_desc`, `absent`, `vector`, `scalar`, `time`, `timestamp`.

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use regex::Regex;

use crate::error::{Error, Result};
use crate::eval::{Evaluator, check_unique, unparen, valid_label_name};
use crate::value::{LabelSet, METRIC_NAME, Sample, Value, drop_name};

/// The labels `absent` reports for a selector: its equality matchers (not the name), minus
/// labels matched more than once.
pub(crate) fn absent_labels(vs: &VectorSelector) -> LabelSet {
    let mut out = LabelSet::new();
    let mut dup = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !out.contains_key(&m.name) {
            out.insert(m.name.clone(), m.value.clone());
        } else if out.contains_key(&m.name) {
            dup.push(m.name.clone());
        }
    }
    for d in dup {
        out.remove(&d);
    }
    out
}

fn string_arg(ev: &Evaluator<'_>, arg: &Expr, t: i64) -> Result<String> {
    match ev.eval(arg, t)? {
        Value::String(s) => Ok(s),
        other => Err(Error::BadData(format!(
            "expected a string, got {}",
            other.type_name()
        ))),
    }
}

/// What `label_replace(v, dst, replacement, src, regex)` does to each element's labels.
pub(crate) struct Replace {
    dst: String,
    replacement: String,
    src: String,
    re: Regex,
}

impl Replace {
    /// The arguments after the vector, evaluated at `t` and checked.
    pub(crate) fn new(ev: &Evaluator<'_>, args: &[&Expr], t: i64) -> Result<Self> {
        let dst = string_arg(ev, args[1], t)?;
        let replacement = string_arg(ev, args[2], t)?;
        let src = string_arg(ev, args[3], t)?;
        let pattern = string_arg(ev, args[4], t)?;
        let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
            Error::BadData(format!(
                "invalid regular expression in label_replace(): {pattern}: {e}"
            ))
        })?;
        if !valid_label_name(&dst) {
            return Err(Error::BadData(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        Ok(Self {
            dst,
            replacement,
            src,
            re,
        })
    }

    pub(crate) fn apply(&self, labels: &mut LabelSet) {
        let value = labels.get(&self.src).cloned().unwrap_or_default();
        if let Some(caps) = self.re.captures(&value) {
            let mut out = String::new();
            caps.expand(&self.replacement, &mut out);
            if out.is_empty() {
                labels.remove(&self.dst);
            } else {
                labels.insert(self.dst.clone(), out);
            }
        }
    }
}

/// What `label_join(v, dst, separator, src...)` does to each element's labels.
pub(crate) struct Join {
    dst: String,
    sep: String,
    srcs: Vec<String>,
}

impl Join {
    /// The arguments after the vector, evaluated at `t` and checked.
    pub(crate) fn new(ev: &Evaluator<'_>, args: &[&Expr], t: i64) -> Result<Self> {
        let dst = string_arg(ev, args[1], t)?;
        let sep = string_arg(ev, args[2], t)?;
        let srcs = args[3..]
            .iter()
            .map(|a| string_arg(ev, a, t))
            .collect::<Result<Vec<_>>>()?;
        if !valid_label_name(&dst) {
            return Err(Error::BadData(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        Ok(Self { dst, sep, srcs })
    }

    pub(crate) fn apply(&self, labels: &mut LabelSet) {
        let joined = self
            .srcs
            .iter()
            .map(|k| labels.get(k).map(String::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&self.sep);
        if joined.is_empty() {
            labels.remove(&self.dst);
        } else {
            labels.insert(self.dst.clone(), joined);
        }
    }
}

/// `label_replace(v, dst, replacement, src, regex)`.
fn label_replace(ev: &Evaluator<'_>, args: &[&Expr], t: i64) -> Result<Value> {
    let replace = Replace::new(ev, args, t)?;
    relabelled(ev, args[0], t, |labels| replace.apply(labels))
}

/// `label_join(v, dst, separator, src...)`.
fn label_join(ev: &Evaluator<'_>, args: &[&Expr], t: i64) -> Result<Value> {
    let join = Join::new(ev, args, t)?;
    relabelled(ev, args[0], t, |labels| join.apply(labels))
}

/// The vector `expr` at `t` with `relabel` applied to every element's labels; elements may
/// not end up with the same labels.
fn relabelled(
    ev: &Evaluator<'_>,
    expr: &Expr,
    t: i64,
    relabel: impl Fn(&mut LabelSet),
) -> Result<Value> {
    let mut v = ev.vector(expr, t)?;
    for s in &mut v {
        relabel(&mut s.labels);
    }
    check_unique(&v)?;
    Ok(Value::Vector(v))
}

/// Orders by value, NaN first (Prometheus's heap order).
fn sort(mut v: Vec<Sample>, desc: bool) -> Vec<Sample> {
    v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ if desc => b.v.total_cmp(&a.v),
        _ => a.v.total_cmp(&b.v),
    });
    v
}

/// Evaluates a label or type function, or `None` when `name` is not one.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Option<Value>> {
    let v = match name {
        "label_replace" => label_replace(ev, args, t)?,
        "label_join" => label_join(ev, args, t)?,
        "sort" => Value::Vector(sort(ev.vector(args[0], t)?, false)),
        "sort_desc" => Value::Vector(sort(ev.vector(args[0], t)?, true)),
        "time" => Value::Scalar(t as f64 / 1000.0),
        "vector" => Value::Vector(vec![Sample {
            labels: LabelSet::new(),
            v: ev.scalar(args[0], t)?,
        }]),
        "scalar" => {
            let v = ev.vector(args[0], t)?;
            Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN })
        }
        "timestamp" => match unparen(args[0]) {
            Expr::VectorSelector(vs) => Value::Vector(
                ev.instant_selector(vs, t)?
                    .into_iter()
                    .map(|(mut labels, ts, _)| {
                        drop_name(&mut labels);
                        Sample {
                            labels,
                            v: ts as f64 / 1000.0,
                        }
                    })
                    .collect(),
            ),
            _ => {
                let mut v = ev.vector(args[0], t)?;
                for s in &mut v {
                    s.v = t as f64 / 1000.0;
                    drop_name(&mut s.labels);
                }
                Value::Vector(v)
            }
        },
        "absent" => {
            if !ev.vector(args[0], t)?.is_empty() {
                Value::Vector(Vec::new())
            } else {
                let labels = match unparen(args[0]) {
                    Expr::VectorSelector(vs) => absent_labels(vs),
                    _ => LabelSet::new(),
                };
                Value::Vector(vec![Sample { labels, v: 1.0 }])
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_puts_nan_first() {
        let s = |v: f64| Sample {
            labels: LabelSet::new(),
            v,
        };
        let got: Vec<f64> = sort(vec![s(2.0), s(f64::NAN), s(1.0)], false)
            .iter()
            .map(|s| s.v)
            .collect();
        assert!(got[0].is_nan());
        assert_eq!(&got[1..], &[1.0, 2.0]);
        let got: Vec<f64> = sort(vec![s(2.0), s(3.0), s(1.0)], true)
            .iter()
            .map(|s| s.v)
            .collect();
        assert_eq!(got, vec![3.0, 2.0, 1.0]);
    }
}
