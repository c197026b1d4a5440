//! The dispatcher: observes alerts, decides which are muted (silences, inhibition, topology
//! suppression, flap damping), groups the rest by route, and emits [`Notification`]s with
//! Alertmanager's timing (`group_wait`, `group_interval`, `repeat_interval`). Its state —
//! what each group last notified, the notification counter, alert flap history — is
//! persisted so a restart neither loses a firing alert nor notifies it again.
//!
//! # One flush of a group
//! A group is created by the first unmuted firing alert routed to it and flushed
//! `group_wait` later, then every `group_interval`. At a flush:
//! - *firing* = its routed firing alerts that are not muted;
//! - *resolved* = alerts it last notified as firing that no longer fire (sent even if a
//!   silence now matches them, so a receiver is never left with a stale firing alert);
//! - it sends when a firing alert was not notified before (or its list of suppressed
//!   children changed), when something resolved, or — with anything firing — when
//!   `repeat_interval` has passed since its last notification;
//! - a muted alert that was notified as firing stays as notified (no resolve is sent for
//!   muting); a flapping alert is left out entirely until it is stable again.
//!
//! Call [`Dispatcher::observe`] with the manager's alerts, then [`Dispatcher::tick`], at
//! the evaluation cadence or more often; times are the caller's.

pub mod config;
pub mod notification;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::alert::{Alert, AlertState};
use crate::labels::{ALERTNAME, Fingerprint, LabelSet};
use crate::persist::{StateError, load_json, save_json};
use crate::silence::Silences;

pub use config::{
    ConfigError, DispatcherConfig, FlapConfig, GroupBy, InhibitRule, Route, RouteConfig,
    TopologyConfig,
};
pub use notification::{Notification, NotificationAlert, Status, SuppressedAlert};

/// File names inside the dispatcher's state directory.
pub const STATE_FILE: &str = "dispatcher.json";
pub const SILENCES_FILE: &str = "silences.json";

const STATE_VERSION: u32 = 1;

/// What the dispatcher knows of one alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    labels: LabelSet,
    annotations: LabelSet,
    starts_at: i64,
    ends_at: Option<i64>,
    firing: bool,
    #[serde(with = "crate::alert::value_text")]
    value: f64,
    /// Times it changed between firing and not firing, within the flap window.
    transitions: Vec<i64>,
    flapping: bool,
}

/// One aggregation group.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    receiver: String,
    route_key: String,
    group_labels: LabelSet,
    created_at: i64,
    next_flush_at: i64,
    last_sent_at: Option<i64>,
    /// Alerts last notified as firing, each with the children listed under it.
    notified: BTreeMap<Fingerprint, Vec<Fingerprint>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    sequence: u64,
    alerts: BTreeMap<Fingerprint, Entry>,
    groups: BTreeMap<String, GroupState>,
}

/// Why an alert is not notified right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Muting {
    /// Ids of the silences muting it.
    pub silenced_by: Vec<String>,
    /// Firing alerts inhibiting it.
    pub inhibited_by: Vec<Fingerprint>,
    /// The gateway alert it is folded into.
    pub suppressed_by: Option<Fingerprint>,
    /// Held by flap damping.
    pub flapping: bool,
}

impl Muting {
    pub fn is_muted(&self) -> bool {
        !self.silenced_by.is_empty()
            || !self.inhibited_by.is_empty()
            || self.suppressed_by.is_some()
            || self.flapping
    }
}

/// An alert as the dispatcher sees it (for an API listing).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchedAlert {
    pub fingerprint: Fingerprint,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub firing: bool,
    #[serde(with = "crate::time::rfc3339")]
    pub starts_at: i64,
    pub muting: Muting,
    /// Children folded into it.
    pub suppressed: Vec<Fingerprint>,
}

/// The dispatcher. See the module docs.
pub struct Dispatcher {
    config: DispatcherConfig,
    root: Route,
    state: State,
    silences: Silences,
    state_path: Option<PathBuf>,
    last_saved: Vec<u8>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("alerts", &self.state.alerts.len())
            .field("groups", &self.state.groups.len())
            .finish_non_exhaustive()
    }
}

