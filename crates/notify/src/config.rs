//! Configuration: receivers and their integrations, retry policy, outbox bounds, routes.
//!
//! Read from TOML (`deny_unknown_fields`, durations as humantime strings like `"30s"`), then
//! checked by [`NotifyConfig::validate`], whose errors name the key to fix. Secrets are only
//! read when the notifier starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretSource};

/// Everything the notifier needs. In a server's TOML this is one table, e.g. `[notify]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Receivers by name; a notification's `receiver` names one.
    #[serde(default)]
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Optional label routes, used by [`crate::Router`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub outbox: OutboxLimits,
}

/// One receiver: any number of integrations, each delivered (and retried) on its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<WebhookConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slack: Vec<SlackConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<EmailConfig>,
    /// Applies to each integration of this receiver separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A JSON webhook, optionally HMAC-SHA256 signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC key inline (prefer `secret_file` or `secret_env`).
    #[serde(default, skip_serializing)]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    #[serde(default = "default_http_timeout", with = "human")]
    pub timeout: Duration,
}

impl WebhookConfig {
    /// An unsigned webhook with the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: None,
            secret_file: None,
            secret_env: None,
            timeout: default_http_timeout(),
        }
    }

    /// Where the HMAC key comes from, if one is configured.
    pub fn secret_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_keys(
            "secret",
            self.secret.clone(),
            self.secret_file.clone(),
            self.secret_env.clone(),
        )
    }
}

/// A Slack-compatible incoming webhook (`{"text": ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub url: String,
    #[serde(default = "default_http_timeout", with = "human")]
    pub timeout: Duration,
}

impl SlackConfig {
    pub fn new(url: impl Into<String>) -> Self {
        SlackConfig {
            url: url.into(),
            timeout: default_http_timeout(),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text; only for a relay on the same host or a trusted network.
    None,
    /// Upgrade with STARTTLS, refusing to send if the server cannot (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465 by default).
    Tls,
}

/// Email over SMTP: a plain-text message per notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    /// Defaults to 25, 587 or 465 by `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_http_timeout", with = "human")]
    pub timeout: Duration,
}

impl EmailConfig {
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }

    pub fn password_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_keys(
            "password",
            self.password.clone(),
            self.password_file.clone(),
            self.password_env.clone(),
        )
    }
}

/// Token bucket: `per_minute` tokens a minute, at most `burst` (default: `per_minute`) saved
/// up. A notification over the limit waits in the outbox; none is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_minute: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// When to try again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait after the first failure; doubles on each further one.
    #[serde(default = "default_initial_backoff", with = "human")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts (a receiver's `Retry-After` may ask for more, up to an hour).
    #[serde(default = "default_max_backoff", with = "human")]
    pub max_backoff: Duration,
    /// Age (since enqueue) after which a notification that still fails goes to the dead letter.
    #[serde(default = "default_max_age", with = "human")]
    pub max_age: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_age: default_max_age(),
        }
    }
}

/// Bounds on the outbox's disk use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxLimits {
    /// Most notifications waiting at once; enqueue is refused beyond.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Most bytes of waiting notifications; enqueue is refused beyond.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How long the ids of finished notifications are remembered, so that enqueueing one again
    /// is still a no-op.
    #[serde(default = "default_keep_finished", with = "human")]
    pub keep_finished_ids: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_entries: default_max_entries(),
            max_bytes: default_max_bytes(),
            keep_finished_ids: default_keep_finished(),
        }
    }
}

/// A label route: when every matcher matches the notification's common labels, it goes to
/// `receiver`. A matcher value `~REGEX` is a regular expression (anchored); any other value
/// must match exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    pub receiver: String,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_entries() -> usize {
    10_000
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_keep_finished() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A config value that is wrong, with the key that holds it.
#[derive(Debug, thiserror::Error)]
#[error("notify config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("`{url}` is not an http:// or https:// URL"),
        ))
    }
}

