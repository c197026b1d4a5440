//! The rule manager: evaluates groups when due, keeps each alerting rule's alerts through
//! their lifecycle with Prometheus's semantics, produces recording rules' samples, persists
//! alert state, and reloads rules without losing the state of unchanged rules.
//!
//! # Lifecycle (as Prometheus)
//! At each evaluation at time `t`, for an alerting rule:
//! - a label set the expression returns that has no active alert becomes **pending** with
//!   `active_at = t` (with `for: 0` it fires in the same evaluation);
//! - a pending alert still returned fires once `t - active_at >= for` (`fired_at = t`);
//! - a pending alert no longer returned is dropped;
//! - a firing alert no longer returned stays firing while `t - keep_firing_since <
//!   keep_firing_for` (`keep_firing_since` is the first evaluation that missed it), else it
//!   becomes **inactive** with `resolved_at = t` and is kept for `resolved_retention` so the
//!   resolution is seen;
//! - a returned alert clears `keep_firing_since`; value and annotations follow each
//!   evaluation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use fleetmon_promql::{Engine, Source, Value};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::alert::{Alert, AlertState};
use crate::labels::{ALERTNAME, Fingerprint, LabelSet, fingerprint};
use crate::persist::{StateError, load_json, save_json};
use crate::rulefile::{Group, Rule, RuleKind, RuleSet};
use crate::time::format_rfc3339;

/// How the manager evaluates and what it keeps.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Interval of groups that set none (Prometheus's global `evaluation_interval`).
    pub default_interval_ms: i64,
    /// Most alerts (pending + firing) one rule may hold; a group's `limit` overrides it.
    pub max_alerts_per_rule: usize,
    /// How long a resolved alert is kept (and reported as resolved).
    pub resolved_retention_ms: i64,
    /// Where alert state is persisted; `None` keeps it in memory only.
    pub state_file: Option<PathBuf>,
    /// Whether evaluation also returns Prometheus's `ALERTS{alertstate=...}` series.
    pub alerts_series: bool,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            default_interval_ms: 60_000,
            max_alerts_per_rule: 10_000,
            resolved_retention_ms: 15 * 60_000,
            state_file: None,
            alerts_series: true,
        }
    }
}

/// A sample to write back into the store: a recording rule's result or an `ALERTS` series.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSample {
    /// With `__name__`.
    pub labels: LabelSet,
    pub ts_ms: i64,
    pub value: f64,
}

/// One alert changing state.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub group: String,
    pub rule: String,
    pub fingerprint: Fingerprint,
    pub labels: LabelSet,
    pub from: AlertState,
    pub to: AlertState,
    pub at_ms: i64,
}

/// What one [`Manager::evaluate`] call did.
#[derive(Debug, Clone, Default)]
pub struct EvalOutput {
    /// Recording rules' samples (and `ALERTS` series if enabled), to write into the store.
    pub samples: Vec<RecordedSample>,
    /// Alerts that changed state, in evaluation order.
    pub changes: Vec<AlertChange>,
    /// Groups evaluated by this call.
    pub evaluated_groups: Vec<String>,
    /// Rules whose evaluation failed: (group, rule, error).
    pub errors: Vec<(String, String, String)>,
    /// Set when the state file could not be written.
    pub state_error: Option<String>,
}

/// A rule's health, as Prometheus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

struct RuleState {
    rule: Rule,
    alerts: BTreeMap<Fingerprint, Alert>,
    health: Health,
    last_error: Option<String>,
    last_eval_at: Option<i64>,
    eval_seconds: f64,
}

struct GroupState {
    group: Group,
    interval_ms: i64,
    last_eval_at: Option<i64>,
    eval_seconds: f64,
    rules: Vec<RuleState>,
}

