//! Rule files: YAML in Prometheus's rule-file shape (`groups:` → `name`, `interval`,
//! `limit`, `labels`, `rules:` → alerting rules with `alert`, `expr`, `for`,
//! `keep_firing_for`, `labels`, `annotations`, or recording rules with `record`, `expr`,
//! `labels`), read raw with positions, then validated into a [`RuleSet`].
//!
//! Every problem is reported as `file:line:column: message`, and all problems of a set are
//! reported together, so one load shows everything to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use promql_parser::parser::value::ValueType;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::duration::parse_duration;
use crate::labels::{LabelSet, valid_label_name, valid_metric_name};
use crate::template::Template;

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RuleFileError {
    pub file: String,
    /// From 1; 0 when the problem is the file as a whole (e.g. unreadable).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found loading a set of rule files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLoadError {
    pub errors: Vec<RuleFileError>,
}

impl fmt::Display for RuleLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for RuleLoadError {}

/// The validated rules of one or more files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub groups: Vec<Group>,
}

/// A group: its rules are evaluated in order, every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// The file it came from (as given to the loader).
    pub file: String,
    /// Line of `name:`.
    pub line: usize,
    /// `None`: the manager's default interval.
    pub interval_ms: Option<i64>,
    /// Most alerts one rule of this group may hold (Prometheus's `limit`); 0 = the manager's
    /// default cap.
    pub limit: usize,
    /// Evaluate `query_offset` in the past, to let late data arrive.
    pub query_offset_ms: i64,
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert name or the recorded metric name.
    pub name: String,
    pub expr: String,
    /// Labels to add (group labels merged in, the rule's own winning). Alert label values
    /// may be templates.
    pub labels: BTreeMap<String, String>,
    /// Line of `alert:`/`record:`.
    pub line: usize,
    pub kind: RuleKind,
    pub(crate) label_templates: Vec<(String, Template)>,
    pub(crate) annotation_templates: Vec<(String, Template)>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Writes its result as a new series.
    Recording,
    /// Raises alerts.
    Alerting {
        for_ms: i64,
        keep_firing_for_ms: i64,
        annotations: BTreeMap<String, String>,
    },
}

impl Rule {
    pub fn is_alerting(&self) -> bool {
        matches!(self.kind, RuleKind::Alerting { .. })
    }

    /// The rule's labels (templates expanded) for one result sample.
    pub(crate) fn expand_labels(&self, labels: &LabelSet, value: f64) -> Vec<(String, String)> {
        self.label_templates
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(labels, value)))
            .collect()
    }

    /// The annotations, expanded for one alert.
    pub(crate) fn expand_annotations(&self, labels: &LabelSet, value: f64) -> LabelSet {
        self.annotation_templates
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(labels, value)))
            .collect()
    }
}

/// A YAML scalar read as text: Prometheus accepts `expr: 1` and `severity: 2`.
#[derive(Debug, Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<Text>,
    interval: Option<Spanned<Text>>,
    query_offset: Option<Spanned<Text>>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Text>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<Spanned<Text>>,
    alert: Option<Spanned<Text>>,
    expr: Option<Spanned<Text>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<Text>>,
    keep_firing_for: Option<Spanned<Text>>,
    #[serde(default)]
    labels: Option<Spanned<BTreeMap<String, Text>>>,
    #[serde(default)]
    annotations: Option<Spanned<BTreeMap<String, Text>>>,
}

struct Ctx<'a> {
    file: &'a str,
    errors: Vec<RuleFileError>,
}

impl Ctx<'_> {
    fn err(&mut self, at: Location, message: impl Into<String>) {
        self.errors.push(RuleFileError {
            file: self.file.to_owned(),
            line: usize::try_from(at.line()).unwrap_or(0),
            column: usize::try_from(at.column()).unwrap_or(0),
            message: message.into(),
        });
    }
}

fn line_of(at: Location) -> usize {
    usize::try_from(at.line()).unwrap_or(0)
}

