//! Label sets, their fingerprints, and label matchers (`name=value`, `!=`, `=~`, `!~`) as
//! routes, inhibition rules and silences use them.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use fleetmon_promql::LabelSet;

/// The label every alert carries with its rule's name.
pub const ALERTNAME: &str = "alertname";

/// A stable 64-bit identity of a label set (FNV-1a over `name 0xff value 0xff`, in name
/// order), printed as 16 hex digits. The same labels give the same fingerprint in every
/// process and version, so it can be persisted and used for deduplication.
pub fn fingerprint(labels: &LabelSet) -> Fingerprint {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    Fingerprint(h)
}

/// An alert's identity: see [`fingerprint`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16)
            .map(Fingerprint)
            .map_err(|_| serde::de::Error::custom(format!("invalid fingerprint `{s}`")))
    }
}

/// `{a="1", b="2"}`, as Prometheus prints label sets.
pub fn format_labels(labels: &LabelSet) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn quote(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
}

/// How a [`Matcher`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// A matcher that does not parse or compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("matcher `{input}`: {reason}")]
pub struct MatcherError {
    pub input: String,
    pub reason: String,
}

/// One label matcher with Alertmanager semantics: a missing label has the empty value;
/// regular expressions are anchored at both ends.
///
/// Serialised as Alertmanager's silence API does: `{name, value, isRegex, isEqual}`; a
/// string such as `severity=~"warning|critical"` deserialises too (the form routes use).
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), quote(&self.value))
    }
}

impl Matcher {
    /// Builds a matcher, compiling a regular expression anchored (`^(?:value)$`).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let text = || format!("{name}{}{}", op.as_str(), quote(value));
        if !valid_label_name(name) {
            return Err(MatcherError {
                input: text(),
                reason: "invalid label name".into(),
            });
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError {
                    input: text(),
                    reason: format!("invalid regular expression: {e}"),
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// `name="value"`.
    pub fn equal(name: &str, value: &str) -> Result<Self, MatcherError> {
        Self::new(name, MatchOp::Equal, value)
    }

    /// Parses `name="value"`, `name!="value"`, `name=~"re"`, `name!~"re"`; the value may be
    /// unquoted when it has no spaces or quotes.
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let err = |reason: &str| MatcherError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| err("expected an operator (=, !=, =~, !~) after the label name"))?;
        let (name, rest) = s.split_at(name_end);
        let rest = rest.trim_start();
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(err(
                "expected an operator (=, !=, =~, !~) after the label name",
            ));
        };
        let value = value.trim();
        let value = if value.starts_with('"') {
            serde_json::from_str::<String>(value)
                .map_err(|_| err("the value is not a valid double-quoted string"))?
        } else {
            value.to_owned()
        };
        Self::new(name, op, &value).map_err(|e| MatcherError {
            input: input.to_owned(),
            reason: e.reason,
        })
    }

    /// Whether `value` (empty for a missing label) passes.
    pub fn matches_value(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether the label set passes.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// Whether every matcher passes.
pub fn matches_all(matchers: &[Matcher], labels: &LabelSet) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Prometheus's label-name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prometheus's metric-name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MatcherJson {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MatcherJson {
            name: self.name.clone(),
            value: self.value.clone(),
            is_regex: matches!(self.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(self.op, MatchOp::Equal | MatchOp::Regex),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Json(MatcherJson),
        }
        match Form::deserialize(d)? {
            Form::Text(s) => Matcher::parse(&s).map_err(serde::de::Error::custom),
            Form::Json(j) => {
                let op = match (j.is_regex, j.is_equal) {
                    (false, true) => MatchOp::Equal,
                    (false, false) => MatchOp::NotEqual,
                    (true, true) => MatchOp::Regex,
                    (true, false) => MatchOp::NotRegex,
                };
                Matcher::new(&j.name, op, &j.value).map_err(serde::de::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fingerprint_is_stable_and_order_free() {
        let a = ls(&[("alertname", "X"), ("device", "d1")]);
        let b = ls(&[("device", "d1"), ("alertname", "X")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&ls(&[("alertname", "X")])));
        // Label boundaries matter: {a="bc"} differs from {ab="c"}.
        assert_ne!(
            fingerprint(&ls(&[("a", "bc")])),
            fingerprint(&ls(&[("ab", "c")]))
        );
        // Pinned: persisted state depends on it never changing.
        assert_eq!(
            fingerprint(&LabelSet::new()).to_string(),
            "cbf29ce484222325"
        );
    }

    #[test]
    fn matchers_parse_and_match() {
        let l = ls(&[("severity", "critical"), ("site", "berlin")]);
        for (text, expect) in [
            ("severity=\"critical\"", true),
            ("severity=critical", true),
            ("severity!=\"critical\"", false),
            ("severity=~\"warn.*|crit.*\"", true),
            ("severity=~\"crit\"", false),
            ("site!~\"ber\"", true),
            ("missing=\"\"", true),
            ("missing!=\"\"", false),
        ] {
            let m = Matcher::parse(text).expect(text);
            assert_eq!(m.matches(&l), expect, "{text}");
        }
        assert!(Matcher::parse("1abc=\"x\"").is_err());
        assert!(Matcher::parse("a=~\"(\"").is_err());
        assert!(Matcher::parse("nooperator").is_err());
    }

    #[test]
    fn matcher_json_round_trip() {
        let m = Matcher::parse("site!~\"b.*\"").expect("parses");
        let j = serde_json::to_string(&m).expect("serialises");
        assert_eq!(
            j,
            r#"{"name":"site","value":"b.*","isRegex":true,"isEqual":false}"#
        );
        let back: Matcher = serde_json::from_str(&j).expect("deserialises");
        assert_eq!(back, m);
        let from_text: Matcher = serde_json::from_str(r#""site=~\"b.*\"""#).expect("text form");
        assert_eq!(from_text.op, MatchOp::Regex);
    }
}
