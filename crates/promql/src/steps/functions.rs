//! Functions of instant vectors and scalars across all steps of a range: element-wise math
//! and calendar functions map each series' values, with the metric name dropped once per
//! series; `label_replace`/`label_join` relabel each series once; `histogram_quantile` groups
//! each bucket series once; `time`, `vector` and `scalar` work on per-step values. Other
//! functions run step by step (`None`).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use promql_parser::parser::Expr;

use super::{Grid, StepSeries, Steps, without_name};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, unparen};
use crate::functions::date::field;
use crate::functions::histogram::{bucket_quantile, parse_bound};
use crate::functions::labels::{Join, Replace};
use crate::functions::math::{go_max, go_min, round, unary};
use crate::value::{LabelSet, METRIC_NAME};

/// A per-step element-wise function: the value at step `i`, or `None` to drop the element.
type Elementwise = Box<dyn Fn(usize, f64) -> Option<f64>>;

/// Fails when two series with the same labels have a value at the same step.
fn check_unique_steps(series: &[StepSeries]) -> Result<()> {
    let mut by_labels: HashMap<&LabelSet, Vec<usize>> = HashMap::new();
    for (i, s) in series.iter().enumerate() {
        by_labels.entry(&s.labels).or_default().push(i);
    }
    for ids in by_labels.values().filter(|ids| ids.len() > 1) {
        let mut times: Vec<i64> = ids
            .iter()
            .flat_map(|&i| series[i].points.iter().map(|p| p.0))
            .collect();
        times.sort_unstable();
        if times.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

impl Evaluator<'_> {
    /// `expr` at every step, which must be an instant vector.
    fn vector_steps(&self, expr: &Expr, g: Grid) -> Result<Vec<StepSeries>> {
        match self.eval_steps(expr, g)? {
            Steps::Vector(v) => Ok(v),
            Steps::Scalar(_) => Err(Error::BadData(
                "expected an instant vector, got scalar".into(),
            )),
        }
    }

    /// Function `name` at every step, or `None` when it is left to the per-step path.
    pub(super) fn function_steps(
        &self,
        name: &str,
        args: &[&Expr],
        g: Grid,
    ) -> Result<Option<Steps>> {
        match name {
            "time" if args.is_empty() => {
                return Ok(Some(Steps::Scalar(
                    g.times().map(|t| t as f64 / 1000.0).collect(),
                )));
            }
            "vector" if args.len() == 1 => {
                let values = self.scalar_steps(args[0], g)?;
                return Ok(Some(Steps::Vector(vec![StepSeries {
                    labels: Rc::new(LabelSet::new()),
                    points: g.times().zip(values).collect(),
                }])));
            }
            "scalar" if args.len() == 1 => {
                let mut count = vec![0u32; g.len()];
                let mut value = vec![f64::NAN; g.len()];
                for s in self.vector_steps(args[0], g)? {
                    for (t, v) in s.points {
                        let i = g.index(t);
                        count[i] += 1;
                        value[i] = v;
                    }
                }
                return Ok(Some(Steps::Scalar(
                    count
                        .into_iter()
                        .zip(value)
                        .map(|(n, v)| if n == 1 { v } else { f64::NAN })
                        .collect(),
                )));
            }
            "label_replace" | "label_join" => return self.relabel_steps(name, args, g),
            "histogram_quantile" if args.len() == 2 => {
                return self.histogram_quantile_steps(args, g).map(Some);
            }
            _ => {}
        }
        let f: Elementwise = if let Some(f) = unary(name) {
            Box::new(move |_, v| Some(f(v)))
        } else if field(name, 0.0).is_some() {
            if args.is_empty() {
                // `vector(time())`'s calendar field.
                let name = name.to_owned();
                let points = g
                    .times()
                    .map(|t| (t, field(&name, t as f64 / 1000.0).unwrap_or(f64::NAN)))
                    .collect();
                return Ok(Some(Steps::Vector(vec![StepSeries {
                    labels: Rc::new(LabelSet::new()),
                    points,
                }])));
            }
            let name = name.to_owned();
            Box::new(move |_, v| Some(field(&name, v).unwrap_or(f64::NAN)))
        } else {
            match (name, args.len()) {
                ("round", 1) => Box::new(|_, v| Some(round(v, 1.0))),
                ("round", 2) => {
                    let to = self.scalar_steps(args[1], g)?;
                    Box::new(move |i, v| Some(round(v, to[i])))
                }
                ("clamp", 3) => {
                    let lo = self.scalar_steps(args[1], g)?;
                    let hi = self.scalar_steps(args[2], g)?;
                    Box::new(move |i, v| {
                        if hi[i] < lo[i] {
                            None
                        } else {
                            Some(go_max(lo[i], go_min(hi[i], v)))
                        }
                    })
                }
                ("clamp_min", 2) => {
                    let lo = self.scalar_steps(args[1], g)?;
                    Box::new(move |i, v| Some(go_max(lo[i], v)))
                }
                ("clamp_max", 2) => {
                    let hi = self.scalar_steps(args[1], g)?;
                    Box::new(move |i, v| Some(go_min(hi[i], v)))
                }
                _ => return Ok(None),
            }
        };
        let Some(arg) = args.first() else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for mut s in self.vector_steps(arg, g)? {
            s.points = s
                .points
                .into_iter()
                .filter_map(|(t, v)| f(g.index(t), v).map(|v| (t, v)))
                .collect();
            if !s.points.is_empty() {
                s.labels = without_name(&s.labels);
                out.push(s);
            }
        }
        Ok(Some(Steps::Vector(out)))
    }

    /// `histogram_quantile(φ, buckets)`: each bucket series joins its histogram (its labels
    /// without `le` and the name) once; each step's quantile is read from the buckets present
    /// at that step, in series order as the per-step function takes them.
    fn histogram_quantile_steps(&self, args: &[&Expr], g: Grid) -> Result<Steps> {
        let q = self.scalar_steps(args[0], g)?;
        let input = self.vector_steps(args[1], g)?;
        let mut groups: BTreeMap<LabelSet, Vec<(usize, f64)>> = BTreeMap::new();
        for (i, s) in input.iter().enumerate() {
            let Some(le) = s.labels.get("le").and_then(|le| parse_bound(le)) else {
                continue;
            };
            let mut labels = LabelSet::clone(&s.labels);
            labels.remove("le");
            labels.remove(METRIC_NAME);
            groups.entry(labels).or_default().push((i, le));
        }
        let mut out = Vec::with_capacity(groups.len());
        let mut entries: Vec<(usize, f64, f64)> = Vec::new();
        let mut held = 0;
        for (labels, members) in groups {
            entries.clear();
            for &(i, le) in &members {
                entries.extend(input[i].points.iter().map(|&(t, v)| (g.index(t), le, v)));
            }
            held += entries.len();
            self.budget.peek(held)?;
            // Stable: buckets keep the series order within a step.
            entries.sort_by_key(|e| e.0);
            let points: Vec<(i64, f64)> = entries
                .chunk_by(|a, b| a.0 == b.0)
                .map(|run| {
                    let step = run[0].0;
                    let buckets = run.iter().map(|e| (e.1, e.2)).collect();
                    (g.time(step), bucket_quantile(q[step], buckets))
                })
                .collect();
            out.push(StepSeries {
                labels: Rc::new(labels),
                points,
            });
        }
        Ok(Steps::Vector(out))
    }

    /// `label_replace`/`label_join` with literal string arguments: each series relabelled
    /// once.
    fn relabel_steps(&self, name: &str, args: &[&Expr], g: Grid) -> Result<Option<Steps>> {
        let arity_ok = if name == "label_replace" {
            args.len() == 5
        } else {
            args.len() >= 3
        };
        if !arity_ok
            || !args[1..]
                .iter()
                .all(|a| matches!(unparen(a), Expr::StringLiteral(_)))
        {
            return Ok(None);
        }
        let relabel: Box<dyn Fn(&mut LabelSet)> = if name == "label_replace" {
            let r = Replace::new(self, args, g.start)?;
            Box::new(move |l| r.apply(l))
        } else {
            let j = Join::new(self, args, g.start)?;
            Box::new(move |l| j.apply(l))
        };
        let mut series = self.vector_steps(args[0], g)?;
        for s in &mut series {
            let mut labels = LabelSet::clone(&s.labels);
            relabel(&mut labels);
            if labels != *s.labels {
                s.labels = Rc::new(labels);
            }
        }
        check_unique_steps(&series)?;
        Ok(Some(Steps::Vector(series)))
    }
}
