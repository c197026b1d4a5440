//! Range queries evaluated across all their steps at once: each node of the expression gives
//! its value at every step of the range, series by series, instead of the evaluator being
//! re-entered once per step.
//!
//! - Selectors walk each series' samples once, with one index advancing as the steps do.
//! - Range functions (`rate`, `*_over_time`, ...) slide a window over each series: two indices
//!   advance with the steps, and the function reads the samples between them in place.
//! - A subquery's inner expression is evaluated once over the subquery's aligned step grid
//!   covering every outer window, and then windowed like a range selector.
//! - Aggregations group each series once and work step by step on the group's values;
//!   arithmetic with a scalar and unary minus work series by series; two vectors are matched
//!   through signatures computed once per series (`matching`).
//! - Element-wise math and calendar functions, `label_replace`/`label_join`,
//!   `histogram_quantile`, `time`, `vector` and `scalar` work series by series or step by step
//!   on arrays (`functions`).
//! - Long rollup windows are summed up step by step, collected by series.
//! - Everything else (`count_values`, `absent`, `sort`, `timestamp`, ...) is evaluated per step
//!   by the evaluator in `eval`, taking its vector and scalar arguments from a whole-range
//!   evaluation, and the per-step results are put together again.
//!
//! Label sets are shared (`Rc`) between a series and the series derived from it; one is cloned
//! only when a label changes (the metric name dropped, a group's labels), once per series.
//!
//! Semantics are those of the per-step evaluator: a node's value at a step is what `eval`
//! gives at that step's time. The budget is held as the per-step path holds it: windows at
//! each step are peeked, subquery inner results taken, and the result taken at the end.

mod functions;
mod matching;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_GROUP, T_LAND, T_LOR, T_LUNLESS, T_MAX, T_MIN, T_QUANTILE,
    T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AggregateExpr, BinaryExpr, Call, Expr, SubqueryExpr};

use crate::aggregate::{group_key, rank, reduce, top_count};
use crate::binary::{between_scalars, drops_name, with_scalar};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, duration_ms, unparen};
use crate::functions::range::{range_arg_index, window_value};
use crate::value::{LabelSet, METRIC_NAME, Sample, Series, Value};

/// The steps of a range: `start`, `start + step`, ... up to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Grid {
    /// `step` must be positive and `end >= start`.
    pub(crate) fn new(start: i64, end: i64, step: i64) -> Self {
        debug_assert!(step > 0 && end >= start);
        Self { start, end, step }
    }

    /// How many steps there are.
    pub(crate) fn len(&self) -> usize {
        let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.step) + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The time of step `i`, saturating at the ends of time (a step of 10^18 seconds from a
    /// start near `i64::MIN` milliseconds is a query one may send).
    pub(crate) fn time(&self, i: usize) -> i64 {
        let t = i128::from(self.start) + (i as i128) * i128::from(self.step);
        i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX })
    }

    /// The index of step time `t`.
    fn index(&self, t: i64) -> usize {
        ((i128::from(t) - i128::from(self.start)) / i128::from(self.step)) as usize
    }

    /// The step times, ascending.
    pub(crate) fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let g = *self;
        (0..g.len()).map(move |i| g.time(i))
    }
}

/// One series of an instant-vector expression over the steps: its value at the step times where
/// it has one, ascending.
#[derive(Debug, Clone)]
pub(crate) struct StepSeries {
    pub labels: Rc<LabelSet>,
    pub points: Vec<(i64, f64)>,
}

/// A series to take windows of: its labels and its samples (or inner steps), ascending.
type Windowed<'a> = (Rc<LabelSet>, &'a [(i64, f64)]);

/// An expression's value at every step of a [`Grid`].
#[derive(Debug)]
pub(crate) enum Steps {
    /// One value per step.
    Scalar(Vec<f64>),
    /// Series; two may share labels at different steps (merged at the end).
    Vector(Vec<StepSeries>),
}

/// A sub-expression's value at every step of a grid, each taken by the per-step evaluator once.
pub(crate) struct Precomputed {
    grid: Grid,
    values: Vec<Option<Value>>,
}

