//! One delivery attempt and what it means: delivered, try again later, or never.

use std::time::Duration;

use crate::payload::Notification;

/// The result of one attempt to hand a notification to one integration.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// A transient failure (5xx, 408, 429, connection trouble, SMTP 4xx): retry after backoff,
    /// and not before `retry_after` if the receiver said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused it for good (4xx, SMTP 5xx, a body that cannot be built).
    Permanent {
        reason: String,
    },
}

/// An integration that can attempt a delivery. Blocking; called from a worker thread.
pub trait Deliver: Send {
    fn deliver(&mut self, notification: &Notification) -> Outcome;
}