/// Mute decisions for the firing alerts, and the children under each gateway alert.
struct Mutes {
    by_alert: HashMap<Fingerprint, Muting>,
    children: HashMap<Fingerprint, Vec<Fingerprint>>,
}

impl Dispatcher {
    /// In memory only.
    pub fn new(config: DispatcherConfig) -> Result<Dispatcher, ConfigError> {
        config.validate()?;
        Ok(Dispatcher {
            root: Route::compile(&config.route),
            config,
            state: State::default(),
            silences: Silences::new(),
            state_path: None,
            last_saved: Vec::new(),
        })
    }

    /// Persisted in `dir` (`dispatcher.json`, `silences.json`), restoring what is there.
    pub fn open(config: DispatcherConfig, dir: &Path) -> Result<Dispatcher, DispatchError> {
        let mut d = Dispatcher::new(config)?;
        let path = dir.join(STATE_FILE);
        if let Some(state) = load_json::<State>(&path)? {
            if state.version == STATE_VERSION {
                d.state = state;
            } else {
                warn!(path = %path.display(), version = state.version, "unknown dispatcher state version; ignored");
            }
        }
        d.state_path = Some(path);
        d.silences = Silences::open(&dir.join(SILENCES_FILE))?;
        Ok(d)
    }

    /// Replaces the configuration; groups whose route no longer exists flush with the
    /// root route's timing until their alerts resolve.
    pub fn set_config(&mut self, config: DispatcherConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.root = Route::compile(&config.route);
        self.config = config;
        Ok(())
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    pub fn silences(&self) -> &Silences {
        &self.silences
    }

    pub fn silences_mut(&mut self) -> &mut Silences {
        &mut self.silences
    }

    /// Takes in the current alerts (all of them: what the manager's `all_alerts` gives).
    /// Firing alerts are firing; an alert that fired before and is now absent, pending or
    /// inactive is resolved (at its `resolved_at` if given, else at `now_ms`).
    pub fn observe(&mut self, alerts: &[Alert], now_ms: i64) {
        let flap = self.config.flap.clone();
        let mut seen = HashSet::new();
        for a in alerts {
            if a.state != AlertState::Firing {
                continue;
            }
            seen.insert(a.fingerprint);
            let e = self
                .state
                .alerts
                .entry(a.fingerprint)
                .or_insert_with(|| Entry {
                    labels: a.labels.clone(),
                    annotations: LabelSet::new(),
                    starts_at: a.active_at,
                    ends_at: None,
                    firing: false,
                    value: a.value,
                    transitions: Vec::new(),
                    flapping: false,
                });
            if !e.firing {
                e.firing = true;
                e.starts_at = a.active_at;
                e.ends_at = None;
                transition(e, a.fingerprint, now_ms, &flap);
            }
            e.labels = a.labels.clone();
            e.annotations = a.annotations.clone();
            e.value = a.value;
        }
        let resolved_at: HashMap<Fingerprint, i64> = alerts
            .iter()
            .filter_map(|a| a.resolved_at.map(|t| (a.fingerprint, t)))
            .collect();
        for (fp, e) in &mut self.state.alerts {
            if e.firing && !seen.contains(fp) {
                e.firing = false;
                e.ends_at = Some(resolved_at.get(fp).copied().unwrap_or(now_ms));
                transition(e, *fp, now_ms, &flap);
            }
        }
    }

    /// Flushes the groups that are due and returns their notifications; persists the
    /// advanced state before returning them.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Notification> {
        self.settle_flapping(now_ms);
        let mutes = self.mutes(now_ms);
        let root = self.root.clone();
        let routes = route_index(&root);

        // Where each firing alert routes, and new groups for unmuted ones.
        let mut members: HashMap<String, Vec<Fingerprint>> = HashMap::new();
        for (fp, e) in &self.state.alerts {
            if !e.firing {
                continue;
            }
            for route in root.matching(&e.labels) {
                let group_labels = route.group_labels(&e.labels);
                let key = route.group_key(&group_labels);
                members.entry(key.clone()).or_default().push(*fp);
                let muted = mutes.by_alert.get(fp).is_some_and(Muting::is_muted);
                if !muted && !self.state.groups.contains_key(&key) {
                    self.state.groups.insert(
                        key,
                        GroupState {
                            receiver: route.receiver.clone(),
                            route_key: route.key.clone(),
                            group_labels,
                            created_at: now_ms,
                            next_flush_at: now_ms + route.group_wait_ms,
                            last_sent_at: None,
                            notified: BTreeMap::new(),
                        },
                    );
                }
            }
        }

        let mut out = Vec::new();
        let mut empty_groups = Vec::new();
        let keys: Vec<String> = self.state.groups.keys().cloned().collect();
        for key in keys {
            let Some(group) = self.state.groups.get(&key) else {
                continue;
            };
            if group.next_flush_at > now_ms {
                continue;
            }
            let route = routes
                .get(group.route_key.as_str())
                .copied()
                .unwrap_or(&root);
            let routed: BTreeSet<Fingerprint> = members
                .get(&key)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let flush = self.flush(&key, route, &routed, &mutes, now_ms);
            if let Some(n) = flush {
                out.push(n);
            }
            if let Some(group) = self.state.groups.get_mut(&key) {
                let gi = route.group_interval_ms.max(1);
                let behind = now_ms - group.next_flush_at;
                group.next_flush_at += (behind / gi + 1) * gi;
                let active = routed
                    .iter()
                    .any(|fp| !mutes.by_alert.get(fp).is_some_and(Muting::is_muted));
                if group.notified.is_empty() && !active {
                    empty_groups.push(key);
                }
            }
        }
        for key in empty_groups {
            self.state.groups.remove(&key);
        }
        self.gc(now_ms);
        self.silences.gc(now_ms);
        if let Err(e) = self.save() {
            warn!(error = %e, "dispatcher state not saved; a restart may repeat these notifications");
        }
        if let Err(e) = self.silences.save() {
            warn!(error = %e, "silences not saved");
        }
        out
    }

