//! The evaluator: one expression at one evaluation time, the Prometheus way. Instant queries
//! use it, and range queries (see `steps`) for the nodes they do not evaluate across all steps
//! at once; selectors read through a per-query cache so each selector hits the store about
//! once per query, not once per step.
//!
//! Windows follow Prometheus 2.x: an instant selector takes the newest sample in
//! `[t - lookback, t]`, a range selector the samples in `[t - range, t]` (both ends closed);
//! `offset` and `@` move `t` first. Subquery steps are aligned to multiples of their step.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetmon_tsdb::{MatchOp, Matcher};
use promql_parser::label::MatchOp as ParsedOp;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use crate::error::{Error, Result};
use crate::limits::{Budget, Options};
use crate::source::Source;
use crate::value::{LabelSet, METRIC_NAME, Sample, Series, Value, drop_name};
use crate::{aggregate, binary, functions};

/// How much time one read from the source covers to start with; reads grow fourfold while the
/// sample budget allows.
const LOAD_SLICE_MS: i64 = 2 * 3600 * 1000;

/// Samples of one selector, loaded for `[lo, hi]`.
struct Cached {
    lo: i64,
    hi: i64,
    series: Rc<Vec<Series>>,
}

/// Evaluates expressions of one query.
pub(crate) struct Evaluator<'a> {
    pub(crate) source: &'a dyn Source,
    pub(crate) options: &'a Options,
    /// The query's start and end (for `@ start()` / `@ end()`).
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// The range query's step (0 for an instant query).
    pub(crate) step: i64,
    /// How far past a first request a selector will be asked for (steps and subqueries).
    pub(crate) reach: i64,
    /// The source's rollup resolutions, ascending.
    pub(crate) resolutions: Vec<i64>,
    /// Rollup reads per selector, and raw samples of row intervals cut by a window edge.
    pub(crate) rollups: RefCell<crate::rollups::Cache>,
    pub(crate) budget: Budget,
    cache: RefCell<HashMap<usize, Cached>>,
    /// Inner results of subqueries by (subquery, step time): steps are aligned, so the windows
    /// of consecutive outer steps share them.
    inner: RefCell<HashMap<(usize, i64), Rc<Value>>>,
    /// Values of sub-expressions computed for every step at once, by expression, for a node
    /// that `steps` evaluates step by step: each step's value is taken once, where evaluating
    /// it would otherwise start again from the selectors.
    pub(crate) precomputed: RefCell<HashMap<usize, crate::steps::Precomputed>>,
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// The total range of every subquery in `expr`: how far inner steps can wander.
fn subquery_reach(expr: &Expr) -> i64 {
    match expr {
        Expr::Subquery(s) => duration_ms(&s.range).saturating_add(subquery_reach(&s.expr)),
        Expr::Aggregate(a) => {
            subquery_reach(&a.expr).max(a.param.as_deref().map_or(0, subquery_reach))
        }
        Expr::Unary(u) => subquery_reach(&u.expr),
        Expr::Binary(b) => subquery_reach(&b.lhs).max(subquery_reach(&b.rhs)),
        Expr::Paren(p) => subquery_reach(&p.expr),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| subquery_reach(a))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Removes parentheses around an expression.
pub(crate) fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

/// The store matchers of a parsed selector.
pub(crate) fn matchers_of(vs: &VectorSelector) -> Result<Vec<Matcher>> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(Error::Unsupported("`or` inside a selector's braces".into()));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::metric(name));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            ParsedOp::Equal => MatchOp::Equal,
            ParsedOp::NotEqual => MatchOp::NotEqual,
            ParsedOp::Re(_) => MatchOp::Regex,
            ParsedOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(&m.name, op, &m.value).map_err(|e| Error::BadData(e.to_string()))?);
    }
    Ok(out)
}

