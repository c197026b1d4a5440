//! What one MQTT connection has published and not yet had acknowledged, and which packet id
//! stands for which device's batch.
//!
//! A connection speaks for one device, or for several behind a gateway
//! (`devices_per_connection`): each message names its *member* (the device's position on the
//! connection), and each member's backlog is bounded on its own, while packet ids, the window
//! and the rules below belong to the connection — one connection has one packet-id space.
//!
//! # Why the simulator assigns packet ids itself
//! `rumqttc` 0.25 does not tell a caller which packet id a `publish` got; it only reports
//! `Outgoing::Publish(pkid)` when a packet is written. Worse, when the connection drops it
//! moves unacknowledged publishes into `EventLoop::pending`, and on the next CONNACK it
//! *clears* that list unless the broker reports `session_present`, which never happens with
//! `clean_session = true` and does not happen after a broker restart without persistence
//! either. Publishes drained from the request channel at that moment are lost the same way.
//!
//! So the connection keeps the truth here: every message waits in this outbox until its
//! PUBACK.
//! Messages are handed to the event loop by pushing `Request::Publish` with a packet id chosen
//! here (from `1..=window`, never one still unacknowledged) straight into
//! `EventLoop::pending`, so `pkid → message` is known exactly, resends keep their batch's seq
//! and status messages (which use packet ids too) are never mistaken for telemetry. When the
//! connection is lost, everything unacknowledged goes back to the queue, in seq order (the
//! devices taking turns), and is handed again (with DUP set) after the next CONNACK.
//!
//! # Injected faults
//! Extra copies of acknowledged batches ([`Kind::Duplicate`]) and corrupted copies
//! ([`Kind::Corrupt`]) wait here too. A fleetmon server closes the connection on a corrupted
//! payload, and whatever else was in flight then would be stored or not, unknowably; so a
//! corrupted copy is handed only when nothing else is in flight, and nothing follows it until
//! it is acknowledged (a plain broker does) or the connection is lost. It is never handed
//! twice. [`Outbox::hold`] stops handing batches for the same reason before an injected
//! outage.

use std::collections::{BTreeMap, VecDeque};

use rumqttc::Publish;
use tokio::time::Instant;

/// What a message is, as reported when it is written or acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Telemetry {
        seq: u64,
        samples: u32,
    },
    /// A retained `online` (true) or `offline` (false) on the status topic.
    Status {
        online: bool,
    },
    /// An extra copy of acknowledged batch `seq` (fault injection).
    Duplicate {
        seq: u64,
    },
    /// Batch `seq` with a corrupted payload, sent before the correct one (fault injection).
    Corrupt {
        seq: u64,
    },
}

impl Kind {
    /// Counted by [`Outbox::unacked`]: the run drains these before it closes.
    fn is_batch(self) -> bool {
        matches!(self, Kind::Telemetry { .. } | Kind::Duplicate { .. })
    }

    /// Order in which messages are handed again after a lost connection: by seq, a corrupted
    /// copy before its batch; status messages are not kept.
    fn resend_key(self) -> (u64, u8) {
        match self {
            Kind::Corrupt { seq } => (seq, 0),
            Kind::Telemetry { seq, .. } => (seq, 1),
            Kind::Duplicate { seq } => (seq, 2),
            Kind::Status { .. } => (0, 0),
        }
    }
}

#[derive(Debug, Clone)]
struct Message {
    /// Which of the connection's devices it is from.
    member: usize,
    kind: Kind,
    publish: Publish,
    /// Written to the network at least once (on any connection).
    written: bool,
}

#[derive(Debug, Clone)]
struct InFlight {
    message: Message,
    /// When the event loop wrote it on the current connection.
    written_at: Option<Instant>,
}

/// What [`Outbox::written`] learned about a packet the event loop wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub member: usize,
    pub kind: Kind,
    /// True the first time this message reaches the network, false for a resend.
    pub first: bool,
}