    fn flush(
        &mut self,
        key: &str,
        route: &Route,
        routed: &BTreeSet<Fingerprint>,
        mutes: &Mutes,
        now_ms: i64,
    ) -> Option<Notification> {
        let alerts = &self.state.alerts;
        let group = self.state.groups.get_mut(key)?;
        let muting = |fp: &Fingerprint| mutes.by_alert.get(fp).cloned().unwrap_or_default();
        let firing: Vec<Fingerprint> = routed
            .iter()
            .filter(|fp| !muting(fp).is_muted())
            .copied()
            .collect();
        let mut resolved = Vec::new();
        let mut dropped = Vec::new();
        for fp in group.notified.keys() {
            match alerts.get(fp) {
                None => dropped.push(*fp),
                Some(e) if e.flapping => {}
                Some(e) if !e.firing => resolved.push(*fp),
                // Still firing but routed elsewhere now (configuration changed).
                Some(_) if !routed.contains(fp) => dropped.push(*fp),
                Some(_) => {}
            }
        }
        for fp in dropped {
            group.notified.remove(&fp);
        }
        let children = |fp: &Fingerprint| -> Vec<Fingerprint> {
            let mut c = mutes.children.get(fp).cloned().unwrap_or_default();
            c.sort();
            c
        };
        let changed = !resolved.is_empty()
            || firing
                .iter()
                .any(|fp| group.notified.get(fp) != Some(&children(fp)));
        let repeat = !firing.is_empty()
            && group
                .last_sent_at
                .is_none_or(|t| now_ms - t >= route.repeat_interval_ms);
        if !changed && !repeat {
            return None;
        }
        self.state.sequence += 1;
        let seq = self.state.sequence;
        let mut items = Vec::new();
        for fp in &firing {
            let Some(e) = alerts.get(fp) else { continue };
            let suppressed = children(fp)
                .iter()
                .filter_map(|c| {
                    alerts.get(c).map(|ce| SuppressedAlert {
                        labels: ce.labels.clone(),
                        fingerprint: *c,
                        starts_at: ce.starts_at,
                    })
                })
                .collect();
            items.push(NotificationAlert {
                status: Status::Firing,
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                starts_at: e.starts_at,
                ends_at: None,
                generator_url: String::new(),
                fingerprint: *fp,
                value: e.value,
                state: AlertState::Firing,
                suppressed,
            });
            group.notified.insert(*fp, children(fp));
        }
        for fp in &resolved {
            let Some(e) = alerts.get(fp) else { continue };
            items.push(NotificationAlert {
                status: Status::Resolved,
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                starts_at: e.starts_at,
                ends_at: Some(e.ends_at.unwrap_or(now_ms)),
                generator_url: String::new(),
                fingerprint: *fp,
                value: e.value,
                state: AlertState::Inactive,
                suppressed: Vec::new(),
            });
            group.notified.remove(fp);
        }
        items.sort_by(|a, b| {
            (a.status != Status::Firing, &a.labels).cmp(&(b.status != Status::Firing, &b.labels))
        });
        group.last_sent_at = Some(now_ms);
        let status = if firing.is_empty() {
            Status::Resolved
        } else {
            Status::Firing
        };
        info!(group = %key, receiver = %group.receiver, ?status, alerts = items.len(), sequence = seq, "notification");
        Some(Notification {
            version: "4".into(),
            id: format!("{key}#{seq}"),
            sequence: seq,
            group_key: key.to_owned(),
            receiver: group.receiver.clone(),
            status,
            common_labels: notification::common(items.iter().map(|a| &a.labels)),
            common_annotations: notification::common(items.iter().map(|a| &a.annotations)),
            group_labels: group.group_labels.clone(),
            alerts: items,
            external_url: String::new(),
            truncated_alerts: 0,
        })
    }

