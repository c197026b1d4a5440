//! [`Engine`]: instant queries at one time and range queries over `start..=end` by `step`, with
//! one [`Evaluator`] (and so one cache and one budget) per query. Range queries are evaluated
//! across all steps at once where `steps` can, step by step elsewhere.

use std::collections::HashSet;
use std::rc::Rc;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};

use crate::error::{Error, Result};
use crate::eval::{Evaluator, check_unique};
use crate::limits::Options;
use crate::source::Source;
use crate::steps::{Grid, Steps, merge_same_labels};
use crate::value::{LabelSet, Series, Value};

/// Parses a query; the error message starts with a Prometheus-style `line:column` position.
/// `promql-parser` reports no positions, so they are inferred from the message: the end of the
/// input for unfinished queries, the named function or token where the message quotes one,
/// else the start of the query.
pub fn parse(query: &str) -> Result<Expr> {
    // Before the parser, which recurses per level of nesting (see `nesting`).
    crate::nesting::check(query).map_err(Error::BadData)?;
    parser::parse(query).map_err(|msg| {
        let (line, col) = error_position(query, &msg);
        Error::Parse(format!("{line}:{col}: parse error: {msg}"))
    })
}

/// (line, column), both from 1, of byte offset `at` in `query`.
fn line_col(query: &str, at: usize) -> (usize, usize) {
    let before = &query[..at.min(query.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn error_position(query: &str, msg: &str) -> (usize, usize) {
    if msg.contains("end of input") || msg.contains("unclosed") || msg.contains("unterminated") {
        return line_col(query, query.trim_end().len());
    }
    let quoted = msg.split('\'').nth(1).filter(|q| !q.is_empty());
    if let Some(at) = quoted.and_then(|q| query.find(q)) {
        return line_col(query, at);
    }
    (1, 1)
}

/// The matchers of a series selector such as `up{job="x"}` (the API's `match[]`).
pub fn selector_matchers(selector: &str) -> Result<Vec<fleetmon_tsdb::Matcher>> {
    match parse(selector)? {
        Expr::VectorSelector(vs) => crate::eval::matchers_of(&vs),
        _ => Err(Error::BadData(format!(
            "{selector:?} is not a series selector"
        ))),
    }
}

/// Runs PromQL queries with fixed options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    options: Options,
}

impl Engine {
    pub fn new(options: Options) -> Self {
        Self { options }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant(&self, source: &dyn Source, query: &str, t_ms: i64) -> Result<Value> {
        let expr = parse(query)?;
        let ev = Evaluator::new(source, &self.options, &expr, t_ms, t_ms, 0);
        let v = ev.eval(&expr, t_ms)?;
        match &v {
            Value::Vector(samples) => {
                check_unique(samples)?;
                ev.budget.take(samples.len(), 0)?;
            }
            Value::Matrix(m) => {
                let mut seen = HashSet::new();
                for s in m {
                    if !seen.insert(&s.labels) {
                        return Err(Error::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(v)
    }

    /// Evaluates `query` at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`: one series per
    /// label set, sorted by labels; a scalar becomes one series without labels.
    pub fn range(
        &self,
        source: &dyn Source,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>> {
        let expr = parse(query)?;
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            other => {
                return Err(Error::BadData(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    match other {
                        ValueType::Matrix => "range vector",
                        ValueType::String => "string",
                        _ => "unknown",
                    }
                )));
            }
        }
        if step_ms <= 0 {
            return Err(Error::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(Error::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let ev = Evaluator::new(source, &self.options, &expr, start_ms, end_ms, step_ms);
        let grid = Grid::new(start_ms, end_ms, step_ms);
        match ev.eval_steps(&expr, grid)? {
            Steps::Scalar(values) => {
                ev.budget.take(values.len(), 0)?;
                Ok(vec![Series {
                    labels: LabelSet::new(),
                    points: grid.times().zip(values).collect(),
                }])
            }
            Steps::Vector(series) => {
                let series = merge_same_labels(series)?;
                ev.budget
                    .take(series.iter().map(|s| s.points.len()).sum(), 0)?;
                Ok(series
                    .into_iter()
                    .map(|s| Series {
                        labels: Rc::try_unwrap(s.labels).unwrap_or_else(|l| LabelSet::clone(&l)),
                        points: s.points,
                    })
                    .collect())
            }
        }
    }
}
