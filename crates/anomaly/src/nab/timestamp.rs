//! NAB timestamps: `YYYY-MM-DD HH:MM:SS`, optionally with a fraction (`.000000` in the label
//! files). Parsed to microseconds since 1970-01-01, treating the clock as UTC: the files carry
//! no zone and only order, equality and time of day matter here.

/// Parses a NAB timestamp into microseconds since the Unix epoch; `None` if malformed.
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..=60).contains(&second)
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
        digits.parse().ok()?
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March, so the leap day is the last day of the counted year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(parse_timestamp_us("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp_us("2014-04-10 16:15:00.000000"),
            parse_timestamp_us("2014-04-10 16:15:00")
        );
        // 2000-03-01 is day 11017.
        assert_eq!(
            parse_timestamp_us("2000-03-01 00:00:01.5"),
            Some(11_017 * 86_400_000_000 + 1_500_000)
        );
        assert_eq!(
            parse_timestamp_us("2016-02-29 12:00:00"),
            Some((16_860 * 24 + 12) * 3_600_000_000)
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2014-04-10",
            "2014-13-01 00:00:00",
            "x 00:00:00",
            "2014-01-01 00:00",
        ] {
            assert_eq!(parse_timestamp_us(bad), None, "{bad}");
        }
    }
}