    /// Ends flap damping for alerts stable for the hold time.
    fn settle_flapping(&mut self, now_ms: i64) {
        let hold = self.config.flap.hold.ms();
        for (fp, e) in &mut self.state.alerts {
            if e.flapping && e.transitions.last().is_none_or(|t| now_ms - t >= hold) {
                e.flapping = false;
                e.transitions.clear();
                info!(fingerprint = %fp, "alert stable again; flap damping ended");
            }
        }
    }

    fn mutes(&self, now_ms: i64) -> Mutes {
        let alerts = &self.state.alerts;
        let firing: Vec<(&Fingerprint, &Entry)> = alerts.iter().filter(|(_, e)| e.firing).collect();
        let mut by_alert: HashMap<Fingerprint, Muting> = HashMap::new();
        let mut children: HashMap<Fingerprint, Vec<Fingerprint>> = HashMap::new();
        // Topology: (alertname, device) of firing family alerts.
        let topo = &self.config.topology;
        if topo.enabled {
            let mut down: HashMap<(&str, &str), Fingerprint> = HashMap::new();
            for (fp, e) in &firing {
                let name = e.labels.get(ALERTNAME).map_or("", String::as_str);
                if let Some(dev) = e.labels.get(&topo.device_label)
                    && topo.alertnames.iter().any(|n| n == name)
                {
                    down.insert((name, dev.as_str()), **fp);
                }
            }
            for (fp, e) in &firing {
                let name = e.labels.get(ALERTNAME).map_or("", String::as_str);
                let Some(gw) = e.labels.get(&topo.gateway_label).filter(|g| !g.is_empty()) else {
                    continue;
                };
                if let Some(gfp) = down.get(&(name, gw.as_str())).filter(|g| *g != *fp) {
                    by_alert.entry(**fp).or_default().suppressed_by = Some(*gfp);
                    children.entry(*gfp).or_default().push(**fp);
                }
            }
        }
        // Inhibition: sources indexed by their `equal` label values.
        for rule in &self.config.inhibit_rules {
            let mut sources: HashMap<Vec<&str>, Vec<(&Fingerprint, &Entry)>> = HashMap::new();
            for (fp, e) in &firing {
                if crate::labels::matches_all(&rule.source_matchers, &e.labels) {
                    let k = rule
                        .equal
                        .iter()
                        .map(|l| e.labels.get(l).map_or("", String::as_str))
                        .collect();
                    sources.entry(k).or_default().push((fp, e));
                }
            }
            if sources.is_empty() {
                continue;
            }
            for (fp, e) in &firing {
                let k: Vec<&str> = rule
                    .equal
                    .iter()
                    .map(|l| e.labels.get(l).map_or("", String::as_str))
                    .collect();
                let Some(cands) = sources.get(&k) else {
                    continue;
                };
                for (sfp, s) in cands {
                    if sfp != fp && rule.inhibits(&s.labels, &e.labels) {
                        by_alert.entry(**fp).or_default().inhibited_by.push(**sfp);
                        break;
                    }
                }
            }
        }
        for (fp, e) in &firing {
            let silenced = self.silences.muting(&e.labels, now_ms);
            if !silenced.is_empty() {
                by_alert.entry(**fp).or_default().silenced_by = silenced;
            }
            if e.flapping {
                by_alert.entry(**fp).or_default().flapping = true;
            }
        }
        Mutes { by_alert, children }
    }

