//! Durations in Prometheus's notation (`30s`, `5m`, `1h30m`, `2d`, `0s`), as rule files and
//! dispatcher settings write them, held as milliseconds.

use std::fmt;

/// A duration string that is not in Prometheus's notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; expected e.g. `30s`, `5m`, `1h30m`")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: [(&str, i64); 7] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 7 * 86_400_000),
    ("y", 365 * 86_400_000),
];

/// Parses `[0-9]+(ms|s|m|h|d|w|y)` repeated, units from largest to smallest, each at most
/// once; `0` alone is zero.
pub fn parse_duration(input: &str) -> Result<i64, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut rest = s;
    let mut total: i64 = 0;
    let mut last_unit = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("a number must come before each unit"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        // `ms` before `m` so that "5ms" is not read as minutes then "s".
        let (idx, (unit, scale)) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(|| err("unknown or missing unit (use ms, s, m, h, d, w, y)"))?;
        // Order: largest first. UNITS is smallest first, so the index must strictly fall.
        if last_unit != usize::MAX && idx >= last_unit {
            return Err(err("units must go from largest to smallest, each once"));
        }
        last_unit = idx;
        rest = &rest[unit.len()..];
        total = n
            .checked_mul(*scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Milliseconds in Prometheus's notation: `1h30m`, `5m`, `250ms`, `0s`.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    if rest < 0 {
        out.push('-');
        rest = -rest;
    }
    for (unit, scale) in UNITS.iter().rev() {
        // Years and weeks only when exact, as Prometheus prints them.
        if (*unit == "y" || *unit == "w") && rest % scale != 0 {
            continue;
        }
        if rest >= *scale {
            out.push_str(&format!("{}{unit}", rest / scale));
            rest %= scale;
        }
    }
    out
}

/// A duration field of a config: deserialised from Prometheus notation, shown the same way.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub i64);

impl Duration {
    pub fn ms(self) -> i64 {
        self.0
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1m30s500ms"), Ok(90_500));
    }

    #[test]
    fn refuses_what_prometheus_refuses() {
        for bad in ["", "5", "m", "5x", "1.5h", "30m1h", "5m5m", "-5m", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [
            0,
            250,
            30_000,
            300_000,
            5_400_000,
            86_400_000,
            90_500,
            604_800_000,
        ] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_duration(5_400_000), "1h30m");
    }

    proptest::proptest! {
        #[test]
        fn any_duration_round_trips(ms in 0i64..100 * 365 * 86_400_000) {
            proptest::prop_assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }
}
