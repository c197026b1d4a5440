//! MQTT topic filters (MQTT 3.1.1 §4.7): validation and matching, with `+` for one level and
//! `#` for all remaining levels. Topics starting with `$` are not matched by a leading wildcard.

/// Why a filter is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("topic filter is empty")]
    Empty,
    #[error("topic filter {0:?}: `#` must be the last level and stand alone")]
    BadMultiLevel(String),
    #[error("topic filter {0:?}: `+` must stand alone in its level")]
    BadSingleLevel(String),
    #[error("topic filter contains a NUL character")]
    Nul,
}

/// Checks that `filter` is a valid subscription filter.
pub fn validate(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(FilterError::BadMultiLevel(filter.to_owned()));
        }
        if level.contains('+') && *level != "+" {
            return Err(FilterError::BadSingleLevel(filter.to_owned()));
        }
    }
    Ok(())
}

/// True when a filter contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// True when `topic` (a concrete topic name) matches the valid `filter`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("fleetmon/v1/+/status", "fleetmon/v1/pi-1/status"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        assert!(validate("sport/tennis#").is_err());
        assert!(validate("sport/tennis/#/ranking").is_err());
        assert!(validate("sport+").is_err());
        assert!(validate("").is_err());
        assert!(validate("+/tennis/#").is_ok());
    }
}
