//! Function calls: the dispatch from a name to its family.
//!
//! - [`range`]: functions of a range vector (`rate`, `*_over_time`, ...).
//! - [`math`]: element-wise arithmetic (`abs`, `clamp`, `round`, trigonometry, ...).
//! - [`labels`]: `label_replace`, `label_join`, `sort`, `absent`, `vector`, `scalar`, ...
//! - [`histogram`]: `histogram_quantile` over classic (`le`) histograms.
//! - [`date`]: calendar functions of a timestamp (`hour`, `day_of_week`, ...).

pub mod date;
pub mod histogram;
pub mod labels;
pub mod math;
pub mod range;

use promql_parser::parser::{Call, Expr};

use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::Value;

/// Evaluates a call at `t`.
pub(crate) fn call(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Value> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    if let Some(v) = range::call(ev, name, &args, t)? {
        return Ok(v);
    }
    if let Some(v) = math::call(ev, name, &args, t)? {
        return Ok(v);
    }
    if let Some(v) = labels::call(ev, name, &args, t)? {
        return Ok(v);
    }
    if let Some(v) = histogram::call(ev, name, &args, t)? {
        return Ok(v);
    }
    if let Some(v) = date::call(ev, name, &args, t)? {
        return Ok(v);
    }
    Err(Error::Unsupported(format!("function {name}()")))
}