/// Evaluates rules and owns their alerts. See the module docs for the lifecycle.
pub struct Manager {
    options: ManagerOptions,
    groups: Vec<GroupState>,
    last_saved: Vec<u8>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("groups", &self.groups.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A rule's identity across reloads and restarts: group, name and (unexpanded) labels, as
/// Prometheus matches rules when it reloads.
type RuleKey = (String, String, BTreeMap<String, String>);

fn rule_key(group: &str, rule: &Rule) -> RuleKey {
    (group.to_owned(), rule.name.clone(), rule.labels.clone())
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    rules: Vec<RuleStateFile>,
}

#[derive(Serialize, Deserialize)]
struct RuleStateFile {
    group: String,
    name: String,
    labels: BTreeMap<String, String>,
    alerts: Vec<Alert>,
}

const STATE_VERSION: u32 = 1;

impl Manager {
    /// A manager for `rules`; restores alert state from `options.state_file` if it exists.
    pub fn open(rules: RuleSet, options: ManagerOptions) -> Result<Manager, StateError> {
        let mut m = Manager {
            options,
            groups: Vec::new(),
            last_saved: Vec::new(),
        };
        let mut restored: HashMap<RuleKey, VecDeque<BTreeMap<Fingerprint, Alert>>> = HashMap::new();
        let file = match m.options.state_file.clone() {
            Some(path) => load_json::<StateFile>(&path)?.map(|f| (path, f)),
            None => None,
        };
        if let Some((path, file)) = file {
            if file.version != STATE_VERSION {
                warn!(path = %path.display(), version = file.version, "unknown alert state version; ignored");
            } else {
                let mut n = 0;
                for r in file.rules {
                    n += r.alerts.len();
                    let alerts = r.alerts.into_iter().map(|a| (a.fingerprint, a)).collect();
                    restored
                        .entry((r.group, r.name, r.labels))
                        .or_default()
                        .push_back(alerts);
                }
                debug!(alerts = n, "alert state restored");
            }
        }
        m.install(rules, &mut restored, &mut HashMap::new());
        Ok(m)
    }

    /// A manager without persistence.
    pub fn new(rules: RuleSet, options: ManagerOptions) -> Manager {
        let options = ManagerOptions {
            state_file: None,
            ..options
        };
        let mut m = Manager {
            options,
            groups: Vec::new(),
            last_saved: Vec::new(),
        };
        m.install(rules, &mut HashMap::new(), &mut HashMap::new());
        m
    }

    /// Replaces the rules. Rules with the same group, name and labels as before keep their
    /// alerts (and health); others start empty; alerts of removed rules are dropped.
    pub fn reload(&mut self, rules: RuleSet) {
        let mut old_alerts: HashMap<RuleKey, VecDeque<BTreeMap<Fingerprint, Alert>>> =
            HashMap::new();
        let mut old_meta: HashMap<String, Option<i64>> = HashMap::new();
        for g in std::mem::take(&mut self.groups) {
            old_meta.insert(g.group.name.clone(), g.last_eval_at);
            for r in g.rules {
                old_alerts
                    .entry(rule_key(&g.group.name, &r.rule))
                    .or_default()
                    .push_back(r.alerts);
            }
        }
        self.install(rules, &mut old_alerts, &mut old_meta);
    }

    fn install(
        &mut self,
        rules: RuleSet,
        alerts: &mut HashMap<RuleKey, VecDeque<BTreeMap<Fingerprint, Alert>>>,
        last_evals: &mut HashMap<String, Option<i64>>,
    ) {
        for group in rules.groups {
            let interval_ms = group
                .interval_ms
                .unwrap_or(self.options.default_interval_ms);
            let rules = group
                .rules
                .iter()
                .map(|rule| {
                    let kept = alerts
                        .get_mut(&rule_key(&group.name, rule))
                        .and_then(VecDeque::pop_front)
                        .unwrap_or_default();
                    let kept = kept
                        .into_iter()
                        .filter(|_| rule.is_alerting())
                        .map(|(fp, mut a)| {
                            a.group = group.name.clone();
                            a.rule = rule.name.clone();
                            (fp, a)
                        })
                        .collect();
                    RuleState {
                        rule: rule.clone(),
                        alerts: kept,
                        health: Health::Unknown,
                        last_error: None,
                        last_eval_at: None,
                        eval_seconds: 0.0,
                    }
                })
                .collect();
            self.groups.push(GroupState {
                last_eval_at: last_evals.remove(&group.name).flatten(),
                interval_ms,
                eval_seconds: 0.0,
                group,
                rules,
            });
        }
    }

    /// Evaluates every group that is due at `now_ms` (never evaluated, or its interval has
    /// passed since its last evaluation). One rule's failure is recorded on that rule and
    /// does not stop the others. Persists alert state if it changed.
    pub fn evaluate(&mut self, engine: &Engine, source: &dyn Source, now_ms: i64) -> EvalOutput {
        self.evaluate_groups(engine, source, now_ms, None)
    }

    /// Evaluates only the most urgent due group — the shortest interval, the first in file
    /// order among equals — so a caller can dispatch its alerts before slower groups run.
    /// None when no group is due.
    pub fn evaluate_next(
        &mut self,
        engine: &Engine,
        source: &dyn Source,
        now_ms: i64,
    ) -> Option<EvalOutput> {
        let next = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.last_eval_at
                    .is_none_or(|last| now_ms - last >= g.interval_ms)
            })
            .min_by_key(|(i, g)| (g.interval_ms, *i))?
            .0;
        Some(self.evaluate_groups(engine, source, now_ms, Some(next)))
    }

