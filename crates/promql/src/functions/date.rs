//! Calendar functions of a timestamp in UTC: `minute`, `hour`, `day_of_week`, `day_of_month`,
//! `day_of_year`, `days_in_month`, `month`, `year`. With no argument they use the evaluation
//! time (`vector(time())`).

use promql_parser::parser::Expr;

use crate::error::Result;
use crate::eval::Evaluator;
use crate::value::{LabelSet, Sample, Value, drop_name};

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]; months 1..=12).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The calendar field `name` of unix seconds `secs`.
pub fn field(name: &str, secs: f64) -> Option<f64> {
    if !secs.is_finite() {
        return Some(f64::NAN);
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Some(match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_month" => f64::from(d),
        "day_of_year" => {
            let before: u32 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            f64::from(before + d)
        }
        "days_in_month" => f64::from(days_in_month(y, m)),
        "month" => f64::from(m),
        "year" => y as f64,
        _ => return None,
    })
}

/// Evaluates a date function, or `None` when `name` is not one.
pub(crate) fn call(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Option<Value>> {
    if field(name, 0.0).is_none() {
        return Ok(None);
    }
    let input = match args.first() {
        Some(a) => ev.vector(a, t)?,
        None => vec![Sample {
            labels: LabelSet::new(),
            v: t as f64 / 1000.0,
        }],
    };
    let mut out = input;
    for s in &mut out {
        s.v = field(name, s.v).unwrap_or(f64::NAN);
        drop_name(&mut s.labels);
    }
    Ok(Some(Value::Vector(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300.0;
        assert_eq!(field("year", t), Some(2024.0));
        assert_eq!(field("month", t), Some(2.0));
        assert_eq!(field("day_of_month", t), Some(29.0));
        assert_eq!(field("day_of_year", t), Some(60.0));
        assert_eq!(field("days_in_month", t), Some(29.0));
        assert_eq!(field("day_of_week", t), Some(4.0));
        assert_eq!(field("hour", t), Some(13.0));
        assert_eq!(field("minute", t), Some(45.0));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