impl NotifyConfig {
    /// Parses TOML (the notify table's contents) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: NotifyConfig = toml::from_str(text).map_err(|e| bad("(toml)", e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what can be checked without reading secrets or touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, r) in &self.receivers {
            let k = format!("receivers.{name}");
            if name.is_empty() || name.contains('/') {
                return Err(bad(&k, "receiver names must be non-empty and without `/`"));
            }
            if r.webhook.is_empty() && r.slack.is_empty() && r.email.is_empty() {
                return Err(bad(&k, "no webhook, slack or email integration"));
            }
            for (i, w) in r.webhook.iter().enumerate() {
                let k = format!("{k}.webhook[{i}]");
                check_url(&format!("{k}.url"), &w.url)?;
                w.secret_source().map_err(|p| bad(&k, p))?;
            }
            for (i, s) in r.slack.iter().enumerate() {
                check_url(&format!("{k}.slack[{i}].url"), &s.url)?;
            }
            for (i, e) in r.email.iter().enumerate() {
                let k = format!("{k}.email[{i}]");
                if e.smtp_host.is_empty() {
                    return Err(bad(format!("{k}.smtp_host"), "empty"));
                }
                if e.to.is_empty() {
                    return Err(bad(format!("{k}.to"), "no recipients"));
                }
                crate::email::parse_mailbox(&e.from).map_err(|p| bad(format!("{k}.from"), p))?;
                for to in &e.to {
                    crate::email::parse_mailbox(to).map_err(|p| bad(format!("{k}.to"), p))?;
                }
                let pw = e.password_source().map_err(|p| bad(&k, p))?;
                if pw.is_some() && e.username.is_none() {
                    return Err(bad(format!("{k}.username"), "a password needs a username"));
                }
            }
            if let Some(rl) = r.rate_limit
                && (rl.per_minute == 0 || rl.burst == Some(0))
            {
                return Err(bad(format!("{k}.rate_limit"), "must allow at least one"));
            }
        }
        let rt = &self.retry;
        if rt.initial_backoff.is_zero() || rt.initial_backoff > rt.max_backoff {
            return Err(bad(
                "retry.initial_backoff",
                "must be positive and at most retry.max_backoff",
            ));
        }
        if self.outbox.max_entries == 0 || self.outbox.max_bytes == 0 {
            return Err(bad("outbox", "max_entries and max_bytes must be positive"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !self.receivers.contains_key(&route.receiver) {
                return Err(bad(
                    format!("routes[{i}].receiver"),
                    format!("no receiver named `{}`", route.receiver),
                ));
            }
        }
        crate::router::Router::new(&self.routes).map_err(|e| bad("routes", e.to_string()))?;
        Ok(())
    }
}

/// Durations as humantime strings (`"500ms"`, `"30s"`, `"5m"`).
mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration `{s}` ({e}); e.g. \"30s\""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[retry]
initial_backoff = "500ms"
max_backoff = "1m"
max_age = "12h"

[outbox]
max_entries = 500

[receivers.ops]
rate_limit = { per_minute = 30, burst = 5 }

[[receivers.ops.webhook]]
url = "https://hooks.example.net/fleetmon"
secret_env = "OPS_HOOK_KEY"
timeout = "5s"

[[receivers.ops.slack]]
url = "https://hooks.slack.example/services/T/B/X"

[[receivers.ops.email]]
smtp_host = "smtp.example.net"
tls = "starttls"
username = "alerts"
password_file = "/etc/fleetmon/smtp-password"
from = "fleetmon <alerts@example.net>"
to = ["oncall@example.net"]

[[routes]]
matchers = { severity = "critical", site = "~ber.*" }
receiver = "ops"
"#;

    #[test]
    fn example_parses_and_validates() {
        let c = NotifyConfig::from_toml(EXAMPLE).unwrap();
        let ops = &c.receivers["ops"];
        assert_eq!(ops.webhook[0].timeout, Duration::from_secs(5));
        assert_eq!(ops.email[0].port(), 587);
        assert_eq!(ops.rate_limit.unwrap().burst, Some(5));
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(500));
        assert_eq!(c.outbox.max_entries, 500);
        assert_eq!(c.outbox.max_bytes, 64 << 20);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/notifications.md");
        let start = doc.find("```toml\n").expect("a toml block in the doc") + "```toml\n".len();
        let len = doc[start..].find("```").expect("end of the toml block");
        let c = NotifyConfig::from_toml(&doc[start..start + len]).unwrap();
        assert_eq!(c.receivers["ops"].email[0].port(), 587);
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = NotifyConfig::from_toml("[receivers.ops]\nwebhok = []\n").unwrap_err();
        assert!(e.to_string().contains("webhok"), "{e}");
    }

    #[test]
    fn two_secret_sources_are_refused() {
        let t = "[[receivers.a.webhook]]\nurl = \"http://x\"\nsecret = \"k\"\nsecret_env = \"K\"\n";
        let e = NotifyConfig::from_toml(t).unwrap_err();
        assert!(e.to_string().contains("receivers.a.webhook[0]"), "{e}");
    }

    #[test]
    fn route_to_unknown_receiver_is_refused() {
        let t = "[[receivers.a.slack]]\nurl = \"http://x\"\n[[routes]]\nreceiver = \"b\"\n";
        let e = NotifyConfig::from_toml(t).unwrap_err();
        assert!(e.to_string().contains("routes[0].receiver"), "{e}");
    }

    #[test]
    fn inline_secrets_are_not_written_back() {
        let t = "[[receivers.a.webhook]]\nurl = \"http://x\"\nsecret = \"hunter2\"\n";
        let c = NotifyConfig::from_toml(t).unwrap();
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
