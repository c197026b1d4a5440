//! The values an expression evaluates to at one evaluation time: scalars, strings, instant
//! vectors, and range vectors (matrices), plus Prometheus's text form of numbers.

use std::collections::BTreeMap;

/// A series' labels, `__name__` included, sorted by name.
pub type LabelSet = BTreeMap<String, String>;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: LabelSet,
    pub v: f64,
}

/// One element of a range vector (or of a range query's result): points ascending by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    pub points: Vec<(i64, f64)>,
}

/// What an expression evaluates to at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// The name Prometheus uses for the type in `resultType` and in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Removes the metric name, as most functions and arithmetic do.
pub fn drop_name(labels: &mut LabelSet) {
    labels.remove(METRIC_NAME);
}

/// A number as Prometheus prints it (Go's `FormatFloat(v, 'f', -1, 64)`): shortest
/// round-trip digits, no exponent, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// The labels `by (...)`/`on (...)` keep, or that `without (...)`/`ignoring (...)` leave
/// (never the metric name), as owned pairs.
pub(crate) fn project(
    labels: &LabelSet,
    modifier: &promql_parser::parser::LabelModifier,
) -> impl Iterator<Item = (String, String)> {
    use promql_parser::parser::LabelModifier;
    let keep = move |k: &str| match modifier {
        LabelModifier::Include(ls) => ls.labels.iter().any(|l| l == k),
        LabelModifier::Exclude(ls) => k != METRIC_NAME && !ls.labels.iter().any(|l| l == k),
    };
    labels
        .iter()
        .filter(move |(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_go() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