/// Labels of a stored series as a map.
pub(crate) fn label_set(labels: &fleetmon_tsdb::Labels) -> LabelSet {
    labels
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        source: &'a dyn Source,
        options: &'a Options,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Self {
        Self {
            source,
            options,
            start,
            end,
            step,
            reach: end
                .saturating_sub(start)
                .saturating_add(subquery_reach(expr)),
            resolutions: source.rollup_resolutions(),
            rollups: RefCell::default(),
            budget: Budget::new(options),
            cache: RefCell::new(HashMap::new()),
            inner: RefCell::new(HashMap::new()),
            precomputed: RefCell::new(HashMap::new()),
        }
    }

    /// Evaluates `expr` at `t` (ms).
    pub(crate) fn eval(&self, expr: &Expr, t: i64) -> Result<Value> {
        self.budget.check_time()?;
        if let Some(v) = self.take_precomputed(expr, t) {
            return Ok(v);
        }
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(mut vec) => {
                    for s in &mut vec {
                        s.v = -s.v;
                        drop_name(&mut s.labels);
                    }
                    Ok(Value::Vector(vec))
                }
                other => Err(Error::BadData(format!(
                    "unary minus on a {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(
                self.instant_selector(vs, t)?
                    .into_iter()
                    .map(|(labels, _, v)| Sample { labels, v })
                    .collect(),
            )),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_selector(
                &ms.vs,
                duration_ms(&ms.range),
                t,
            )?)),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, t)?)),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Aggregate(a) => aggregate::eval(self, a, t),
            Expr::Binary(b) => binary::eval(self, b, t),
            Expr::Extension(_) => Err(Error::Unsupported("extension expressions".into())),
        }
    }

    /// Evaluates `expr` at `t`, which must give a scalar.
    pub(crate) fn scalar(&self, expr: &Expr, t: i64) -> Result<f64> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(Error::BadData(format!(
                "expected a scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `expr` at `t`, which must give an instant vector.
    pub(crate) fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(Error::BadData(format!(
                "expected an instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// The time a selector or subquery reads at, after `@` and `offset`.
    pub(crate) fn ref_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(st),
        };
        base.saturating_sub(offset_ms(offset))
    }

    /// The selector's series with samples covering `[lo, hi]`, from the cache when it can; a
    /// read goes on past `hi` as far as later steps and subqueries may ask for.
    fn load(&self, vs: &VectorSelector, lo: i64, hi: i64) -> Result<Rc<Vec<Series>>> {
        self.load_with(vs, lo, hi, true)
    }

    /// The selector's series with samples covering `[lo, hi]`, which is all that will be asked
    /// of it (one read for every step of a range).
    pub(crate) fn load_span(
        &self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
    ) -> Result<Rc<Vec<Series>>> {
        self.load_with(vs, lo, hi, false)
    }

    fn load_with(
        &self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
        extend: bool,
    ) -> Result<Rc<Vec<Series>>> {
        let key = vs as *const VectorSelector as usize;
        let mut cache = self.cache.borrow_mut();
        let previous = match cache.get(&key) {
            Some(c) if c.lo <= lo && hi <= c.hi => return Ok(Rc::clone(&c.series)),
            Some(c) => Some((c.lo, c.hi, c.series.iter().map(|s| s.points.len()).sum())),
            None => None,
        };
        let reach = if vs.at.is_some() || !extend {
            0
        } else {
            self.reach
        };
        let (lo, hi, freed) = match previous {
            Some((plo, phi, n)) => (lo.min(plo), hi.max(phi).saturating_add(reach), n),
            None => (lo, hi.saturating_add(reach), 0),
        };
        let matchers = matchers_of(vs)?;
        // Read in slices of time so a huge selection fails at the limit instead of first
        // loading everything.
        self.budget.take(0, freed)?;
        let mut merged: BTreeMap<fleetmon_tsdb::Labels, Vec<(i64, f64)>> = BTreeMap::new();
        let mut from = lo;
        let mut slice = LOAD_SLICE_MS;
        if self
            .budget
            .fits(self.source.estimate_samples(&matchers, lo, hi))
        {
            // One read: a compacted block's column is decoded once, not once per slice.
            slice = hi.saturating_sub(lo).saturating_add(1).max(1);
        }
        loop {
            let to = from.saturating_add(slice - 1).min(hi);
            let mut count = 0;
            for s in self.source.select(&matchers, from, to) {
                count += s.points.len();
                merged.entry(s.labels).or_default().extend(s.points);
            }
            self.budget.take(count, 0)?;
            self.budget.check_time()?;
            if self.budget.may_grow(count) {
                // Empty or sparse time: take bigger steps through it (each read of a
                // compacted block decodes the block's whole column for the series).
                slice = slice.saturating_mul(4);
            }
            if to >= hi {
                break;
            }
            from = to + 1;
        }
        let series: Rc<Vec<Series>> = Rc::new(
            merged
                .into_iter()
                .map(|(labels, points)| Series {
                    labels: label_set(&labels),
                    points,
                })
                .collect(),
        );
        cache.insert(
            key,
            Cached {
                lo,
                hi,
                series: Rc::clone(&series),
            },
        );
        Ok(series)
    }

    /// Newest sample per series within the lookback: (labels, sample time, value).
    pub(crate) fn instant_selector(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(LabelSet, i64, f64)>> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let lo = rt.saturating_sub(self.options.lookback_ms);
        let series = self.load(vs, lo, rt)?;
        let mut out = Vec::new();
        for s in series.iter() {
            let i = s.points.partition_point(|p| p.0 <= rt);
            if i == 0 {
                continue;
            }
            let (pt, pv) = s.points[i - 1];
            if pt < lo {
                continue;
            }
            out.push((s.labels.clone(), pt, pv));
        }
        Ok(out)
    }

    /// Samples per series in `[t' - range, t']` where `t'` is `t` after `@`/`offset`; series
    /// with none are left out.
    pub(crate) fn range_selector(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Vec<Series>> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let lo = rt.saturating_sub(range);
        let series = self.load(vs, lo, rt)?;
        let mut out = Vec::new();
        let mut count = 0;
        for s in series.iter() {
            let a = s.points.partition_point(|p| p.0 < lo);
            let b = s.points.partition_point(|p| p.0 <= rt);
            if a < b {
                count += b - a;
                out.push(Series {
                    labels: s.labels.clone(),
                    points: s.points[a..b].to_vec(),
                });
            }
        }
        self.budget.peek(count)?;
        Ok(out)
    }

    /// A subquery at `t`: the inner expression at every aligned step in `[t' - range, t']`. In a
    /// range query evaluated step by step, the inner results are cached by step time, which
    /// the windows of consecutive outer steps share.
    pub(crate) fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Vec<Series>> {
        let rt = self.ref_time(&sq.at, &sq.offset, t);
        let range = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(d) => duration_ms(d),
            None => self.options.default_subquery_step_ms,
        };
        if step <= 0 {
            return Err(Error::BadData("subquery step must be positive".into()));
        }
        let lo = rt.saturating_sub(range);
        // Saturating: at the ends of time the first aligned step may not exist.
        let mut ts = lo.div_euclid(step).saturating_mul(step);
        if ts < lo {
            ts = ts.saturating_add(step);
        }
        if self.step == 0 {
            // An instant query: one window, evaluated across its steps at once.
            if ts > rt {
                return Ok(Vec::new());
            }
            return self.subquery_window(&sq.expr, crate::steps::Grid::new(ts, rt, step));
        }
        let key = sq as *const SubqueryExpr as usize;
        // The inner results first, then one pass that clones each series' labels once.
        let mut steps: Vec<(i64, Rc<Value>)> = Vec::new();
        let mut count = 0;
        while ts <= rt {
            let cached = self.inner.borrow().get(&(key, ts)).cloned();
            let value = match cached {
                Some(v) => v,
                None => {
                    let v = Rc::new(self.eval(&sq.expr, ts)?);
                    if let Value::Vector(samples) = v.as_ref() {
                        self.budget.take(samples.len(), 0)?;
                    }
                    self.inner.borrow_mut().insert((key, ts), Rc::clone(&v));
                    v
                }
            };
            count += match value.as_ref() {
                Value::Vector(v) => v.len(),
                Value::Scalar(_) => 1,
                other => {
                    return Err(Error::BadData(format!(
                        "subquery of a {}; expected an instant vector or scalar",
                        other.type_name()
                    )));
                }
            };
            self.budget.peek(count)?;
            steps.push((ts, value));
            let Some(next) = ts.checked_add(step) else {
                break;
            };
            ts = next;
        }
        let scalar_labels = LabelSet::new();
        let mut out: BTreeMap<&LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
        for (ts, value) in &steps {
            match value.as_ref() {
                Value::Vector(v) => {
                    for s in v {
                        out.entry(&s.labels).or_default().push((*ts, s.v));
                    }
                }
                Value::Scalar(v) => out.entry(&scalar_labels).or_default().push((*ts, *v)),
                _ => {}
            }
        }
        Ok(out
            .into_iter()
            .map(|(labels, points)| Series {
                labels: labels.clone(),
                points,
            })
            .collect())
    }
}

/// Fails when two samples of a vector have the same labels (Prometheus's rule for results).
pub(crate) fn check_unique(v: &[Sample]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(Error::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// Whether `name` is a valid label name.
pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name == METRIC_NAME
}
