//! Availability: when a device went online or offline and why, how long it has been in its
//! current state, and whether it is flapping.
//!
//! A device is online while an MQTT connection that spoke for it is open, or while its last
//! HTTP batch is younger than the offline timeout. Every change is recorded as a
//! [`Transition`] with its [`Reason`]; the last [`HISTORY`] are kept.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Transitions kept per device.
pub const HISTORY: usize = 64;
/// Going offline this many times within [`FLAP_WINDOW_MS`] is flapping.
pub const FLAP_COUNT: usize = 5;
pub const FLAP_WINDOW_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
}

/// Why a device's availability changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An MQTT connection spoke for the device.
    Connected,
    /// A batch arrived over HTTP.
    HttpIngest,
    /// The device sent DISCONNECT.
    Graceful,
    /// Nothing arrived within 1.5 × keepalive.
    KeepaliveExpired,
    /// The connection broke (reset, EOF without DISCONNECT).
    ConnectionLost,
    /// The server closed it for a protocol violation or bad payload.
    Rejected,
    /// Another connection took over the client id (or the device certificate).
    TakenOver,
    /// The device's certificate was revoked while it was connected.
    Revoked,
    /// The server is shutting down.
    ServerShutdown,
    /// An HTTP-only device sent nothing for longer than the offline timeout.
    Timeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connected => "connected",
            Reason::HttpIngest => "http_ingest",
            Reason::Graceful => "graceful",
            Reason::KeepaliveExpired => "keepalive_expired",
            Reason::ConnectionLost => "connection_lost",
            Reason::Rejected => "rejected",
            Reason::TakenOver => "taken_over",
            Reason::Revoked => "revoked",
            Reason::ServerShutdown => "server_shutdown",
            Reason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub at_ms: i64,
    pub status: Status,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default)]
pub struct Availability {
    history: VecDeque<Transition>,
}

impl Availability {
    /// The last recorded state, if any.
    pub fn last(&self) -> Option<&Transition> {
        self.history.back()
    }

    /// Records a change to `status`; a repeat of the current state is ignored.
    pub fn record(&mut self, at_ms: i64, status: Status, reason: Reason) {
        if self.last().is_some_and(|t| t.status == status) {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            at_ms,
            status,
            reason,
        });
    }

    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Transition> {
        self.history.iter()
    }

    /// Times the device went offline within the flap window before `now_ms`.
    pub fn recent_disconnects(&self, now_ms: i64) -> usize {
        self.history
            .iter()
            .filter(|t| t.status == Status::Offline && now_ms - t.at_ms <= FLAP_WINDOW_MS)
            .count()
    }

    pub fn is_flapping(&self, now_ms: i64) -> bool {
        self.recent_disconnects(now_ms) >= FLAP_COUNT
    }

    /// Milliseconds in the current state.
    pub fn in_state_ms(&self, now_ms: i64) -> Option<i64> {
        self.last().map(|t| now_ms.saturating_sub(t.at_ms))
    }

    /// The last time the device went offline, and why.
    pub fn last_offline(&self) -> Option<&Transition> {
        self.history
            .iter()
            .rev()
            .find(|t| t.status == Status::Offline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_ignored_and_history_is_bounded() {
        let mut a = Availability::default();
        a.record(1, Status::Online, Reason::Connected);
        a.record(2, Status::Online, Reason::HttpIngest);
        assert_eq!(a.history().count(), 1);
        for t in 0..200 {
            let status = if t % 2 == 0 {
                Status::Offline
            } else {
                Status::Online
            };
            a.record(10 + t, status, Reason::ConnectionLost);
        }
        assert_eq!(a.history().count(), HISTORY);
    }

    #[test]
    fn five_disconnects_in_ten_minutes_is_flapping() {
        let mut a = Availability::default();
        for i in 0..5 {
            a.record(i * 60_000, Status::Online, Reason::Connected);
            a.record(i * 60_000 + 1, Status::Offline, Reason::ConnectionLost);
        }
        assert!(a.is_flapping(5 * 60_000));
        assert!(!a.is_flapping(30 * 60_000), "old disconnects age out");
        assert_eq!(
            a.last_offline().map(|t| t.reason),
            Some(Reason::ConnectionLost)
        );
    }
}