    fn evaluate_groups(
        &mut self,
        engine: &Engine,
        source: &dyn Source,
        now_ms: i64,
        only: Option<usize>,
    ) -> EvalOutput {
        let mut out = EvalOutput::default();
        let options = self.options.clone();
        for (i, g) in self.groups.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i)
                || g.last_eval_at
                    .is_some_and(|last| now_ms - last < g.interval_ms)
            {
                continue;
            }
            let started = Instant::now();
            let ts = now_ms - g.group.query_offset_ms;
            let cap = if g.group.limit > 0 {
                g.group.limit
            } else {
                options.max_alerts_per_rule
            };
            for r in &mut g.rules {
                let rule_started = Instant::now();
                let result = if r.rule.is_alerting() {
                    eval_alerting(
                        r,
                        &g.group.name,
                        engine,
                        source,
                        ts,
                        cap,
                        &options,
                        &mut out,
                    )
                } else {
                    eval_recording(&r.rule, engine, source, ts, &mut out.samples)
                };
                r.last_eval_at = Some(now_ms);
                r.eval_seconds = rule_started.elapsed().as_secs_f64();
                match result {
                    Ok(()) => {
                        r.health = Health::Ok;
                        r.last_error = None;
                    }
                    Err(e) => {
                        warn!(group = %g.group.name, rule = %r.rule.name, error = %e, "rule evaluation failed");
                        out.errors
                            .push((g.group.name.clone(), r.rule.name.clone(), e.clone()));
                        r.health = Health::Err;
                        r.last_error = Some(e);
                    }
                }
                if options.alerts_series && r.rule.is_alerting() {
                    for a in r.alerts.values() {
                        if a.state == AlertState::Inactive {
                            continue;
                        }
                        let mut labels = a.labels.clone();
                        labels.insert("__name__".into(), "ALERTS".into());
                        labels.insert("alertstate".into(), a.state.as_str().into());
                        out.samples.push(RecordedSample {
                            labels,
                            ts_ms: ts,
                            value: 1.0,
                        });
                    }
                }
            }
            g.last_eval_at = Some(now_ms);
            g.eval_seconds = started.elapsed().as_secs_f64();
            out.evaluated_groups.push(g.group.name.clone());
        }
        if !out.evaluated_groups.is_empty()
            && let Err(e) = self.save()
        {
            warn!(error = %e, "alert state not saved");
            out.state_error = Some(e.to_string());
        }
        out
    }

    /// Writes the state file now (evaluate does this itself when state changed).
    pub fn save(&mut self) -> Result<(), StateError> {
        let Some(path) = self.options.state_file.clone() else {
            return Ok(());
        };
        let file = StateFile {
            version: STATE_VERSION,
            rules: self
                .groups
                .iter()
                .flat_map(|g| {
                    g.rules
                        .iter()
                        .filter(|r| !r.alerts.is_empty())
                        .map(|r| RuleStateFile {
                            group: g.group.name.clone(),
                            name: r.rule.name.clone(),
                            labels: r.rule.labels.clone(),
                            alerts: r.alerts.values().cloned().collect(),
                        })
                })
                .collect(),
        };
        save_json(&path, &file, &mut self.last_saved)
    }

    /// Active alerts (pending and firing), for `/api/v1/alerts`.
    pub fn alerts(&self) -> Vec<Alert> {
        self.all_alerts()
            .into_iter()
            .filter(|a| a.state != AlertState::Inactive)
            .collect()
    }

    /// Every alert held, resolved ones included (what the dispatcher observes).
    pub fn all_alerts(&self) -> Vec<Alert> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(|r| r.alerts.values().cloned())
            .collect()
    }

    /// The rules with their state, in Prometheus's `/api/v1/rules` shape.
    pub fn rules(&self) -> RulesView {
        RulesView {
            groups: self
                .groups
                .iter()
                .map(|g| GroupView {
                    name: g.group.name.clone(),
                    file: g.group.file.clone(),
                    interval: g.interval_ms as f64 / 1000.0,
                    limit: g.group.limit,
                    evaluation_time: g.eval_seconds,
                    last_evaluation: g.last_eval_at.map(format_rfc3339),
                    rules: g.rules.iter().map(rule_view).collect(),
                })
                .collect(),
        }
    }
}