    /// Every alert the dispatcher knows, with why it is muted (for an API listing).
    pub fn alerts(&self, now_ms: i64) -> Vec<DispatchedAlert> {
        let mutes = self.mutes(now_ms);
        self.state
            .alerts
            .iter()
            .map(|(fp, e)| DispatchedAlert {
                fingerprint: *fp,
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                firing: e.firing,
                starts_at: e.starts_at,
                muting: mutes.by_alert.get(fp).cloned().unwrap_or_else(|| Muting {
                    flapping: e.flapping,
                    ..Muting::default()
                }),
                suppressed: mutes.children.get(fp).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Drops resolved alerts no group still owes a resolution, once the flap window and
    /// hold time have passed.
    fn gc(&mut self, now_ms: i64) {
        let keep_ms = if self.config.flap.enabled {
            self.config.flap.window.ms().max(self.config.flap.hold.ms())
        } else {
            0
        };
        let referenced: HashSet<Fingerprint> = self
            .state
            .groups
            .values()
            .flat_map(|g| g.notified.keys().copied())
            .collect();
        self.state.alerts.retain(|fp, e| {
            e.firing || referenced.contains(fp) || e.ends_at.is_some_and(|t| now_ms - t < keep_ms)
        });
    }

    /// Writes the state file if it changed (tick does this itself).
    pub fn save(&mut self) -> Result<(), StateError> {
        let Some(path) = self.state_path.clone() else {
            return Ok(());
        };
        self.state.version = STATE_VERSION;
        save_json(&path, &self.state, &mut self.last_saved)
    }
}

/// Records a firing/not-firing change and marks the alert flapping when it changed more
/// than `max_changes` times within `window`.
fn transition(e: &mut Entry, fp: Fingerprint, now_ms: i64, flap: &FlapConfig) {
    if !flap.enabled {
        return;
    }
    e.transitions.push(now_ms);
    let since = now_ms - flap.window.ms();
    e.transitions.retain(|t| *t > since);
    if !e.flapping && e.transitions.len() > flap.max_changes {
        e.flapping = true;
        info!(fingerprint = %fp, changes = e.transitions.len(), "alert is flapping; notifications held");
    }
}

fn route_index(root: &Route) -> HashMap<&str, &Route> {
    let mut out = HashMap::new();
    let mut stack = vec![root];
    while let Some(r) = stack.pop() {
        out.insert(r.key.as_str(), r);
        stack.extend(r.routes.iter());
    }
    out
}

/// Opening a persisted dispatcher failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
}