/// The sub-expressions of `expr` that give an instant vector or a scalar (literals aside),
/// whose values a per-step evaluation of `expr` can take from a whole-range evaluation.
fn vector_children(expr: &Expr) -> Vec<&Expr> {
    let children: Vec<&Expr> = match expr {
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        Expr::Aggregate(a) => [Some(a.expr.as_ref()), a.param.as_deref()]
            .into_iter()
            .flatten()
            .collect(),
        Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
        Expr::Unary(u) => vec![u.expr.as_ref()],
        _ => Vec::new(),
    };
    children
        .into_iter()
        .filter(|e| {
            matches!(e.value_type(), ValueType::Vector | ValueType::Scalar)
                && !matches!(unparen(e), Expr::NumberLiteral(_) | Expr::StringLiteral(_))
        })
        .collect()
}

/// `labels` without the metric name, shared when it has none.
fn without_name(labels: &Rc<LabelSet>) -> Rc<LabelSet> {
    if labels.contains_key(METRIC_NAME) {
        let mut l = LabelSet::clone(labels);
        l.remove(METRIC_NAME);
        Rc::new(l)
    } else {
        Rc::clone(labels)
    }
}

/// Puts per-step vectors together into series: samples with the same labels at successive
/// steps join one series; a label set twice at one step (allowed midway, refused at the end)
/// goes into a second series.
#[derive(Default)]
struct Collector {
    index: HashMap<LabelSet, Vec<usize>>,
    out: Vec<StepSeries>,
}

impl Collector {
    fn push(&mut self, t: i64, samples: Vec<Sample>) {
        for s in samples {
            let ids = self.index.entry(s.labels).or_default();
            let free = ids
                .iter()
                .copied()
                .find(|&i| self.out[i].points.last().is_none_or(|p| p.0 != t));
            match free {
                Some(i) => self.out[i].points.push((t, s.v)),
                None => {
                    ids.push(self.out.len());
                    self.out.push(StepSeries {
                        labels: Rc::new(LabelSet::new()),
                        points: vec![(t, s.v)],
                    });
                }
            }
        }
    }

    fn finish(self) -> Vec<StepSeries> {
        let mut out = self.out;
        for (labels, ids) in self.index {
            let labels = Rc::new(labels);
            for i in ids {
                out[i].labels = Rc::clone(&labels);
            }
        }
        out
    }
}

/// The samples of `series` at each step of `g` (labels cloned: for per-step operators).
fn columns(series: &[StepSeries], g: Grid) -> Vec<Vec<Sample>> {
    let mut cols: Vec<Vec<Sample>> = (0..g.len()).map(|_| Vec::new()).collect();
    for s in series {
        for &(t, v) in &s.points {
            cols[g.index(t)].push(Sample {
                labels: LabelSet::clone(&s.labels),
                v,
            });
        }
    }
    cols
}

/// Joins series with the same labels (after the metric name was dropped, say); two values of
/// one label set at one step are Prometheus's "same labelset" error. Sorted by labels.
pub(crate) fn merge_same_labels(mut series: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
    series.retain(|s| !s.points.is_empty());
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        match out.last_mut() {
            Some(last) if last.labels == s.labels => {
                let mut points = Vec::with_capacity(last.points.len() + s.points.len());
                let (a, b) = (&last.points, &s.points);
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    if i < a.len() && j < b.len() && a[i].0 == b[j].0 {
                        return Err(Error::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    if j >= b.len() || (i < a.len() && a[i].0 < b[j].0) {
                        points.push(a[i]);
                        i += 1;
                    } else {
                        points.push(b[j]);
                        j += 1;
                    }
                }
                last.points = points;
            }
            _ => out.push(s),
        }
    }
    Ok(out)
}