impl RuleSet {
    /// Reads and validates rule files.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<RuleSet, RuleLoadError> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            let name = p.as_ref().display().to_string();
            match std::fs::read_to_string(p.as_ref()) {
                Ok(text) => sources.push((name, text)),
                Err(e) => errors.push(RuleFileError {
                    file: name,
                    line: 0,
                    column: 0,
                    message: format!("cannot read rule file: {e}"),
                }),
            }
        }
        let set = RuleSet::from_sources(sources.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        match set {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(RuleLoadError { errors }),
            Err(mut e) => {
                errors.append(&mut e.errors);
                Err(RuleLoadError { errors })
            }
        }
    }

    /// Validates one rule file's text; `name` is used in messages.
    pub fn from_str(name: &str, text: &str) -> Result<RuleSet, RuleLoadError> {
        RuleSet::from_sources([(name, text)])
    }

    /// Validates several files' texts as one set (group names must be unique across them).
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<RuleSet, RuleLoadError> {
        let mut groups: Vec<Group> = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in sources {
            let mut ctx = Ctx {
                file: name,
                errors: Vec::new(),
            };
            for g in parse_file(&mut ctx, text) {
                if let Some(prev) = groups.iter().find(|p| p.name == g.name) {
                    ctx.errors.push(RuleFileError {
                        file: name.to_owned(),
                        line: g.line,
                        column: 1,
                        message: format!(
                            "group name `{}` is already used at {}:{}; group names must be unique",
                            g.name, prev.file, prev.line
                        ),
                    });
                } else {
                    groups.push(g);
                }
            }
            errors.append(&mut ctx.errors);
        }
        if errors.is_empty() {
            Ok(RuleSet { groups })
        } else {
            Err(RuleLoadError { errors })
        }
    }

    /// The built-in rule pack (`rules/builtin.yml`).
    pub fn builtin() -> RuleSet {
        match RuleSet::from_str(BUILTIN_NAME, BUILTIN_RULES) {
            Ok(set) => set,
            // The pack is tested to load; an error here is a build defect, reported loudly
            // but without taking the server down.
            Err(e) => {
                tracing::error!(error = %e, "built-in alert rules do not load");
                RuleSet::default()
            }
        }
    }

    /// This set followed by `other`'s groups (e.g. the built-in pack plus user files);
    /// fails when a group name is used in both.
    pub fn merged(mut self, other: RuleSet) -> Result<RuleSet, RuleLoadError> {
        let mut errors = Vec::new();
        for g in other.groups {
            if let Some(prev) = self.groups.iter().find(|p| p.name == g.name) {
                errors.push(RuleFileError {
                    file: g.file.clone(),
                    line: g.line,
                    column: 1,
                    message: format!(
                        "group name `{}` is already used at {}:{}; group names must be unique",
                        g.name, prev.file, prev.line
                    ),
                });
            } else {
                self.groups.push(g);
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(RuleLoadError { errors })
        }
    }

    /// Every rule with its group.
    pub fn rules(&self) -> impl Iterator<Item = (&Group, &Rule)> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
    }
}

/// Name the built-in pack reports in messages.
pub const BUILTIN_NAME: &str = "builtin.yml";
/// The built-in pack's YAML.
pub const BUILTIN_RULES: &str = include_str!("../rules/builtin.yml");

fn parse_file(ctx: &mut Ctx<'_>, text: &str) -> Vec<Group> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let raw: RawFile = match serde_saphyr::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            use serde_saphyr::MessageFormatter;
            let at = e.location().unwrap_or(Location::UNKNOWN);
            let msg = serde_saphyr::DefaultMessageFormatter
                .format_message(e.without_snippet())
                .into_owned();
            ctx.err(at, msg);
            return Vec::new();
        }
    };
    let mut out: Vec<Group> = Vec::new();
    for g in raw.groups {
        let name = g.name.value.0.clone();
        let at = g.name.referenced;
        if name.trim().is_empty() {
            ctx.err(at, "group name is empty");
        }
        let interval_ms = g
            .interval
            .as_ref()
            .and_then(|i| match parse_duration(&i.value.0) {
                Ok(0) => {
                    ctx.err(i.referenced, "group interval must be more than zero");
                    None
                }
                Ok(ms) => Some(ms),
                Err(e) => {
                    ctx.err(i.referenced, e.to_string());
                    None
                }
            });
        let query_offset_ms = g.query_offset.as_ref().map_or(0, |o| {
            parse_duration(&o.value.0).unwrap_or_else(|e| {
                ctx.err(o.referenced, e.to_string());
                0
            })
        });
        let mut group_labels = BTreeMap::new();
        for (k, v) in g.labels.unwrap_or_default() {
            if !valid_label_name(&k) {
                ctx.err(at, format!("group `{name}`: invalid label name `{k}`"));
            }
            group_labels.insert(k, v.0);
        }
        let mut rules = Vec::new();
        for r in g.rules {
            if let Some(rule) = validate_rule(ctx, &name, &group_labels, r) {
                rules.push(rule);
            }
        }
        out.push(Group {
            name,
            file: ctx.file.to_owned(),
            line: line_of(at),
            interval_ms,
            limit: g.limit.unwrap_or(0),
            query_offset_ms,
            rules,
        });
    }
    out
}

