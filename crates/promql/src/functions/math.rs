//! Element-wise functions of an instant vector: `abs`, `ceil`, `floor`, `round`, `exp`, `ln`,
//! `log2`, `log10`, `sqrt`, `sgn`, `clamp`, `clamp_min`, `clamp_max` and trigonometry. Each
//! drops the metric name, as in Prometheus.

use promql_parser::parser::Expr;

use crate::error::Result;
use crate::eval::Evaluator;
use crate::value::{Value, drop_name};

/// The unary function `name`, if it is one.
pub(crate) fn unary(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

/// Go's `math.Floor(v*inv + 0.5) / inv`: halves round up.
pub fn round(v: f64, to_nearest: f64) -> f64 {
    let inv = 1.0 / to_nearest;
    (v * inv + 0.5).floor() / inv
}

/// Go's `math.Max`: NaN if either is NaN.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is NaN.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Evaluates an element-wise function, or `None` when `name` is not one.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Option<Value>> {
    let f: Box<dyn Fn(f64) -> f64> = if let Some(f) = unary(name) {
        Box::new(f)
    } else {
        match name {
            "round" => {
                let to = match args.get(1) {
                    Some(a) => ev.scalar(a, t)?,
                    None => 1.0,
                };
                Box::new(move |v| round(v, to))
            }
            "clamp" => {
                let lo = ev.scalar(args[1], t)?;
                let hi = ev.scalar(args[2], t)?;
                if hi < lo {
                    return Ok(Some(Value::Vector(Vec::new())));
                }
                Box::new(move |v: f64| go_max(lo, go_min(hi, v)))
            }
            "clamp_min" => {
                let lo = ev.scalar(args[1], t)?;
                Box::new(move |v: f64| go_max(lo, v))
            }
            "clamp_max" => {
                let hi = ev.scalar(args[1], t)?;
                Box::new(move |v: f64| go_min(hi, v))
            }
            _ => return Ok(None),
        }
    };
    let mut v = ev.vector(args[0], t)?;
    for s in &mut v {
        s.v = f(s.v);
        drop_name(&mut s.labels);
    }
    Ok(Some(Value::Vector(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_signs() {
        assert_eq!(round(2.5, 1.0), 3.0);
        assert_eq!(round(-2.5, 1.0), -2.0);
        assert_eq!(round(17.0, 5.0), 15.0);
        assert_eq!(round(0.123, 0.1), 0.1);
        let sgn = unary("sgn").expect("sgn");
        assert_eq!((sgn(-3.0), sgn(0.0), sgn(2.0)), (-1.0, 0.0, 1.0));
        assert!(sgn(f64::NAN).is_nan());
        assert!(go_max(2.0, f64::NAN).is_nan());
        assert_eq!(go_min(2.0, 1.0), 1.0);
    }
}
