//! What the dispatcher emits: one [`Notification`] per group flush, in a JSON shape close to
//! Alertmanager's webhook payload (version "4": `receiver`, `status`, `alerts[]`,
//! `groupLabels`, `commonLabels`, `commonAnnotations`, `groupKey`, ...) plus fleetmon's `id`
//! (unique, for idempotent delivery), `sequence`, and per alert `value`, `state` and
//! `suppressed` (children folded in by topology suppression).

use serde::{Deserialize, Serialize};

use crate::alert::AlertState;
use crate::labels::{Fingerprint, LabelSet};

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// One notification to deliver to one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Always "4" (Alertmanager's webhook payload version this follows).
    pub version: String,
    /// `{groupKey}#{sequence}`: never reused, also across restarts, so delivery can be
    /// made idempotent on it.
    pub id: String,
    /// The dispatcher's notification counter (persisted, strictly increasing).
    pub sequence: u64,
    pub group_key: String,
    pub receiver: String,
    /// Firing if any alert in it fires.
    pub status: Status,
    pub alerts: Vec<NotificationAlert>,
    pub group_labels: LabelSet,
    /// Labels every alert has with the same value.
    pub common_labels: LabelSet,
    pub common_annotations: LabelSet,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert in a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationAlert {
    pub status: Status,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    #[serde(with = "crate::time::rfc3339")]
    pub starts_at: i64,
    /// `None` while firing (printed as Alertmanager's zero time).
    #[serde(with = "crate::time::rfc3339_or_zero")]
    pub ends_at: Option<i64>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: Fingerprint,
    /// The rule expression's last value.
    #[serde(with = "crate::alert::value_text")]
    pub value: f64,
    pub state: AlertState,
    /// Children whose own alerts are folded into this one (topology suppression).
    #[serde(default)]
    pub suppressed: Vec<SuppressedAlert>,
}

/// A child alert listed under its gateway's alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuppressedAlert {
    pub labels: LabelSet,
    pub fingerprint: Fingerprint,
    #[serde(with = "crate::time::rfc3339")]
    pub starts_at: i64,
}

/// Labels (or annotations) every set has with the same value.
pub(crate) fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> LabelSet {
    let Some(first) = sets.next() else {
        return LabelSet::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}
