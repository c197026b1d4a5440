//! The notification this crate delivers: what the alert engine hands over, and what a webhook
//! receiver gets as its JSON body.
//!
//! The shape follows Alertmanager's webhook payload (version "4") closely, so receivers written
//! for it work unchanged; `id` is added so that every delivery carries a stable idempotency key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Label or annotation set, ordered so that bodies and signatures are deterministic.
pub type LabelSet = BTreeMap<String, String>;

/// Whether a notification (or one alert in it) reports a problem or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    /// `FIRING` or `RESOLVED`, as used in subjects and summaries.
    pub fn upper(self) -> &'static str {
        match self {
            Status::Firing => "FIRING",
            Status::Resolved => "RESOLVED",
        }
    }
}

/// One notification for one receiver: a group of alerts that share `group_labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Stable idempotency id: the same group in the same state gets the same id, so enqueueing
    /// it twice sends it once. Sent to webhooks as `X-Fleetmon-Delivery`.
    pub id: String,
    /// Name of the receiver in [`crate::NotifyConfig::receivers`].
    pub receiver: String,
    pub status: Status,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub group_labels: LabelSet,
    #[serde(default)]
    pub common_labels: LabelSet,
    #[serde(default)]
    pub common_annotations: LabelSet,
    #[serde(default)]
    pub alerts: Vec<AlertPayload>,
    /// Where the operator can look at the alerts (the server's UI).
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// How many alerts were left out of `alerts` by the sender, as in Alertmanager.
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert inside a [`Notification`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertPayload {
    pub status: Status,
    #[serde(default)]
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    /// RFC 3339 time the alert started firing.
    pub starts_at: String,
    /// RFC 3339 time it resolved; absent while it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(
        default,
        rename = "generatorURL",
        skip_serializing_if = "String::is_empty"
    )]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
    /// The value of the rule's expression when it last fired, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why this alert is muted, if it is (silence ids, inhibiting alerts); empty normally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<String>,
}

/// The JSON body of a webhook delivery: the notification plus `version`.
#[derive(Serialize)]
pub(crate) struct WebhookBody<'a> {
    version: &'static str,
    #[serde(flatten)]
    notification: &'a Notification,
}

impl Notification {
    /// The webhook body: the notification as camelCase JSON with `"version": "4"`.
    pub fn webhook_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&WebhookBody {
            version: "4",
            notification: self,
        })
    }

    /// Number of alerts in each state.
    pub fn counts(&self) -> (usize, usize) {
        let firing = self
            .alerts
            .iter()
            .filter(|a| a.status == Status::Firing)
            .count();
        (firing, self.alerts.len() - firing)
    }

    /// One-line title, e.g. `[FIRING:2] DeviceOffline site=berlin`: the status with the number of
    /// alerts in it, the `alertname`, then the other grouping labels.
    pub fn title(&self) -> String {
        let (firing, resolved) = self.counts();
        let n = match self.status {
            Status::Firing => firing,
            Status::Resolved => resolved,
        };
        let mut t = format!("[{}:{}]", self.status.upper(), n);
        let name = self
            .group_labels
            .get("alertname")
            .or_else(|| self.common_labels.get("alertname"));
        if let Some(name) = name {
            t.push(' ');
            t.push_str(name);
        }
        for (k, v) in &self.group_labels {
            if k != "alertname" {
                t.push_str(&format!(" {k}={v}"));
            }
        }
        t
    }

    /// A plain-text summary: the title, then one line per alert with its labels that differ
    /// from the common ones and its `summary` (or `description`) annotation.
    pub fn summary_text(&self) -> String {
        let mut s = self.title();
        s.push('\n');
        if let Some(summary) = self.common_annotations.get("summary") {
            s.push_str(summary);
            s.push('\n');
        }
        for a in &self.alerts {
            let own: Vec<String> = a
                .labels
                .iter()
                .filter(|(k, v)| self.common_labels.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("- [{}]", a.status.upper()));
            if !own.is_empty() {
                s.push(' ');
                s.push_str(&own.join(" "));
            }
            let text = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"));
            if let Some(text) = text
                && self.common_annotations.get("summary") != Some(text)
            {
                s.push_str(": ");
                s.push_str(text);
            }
            if let Some(v) = a.value {
                s.push_str(&format!(" (value {v})"));
            }
            s.push_str(&format!(" since {}", a.starts_at));
            s.push('\n');
        }
        if self.truncated_alerts > 0 {
            s.push_str(&format!("... and {} more\n", self.truncated_alerts));
        }
        if !self.external_url.is_empty() {
            s.push_str(&self.external_url);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Notification {
        let alert = |dev: &str| AlertPayload {
            status: Status::Firing,
            labels: [
                ("alertname", "DeviceOffline"),
                ("site", "berlin"),
                ("device", dev),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: [("summary".to_string(), format!("{dev} is offline"))].into(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: None,
            generator_url: String::new(),
            fingerprint: format!("fp-{dev}"),
            value: Some(0.0),
            suppressed: vec![],
        };
        Notification {
            id: "n1".into(),
            receiver: "ops".into(),
            status: Status::Firing,
            group_key: "{}:{alertname=\"DeviceOffline\"}".into(),
            group_labels: [
                ("alertname".to_string(), "DeviceOffline".to_string()),
                ("site".to_string(), "berlin".to_string()),
            ]
            .into(),
            common_labels: [
                ("alertname".to_string(), "DeviceOffline".to_string()),
                ("site".to_string(), "berlin".to_string()),
            ]
            .into(),
            common_annotations: LabelSet::new(),
            alerts: vec![alert("dev1"), alert("dev2")],
            external_url: "http://127.0.0.1:8427/".into(),
            truncated_alerts: 0,
        }
    }

    #[test]
    fn title_counts_alerts_and_names_the_group() {
        assert_eq!(sample().title(), "[FIRING:2] DeviceOffline site=berlin");
    }

    #[test]
    fn body_is_alertmanager_shaped() {
        let n = sample();
        let v: serde_json::Value = serde_json::from_slice(&n.webhook_body().unwrap()).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["groupLabels"]["site"], "berlin");
        assert_eq!(v["externalURL"], "http://127.0.0.1:8427/");
        assert_eq!(v["alerts"][0]["startsAt"], "2026-01-01T00:00:00Z");
        assert_eq!(v["alerts"][1]["fingerprint"], "fp-dev2");
        assert!(v["alerts"][0].get("endsAt").is_none());
        // and it reads back as a notification (the extra `version` is ignored)
        let back: Notification = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn summary_lists_each_alert_with_its_own_labels() {
        let s = sample().summary_text();
        assert!(s.contains("- [FIRING] device=dev1: dev1 is offline"), "{s}");
        assert!(s.contains("device=dev2"), "{s}");
        assert!(!s.contains("site=berlin: "), "{s}");
    }
}
