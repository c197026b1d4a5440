//! Notification delivery that is never lost: webhook (JSON, HMAC-SHA256 signed), Slack-compatible
//! webhook and SMTP email, behind a durable outbox with retries, backoff and rate limits.
//!
//! # Layout
//!
//! - [`payload`]: the [`Notification`] the alert engine hands over (Alertmanager-shaped JSON).
//! - [`config`]: receivers, integrations, retry policy, outbox bounds, routes ([`NotifyConfig`]).
//! - [`outbox`]: the on-disk queue; what is accepted is delivered once, across crashes.
//! - [`notifier`]: the delivery threads, one per integration ([`Notifier`]).
//! - [`http`] and [`email`]: one attempt each, mapped to an [`Outcome`] by [`deliver`].
//! - [`backoff`]: exponential backoff with jitter, `Retry-After`, the token bucket.
//! - [`signature`]: the webhook signature scheme, for senders and receivers.
//! - [`router`]: optional label routes to receivers.
//! - [`secret`]: secrets from inline values, files or environment variables, never logged.
//!
//! See `docs/notifications.md` for the guarantees and the signature scheme.

pub mod backoff;
pub mod config;
pub mod deliver;
pub mod email;
pub mod http;
pub mod notifier;
pub mod outbox;
pub mod payload;
pub mod router;
pub mod secret;
pub mod signature;

pub use config::{
    ConfigError, EmailConfig, NotifyConfig, OutboxLimits, RateLimit, ReceiverConfig, RetryConfig,
    RouteConfig, SlackConfig, SmtpTls, WebhookConfig,
};
pub use deliver::Outcome;
pub use notifier::{Notifier, NotifyError, ReceiverStats, Stats};
pub use outbox::{Enqueued, Outbox, OutboxError};
pub use payload::{AlertPayload, LabelSet, Notification, Status};
pub use router::Router;
pub use secret::{Secret, SecretSource};
