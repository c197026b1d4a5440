//! An alert of a rule: its labels, state and times, as the evaluator keeps it, persists it
//! and hands it to the dispatcher and the API.

use serde::{Deserialize, Serialize};

use crate::labels::{Fingerprint, LabelSet};
use crate::time::format_rfc3339;

/// Where an alert is in its lifecycle: inactive → pending → firing → inactive (resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved (kept for a while so the resolution is seen), or never active.
    Inactive,
    /// The expression returns it, but not yet for the rule's `for` duration.
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert. Times are ms since the epoch, from the caller's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's group and name.
    pub group: String,
    pub rule: String,
    /// The result sample's labels (no `__name__`), the rule's labels, and `alertname`.
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub state: AlertState,
    /// When it became pending (Prometheus's `activeAt`; Alertmanager's `startsAt`).
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// Since when it has been held firing by `keep_firing_for` although the expression no
    /// longer returns it.
    pub keep_firing_since: Option<i64>,
    /// The expression's value at the last evaluation that returned the alert.
    #[serde(with = "value_text")]
    pub value: f64,
    pub fingerprint: Fingerprint,
}

impl Alert {
    /// The alert in Prometheus's `/api/v1/alerts` shape.
    pub fn api_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "state": self.state.as_str(),
            "activeAt": format_rfc3339(self.active_at),
            "value": fleetmon_promql::format_value(self.value),
        });
        if let (Some(k), Some(obj)) = (self.keep_firing_since, v.as_object_mut()) {
            obj.insert("keepFiringSince".into(), format_rfc3339(k).into());
        }
        v
    }
}

/// A float as Prometheus prints it (`NaN`, `+Inf` survive JSON).
pub(crate) mod value_text {
    pub fn serialize<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fleetmon_promql::format_value(*v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("invalid value `{other}`"))),
        }
    }
}