fn rule_view(r: &RuleState) -> RuleView {
    let (kind, duration, keep_firing_for, annotations) = match &r.rule.kind {
        RuleKind::Recording => ("recording", None, None, None),
        RuleKind::Alerting {
            for_ms,
            keep_firing_for_ms,
            annotations,
        } => (
            "alerting",
            Some(*for_ms as f64 / 1000.0),
            Some(*keep_firing_for_ms as f64 / 1000.0),
            Some(annotations.clone()),
        ),
    };
    let alerts: Vec<serde_json::Value> = r
        .alerts
        .values()
        .filter(|a| a.state != AlertState::Inactive)
        .map(Alert::api_json)
        .collect();
    let state = if !r.rule.is_alerting() {
        None
    } else if r.alerts.values().any(|a| a.state == AlertState::Firing) {
        Some(AlertState::Firing)
    } else if r.alerts.values().any(|a| a.state == AlertState::Pending) {
        Some(AlertState::Pending)
    } else {
        Some(AlertState::Inactive)
    };
    RuleView {
        kind,
        name: r.rule.name.clone(),
        query: r.rule.expr.clone(),
        labels: r.rule.labels.clone(),
        state,
        duration,
        keep_firing_for,
        annotations,
        alerts: r.rule.is_alerting().then_some(alerts),
        health: r.health,
        last_error: r.last_error.clone().unwrap_or_default(),
        evaluation_time: r.eval_seconds,
        last_evaluation: r.last_eval_at.map(format_rfc3339),
    }
}

/// `/api/v1/rules` data.
#[derive(Debug, Clone, Serialize)]
pub struct RulesView {
    pub groups: Vec<GroupView>,
}

/// One group in [`RulesView`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub name: String,
    pub file: String,
    /// Seconds.
    pub interval: f64,
    pub limit: usize,
    pub rules: Vec<RuleView>,
    /// Seconds the last evaluation took.
    pub evaluation_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<String>,
}

/// One rule in [`GroupView`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub query: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<AlertState>,
    /// `for`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<serde_json::Value>>,
    pub health: Health,
    pub last_error: String,
    pub evaluation_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<String>,
}

/// The expression's result as samples; a scalar is one sample without labels.
fn query(
    engine: &Engine,
    source: &dyn Source,
    expr: &str,
    ts: i64,
) -> Result<Vec<fleetmon_promql::Sample>, String> {
    match engine
        .instant(source, expr, ts)
        .map_err(|e| e.to_string())?
    {
        Value::Vector(v) => Ok(v),
        Value::Scalar(v) => Ok(vec![fleetmon_promql::Sample {
            labels: LabelSet::new(),
            v,
        }]),
        other => Err(format!(
            "expression gives a {}, not an instant vector or scalar",
            other.type_name()
        )),
    }
}