/// The unacknowledged messages of one connection's devices.
#[derive(Debug)]
pub(crate) struct Outbox {
    window: u16,
    max_unacked: usize,
    /// Waiting to be handed to the event loop on the current connection.
    queue: VecDeque<Message>,
    /// Handed to the event loop, keyed by the packet id they were given.
    inflight: BTreeMap<u16, InFlight>,
    /// Where the search for a free packet id starts, so ids rotate instead of being reused at
    /// once.
    next_pkid: u16,
    /// Telemetry batches and extra copies not yet acknowledged, per member.
    unacked_telemetry: Vec<usize>,
    /// Their sum.
    unacked_total: usize,
    /// While set, only status messages are handed (the device is about to drop the
    /// connection, after its birth message).
    hold: bool,
}

impl Outbox {
    /// At most `window` messages are handed to the event loop at once (and packet ids are
    /// `1..=window`, so the event loop's `inflight` option must be at least `window`); at most
    /// `max_unacked` telemetry batches of each of the `members` devices are held before
    /// [`Outbox::is_full`] says stop producing.
    pub fn new(window: u16, max_unacked: usize, members: usize) -> Self {
        Self {
            window: window.max(1),
            max_unacked,
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_pkid: 1,
            unacked_telemetry: vec![0; members.max(1)],
            unacked_total: 0,
            hold: false,
        }
    }

    /// True when `member`'s backlog of unacknowledged batches is at its bound.
    pub fn is_full(&self, member: usize) -> bool {
        self.unacked_telemetry.get(member).copied().unwrap_or(0) >= self.max_unacked
    }

    /// Telemetry batches and extra copies not yet acknowledged (queued or in flight), of all
    /// members.
    pub fn unacked(&self) -> usize {
        self.unacked_total
    }

    fn count(&mut self, member: usize, add: bool) {
        if let Some(n) = self.unacked_telemetry.get_mut(member) {
            if add {
                *n += 1;
                self.unacked_total += 1;
            } else {
                *n -= 1;
                self.unacked_total -= 1;
            }
        }
    }

    /// Messages handed to the event loop and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Stops (true) or resumes (false) handing messages other than status messages.
    pub fn hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Queues an extra copy of acknowledged batch `seq` behind the others.
    pub fn push_duplicate(&mut self, member: usize, seq: u64, publish: Publish) {
        self.count(member, true);
        self.queue.push_back(Message {
            member,
            kind: Kind::Duplicate { seq },
            publish,
            written: false,
        });
    }

    /// Queues a corrupted copy of batch `seq`; the batch itself is pushed right after.
    pub fn push_corrupt(&mut self, member: usize, seq: u64, publish: Publish) {
        self.queue.push_back(Message {
            member,
            kind: Kind::Corrupt { seq },
            publish,
            written: false,
        });
    }

    /// Queues a batch behind the others.
    pub fn push_telemetry(&mut self, member: usize, seq: u64, samples: u32, publish: Publish) {
        self.count(member, true);
        self.queue.push_back(Message {
            member,
            kind: Kind::Telemetry { seq, samples },
            publish,
            written: false,
        });
    }

    /// Queues a status message ahead of the batches: the birth message goes first.
    pub fn push_status(&mut self, member: usize, online: bool, publish: Publish) {
        self.queue.push_front(Message {
            member,
            kind: Kind::Status { online },
            publish,
            written: false,
        });
    }

