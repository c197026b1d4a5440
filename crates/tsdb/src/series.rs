//! A series' identity and how queries pick series: [`Labels`] (metric name as `__name__` plus
//! sorted labels) and [`Matcher`]s with Prometheus semantics.
//!
//! A label that a series lacks has the empty value, so `{env!="prod"}` matches series without
//! `env`, and `{env=""}` matches only those. Regular expressions are anchored full matches
//! (`=~"a.*"` does not match `"ba"`).

use regex::Regex;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Errors building labels or matchers.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("label name is empty")]
    EmptyName,
    #[error("label `{0}` appears twice")]
    Duplicate(String),
    #[error("series has no `__name__` label (metric name)")]
    NoMetric,
    #[error("matcher on `{name}`: invalid regular expression `{pattern}`: {source}")]
    Regex {
        name: String,
        pattern: String,
        source: regex::Error,
    },
}

/// A series' labels, sorted by name, `__name__` included; label values are never empty
/// (an empty value means "no such label" and is dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds labels from pairs; must include `__name__`.
    pub fn new<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, SeriesError> {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.sort();
        for w in v.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(SeriesError::Duplicate(w[0].0.clone()));
            }
        }
        if v.iter().any(|(k, _)| k.is_empty()) {
            return Err(SeriesError::EmptyName);
        }
        if !v.iter().any(|(k, _)| k == METRIC_NAME) {
            return Err(SeriesError::NoMetric);
        }
        Ok(Self(v))
    }

    /// Builds labels from a metric name and its other labels.
    pub fn from_metric<K: Into<String>, V: Into<String>>(
        metric: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, SeriesError> {
        let pairs = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .chain(std::iter::once((METRIC_NAME.to_owned(), metric.to_owned())));
        Self::new(pairs)
    }

    /// Pairs already sorted and validated (from our own files).
    pub(crate) fn from_sorted(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The metric name.
    pub fn metric(&self) -> &str {
        self.get(METRIC_NAME).unwrap_or("")
    }

    /// A label's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels, `__name__` included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the default, empty set (not a valid series).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (anchored)
    Regex,
    /// `!~` (anchored)
    NotRegex,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name (`__name__` for the metric).
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or pattern.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; regular expressions are compiled anchored.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SeriesError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|source| {
                    SeriesError::Regex {
                        name: name.to_owned(),
                        pattern: value.to_owned(),
                        source,
                    }
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// `name="value"`.
    pub fn eq(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatchOp::Equal,
            value: value.to_owned(),
            regex: None,
        }
    }

    /// `name!="value"`.
    pub fn ne(name: &str, value: &str) -> Self {
        Self {
            op: MatchOp::NotEqual,
            ..Self::eq(name, value)
        }
    }

    /// `__name__="metric"`.
    pub fn metric(metric: &str) -> Self {
        Self::eq(METRIC_NAME, metric)
    }

    /// Whether a label value (empty when the series lacks the label) passes.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_drop_empty_and_need_a_metric() {
        let l = Labels::from_metric("cpu", [("z", "1"), ("a", "2"), ("e", "")]).unwrap();
        let pairs: Vec<_> = l.iter().collect();
        assert_eq!(pairs, vec![("__name__", "cpu"), ("a", "2"), ("z", "1")]);
        assert_eq!(l.metric(), "cpu");
        assert!(matches!(
            Labels::new([("a", "1")]),
            Err(SeriesError::NoMetric)
        ));
        assert!(matches!(
            Labels::new([("__name__", "m"), ("a", "1"), ("a", "2")]),
            Err(SeriesError::Duplicate(_))
        ));
    }

    #[test]
    fn matchers_follow_prometheus_semantics() {
        let re = Matcher::new("d", MatchOp::Regex, "a.*").unwrap();
        assert!(re.matches("abc"));
        assert!(!re.matches("bab"), "regex is anchored");
        let nre = Matcher::new("d", MatchOp::NotRegex, "a|b").unwrap();
        assert!(nre.matches("c"));
        assert!(
            nre.matches(""),
            "missing label passes !~ when the pattern rejects empty"
        );
        assert!(!Matcher::ne("d", "").matches(""));
        assert!(Matcher::eq("d", "").matches(""));
        assert!(Matcher::new("d", MatchOp::Regex, "(").is_err());
    }
}
