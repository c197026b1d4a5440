//! Alerting inside the server: the rules (`fleetmon-alert`: the built-in pack plus the
//! operator's rule files) evaluated against the store, their alerts handed to the dispatcher
//! (routes, grouping, silences, inhibition, topology suppression, flap damping), and its
//! notifications put into the durable outbox of `fleetmon-notify`, whose threads deliver them.
//!
//! State lives in `DATA_DIR/alerts/`: `rules-state.json` (pending and firing alerts),
//! `dispatcher.json` and `silences.json` (what was notified, silences), `outbox/`. A restart
//! neither loses a firing alert nor notifies it again.
//!
//! [`Alerting::cycle`] is one evaluation step, called every `tick` by the server's task (and
//! directly by tests with their own clock).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetmon_alert::dispatch::{DispatcherConfig, Notification};
use fleetmon_alert::silence::SilenceView;
use fleetmon_alert::{
    Alert, AlertState, Dispatcher, Fingerprint, Manager, ManagerOptions, Muting, NewSilence,
    RuleSet,
};
use fleetmon_notify::{Notifier, NotifyConfig};
use fleetmon_promql::Engine;
use serde_json::Value;

use crate::store::{Point, SampleStore, SeriesKey, StoreSource};

/// Where the rules and receivers come from.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// Load the built-in rule pack (on by default).
    pub builtin_rules: bool,
    /// The operator's rule files (Prometheus's rule-file YAML).
    pub rule_files: Vec<PathBuf>,
    /// Evaluation interval of groups that set none.
    pub eval_interval: Duration,
    /// How often the loop looks for due groups and flushes notification groups: well under
    /// the shortest group interval, so a group runs within a quarter second of falling due.
    pub tick: Duration,
    /// Routes, inhibition, topology and flap settings (YAML); defaults when none.
    pub dispatcher_file: Option<PathBuf>,
    /// Receivers (TOML, `fleetmon-notify`'s format); without it notifications are only logged.
    pub notify_file: Option<PathBuf>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            builtin_rules: true,
            rule_files: Vec::new(),
            eval_interval: Duration::from_secs(15),
            tick: Duration::from_millis(250),
            dispatcher_file: None,
            notify_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error(transparent)]
    Rules(#[from] fleetmon_alert::RuleLoadError),
    #[error("alert state: {0}")]
    State(#[from] fleetmon_alert::StateError),
    #[error("dispatcher: {0}")]
    Dispatch(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("notifications: {0}")]
    Notify(String),
    #[error("silence: {0}")]
    Silence(String),
}

/// One pending or firing alert as the dashboard lists it.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub alert: Alert,
    /// Why it is not notified (silences, inhibition, a gateway alert, flapping).
    pub muting: Muting,
    /// For a gateway's alert: the fingerprints of the children's alerts folded into it.
    pub suppressed: Vec<Fingerprint>,
}

/// Alerts by state, for the dashboard's live events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlertCounts {
    pub firing: usize,
    pub pending: usize,
    /// Firing but silenced, inhibited, suppressed under a gateway or flapping.
    pub muted: usize,
}

/// What one [`Alerting::cycle`] did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub evaluated_groups: usize,
    pub rule_errors: usize,
    pub samples_written: usize,
    pub notifications: Vec<Notification>,
}