impl Evaluator<'_> {
    /// Evaluates `expr` (an instant vector or a scalar) at every step of `g`. A grid of more
    /// steps than the sample budget has room for is refused before anything is held per step
    /// (a subquery such as `x[1y:1ms]` would otherwise allocate for billions of steps).
    pub(crate) fn eval_steps(&self, expr: &Expr, g: Grid) -> Result<Steps> {
        self.budget.check_time()?;
        self.budget.peek(g.len())?;
        match expr {
            Expr::Paren(p) => self.eval_steps(&p.expr, g),
            Expr::NumberLiteral(n) => {
                self.budget.peek(g.len())?;
                Ok(Steps::Scalar(vec![n.val; g.len()]))
            }
            Expr::VectorSelector(vs) => Ok(Steps::Vector(self.selector_steps(vs, g)?)),
            Expr::Unary(u) => match self.eval_steps(&u.expr, g)? {
                Steps::Scalar(v) => Ok(Steps::Scalar(v.into_iter().map(|v| -v).collect())),
                Steps::Vector(mut series) => {
                    for s in &mut series {
                        s.labels = without_name(&s.labels);
                        for p in &mut s.points {
                            p.1 = -p.1;
                        }
                    }
                    Ok(Steps::Vector(series))
                }
            },
            Expr::Call(c) => match self.call_steps(c, g)? {
                Some(v) => Ok(v),
                None => self.per_step(expr, g),
            },
            Expr::Aggregate(a) => match self.aggregate_steps(a, g)? {
                Some(v) => Ok(v),
                None => self.per_step(expr, g),
            },
            Expr::Binary(b) => self.binary_steps(b, g),
            _ => self.per_step(expr, g),
        }
    }

    /// `expr` at every step, which must be a scalar.
    fn scalar_steps(&self, expr: &Expr, g: Grid) -> Result<Vec<f64>> {
        match self.eval_steps(expr, g)? {
            Steps::Scalar(v) => Ok(v),
            Steps::Vector(_) => Err(Error::BadData("expected a scalar, got vector".into())),
        }
    }

    /// `expr`'s value at `t` if a whole-range evaluation left it (taken: once per step).
    pub(crate) fn take_precomputed(&self, expr: &Expr, t: i64) -> Option<Value> {
        let mut pre = self.precomputed.borrow_mut();
        if pre.is_empty() {
            return None;
        }
        let p = pre.get_mut(&(expr as *const Expr as usize))?;
        let g = p.grid;
        if t < g.start
            || t > g.end
            || (i128::from(t) - i128::from(g.start)) % i128::from(g.step) != 0
        {
            return None;
        }
        p.values.get_mut(g.index(t))?.take()
    }

    /// `expr` evaluated step by step with the per-step evaluator; its vector and scalar
    /// arguments are evaluated across all steps first, and each step takes its value.
    fn per_step(&self, expr: &Expr, g: Grid) -> Result<Steps> {
        let children = vector_children(expr);
        let mut keys = Vec::with_capacity(children.len());
        for child in children {
            let values = match self.eval_steps(child, g)? {
                Steps::Scalar(v) => v.into_iter().map(|v| Some(Value::Scalar(v))).collect(),
                Steps::Vector(series) => columns(&series, g)
                    .into_iter()
                    .map(|c| Some(Value::Vector(c)))
                    .collect(),
            };
            let key = child as *const Expr as usize;
            keys.push(key);
            self.precomputed
                .borrow_mut()
                .insert(key, Precomputed { grid: g, values });
        }
        let out = self.per_step_eval(expr, g);
        let mut pre = self.precomputed.borrow_mut();
        for key in keys {
            pre.remove(&key);
        }
        out
    }

    fn per_step_eval(&self, expr: &Expr, g: Grid) -> Result<Steps> {
        let mut scalars = Vec::new();
        let mut collect = Collector::default();
        for t in g.times() {
            match self.eval(expr, t)? {
                Value::Scalar(v) => scalars.push(v),
                Value::Vector(v) => collect.push(t, v),
                other => {
                    return Err(Error::BadData(format!(
                        "range query of a {}",
                        other.type_name()
                    )));
                }
            }
        }
        if scalars.is_empty() {
            Ok(Steps::Vector(collect.finish()))
        } else {
            Ok(Steps::Scalar(scalars))
        }
    }

    /// An instant selector at every step: per series, its newest sample within the lookback,
    /// found by one index moving forward with the steps.
    fn selector_steps(
        &self,
        vs: &promql_parser::parser::VectorSelector,
        g: Grid,
    ) -> Result<Vec<StepSeries>> {
        let first = self.ref_time(&vs.at, &vs.offset, g.start);
        let last = self.ref_time(&vs.at, &vs.offset, g.end);
        let lookback = self.options.lookback_ms;
        let series = self.load_span(
            vs,
            first.min(last).saturating_sub(lookback),
            first.max(last),
        )?;
        let mut out = Vec::new();
        let mut produced = 0;
        for s in series.iter() {
            let p = &s.points;
            let mut points = Vec::new();
            // Samples at or before the step's time: p[..j].
            let mut j = 0;
            for t in g.times() {
                let rt = self.ref_time(&vs.at, &vs.offset, t);
                while j < p.len() && p[j].0 <= rt {
                    j += 1;
                }
                if j > 0 && p[j - 1].0 >= rt.saturating_sub(lookback) {
                    points.push((t, p[j - 1].1));
                }
            }
            if !points.is_empty() {
                produced += points.len();
                out.push(StepSeries {
                    labels: Rc::new(s.labels.clone()),
                    points,
                });
            }
        }
        self.budget.peek(produced)?;
        self.budget.check_time()?;
        Ok(out)
    }

    /// A range function at every step, or `None` when it is left to the per-step path.
    fn call_steps(&self, c: &Call, g: Grid) -> Result<Option<Steps>> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
        let Some(arg) = range_arg_index(name) else {
            return self.function_steps(name, &args, g);
        };
        if name == "absent_over_time" {
            return Ok(None);
        }
        let Some(range_arg) = args.get(arg) else {
            return Ok(None);
        };
        let scalar_arg = match name {
            "quantile_over_time" => Some(self.scalar_steps(args[0], g)?),
            "predict_linear" => match args.get(1) {
                Some(a) => Some(self.scalar_steps(a, g)?),
                None => return Ok(None),
            },
            _ => None,
        };
        match unparen(range_arg) {
            Expr::MatrixSelector(ms) => {
                let range = duration_ms(&ms.range);
                if crate::rollups::answers(name)
                    && let Some(resolution) = self.rollup_resolution(range)
                {
                    return self.rollup_steps(name, &ms.vs, range, resolution, g);
                }
                let vs = &ms.vs;
                let first = self.ref_time(&vs.at, &vs.offset, g.start);
                let last = self.ref_time(&vs.at, &vs.offset, g.end);
                let series =
                    self.load_span(vs, first.min(last).saturating_sub(range), first.max(last))?;
                let input: Vec<Windowed<'_>> = series
                    .iter()
                    .map(|s| (Rc::new(s.labels.clone()), s.points.as_slice()))
                    .collect();
                let rt = |t| self.ref_time(&vs.at, &vs.offset, t);
                let out = self.windows_steps(name, &input, range, rt, g, scalar_arg.as_deref())?;
                Ok(Some(Steps::Vector(out)))
            }
            Expr::Subquery(sq) => {
                let Some(inner) = self.subquery_steps(sq, g)? else {
                    return Ok(None);
                };
                let input: Vec<Windowed<'_>> = inner
                    .iter()
                    .map(|s| (Rc::clone(&s.labels), s.points.as_slice()))
                    .collect();
                let rt = |t| self.ref_time(&sq.at, &sq.offset, t);
                let range = duration_ms(&sq.range);
                let out = self.windows_steps(name, &input, range, rt, g, scalar_arg.as_deref())?;
                Ok(Some(Steps::Vector(out)))
            }
            _ => Ok(None),
        }
    }

    /// A function of long windows (`crate::rollups`) at every step: the windows are summed up
    /// step by step from rollup rows, collected by series. `None` if the read changed midway
    /// (it then runs step by step).
    fn rollup_steps(
        &self,
        name: &str,
        vs: &promql_parser::parser::VectorSelector,
        range: i64,
        resolution: i64,
        g: Grid,
    ) -> Result<Option<Steps>> {
        let mut read: Option<crate::rollups::Read> = None;
        let mut points: Vec<Vec<(i64, f64)>> = Vec::new();
        for t in g.times() {
            let (series, summaries) = self.window_summaries_indexed(vs, range, resolution, t)?;
            match &read {
                Some(r) if !Rc::ptr_eq(r, &series) => return Ok(None),
                Some(_) => {}
                None => {
                    points = vec![Vec::new(); series.len()];
                    read = Some(series);
                }
            }
            for (i, summary) in summaries {
                points[i].push((t, summary.value(name)));
            }
        }
        let Some(read) = read else {
            return Ok(Some(Steps::Vector(Vec::new())));
        };
        let drops = crate::functions::range::drops_name(name);
        let out = read
            .iter()
            .zip(points)
            .filter(|(_, p)| !p.is_empty())
            .map(|(s, points)| {
                let mut labels = s.labels.clone();
                if drops {
                    labels.remove(METRIC_NAME);
                }
                StepSeries {
                    labels: Rc::new(labels),
                    points,
                }
            })
            .collect();
        Ok(Some(Steps::Vector(out)))
    }

    /// Function `name` of the window `[rt(t) - range, rt(t)]` of every input series at every
    /// step `t`: the window's two ends advance through the series' samples with the steps.
    fn windows_steps(
        &self,
        name: &str,
        input: &[Windowed<'_>],
        range: i64,
        rt: impl Fn(i64) -> i64,
        g: Grid,
        scalar_arg: Option<&[f64]>,
    ) -> Result<Vec<StepSeries>> {
        let n = g.len();
        let ends: Vec<i64> = g.times().map(&rt).collect();
        // Samples in the windows of each step, as the per-step path holds them.
        let mut held = vec![0usize; n];
        let mut out = Vec::new();
        for (labels, p) in input {
            self.budget.check_time()?;
            let mut points = Vec::new();
            let (mut a, mut b) = (0, 0);
            for (i, &end) in ends.iter().enumerate() {
                let lo = end.saturating_sub(range);
                while b < p.len() && p[b].0 <= end {
                    b += 1;
                }
                while a < b && p[a].0 < lo {
                    a += 1;
                }
                if a == b {
                    continue;
                }
                held[i] += b - a;
                let t = g.time(i);
                let arg = scalar_arg.map(|s| s[i]);
                if let Some(v) = window_value(name, &p[a..b], range, end, t, arg) {
                    points.push((t, v));
                }
            }
            if !points.is_empty() {
                let labels = if crate::functions::range::drops_name(name) {
                    without_name(labels)
                } else {
                    Rc::clone(labels)
                };
                out.push(StepSeries { labels, points });
            }
        }
        self.budget.peek(held.into_iter().max().unwrap_or(0))?;
        Ok(out)
    }

    /// A subquery's inner expression at every step of its own aligned grid that the windows of
    /// the steps of `g` reach, as series; `None` when the windows cover too little of that
    /// grid for one pass over it to pay (steps far apart, short windows).
    fn subquery_steps(&self, sq: &SubqueryExpr, g: Grid) -> Result<Option<Vec<StepSeries>>> {
        let range = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(d) => duration_ms(d),
            None => self.options.default_subquery_step_ms,
        };
        if step <= 0 {
            return Ok(None);
        }
        let first = self.ref_time(&sq.at, &sq.offset, g.start);
        let last = self.ref_time(&sq.at, &sq.offset, g.end);
        let lo = first.min(last).saturating_sub(range);
        let hi = first.max(last);
        // The first aligned step in the first window (saturating, as the per-step path).
        let mut start = lo.div_euclid(step).saturating_mul(step);
        if start < lo {
            start = start.saturating_add(step);
        }
        if start > hi {
            return Ok(Some(Vec::new()));
        }
        let inner = Grid::new(start, hi, step);
        let per_window = (range / step).saturating_add(1);
        let windows = if sq.at.is_some() { 1 } else { g.len() };
        if inner.len() > per_window.saturating_mul(windows as i64).saturating_mul(2) as usize {
            return Ok(None);
        }
        let series = match self.eval_steps(&sq.expr, inner)? {
            Steps::Scalar(v) => vec![StepSeries {
                labels: Rc::new(LabelSet::new()),
                points: inner.times().zip(v).collect(),
            }],
            Steps::Vector(v) => {
                // The per-step path takes each inner step's samples.
                self.budget
                    .take(v.iter().map(|s| s.points.len()).sum(), 0)?;
                v
            }
        };
        Ok(Some(series))
    }

    /// One subquery window of an instant query: `expr` at every step of `g`, as series (by
    /// labels, points ascending), held as the per-step path holds them.
    pub(crate) fn subquery_window(&self, expr: &Expr, g: Grid) -> Result<Vec<Series>> {
        match self.eval_steps(expr, g)? {
            Steps::Scalar(v) => {
                self.budget.peek(v.len())?;
                Ok(vec![Series {
                    labels: LabelSet::new(),
                    points: g.times().zip(v).collect(),
                }])
            }
            Steps::Vector(series) => {
                let count = series.iter().map(|s| s.points.len()).sum();
                self.budget.take(count, 0)?;
                self.budget.peek(count)?;
                let mut by_labels: BTreeMap<&LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
                for s in &series {
                    by_labels
                        .entry(&s.labels)
                        .or_default()
                        .extend_from_slice(&s.points);
                }
                Ok(by_labels
                    .into_iter()
                    .map(|(labels, mut points)| {
                        points.sort_by_key(|p| p.0);
                        Series {
                            labels: labels.clone(),
                            points,
                        }
                    })
                    .collect())
            }
        }
    }

    /// An aggregation at every step, or `None` for the ones left to the per-step path.
    fn aggregate_steps(&self, a: &AggregateExpr, g: Grid) -> Result<Option<Steps>> {
        let op = a.op.id();
        let param = match op {
            T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP | T_STDDEV | T_STDVAR => None,
            T_TOPK | T_BOTTOMK | T_QUANTILE => match a.param.as_deref() {
                Some(p) => Some(self.scalar_steps(p, g)?),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let input = match self.eval_steps(&a.expr, g)? {
            Steps::Vector(v) => v,
            Steps::Scalar(_) => {
                return Err(Error::BadData(
                    "expected an instant vector, got scalar".into(),
                ));
            }
        };
        // Groups in the order of their labels, as the per-step path visits them.
        let mut groups: BTreeMap<LabelSet, Vec<usize>> = BTreeMap::new();
        for (i, s) in input.iter().enumerate() {
            groups
                .entry(group_key(&s.labels, &a.modifier))
                .or_default()
                .push(i);
        }
        let mut held = 0;
        let mut out = Vec::new();
        if matches!(op, T_TOPK | T_BOTTOMK) {
            let ks = param.unwrap_or_default();
            let mut chosen: Vec<Vec<(i64, f64)>> = vec![Vec::new(); input.len()];
            let mut entries: Vec<(usize, usize, f64)> = Vec::new();
            for members in groups.values() {
                entries.clear();
                for &m in members {
                    entries.extend(input[m].points.iter().map(|&(t, v)| (g.index(t), m, v)));
                }
                held += entries.len();
                self.budget.peek(held)?;
                // Stable: members keep their order within a step, as in the per-step path.
                entries.sort_by_key(|e| e.0);
                for run in entries.chunk_by_mut(|x, y| x.0 == y.0) {
                    let step = run[0].0;
                    let Some(k) = top_count(ks[step]) else {
                        continue;
                    };
                    run.sort_by(|x, y| rank(x.2, y.2, op == T_BOTTOMK));
                    for &(_, m, v) in run.iter().take(k) {
                        chosen[m].push((g.time(step), v));
                    }
                }
            }
            for (s, mut points) in input.iter().zip(chosen) {
                if !points.is_empty() {
                    points.sort_by_key(|p| p.0);
                    out.push(StepSeries {
                        labels: Rc::clone(&s.labels),
                        points,
                    });
                }
            }
            return Ok(Some(Steps::Vector(out)));
        }
        let mut entries: Vec<(usize, f64)> = Vec::new();
        for (key, members) in groups {
            entries.clear();
            for &m in &members {
                entries.extend(input[m].points.iter().map(|&(t, v)| (g.index(t), v)));
            }
            held += entries.len();
            self.budget.peek(held)?;
            entries.sort_by_key(|e| e.0);
            let mut points = Vec::new();
            for run in entries.chunk_by(|x, y| x.0 == y.0) {
                let step = run[0].0;
                let phi = param.as_ref().map_or(f64::NAN, |p| p[step]);
                let Some(v) = reduce(op, || run.iter().map(|e| e.1), run.len(), phi) else {
                    return Err(Error::Unsupported(format!("aggregation {}", a.op)));
                };
                points.push((g.time(step), v));
            }
            if !points.is_empty() {
                out.push(StepSeries {
                    labels: Rc::new(key),
                    points,
                });
            }
        }
        Ok(Some(Steps::Vector(out)))
    }

    /// A binary operator at every step: scalars and vector–scalar series by series, two
    /// vectors through signatures computed once per series (`matching`).
    fn binary_steps(&self, b: &BinaryExpr, g: Grid) -> Result<Steps> {
        let op = b.op.id();
        let ret_bool = b.return_bool();
        let lhs = self.eval_steps(&b.lhs, g)?;
        let rhs = self.eval_steps(&b.rhs, g)?;
        match (lhs, rhs) {
            (Steps::Scalar(l), Steps::Scalar(r)) => {
                let mut out = Vec::with_capacity(l.len());
                for (l, r) in l.into_iter().zip(r) {
                    out.push(between_scalars(op, l, r)?);
                }
                Ok(Steps::Scalar(out))
            }
            (Steps::Vector(v), Steps::Scalar(s)) => {
                Ok(Steps::Vector(vector_scalar(op, v, &s, false, ret_bool, g)?))
            }
            (Steps::Scalar(s), Steps::Vector(v)) => {
                Ok(Steps::Vector(vector_scalar(op, v, &s, true, ret_bool, g)?))
            }
            (Steps::Vector(l), Steps::Vector(r)) => {
                let out = match op {
                    T_LAND | T_LOR | T_LUNLESS => matching::set_op_steps(op, l, r, b, g),
                    _ => matching::arithmetic_steps(op, l, r, b, ret_bool, g)?,
                };
                self.budget.peek(out.iter().map(|s| s.points.len()).sum())?;
                Ok(Steps::Vector(out))
            }
        }
    }
}

/// A vector and a scalar, series by series: the metric name dropped once per series.
fn vector_scalar(
    op: promql_parser::parser::token::TokenId,
    series: Vec<StepSeries>,
    scalars: &[f64],
    scalar_left: bool,
    ret_bool: bool,
    g: Grid,
) -> Result<Vec<StepSeries>> {
    let mut out = Vec::with_capacity(series.len());
    for mut s in series {
        let mut points = Vec::with_capacity(s.points.len());
        for &(t, v) in &s.points {
            let sc = scalars[g.index(t)];
            if let Some(value) = with_scalar(op, v, sc, scalar_left, ret_bool)? {
                points.push((t, value));
            }
        }
        if points.is_empty() {
            continue;
        }
        if drops_name(op) || ret_bool {
            s.labels = without_name(&s.labels);
        }
        s.points = points;
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], points: Vec<(i64, f64)>) -> StepSeries {
        StepSeries {
            labels: Rc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            points,
        }
    }

    #[test]
    fn grids_count_their_steps() {
        let g = Grid::new(10, 40, 10);
        assert_eq!(g.len(), 4);
        assert_eq!(g.times().collect::<Vec<_>>(), vec![10, 20, 30, 40]);
        assert_eq!(g.index(30), 2);
        assert_eq!(Grid::new(0, 5, 10).len(), 1);
        let far = Grid::new(i64::MAX - 5, i64::MAX, 3);
        assert_eq!(
            far.times().collect::<Vec<_>>(),
            vec![i64::MAX - 5, i64::MAX - 2]
        );
    }

    #[test]
    fn same_labels_merge_unless_they_meet_at_a_step() {
        let merged = merge_same_labels(vec![
            series(&[("a", "2")], vec![(0, 1.0)]),
            series(&[("a", "1")], vec![(10, 2.0)]),
            series(&[("a", "1")], vec![(0, 3.0), (20, 4.0)]),
            series(&[("a", "3")], vec![]),
        ])
        .expect("disjoint steps");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(merged[0].points, vec![(0, 3.0), (10, 2.0), (20, 4.0)]);
        let err = merge_same_labels(vec![
            series(&[("a", "1")], vec![(10, 2.0)]),
            series(&[("a", "1")], vec![(10, 3.0)]),
        ]);
        assert!(matches!(err, Err(Error::Execution(_))));
    }

    #[test]
    fn collected_steps_keep_a_label_set_twice_at_one_step_apart() {
        let s = |v: f64| Sample {
            labels: [("a".to_string(), "1".to_string())].into_iter().collect(),
            v,
        };
        let mut c = Collector::default();
        c.push(0, vec![s(1.0)]);
        c.push(10, vec![s(2.0), s(3.0)]);
        c.push(20, vec![s(4.0)]);
        let out = c.finish();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].points, vec![(0, 1.0), (10, 2.0), (20, 4.0)]);
        assert_eq!(out[1].points, vec![(10, 3.0)]);
        assert!(Rc::ptr_eq(&out[0].labels, &out[1].labels));
        assert!(merge_same_labels(out).is_err());
    }
}