fn validate_rule(
    ctx: &mut Ctx<'_>,
    group: &str,
    group_labels: &BTreeMap<String, String>,
    r: Spanned<RawRule>,
) -> Option<Rule> {
    let at = r.referenced;
    let r = r.value;
    let (name, name_at, alerting) = match (&r.alert, &r.record) {
        (Some(a), None) => (a.value.0.clone(), a.referenced, true),
        (None, Some(rec)) => (rec.value.0.clone(), rec.referenced, false),
        (Some(a), Some(_)) => {
            ctx.err(
                a.referenced,
                "a rule has either `alert` or `record`, not both",
            );
            return None;
        }
        (None, None) => {
            ctx.err(
                at,
                format!("group `{group}`: a rule needs `alert` or `record`"),
            );
            return None;
        }
    };
    let errors_before = ctx.errors.len();
    let what = if alerting { "alerting" } else { "recording" };
    if name.trim().is_empty() {
        ctx.err(name_at, format!("{what} rule name is empty"));
    }
    if !alerting && !valid_metric_name(&name) {
        ctx.err(
            name_at,
            format!("recording rule name `{name}` is not a valid metric name"),
        );
    }
    let expr = match &r.expr {
        None => {
            ctx.err(name_at, format!("rule `{name}`: `expr` is missing"));
            String::new()
        }
        Some(e) => {
            let text = e.value.0.clone();
            if text.trim().is_empty() {
                ctx.err(e.referenced, format!("rule `{name}`: `expr` is empty"));
            } else {
                match fleetmon_promql::parse(&text) {
                    Ok(parsed) => {
                        if matches!(parsed.value_type(), ValueType::String | ValueType::Matrix) {
                            ctx.err(
                                e.referenced,
                                format!(
                                    "rule `{name}`: `expr` must give an instant vector or a \
                                     scalar, not a {}",
                                    if parsed.value_type() == ValueType::Matrix {
                                        "range vector"
                                    } else {
                                        "string"
                                    }
                                ),
                            );
                        }
                    }
                    Err(err) => ctx.err(e.referenced, format!("rule `{name}`: bad PromQL: {err}")),
                }
            }
            text
        }
    };
    let mut dur = |field: &Option<Spanned<Text>>, label: &str| -> i64 {
        field
            .as_ref()
            .map_or(0, |d| match parse_duration(&d.value.0) {
                Ok(ms) => ms,
                Err(e) => {
                    ctx.err(d.referenced, format!("rule `{name}`: `{label}`: {e}"));
                    0
                }
            })
    };
    let for_ms = dur(&r.for_, "for");
    let keep_firing_for_ms = dur(&r.keep_firing_for, "keep_firing_for");
    if !alerting {
        for (field, set) in [
            ("for", r.for_.as_ref().map(|s| s.referenced)),
            (
                "keep_firing_for",
                r.keep_firing_for.as_ref().map(|s| s.referenced),
            ),
            ("annotations", r.annotations.as_ref().map(|s| s.referenced)),
        ] {
            if let Some(loc) = set {
                ctx.err(
                    loc,
                    format!("recording rule `{name}`: `{field}` is only for alerting rules"),
                );
            }
        }
    }
    let mut labels = group_labels.clone();
    let mut label_templates = Vec::new();
    if let Some(ls) = &r.labels {
        for (k, v) in &ls.value {
            if !valid_label_name(k) || k == "__name__" {
                ctx.err(
                    ls.referenced,
                    format!("rule `{name}`: invalid label name `{k}`"),
                );
            }
            labels.insert(k.clone(), v.0.clone());
        }
    }
    for (k, v) in &labels {
        if alerting {
            match Template::parse(v) {
                Ok(t) => label_templates.push((k.clone(), t)),
                Err(e) => ctx.err(
                    r.labels.as_ref().map_or(at, |l| l.referenced),
                    format!("rule `{name}`: label `{k}`: {e}"),
                ),
            }
        }
    }
    if !alerting {
        // Recording rule labels are literal (Prometheus does not expand them either).
        label_templates = labels
            .iter()
            .map(|(k, v)| (k.clone(), Template::literal(v)))
            .collect();
    }
    let mut annotations = BTreeMap::new();
    let mut annotation_templates = Vec::new();
    if let Some(an) = &r.annotations {
        for (k, v) in &an.value {
            if !valid_label_name(k) {
                ctx.err(
                    an.referenced,
                    format!("rule `{name}`: invalid annotation name `{k}`"),
                );
            }
            match Template::parse(&v.0) {
                Ok(t) => annotation_templates.push((k.clone(), t)),
                Err(e) => ctx.err(
                    an.referenced,
                    format!("rule `{name}`: annotation `{k}`: {e}"),
                ),
            }
            annotations.insert(k.clone(), v.0.clone());
        }
    }
    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name,
        expr,
        labels,
        line: line_of(name_at),
        kind: if alerting {
            RuleKind::Alerting {
                for_ms,
                keep_firing_for_ms,
                annotations,
            }
        } else {
            RuleKind::Recording
        },
        label_templates,
        annotation_templates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<RuleFileError> {
        match RuleSet::from_str("r.yml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.errors,
        }
    }

    const GOOD: &str = "\
groups:
  - name: fleet
    interval: 30s
    rules:
      - record: site:cpu_usage_ratio:avg
        expr: avg by (site) (cpu_usage_ratio)
      - alert: CpuHigh
        expr: cpu_usage_ratio > 0.9
        for: 10m
        keep_firing_for: 5m
        labels:
          severity: warning
          priority: 2
        annotations:
          summary: 'CPU high on {{ $labels.device }}'
      - alert: CpuHigh
        expr: cpu_usage_ratio > 0.99
        labels:
          severity: critical
";

    #[test]
    fn loads_prometheus_shape() {
        let set = RuleSet::from_str("r.yml", GOOD).expect("loads");
        let g = &set.groups[0];
        assert_eq!(g.name, "fleet");
        assert_eq!(g.line, 2);
        assert_eq!(g.interval_ms, Some(30_000));
        assert_eq!(g.rules.len(), 3);
        assert_eq!(g.rules[0].kind, RuleKind::Recording);
        assert_eq!(g.rules[1].line, 7);
        assert_eq!(g.rules[1].labels["priority"], "2");
        match &g.rules[1].kind {
            RuleKind::Alerting {
                for_ms,
                keep_firing_for_ms,
                annotations,
            } => {
                assert_eq!(*for_ms, 600_000);
                assert_eq!(*keep_firing_for_ms, 300_000);
                assert!(annotations["summary"].contains("$labels.device"));
            }
            RuleKind::Recording => panic!("kind"),
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let bad_yaml = errors("groups:\n  - name: a\n    rules: [\n");
        assert_eq!(bad_yaml.len(), 1);
        assert_eq!(bad_yaml[0].file, "r.yml");
        assert!(bad_yaml[0].line >= 3, "{bad_yaml:?}");

        let unknown = errors(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        fro: 5m\n",
        );
        assert_eq!(unknown[0].line, 6, "{unknown:?}");
        assert!(unknown[0].message.contains("fro"), "{unknown:?}");

        let promql =
            errors("groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up >\n");
        assert_eq!(promql[0].line, 5, "{promql:?}");
        assert!(promql[0].to_string().starts_with("r.yml:5:"), "{promql:?}");
        assert!(promql[0].message.contains("bad PromQL"), "{promql:?}");

        let dur = errors(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        for: 5 minutes\n",
        );
        assert_eq!(dur[0].line, 6, "{dur:?}");
        assert!(dur[0].message.contains("invalid duration"), "{dur:?}");

        let dup = errors("groups:\n  - name: a\n    rules: []\n  - name: a\n    rules: []\n");
        assert_eq!(dup[0].line, 4, "{dup:?}");
        assert!(
            dup[0].message.contains("already used at r.yml:2"),
            "{dup:?}"
        );

        let tmpl = errors(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up\n        annotations:\n          summary: '{{ $lables.device }}'\n",
        );
        assert!(tmpl[0].message.contains("annotation `summary`"), "{tmpl:?}");

        let both = errors(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        record: y\n        expr: up\n",
        );
        assert!(both[0].message.contains("not both"), "{both:?}");

        let rec = errors(
            "groups:\n  - name: a\n    rules:\n      - record: bad-name\n        expr: up\n        for: 1m\n",
        );
        assert_eq!(rec.len(), 2, "{rec:?}");

        let matrix =
            errors("groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up[5m]\n");
        assert!(matrix[0].message.contains("range vector"), "{matrix:?}");
    }

    #[test]
    fn several_errors_at_once_and_duplicate_alert_names_are_fine() {
        let e = errors(
            "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up >\n      - alert: X\n        expr: up\n        for: 1x\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].line, e[1].line), (5, 8));
    }

    #[test]
    fn group_names_unique_across_files() {
        let a = "groups:\n  - name: g\n    rules: []\n";
        let err = RuleSet::from_sources([("a.yml", a), ("b.yml", a)]).expect_err("dup");
        assert_eq!(err.errors[0].file, "b.yml");
        assert!(
            err.to_string()
                .contains("b.yml:2:1: group name `g` is already used at a.yml:2")
        );
    }
}