/// The rules, the dispatcher and the notifier of one server.
pub struct Alerting {
    config: AlertingConfig,
    manager: Mutex<Manager>,
    dispatcher: Mutex<Dispatcher>,
    notifier: Option<Notifier>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn read(path: &Path) -> Result<String, AlertingError> {
    std::fs::read_to_string(path).map_err(|e| AlertingError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl Alerting {
    /// Loads rules, dispatcher settings and receivers, restoring state from `dir`.
    pub fn open(config: AlertingConfig, dir: &Path) -> Result<Self, AlertingError> {
        std::fs::create_dir_all(dir).map_err(|e| AlertingError::File {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let rules = load_rules(&config)?;
        let manager = Manager::open(
            rules,
            ManagerOptions {
                default_interval_ms: ms(config.eval_interval),
                state_file: Some(dir.join("rules-state.json")),
                ..ManagerOptions::default()
            },
        )?;
        let dispatcher = Dispatcher::open(load_dispatcher_config(&config)?, dir)
            .map_err(|e| AlertingError::Dispatch(e.to_string()))?;
        let notifier = match &config.notify_file {
            Some(path) => {
                let notify =
                    NotifyConfig::from_toml(&read(path)?).map_err(|e| AlertingError::File {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                Some(
                    Notifier::start(notify, dir.join("outbox"))
                        .map_err(|e| AlertingError::Notify(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(Self {
            config,
            manager: Mutex::new(manager),
            dispatcher: Mutex::new(dispatcher),
            notifier,
        })
    }

    /// Re-reads the rule files and dispatcher settings. Alerts of unchanged rules keep their
    /// state; on any error nothing changes.
    pub fn reload(&self) -> Result<(), AlertingError> {
        let rules = load_rules(&self.config)?;
        let dispatcher = load_dispatcher_config(&self.config)?;
        lock(&self.dispatcher)
            .set_config(dispatcher)
            .map_err(|e| AlertingError::Dispatch(e.to_string()))?;
        lock(&self.manager).reload(rules);
        Ok(())
    }

    /// Evaluates the due rule groups at `now_ms`, writes their samples (recording rules,
    /// `ALERTS`) into the store, and hands due notifications to the outbox.
    pub fn cycle(&self, engine: &Engine, store: &Arc<dyn SampleStore>, now_ms: i64) -> CycleReport {
        let source = StoreSource(Arc::clone(store));
        let mut report = CycleReport::default();
        // One group at a time, the shortest interval first, each group's alerts dispatched
        // before the next is evaluated: a slow group never delays a fast group's page.
        loop {
            let next = {
                let mut manager = lock(&self.manager);
                manager
                    .evaluate_next(engine, &source, now_ms)
                    .map(|out| (out, manager.all_alerts()))
            };
            let Some((out, alerts)) = next else { break };
            if let Some(e) = &out.state_error {
                tracing::error!(error = e, "alert state not saved");
            }
            let samples: Vec<(SeriesKey, Point)> = out
                .samples
                .iter()
                .filter_map(|s| {
                    let mut labels = s.labels.clone();
                    let metric = labels.remove("__name__")?;
                    Some((
                        SeriesKey { metric, labels },
                        Point {
                            ts_ms: s.ts_ms,
                            value: s.value,
                        },
                    ))
                })
                .collect();
            if !samples.is_empty()
                && let Err(e) = store.append(&samples)
            {
                tracing::error!(error = %e, "rule samples not stored");
            }
            let notifications = self.dispatch(&alerts, now_ms);
            report.evaluated_groups += out.evaluated_groups.len();
            // Failed rules are logged by the manager; counted here.
            report.rule_errors += out.errors.len();
            report.samples_written += samples.len();
            report.notifications.extend(notifications);
        }
        if report.evaluated_groups == 0 {
            // Nothing due: group timers (group_wait, group_interval) still run.
            let alerts = lock(&self.manager).all_alerts();
            report.notifications = self.dispatch(&alerts, now_ms);
        }
        report
    }

    /// Hands the alerts to the dispatcher and sends what it flushes.
    fn dispatch(&self, alerts: &[fleetmon_alert::Alert], now_ms: i64) -> Vec<Notification> {
        let notifications = {
            let mut dispatcher = lock(&self.dispatcher);
            dispatcher.observe(alerts, now_ms);
            dispatcher.tick(now_ms)
        };
        for n in &notifications {
            self.send(n);
        }
        notifications
    }

    fn send(&self, n: &Notification) {
        let firing = n.alerts.len();
        let Some(notifier) = &self.notifier else {
            tracing::info!(receiver = %n.receiver, group = %n.group_key, status = ?n.status, alerts = firing, "notification (no receivers configured)");
            return;
        };
        if let Err(e) = notifier.enqueue(payload(n)) {
            tracing::error!(receiver = %n.receiver, group = %n.group_key, error = %e, "notification not accepted by the outbox");
        }
    }

    /// Pending and firing alerts, each with why it is muted and the children it suppresses.
    pub fn listing(&self, now_ms: i64) -> Vec<AlertRow> {
        let alerts = lock(&self.manager).alerts();
        let mut dispatched = lock(&self.dispatcher).alerts(now_ms);
        alerts
            .into_iter()
            .map(|alert| {
                let (muting, suppressed) = match dispatched
                    .iter()
                    .position(|d| d.fingerprint == alert.fingerprint)
                {
                    Some(i) => {
                        let d = dispatched.swap_remove(i);
                        (d.muting, d.suppressed)
                    }
                    None => (Muting::default(), Vec::new()),
                };
                AlertRow {
                    alert,
                    muting,
                    suppressed,
                }
            })
            .collect()
    }

    /// How many alerts fire, are pending, and of the firing ones are muted.
    pub fn counts(&self, now_ms: i64) -> AlertCounts {
        let mut c = AlertCounts::default();
        for row in self.listing(now_ms) {
            match row.alert.state {
                AlertState::Firing if row.muting.is_muted() => {
                    c.firing += 1;
                    c.muted += 1;
                }
                AlertState::Firing => c.firing += 1,
                AlertState::Pending => c.pending += 1,
                AlertState::Inactive => {}
            }
        }
        c
    }

    /// `/api/v1/alerts`: pending and firing alerts with their muting state.
    pub fn alerts_json(&self, now_ms: i64) -> Value {
        let items: Vec<Value> = self
            .listing(now_ms)
            .into_iter()
            .map(|row| {
                let mut v = row.alert.api_json();
                if let Value::Object(map) = &mut v {
                    map.insert(
                        "fingerprint".to_owned(),
                        Value::String(row.alert.fingerprint.to_string()),
                    );
                    map.insert(
                        "muting".to_owned(),
                        serde_json::to_value(&row.muting).unwrap_or(Value::Null),
                    );
                    map.insert(
                        "suppressed".to_owned(),
                        serde_json::to_value(&row.suppressed).unwrap_or(Value::Null),
                    );
                }
                v
            })
            .collect();
        serde_json::json!({ "alerts": items })
    }

    /// `/api/v1/rules`: groups and rules with their health, in Prometheus's shape.
    pub fn rules_json(&self) -> Value {
        serde_json::to_value(lock(&self.manager).rules()).unwrap_or(Value::Null)
    }

    pub fn silences_json(&self, now_ms: i64) -> Value {
        serde_json::to_value(self.silences(now_ms)).unwrap_or(Value::Null)
    }

    /// Every silence kept, most recently changed first.
    pub fn silences(&self, now_ms: i64) -> Vec<SilenceView> {
        lock(&self.dispatcher).silences().list(now_ms)
    }

    /// Adds a silence and saves it; returns its id.
    pub fn add_silence(&self, new: NewSilence, now_ms: i64) -> Result<String, AlertingError> {
        let mut d = lock(&self.dispatcher);
        let id = d
            .silences_mut()
            .add(new, now_ms)
            .map_err(|e| AlertingError::Silence(e.to_string()))?;
        d.silences_mut()
            .save()
            .map_err(|e| AlertingError::Silence(e.to_string()))?;
        Ok(id)
    }

    /// Expires a silence now and saves.
    pub fn expire_silence(&self, id: &str, now_ms: i64) -> Result<(), AlertingError> {
        let mut d = lock(&self.dispatcher);
        d.silences_mut()
            .expire(id, now_ms)
            .map_err(|e| AlertingError::Silence(e.to_string()))?;
        d.silences_mut()
            .save()
            .map_err(|e| AlertingError::Silence(e.to_string()))
    }

    /// The loop's cadence.
    pub fn tick(&self) -> Duration {
        self.config.tick
    }

    /// Stops the delivery threads (what is queued stays in the outbox).
    pub fn shutdown(self) {
        if let Some(n) = self.notifier {
            n.shutdown();
        }
    }
}

/// The dispatcher's notification as the notifier's payload. A suppressed child is listed by
/// its device id (else by its labels).
fn payload(n: &Notification) -> fleetmon_notify::Notification {
    use fleetmon_alert::dispatch::Status;
    use fleetmon_alert::time::format_rfc3339;
    let status = |s: Status| match s {
        Status::Firing => fleetmon_notify::Status::Firing,
        Status::Resolved => fleetmon_notify::Status::Resolved,
    };
    fleetmon_notify::Notification {
        id: n.id.clone(),
        receiver: n.receiver.clone(),
        status: status(n.status),
        group_key: n.group_key.clone(),
        group_labels: n.group_labels.clone(),
        common_labels: n.common_labels.clone(),
        common_annotations: n.common_annotations.clone(),
        alerts: n
            .alerts
            .iter()
            .map(|a| fleetmon_notify::AlertPayload {
                status: status(a.status),
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: format_rfc3339(a.starts_at),
                ends_at: a.ends_at.map(format_rfc3339),
                generator_url: a.generator_url.clone(),
                fingerprint: a.fingerprint.to_string(),
                value: a.value.is_finite().then_some(a.value),
                suppressed: a
                    .suppressed
                    .iter()
                    .map(|c| {
                        c.labels
                            .get("device")
                            .cloned()
                            .unwrap_or_else(|| fleetmon_alert::labels::format_labels(&c.labels))
                    })
                    .collect(),
            })
            .collect(),
        external_url: n.external_url.clone(),
        truncated_alerts: n.truncated_alerts,
    }
}

fn load_rules(config: &AlertingConfig) -> Result<RuleSet, AlertingError> {
    let own = RuleSet::load(&config.rule_files)?;
    if config.builtin_rules {
        Ok(RuleSet::builtin().merged(own)?)
    } else {
        Ok(own)
    }
}

fn load_dispatcher_config(config: &AlertingConfig) -> Result<DispatcherConfig, AlertingError> {
    match &config.dispatcher_file {
        Some(path) => DispatcherConfig::from_yaml(&read(path)?).map_err(|e| AlertingError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        None => Ok(DispatcherConfig::default()),
    }
}