fn eval_recording(
    rule: &Rule,
    engine: &Engine,
    source: &dyn Source,
    ts: i64,
    out: &mut Vec<RecordedSample>,
) -> Result<(), String> {
    let samples = query(engine, source, &rule.expr, ts)?;
    let mut seen = std::collections::HashSet::new();
    let mut produced = Vec::with_capacity(samples.len());
    for s in samples {
        let mut labels = s.labels;
        labels.insert("__name__".into(), rule.name.clone());
        for (k, v) in &rule.labels {
            if v.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), v.clone());
            }
        }
        if !seen.insert(fingerprint(&labels)) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        produced.push(RecordedSample {
            labels,
            ts_ms: ts,
            value: s.v,
        });
    }
    out.append(&mut produced);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval_alerting(
    r: &mut RuleState,
    group: &str,
    engine: &Engine,
    source: &dyn Source,
    ts: i64,
    cap: usize,
    options: &ManagerOptions,
    out: &mut EvalOutput,
) -> Result<(), String> {
    let RuleKind::Alerting {
        for_ms,
        keep_firing_for_ms,
        ..
    } = r.rule.kind
    else {
        return Ok(());
    };
    let samples = query(engine, source, &r.rule.expr, ts)?;
    // The result as alerts: labels, annotations, value.
    let mut result: BTreeMap<Fingerprint, (LabelSet, LabelSet, f64)> = BTreeMap::new();
    for s in samples {
        let template_labels = s.labels;
        let mut labels = template_labels.clone();
        labels.remove("__name__");
        for (k, v) in r.rule.expand_labels(&template_labels, s.v) {
            if v.is_empty() {
                labels.remove(&k);
            } else {
                labels.insert(k, v);
            }
        }
        labels.insert(ALERTNAME.into(), r.rule.name.clone());
        let annotations = r.rule.expand_annotations(&template_labels, s.v);
        let fp = fingerprint(&labels);
        if result.insert(fp, (labels, annotations, s.v)).is_some() {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
    }
    let active_after = r
        .alerts
        .iter()
        .filter(|(fp, a)| a.state != AlertState::Inactive && !result.contains_key(fp))
        .count()
        + result.len();
    if active_after > cap {
        return Err(format!(
            "{} alerts would be active, more than the limit of {cap} per rule; alert state is \
             left as it was (raise the group's `limit` or the manager's max_alerts_per_rule, or \
             make the expression more selective)",
            active_after
        ));
    }
    let mut change = |a: &Alert, from: AlertState| {
        out.changes.push(AlertChange {
            group: group.to_owned(),
            rule: r.rule.name.clone(),
            fingerprint: a.fingerprint,
            labels: a.labels.clone(),
            from,
            to: a.state,
            at_ms: ts,
        });
    };
    for (fp, (labels, annotations, value)) in &result {
        match r.alerts.get_mut(fp) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = *value;
                a.annotations = annotations.clone();
                a.keep_firing_since = None;
            }
            _ => {
                let a = Alert {
                    group: group.to_owned(),
                    rule: r.rule.name.clone(),
                    labels: labels.clone(),
                    annotations: annotations.clone(),
                    state: AlertState::Pending,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    keep_firing_since: None,
                    value: *value,
                    fingerprint: *fp,
                };
                change(&a, AlertState::Inactive);
                r.alerts.insert(*fp, a);
            }
        }
    }
    let mut drop = Vec::new();
    for (fp, a) in r.alerts.iter_mut() {
        if !result.contains_key(fp) {
            match a.state {
                AlertState::Pending => {
                    let before = a.state;
                    a.state = AlertState::Inactive;
                    change(a, before);
                    drop.push(*fp);
                }
                AlertState::Inactive => {
                    if a.resolved_at
                        .is_none_or(|t| ts - t > options.resolved_retention_ms)
                    {
                        drop.push(*fp);
                    }
                }
                AlertState::Firing => {
                    if keep_firing_for_ms > 0 {
                        let since = *a.keep_firing_since.get_or_insert(ts);
                        if ts - since < keep_firing_for_ms {
                            continue;
                        }
                    }
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                    a.keep_firing_since = None;
                    change(a, AlertState::Firing);
                }
            }
            continue;
        }
        if a.state == AlertState::Pending && ts - a.active_at >= for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(ts);
            change(a, AlertState::Pending);
        }
    }
    for fp in drop {
        r.alerts.remove(&fp);
    }
    Ok(())
}