    /// The next message to hand to the event loop, with its packet id set, if the window
    /// has room.
    pub fn next(&mut self) -> Option<Publish> {
        if self.inflight.len() >= usize::from(self.window) {
            return None;
        }
        let status = |m: &Message| matches!(m.kind, Kind::Status { .. });
        if self.hold && !self.queue.front().is_some_and(status) {
            return None;
        }
        let corrupt = |m: &Message| matches!(m.kind, Kind::Corrupt { .. });
        if self.inflight.values().any(|f| corrupt(&f.message)) {
            return None;
        }
        if self.queue.front().is_some_and(corrupt) && !self.inflight.is_empty() {
            return None;
        }
        let message = self.queue.pop_front()?;
        let pkid = self.free_pkid();
        let mut publish = message.publish.clone();
        publish.pkid = pkid;
        publish.dup = message.written;
        self.inflight.insert(
            pkid,
            InFlight {
                message,
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

    /// The event loop wrote the publish with packet id `pkid` (`Outgoing::Publish`).
    pub fn written(&mut self, pkid: u16, now: Instant) -> Option<Written> {
        let entry = self.inflight.get_mut(&pkid)?;
        entry.written_at = Some(now);
        let first = !entry.message.written;
        entry.message.written = true;
        Some(Written {
            member: entry.message.member,
            kind: entry.message.kind,
            first,
        })
    }

    /// A PUBACK for `pkid` arrived: the message is delivered and forgotten.
    #[cfg(test)]
    pub fn acked(&mut self, pkid: u16) -> Option<Kind> {
        self.acked_publish(pkid).map(|(_, kind, _)| kind)
    }

    /// Like [`Outbox::acked`], also giving back the member and the message (to publish it
    /// once more).
    pub fn acked_publish(&mut self, pkid: u16) -> Option<(usize, Kind, Publish)> {
        let entry = self.inflight.remove(&pkid)?;
        let Message {
            member,
            kind,
            publish,
            ..
        } = entry.message;
        if kind.is_batch() {
            self.count(member, false);
        }
        Some((member, kind, publish))
    }

    /// The connection is gone: every unacknowledged batch goes back to the queue, each
    /// member's batches in seq order, to be handed again after the next CONNACK. Status messages
    /// are dropped; the connection queues fresh ones. A corrupted copy that was handed is
    /// dropped (it is never sent twice), and so is an extra copy that was written: the server
    /// may or may not have counted it. Returns the member of each such extra copy dropped.
    pub fn connection_lost(&mut self) -> Vec<usize> {
        let mut unconfirmed = Vec::new();
        let inflight = std::mem::take(&mut self.inflight)
            .into_values()
            .map(|f| f.message)
            .filter(|m| match m.kind {
                Kind::Corrupt { .. } => false,
                Kind::Duplicate { .. } if m.written => {
                    unconfirmed.push(m.member);
                    false
                }
                _ => true,
            });
        let mut batches: Vec<Message> = inflight
            .chain(self.queue.drain(..))
            .filter(|m| !matches!(m.kind, Kind::Status { .. }))
            .collect();
        // Seq first, so the members take turns; a corrupted copy stays right before its batch.
        batches.sort_by_key(|m| {
            let (seq, rank) = m.kind.resend_key();
            (seq, m.member, rank)
        });
        self.queue = batches.into();
        for &member in &unconfirmed {
            self.count(member, false);
        }
        unconfirmed
    }

    /// When the oldest written-but-unacknowledged message was written, if any.
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

    fn status(online: bool) -> Publish {
        let mut p = Publish::new(
            "fleetmon/v1/d/status",
            QoS::AtLeastOnce,
            if online { "online" } else { "offline" },
        );
        p.retain = true;
        p
    }

    fn seq_of(kind: Option<Kind>) -> Option<u64> {
        match kind {
            Some(Kind::Telemetry { seq, .. }) => Some(seq),
            _ => None,
        }
    }

    fn hand_all(o: &mut Outbox) -> Vec<Publish> {
        std::iter::from_fn(|| o.next()).collect()
    }

    #[test]
    fn packet_ids_map_to_seqs_and_status_is_told_apart() {
        let now = Instant::now();
        let mut o = Outbox::new(4, 100, 1);
        o.push_telemetry(0, 1, 30, batch(1));
        o.push_telemetry(0, 2, 30, batch(2));
        o.push_status(0, true, status(true));
        let handed = hand_all(&mut o);
        assert_eq!(handed.len(), 3);
        // The birth message goes first; ids are distinct.
        assert_eq!(handed[0].topic, "fleetmon/v1/d/status");
        let ids: Vec<u16> = handed.iter().map(|p| p.pkid).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        for p in &handed {
            assert!(!p.dup);
            o.written(p.pkid, now);
        }
        assert_eq!(o.acked(1), Some(Kind::Status { online: true }));
        assert_eq!(seq_of(o.acked(3)), Some(2));
        assert_eq!(seq_of(o.acked(2)), Some(1));
        assert_eq!(o.acked(2), None, "a second ack for an id is ignored");
        assert_eq!(o.unacked(), 0);
    }

    #[test]
    fn the_window_bounds_what_is_handed_and_ids_are_never_shared() {
        let now = Instant::now();
        let mut o = Outbox::new(3, 100, 1);
        for seq in 1..=10 {
            o.push_telemetry(0, seq, 1, batch(seq));
        }
        let mut acked = Vec::new();
        let mut outstanding: VecDeque<u16> = VecDeque::new();
        while o.unacked() > 0 {
            for p in hand_all(&mut o) {
                assert!((1..=3).contains(&p.pkid));
                assert!(
                    !outstanding.contains(&p.pkid),
                    "pkid {} reused while unacked",
                    p.pkid
                );
                assert!(o.written(p.pkid, now).unwrap().first);
                outstanding.push_back(p.pkid);
            }
            assert!(outstanding.len() <= 3);
            // The broker acks one per round; the rest stay in flight.
            let pkid = outstanding.pop_front().unwrap();
            acked.push(seq_of(o.acked(pkid)).unwrap());
        }
        acked.sort_unstable();
        assert_eq!(acked, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn unacked_batches_are_resent_in_order_after_a_lost_connection() {
        let now = Instant::now();
        let mut o = Outbox::new(8, 100, 1);
        o.push_status(0, true, status(true));
        for seq in 1..=5 {
            o.push_telemetry(0, seq, 1, batch(seq));
        }
        let handed = hand_all(&mut o);
        for p in &handed[..4] {
            o.written(p.pkid, now);
        }
        // Seq 2 is acknowledged, then the connection drops; 6 is produced meanwhile.
        let pkid_of_2 = handed[2].pkid;
        assert_eq!(seq_of(o.acked(pkid_of_2)), Some(2));
        o.connection_lost();
        o.push_telemetry(0, 6, 1, batch(6));
        assert_eq!(o.unacked(), 5);
        o.push_status(0, true, status(true));
        let again = hand_all(&mut o);
        let topics: Vec<&str> = again.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics[0], "fleetmon/v1/d/status");
        let payloads: Vec<u8> = again[1..].iter().map(|p| p.payload[0]).collect();
        assert_eq!(payloads, vec![1, 3, 4, 5, 6]);
        // Written before: DUP set, and reported as a resend. Never written: first.
        assert!(again[1].dup && !o.written(again[1].pkid, now).unwrap().first);
        let five = &again[4];
        assert!(!five.dup && o.written(five.pkid, now).unwrap().first);
        for p in &again {
            o.acked(p.pkid);
        }
        assert_eq!(o.unacked(), 0);
    }

    #[test]
    fn the_backlog_is_bounded() {
        let mut o = Outbox::new(2, 3, 1);
        for seq in 1..=3 {
            assert!(!o.is_full(0));
            o.push_telemetry(0, seq, 1, batch(seq));
        }
        assert!(o.is_full(0));
        let p = o.next().unwrap();
        o.acked(p.pkid);
        assert!(!o.is_full(0));
    }

    #[test]
    fn oldest_write_tracks_what_waits_for_an_ack() {
        let t0 = Instant::now();
        let mut o = Outbox::new(4, 10, 1);
        o.push_telemetry(0, 1, 1, batch(1));
        o.push_telemetry(0, 2, 1, batch(2));
        let a = o.next().unwrap();
        let b = o.next().unwrap();
        assert_eq!(o.oldest_write(), None, "handed but not written yet");
        o.written(a.pkid, t0);
        o.written(b.pkid, t0 + std::time::Duration::from_secs(1));
        assert_eq!(o.oldest_write(), Some(t0));
        o.acked(a.pkid);
        assert_eq!(
            o.oldest_write(),
            Some(t0 + std::time::Duration::from_secs(1))
        );
    }

    fn kinds(handed: &[Publish], o: &mut Outbox, now: Instant) -> Vec<Kind> {
        handed
            .iter()
            .map(|p| o.written(p.pkid, now).unwrap().kind)
            .collect()
    }

    #[test]
    fn a_corrupted_copy_goes_alone_and_only_once() {
        let now = Instant::now();
        let mut o = Outbox::new(8, 100, 1);
        o.push_status(0, true, status(true));
        o.push_telemetry(0, 1, 1, batch(1));
        o.push_corrupt(0, 2, batch(2));
        o.push_telemetry(0, 2, 1, batch(2));
        o.push_telemetry(0, 3, 1, batch(3));
        // Up to the corrupted copy, then wait until nothing is in flight.
        let first = hand_all(&mut o);
        assert_eq!(
            kinds(&first, &mut o, now),
            [
                Kind::Status { online: true },
                Kind::Telemetry { seq: 1, samples: 1 }
            ]
        );
        o.acked(first[0].pkid);
        assert!(o.next().is_none(), "seq 1 still in flight");
        o.acked(first[1].pkid);
        let alone = hand_all(&mut o);
        assert_eq!(kinds(&alone, &mut o, now), [Kind::Corrupt { seq: 2 }]);
        // The server closes the connection: the copy is gone, the batch follows.
        assert!(o.connection_lost().is_empty());
        let again = hand_all(&mut o);
        assert_eq!(
            kinds(&again, &mut o, now),
            [
                Kind::Telemetry { seq: 2, samples: 1 },
                Kind::Telemetry { seq: 3, samples: 1 }
            ]
        );
        assert!(again.iter().all(|p| !p.dup), "never written before");

        // A broker that acknowledges the corrupted copy lets the rest follow.
        let mut o = Outbox::new(8, 100, 1);
        o.push_corrupt(0, 1, batch(1));
        o.push_telemetry(0, 1, 1, batch(1));
        let alone = hand_all(&mut o);
        assert_eq!(alone.len(), 1);
        assert_eq!(o.acked(alone[0].pkid), Some(Kind::Corrupt { seq: 1 }));
        assert_eq!(o.unacked(), 1);
        assert_eq!(hand_all(&mut o).len(), 1);
    }

    #[test]
    fn extra_copies_are_drained_and_dropped_when_their_fate_is_unknown() {
        let now = Instant::now();
        let mut o = Outbox::new(8, 100, 1);
        o.push_duplicate(0, 1, batch(1));
        o.push_duplicate(0, 2, batch(2));
        assert_eq!(o.unacked(), 2, "the run waits for extra copies too");
        let handed = hand_all(&mut o);
        // Copy of 1 written, copy of 2 only handed; then the connection breaks.
        o.written(handed[0].pkid, now);
        assert_eq!(o.connection_lost(), [0]);
        assert_eq!(o.unacked(), 1);
        let again = hand_all(&mut o);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload[0], 2);
        let (_, kind, publish) = o.acked_publish(again[0].pkid).unwrap();
        assert_eq!(kind, Kind::Duplicate { seq: 2 });
        assert_eq!(publish.payload[0], 2);
        assert_eq!(o.unacked(), 0);
    }

    #[test]
    fn holding_stops_handing_all_but_status() {
        let mut o = Outbox::new(8, 100, 1);
        o.push_telemetry(0, 1, 1, batch(1));
        o.push_status(0, true, status(true));
        o.hold(true);
        assert_eq!(o.next().unwrap().topic, "fleetmon/v1/d/status");
        assert!(o.next().is_none());
        o.hold(false);
        assert!(o.next().is_some());
        assert_eq!(o.in_flight(), 2);
    }
}
