//! Webhook and Slack delivery over HTTP(S), with `ureq` on rustls and the ring provider.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::backoff::parse_retry_after;
use crate::deliver::{Deliver, Outcome};
use crate::payload::Notification;
use crate::secret::Secret;
use crate::signature;

/// The system's trust store, loaded once.
fn native_roots() -> Arc<Vec<Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<Certificate<'static>>>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        if !loaded.errors.is_empty() {
            warn!(
                errors = loaded.errors.len(),
                "some system CA certificates could not be read"
            );
        }
        Arc::new(
            loaded
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect(),
        )
    }))
}

fn agent(timeout: Duration) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(native_roots()))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .tls_config(tls)
        .build()
        .into()
}

/// Maps an HTTP answer to an outcome: 2xx delivered; 408, 429 and 5xx retried (with
/// `Retry-After`); any other status permanent.
fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    let snippet: String = body.chars().take(200).collect();
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("HTTP {status}: {snippet}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
        },
        _ => Outcome::Permanent {
            reason: format!("HTTP {status}: {snippet}"),
        },
    }
}

fn post(agent: &ureq::Agent, url: &str, headers: &[(&str, String)], body: &[u8]) -> Outcome {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            classify(status, retry_after.as_deref(), &text)
        }
        Err(e) => Outcome::Retry {
            reason: format!("request failed: {e}"),
            retry_after: None,
        },
    }
}

/// Redacts a URL to scheme and host for logs (Slack URLs carry their token in the path).
pub(crate) fn url_for_log(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// A JSON webhook.
pub struct WebhookSender {
    agent: ureq::Agent,
    url: String,
    secret: Option<Secret>,
}

impl WebhookSender {
    pub fn new(url: &str, secret: Option<Secret>, timeout: Duration) -> Self {
        WebhookSender {
            agent: agent(timeout),
            url: url.to_owned(),
            secret,
        }
    }
}

impl Deliver for WebhookSender {
    fn deliver(&mut self, n: &Notification) -> Outcome {
        let body = match n.webhook_body() {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Permanent {
                    reason: format!("cannot encode body: {e}"),
                };
            }
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut headers = vec![
            ("X-Fleetmon-Delivery", n.id.clone()),
            ("X-Fleetmon-Timestamp", ts.to_string()),
        ];
        if let Some(s) = &self.secret {
            headers.push((
                "X-Fleetmon-Signature",
                signature::sign(s.expose().as_bytes(), ts, &body),
            ));
        }
        debug!(id = %n.id, url = %url_for_log(&self.url), "webhook delivery attempt");
        post(&self.agent, &self.url, &headers, &body)
    }
}

/// A Slack-compatible incoming webhook: `{"text": "<summary>"}`.
pub struct SlackSender {
    agent: ureq::Agent,
    url: String,
}

impl SlackSender {
    pub fn new(url: &str, timeout: Duration) -> Self {
        SlackSender {
            agent: agent(timeout),
            url: url.to_owned(),
        }
    }
}

/// The Slack message body for a notification.
pub fn slack_body(n: &Notification) -> Vec<u8> {
    let mut text = n.summary_text();
    // Slack's mrkdwn treats these three specially; escape them as its docs ask.
    text = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    serde_json::json!({ "text": text.trim_end() })
        .to_string()
        .into_bytes()
}

impl Deliver for SlackSender {
    fn deliver(&mut self, n: &Notification) -> Outcome {
        debug!(id = %n.id, url = %url_for_log(&self.url), "slack delivery attempt");
        post(
            &self.agent,
            &self.url,
            &[("X-Fleetmon-Delivery", n.id.clone())],
            &slack_body(n),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify(204, None, ""), Outcome::Delivered);
        assert!(matches!(classify(500, None, ""), Outcome::Retry { .. }));
        assert!(matches!(classify(408, None, ""), Outcome::Retry { .. }));
        assert_eq!(
            classify(429, Some("7"), "slow down"),
            Outcome::Retry {
                reason: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(classify(404, None, ""), Outcome::Permanent { .. }));
        assert!(matches!(classify(301, None, ""), Outcome::Permanent { .. }));
    }

    #[test]
    fn logged_urls_hide_paths_and_credentials() {
        assert_eq!(
            url_for_log("https://user:pw@hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com/…"
        );
    }
}
