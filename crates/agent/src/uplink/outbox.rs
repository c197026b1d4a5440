//! What is handed to the MQTT event loop on the current connection, and which packet id stands
//! for which message.
//!
//! # Why the agent assigns packet ids itself
//! Same reasons as the simulator's outbox (`crates/sim/src/outbox.rs`), which this follows:
//! `rumqttc` 0.25 does not say which packet id a `publish` got, and on reconnect it clears the
//! unacknowledged publishes it kept unless the broker reports a session, which never happens
//! with `clean_session = true`. So messages are pushed as `Request::Publish` with a packet id
//! from `1..=window` (never one still unacknowledged) straight into `EventLoop::pending`, and
//! a PUBACK is mapped back to the batch's seq exactly.
//!
//! Unlike the simulator, the agent keeps nothing here across connections: the spool is the
//! truth. When a connection is lost, the outbox is emptied and the next connection loads the
//! oldest unacknowledged batches from the spool again, so a batch the spool dropped meanwhile
//! is never resent.

use std::collections::{BTreeMap, VecDeque};

use rumqttc::Publish;
use tokio::time::Instant;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Telemetry {
        seq: u64,
    },
    /// A retained `online` (true) or `offline` (false) on the status topic.
    Status {
        online: bool,
    },
}

#[derive(Debug)]
struct InFlight {
    kind: Kind,
    written_at: Option<Instant>,
}

/// Messages of the current connection.
#[derive(Debug)]
pub struct Outbox {
    window: u16,
    queue: VecDeque<(Kind, Publish)>,
    inflight: BTreeMap<u16, InFlight>,
    next_pkid: u16,
}

impl Outbox {
    /// At most `window` messages are in flight; packet ids are `1..=window`.
    pub fn new(window: u16) -> Self {
        Self {
            window: window.max(1),
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_pkid: 1,
        }
    }

    /// Queues a batch behind the others.
    pub fn push_telemetry(&mut self, seq: u64, publish: Publish) {
        self.queue.push_back((Kind::Telemetry { seq }, publish));
    }

    /// Queues a status message ahead of the batches.
    pub fn push_status(&mut self, online: bool, publish: Publish) {
        self.queue.push_front((Kind::Status { online }, publish));
    }

    /// Telemetry batches queued or in flight.
    pub fn telemetry(&self) -> usize {
        self.queue
            .iter()
            .map(|q| q.0)
            .chain(self.inflight.values().map(|f| f.kind))
            .filter(|k| matches!(k, Kind::Telemetry { .. }))
            .count()
    }

    /// The next message to hand to the event loop, with its packet id set, if the window has
    /// room.
    pub fn next_publish(&mut self) -> Option<Publish> {
        if self.inflight.len() >= usize::from(self.window) {
            return None;
        }
        let (kind, mut publish) = self.queue.pop_front()?;
        let pkid = self.free_pkid();
        publish.pkid = pkid;
        self.inflight.insert(
            pkid,
            InFlight {
                kind,
                written_at: None,
            },
        );
        Some(publish)
    }

    /// A free packet id; only called when fewer than `window` are in use, so one exists.
    fn free_pkid(&mut self) -> u16 {
        let mut pkid = self.next_pkid;
        for _ in 0..self.window {
            if !self.inflight.contains_key(&pkid) {
                break;
            }
            pkid = if pkid >= self.window { 1 } else { pkid + 1 };
        }
        self.next_pkid = if pkid >= self.window { 1 } else { pkid + 1 };
        pkid
    }

    /// The event loop wrote the publish with packet id `pkid`.
    pub fn written(&mut self, pkid: u16, now: Instant) -> Option<Kind> {
        let f = self.inflight.get_mut(&pkid)?;
        f.written_at = Some(now);
        Some(f.kind)
    }

    /// A PUBACK for `pkid` arrived.
    pub fn acked(&mut self, pkid: u16) -> Option<Kind> {
        self.inflight.remove(&pkid).map(|f| f.kind)
    }

    /// The connection is gone: forget everything (the spool still holds the batches).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.inflight.clear();
    }

    /// When the oldest written-but-unacknowledged message was written.
    pub fn oldest_write(&self) -> Option<Instant> {
        self.inflight.values().filter_map(|f| f.written_at).min()
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;

    fn batch(seq: u64) -> Publish {
        Publish::new("fleetmon/v1/d/telemetry", QoS::AtLeastOnce, vec![seq as u8])
    }

    #[test]
    fn packet_ids_map_to_seqs_and_are_never_shared_while_unacked() {
        let now = Instant::now();
        let mut o = Outbox::new(3);
        for seq in 1..=5 {
            o.push_telemetry(seq, batch(seq));
        }
        o.push_status(true, batch(0));
        let a: Vec<Publish> = std::iter::from_fn(|| o.next_publish()).collect();
        assert_eq!(a.iter().map(|p| p.pkid).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(o.written(1, now), Some(Kind::Status { online: true }));
        assert_eq!(o.acked(2), Some(Kind::Telemetry { seq: 1 }));
        assert_eq!(o.acked(2), None, "a second ack is ignored");
        let b = o.next_publish().unwrap();
        assert!(b.pkid != 1 && b.pkid != 3, "ids in use are skipped");
        assert_eq!(o.acked(b.pkid), Some(Kind::Telemetry { seq: 3 }));
        assert_eq!(o.telemetry(), 3);
        o.clear();
        assert_eq!(o.telemetry(), 0);
        assert!(o.next_publish().is_none());
    }
}
