//! One MQTT connection and the devices that speak over it: connect, publish, reconnect,
//! drain, close.
//!
//! By default a connection carries one device, as a real device's own connection does. With
//! `devices_per_connection` N > 1 it carries N devices, the way sensor nodes behind a gateway
//! share its uplink: one task drives the N devices' generators and one connection, while each
//! device keeps its own seqs, backlog, summary and fault plan ([`crate::device`]). Packet ids,
//! the in-flight window and the order rules of [`crate::outbox`] are the connection's.
//!
//! # Who speaks for whom
//! The connection's first device is its *head*: the client id is the head's device id, the
//! Last Will (`offline`, retained, QoS 1) is on the head's status topic, and only the head
//! publishes the retained `online` after every CONNACK and `offline` at the end. A connection
//! has one Last Will, so the other devices publish no status at all: a fleetmon server marks
//! each online when its first batch arrives on the connection and offline, with the
//! connection's reason, when the connection closes. With one device per connection the head
//! is the device, so nothing differs from a device with its own connection.
//!
//! # Life of a connection
//! 1. Wait for its start offset (connections are staggered over the first interval).
//! 2. **Running**: connect; after every CONNACK the head publishes a retained `online`. Every
//!    tick, each device produces a batch into the [`Outbox`] whether connected or not; a
//!    device with more than the backlog bound unacknowledged skips the tick and counts it.
//!    When the connection fails, keep polling the event loop after a short random backoff;
//!    it reconnects and the outbox re-sends.
//! 3. **Draining** (after the last tick, the run's end, or `stop`): produce no more, wait up
//!    to `drain_timeout` for every batch's PUBACK.
//! 4. **Closing**: the head publishes a retained `offline`, waits briefly for its PUBACK,
//!    then DISCONNECT is sent. If that fails the connection is just dropped, and the broker
//!    publishes the Last Will (also `offline`).
//!
//! The event loop is polled in a `select!` with the timers. The outbox assigns packet ids and
//! feeds `EventLoop::pending` directly; see [`crate::outbox`] for why.
//!
//! # Injected outages
//! At the start of its outage window the connection stops handing batches and waits until it
//! is connected, has been acknowledged a message on this connection (so the server knows whom
//! the connection speaks for) and has nothing in flight (so the server's duplicate count stays
//! exact); then it drops the connection without DISCONNECT and polls nothing for the outage's
//! length (so a busy server delays the window, it never shortens it). Ticks keep producing
//! into the outbox meanwhile. An outage that has not begun when the run stops producing is
//! cancelled. Outages need one device per connection (see `SimOptions::validate`).

use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use fleetmon_protocol::Format;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS, Request,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tracing::{debug, warn};

use crate::device::{Device, DeviceConfig, wall_clock_ms};
use crate::faults::OutageWindow;
use crate::options::Endpoint;
use crate::outbox::{Kind, Outbox};
use crate::signal::mix;
use crate::stats::FleetStats;
use crate::summary::DeviceSummary;
use crate::truth::Outage;

/// Messages handed to the event loop at once (and so the largest packet id) on a connection
/// of one device.
const WINDOW: u16 = 32;
/// The largest window of a shared connection: one message in flight per device, up to this.
const MAX_WINDOW: u16 = 256;
/// MQTT keepalive of a device's own connection; a dead connection is noticed within about
/// twice this.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// MQTT keepalive of a gateway's shared connection, as gateways use. The client drops the
/// connection when a PINGREQ is not answered within the keepalive, and a PINGREQ waits in the
/// socket behind the window of batches written before it (up to 256 on a shared connection):
/// with 5 s, a server that is busy but healthy lost every gateway's connection again and
/// again, and each loss resent the whole window (BENCHMARKS.md, "100,000 devices").
const GATEWAY_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The keepalive of a connection carrying `devices` devices.
fn keep_alive(devices: usize) -> Duration {
    if devices > 1 {
        GATEWAY_KEEP_ALIVE
    } else {
        KEEP_ALIVE
    }
}
/// Reconnect backoff, drawn uniformly so a fleet does not reconnect in lockstep.
const BACKOFF_MS: std::ops::RangeInclusive<u64> = 100..=250;
/// A written message still unacknowledged after this long, with no PUBACK at all meanwhile,
/// means the connection is stuck (or a write was lost): drop it and resend on a new one.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// When the connection counts as stuck: [`ACK_TIMEOUT`] after the oldest unacknowledged write
/// or the last PUBACK, whichever is later. A server that is slow but acknowledging (a queue
/// of batches ahead of ours) is waited for; dropping the connection would only resend the
/// whole window and add to its queue.
fn ack_deadline(oldest_write: Option<Instant>, last_ack: Option<Instant>) -> Option<Instant> {
    oldest_write.map(|w| last_ack.map_or(w, |a| a.max(w)) + ACK_TIMEOUT)
}
/// How long the final `offline` status and DISCONNECT may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a connection needs to know, fixed for the run.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    pub endpoint: Endpoint,
    pub start_at: Instant,
    pub interval: Duration,
    pub batches: Option<u64>,
    pub format: Format,
    pub drain_timeout: Duration,
    pub max_unacked: usize,
    pub outage: Option<OutageWindow>,
    /// The start of the run, which outage windows are relative to.
    pub run_started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining { until: Instant },
    Closing { until: Instant },
}

/// Where the connection is in its injected outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutageState {
    /// None planned, finished, or cancelled because the run ended first.
    None,
    Pending {
        start: Instant,
        length: Duration,
    },
    /// The window began: waiting for a connection that has spoken and has nothing in
    /// flight, to drop it.
    Quiescing {
        length: Duration,
    },
    /// Disconnected since `start_ms` (wall clock); reconnects at `end`.
    Away {
        end: Instant,
        start_ms: i64,
    },
}

/// What woke the connection up.
enum Wake {
    Stop,
    Tick,
    Deadline,
    Reconnect,
    AckTimeout,
    Outage,
    Mqtt(Result<Event, ConnectionError>),
}

struct Connection {
    cfg: ConnectionConfig,
    /// The devices speaking over it; the first is the head.
    devices: Vec<Device>,
    outbox: Outbox,
    stats: Arc<FleetStats>,
    connected: bool,
    /// Successful CONNACKs.
    connections: u64,
    /// Failures since the last CONNACK; only the first of an outage is logged.
    failures: u64,
    /// Ticks so far. The `batches` option counts ticks (a batch held back because the backlog
    /// is full counts too), so a run against a server that never answers still ends.
    ticks: u64,
    rng: Rng,
    disconnect_sent: bool,
    outage: OutageState,
    /// A PUBACK arrived on the current connection.
    spoke: bool,
    /// When the last PUBACK arrived on the current connection.
    last_ack: Option<Instant>,
}

/// The window of a connection carrying `devices` devices.
fn window(devices: usize) -> u16 {
    let devices = u16::try_from(devices).unwrap_or(MAX_WINDOW);
    devices.clamp(WINDOW, MAX_WINDOW.max(WINDOW))
}

/// Runs one connection and its devices until they have drained and closed; returns what each
/// device did, in the order given. `devices` must not be empty.
pub(crate) async fn run_connection(
    cfg: ConnectionConfig,
    devices: Vec<DeviceConfig>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<FleetStats>,
) -> Vec<DeviceSummary> {
    let mut connection = Connection::new(cfg, devices, stats);
    // The stagger: nothing happens before the start offset, unless the run is stopped.
    tokio::select! {
        () = sleep_until(connection.cfg.start_at) => {}
        _ = stop.wait_for(|stopped| *stopped) => return connection.finish(),
    }
    let Some((client, eventloop)) = connect_options(&connection) else {
        return connection.finish();
    };
    connection.run(eventloop, &mut stop).await;
    // The client kept the request channel open while polling; it is no longer needed.
    drop(client);
    connection.finish()
}

/// The MQTT client of a connection: client id = the head's device id, Last Will `offline`
/// retained on the head's status topic. None without devices.
fn connect_options(c: &Connection) -> Option<(AsyncClient, EventLoop)> {
    let head = c.devices.first()?;
    let mut options = MqttOptions::new(
        head.id().to_owned(),
        c.cfg.endpoint.host.clone(),
        c.cfg.endpoint.port,
    );
    options
        .set_keep_alive(keep_alive(c.devices.len()))
        // The outbox, not the broker session, is what survives a reconnect.
        .set_clean_session(true)
        .set_inflight(window(c.devices.len()))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            head.status_topic.clone(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    Some((client, eventloop))
}

impl Connection {
    fn new(cfg: ConnectionConfig, devices: Vec<DeviceConfig>, stats: Arc<FleetStats>) -> Self {
        let outage = cfg
            .outage
            .map_or(OutageState::None, |w| OutageState::Pending {
                start: crate::later(cfg.run_started, w.start),
                length: w.length,
            });
        let seed = devices
            .first()
            .map_or(0, |d| mix(d.identity.value_seed, 0xB0FF));
        let devices: Vec<Device> = devices
            .into_iter()
            .enumerate()
            .map(|(member, d)| Device::new(d, member, Arc::clone(&stats)))
            .collect();
        Self {
            outbox: Outbox::new(window(devices.len()), cfg.max_unacked, devices.len()),
            rng: Rng::with_seed(seed),
            devices,
            stats,
            connected: false,
            connections: 0,
            failures: 0,
            ticks: 0,
            disconnect_sent: false,
            last_ack: None,
            outage,
            spoke: false,
            cfg,
        }
    }

    /// The client id, for logs.
    fn name(&self) -> &str {
        self.devices.first().map_or("", |d| d.id())
    }

    fn members(&self) -> u64 {
        self.devices.len() as u64
    }

    async fn run(&mut self, mut eventloop: EventLoop, stop: &mut watch::Receiver<bool>) {
        let mut ticker = interval_at(self.cfg.start_at, self.cfg.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut phase = Phase::Running;
        let mut reconnect_at: Option<Instant> = None;
        let mut offline_acked = false;

        loop {
            let now = Instant::now();
            if phase == Phase::Running && *stop.borrow_and_update() {
                phase = self.drain(now);
            }
            if let Phase::Draining { until } = phase
                && (self.outbox.unacked() == 0 || now >= until)
            {
                phase = self.close(now);
            }
            if let Phase::Closing { until } = phase {
                // A connection that never got through has no status to take back.
                let never_connected = self.connections == 0 && !self.connected;
                if self.disconnect_sent || now >= until || never_connected {
                    break;
                }
                if offline_acked && self.connected && !self.disconnect_sent {
                    eventloop
                        .pending
                        .push_back(Request::Disconnect(rumqttc::Disconnect));
                    offline_acked = false;
                }
            }
            if let OutageState::Quiescing { length } = self.outage
                && self.connected
                && self.spoke
                && self.outbox.in_flight() == 0
            {
                let end = crate::later(now, length);
                offline_acked |= self.go_away(&mut eventloop, end, phase);
                reconnect_at = Some(end);
            }
            if self.connected {
                while let Some(publish) = self.outbox.next() {
                    eventloop.pending.push_back(Request::Publish(publish));
                }
            }

            let deadline = match phase {
                Phase::Running => None,
                Phase::Draining { until } | Phase::Closing { until } => Some(until),
            };
            let ack_deadline = ack_deadline(
                self.outbox.oldest_write().filter(|_| self.connected),
                self.last_ack,
            );
            let running = phase == Phase::Running;
            let outage_start = match self.outage {
                OutageState::Pending { start, .. } if running => Some(start),
                _ => None,
            };
            // rumqttc's poll is not cancel-safe while it connects: a tick that wins the race
            // drops the half-open connection and the next poll starts over. So no ticks while
            // a connection attempt is in flight (it is bounded by the connection timeout).
            let connecting = !self.connected && reconnect_at.is_none();
            let wake = tokio::select! {
                biased;
                _ = stop.changed(), if running => Wake::Stop,
                _ = ticker.tick(), if running && !connecting => Wake::Tick,
                () = sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => Wake::Deadline,
                () = sleep_until(reconnect_at.unwrap_or(now)), if reconnect_at.is_some() => Wake::Reconnect,
                () = sleep_until(ack_deadline.unwrap_or(now)), if ack_deadline.is_some() => Wake::AckTimeout,
                // May cancel a connection attempt: that is what an outage does.
                () = sleep_until(outage_start.unwrap_or(now)), if outage_start.is_some() => Wake::Outage,
                event = eventloop.poll(), if reconnect_at.is_none() => Wake::Mqtt(event),
            };

            match wake {
                // A closed channel (the run is gone) counts as a stop too.
                Wake::Stop => phase = self.drain(Instant::now()),
                Wake::Tick => {
                    self.produce();
                    if self.cfg.batches.is_some_and(|n| self.ticks >= n) {
                        phase = self.drain(Instant::now());
                    }
                }
                Wake::Deadline => {}
                Wake::Reconnect => {
                    reconnect_at = None;
                    if let OutageState::Away { end, start_ms } = self.outage
                        && Instant::now() >= end
                    {
                        self.back_from_outage(start_ms);
                    }
                }
                Wake::Outage => {
                    if let OutageState::Pending { length, .. } = self.outage {
                        self.outbox.hold(true);
                        self.outage = OutageState::Quiescing { length };
                    }
                }
                Wake::AckTimeout => {
                    warn!(
                        client_id = %self.name(),
                        timeout_s = ACK_TIMEOUT.as_secs(),
                        "no PUBACK for a published batch; reconnecting to resend"
                    );
                    // Drops the network; the next poll reconnects.
                    eventloop.clean();
                    offline_acked |= self.connection_lost(&mut eventloop, phase);
                }
                Wake::Mqtt(Ok(event)) => {
                    let acked = self.on_event(event, &mut eventloop, phase);
                    offline_acked |= acked == Some(Kind::Status { online: false });
                }
                Wake::Mqtt(Err(error)) => {
                    self.failures += 1;
                    if self.failures == 1 {
                        if matches!(error, ConnectionError::ConnectionRefused(_)) {
                            // The server answered and said no: a configuration problem.
                            warn!(client_id = %self.name(), %error, "MQTT connection refused; retrying");
                        } else {
                            debug!(client_id = %self.name(), %error, "MQTT connection failed; retrying");
                        }
                    }
                    offline_acked |= self.connection_lost(&mut eventloop, phase);
                    let backoff = self.rng.u64(BACKOFF_MS);
                    reconnect_at = Some(Instant::now() + Duration::from_millis(backoff));
                }
            }
        }

        if self.connected {
            self.connected = false;
            self.stats.disconnected(self.members());
        }
        if let OutageState::Away { start_ms, .. } = self.outage {
            // The run ended while away.
            self.back_from_outage(start_ms);
        }
    }

    /// What each device did.
    fn finish(self) -> Vec<DeviceSummary> {
        let (connections, clean) = (self.connections, self.disconnect_sent);
        self.devices
            .into_iter()
            .map(|d| d.finish(connections, clean))
            .collect()
    }

    /// Every device produces its next batch.
    fn produce(&mut self) {
        self.ticks += 1;
        for device in &mut self.devices {
            device.produce(&mut self.outbox, self.cfg.format);
        }
    }

    /// Stops producing; waits for acknowledgements until the drain deadline. A batch held
    /// back to be lost turns out to be the last one and is sent after all. An outage not yet
    /// begun is cancelled; one under way ends first, and the deadline moves past it.
    fn drain(&mut self, now: Instant) -> Phase {
        for device in &mut self.devices {
            device.finish_producing(&mut self.outbox, self.cfg.format);
        }
        let mut from = now;
        match self.outage {
            OutageState::Pending { .. } | OutageState::Quiescing { .. } => {
                self.outbox.hold(false);
                self.outage = OutageState::None;
            }
            OutageState::Away { end, .. } => from = from.max(end),
            OutageState::None => {}
        }
        Phase::Draining {
            until: crate::later(from, self.cfg.drain_timeout),
        }
    }

    /// The outage begins: drops the connection without DISCONNECT (the broker publishes the
    /// Last Will) and stays away until `end`. Returns what [`Connection::connection_lost`]
    /// does.
    fn go_away(&mut self, eventloop: &mut EventLoop, end: Instant, phase: Phase) -> bool {
        debug!(client_id = %self.name(), "injected outage: dropping the connection");
        eventloop.clean();
        let offline_acked = self.connection_lost(eventloop, phase);
        self.outbox.hold(false);
        self.outage = OutageState::Away {
            end,
            start_ms: wall_clock_ms(),
        };
        offline_acked
    }

    /// The outage window is over (or the run ended during it); records it for every device.
    fn back_from_outage(&mut self, start_ms: i64) {
        let outage = Outage {
            start_ms,
            end_ms: wall_clock_ms(),
        };
        for device in &mut self.devices {
            device.summary.outages.push(outage);
        }
        self.outage = OutageState::None;
    }

    /// Queues the head's final `offline` status (now if connected, else after the next
    /// CONNACK).
    fn close(&mut self, now: Instant) -> Phase {
        if self.connected {
            self.push_head_status(false);
        }
        Phase::Closing {
            until: now + CLOSE_TIMEOUT,
        }
    }

    fn push_head_status(&mut self, online: bool) {
        if let Some(head) = self.devices.first() {
            let publish = head.status(online);
            self.outbox.push_status(0, online, publish);
        }
    }

    /// Accounts for one event; returns the kind of message a PUBACK acknowledged.
    fn on_event(&mut self, event: Event, eventloop: &mut EventLoop, phase: Phase) -> Option<Kind> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                if self.failures > 0 || self.connections > 0 {
                    debug!(client_id = %self.name(), failures = self.failures, "reconnected");
                }
                self.failures = 0;
                self.connected = true;
                self.connections += 1;
                self.stats.connected(self.members());
                // The outbox re-sends everything unacknowledged; nothing left over from the
                // previous connection may go out twice.
                eventloop.pending.clear();
                self.push_head_status(!matches!(phase, Phase::Closing { .. }));
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let (member, kind, publish) = self.outbox.acked_publish(ack.pkid)?;
                self.spoke = true;
                self.last_ack = Some(Instant::now());
                // Not while closing: an extra copy could not be waited for.
                let closing = matches!(phase, Phase::Closing { .. });
                if let Some(device) = self.devices.get_mut(member) {
                    device.acked(&mut self.outbox, kind, publish, closing);
                }
                Some(kind)
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let written = self.outbox.written(pkid, Instant::now())?;
                if let Some(device) = self.devices.get_mut(written.member) {
                    device.written(written);
                }
                None
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                self.disconnect_sent = true;
                None
            }
            _ => None,
        }
    }

    /// The connection is gone: everything unacknowledged waits for the next one. Returns
    /// true when a buffered PUBACK acknowledged the final `offline` status.
    fn connection_lost(&mut self, eventloop: &mut EventLoop, phase: Phase) -> bool {
        // Packets read before the failure are real (PUBACKs included) and still buffered in
        // the event loop: account for them before the outbox takes everything back, or a
        // stale PUBACK would be matched against a packet id reused on the next connection.
        let buffered: Vec<Event> = eventloop.state.events.drain(..).collect();
        let mut offline_acked = false;
        for event in buffered {
            let acked = self.on_event(event, eventloop, phase);
            offline_acked |= acked == Some(Kind::Status { online: false });
        }
        if self.connected {
            self.connected = false;
            self.stats.disconnected(self.members());
        }
        self.spoke = false;
        self.last_ack = None;
        for member in self.outbox.connection_lost() {
            if let Some(device) = self.devices.get_mut(member) {
                device.summary.duplicates_unconfirmed += 1;
            }
        }
        // rumqttc moved its unacknowledged publishes here; the outbox owns them now.
        eventloop.pending.clear();
        offline_acked
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{ConnAck, ConnectReturnCode, PubAck, Publish};

    use super::*;
    use crate::faults::Faults;
    use crate::identity::Identity;

    fn connection() -> Connection {
        connection_with(Faults::default(), 1)
    }

    #[test]
    fn gateways_use_a_longer_keepalive_than_single_devices() {
        assert_eq!(keep_alive(1), KEEP_ALIVE);
        assert_eq!(keep_alive(100), GATEWAY_KEEP_ALIVE);
        assert!(GATEWAY_KEEP_ALIVE > KEEP_ALIVE);
    }

    #[test]
    fn a_connection_that_still_acknowledges_is_not_stuck() {
        let t0 = Instant::now();
        assert_eq!(ack_deadline(None, Some(t0)), None, "nothing waits");
        assert_eq!(ack_deadline(Some(t0), None), Some(t0 + ACK_TIMEOUT));
        // PUBACKs keep coming for older batches: the deadline moves with them.
        let later = t0 + Duration::from_secs(25);
        assert_eq!(
            ack_deadline(Some(t0), Some(later)),
            Some(later + ACK_TIMEOUT)
        );
        // A PUBACK from before the oldest write does not shorten its wait.
        let before = t0 - Duration::from_secs(60);
        assert_eq!(ack_deadline(Some(t0), Some(before)), Some(t0 + ACK_TIMEOUT));
    }

    /// A connected connection carrying `members` devices (`sim-00000`...), backlog bound 10.
    fn connection_with(faults: Faults, members: usize) -> Connection {
        let cfg = ConnectionConfig {
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 1,
            },
            start_at: Instant::now(),
            interval: Duration::from_secs(1),
            batches: None,
            format: Format::Protobuf,
            drain_timeout: Duration::from_secs(1),
            max_unacked: 10,
            outage: None,
            run_started: Instant::now(),
        };
        let devices = (0..members)
            .map(|i| DeviceConfig {
                identity: Identity::new(1, i, format!("sim-{i:05}")),
                first_seq: 1,
                faults: faults.plan(1, i, 1, Duration::from_secs(1)),
                value_faults: Default::default(),
            })
            .collect();
        let mut c = Connection::new(cfg, devices, Arc::new(FleetStats::default()));
        c.connected = true;
        c
    }

    fn eventloop(c: &Connection) -> EventLoop {
        connect_options(c).expect("a connection has devices").1
    }

    fn connack() -> Event {
        Event::Incoming(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
    }

    /// Regression: a PUBACK read just before the connection failed stays buffered in the
    /// event loop. It must count for the batch it acknowledged, not for whatever reuses its
    /// packet id on the next connection.
    #[tokio::test]
    async fn pubacks_buffered_at_a_failure_are_credited_before_resending() {
        let mut c = connection();
        let mut eventloop = eventloop(&c);
        c.produce();
        c.produce();
        let first = c.outbox.next().unwrap();
        let second = c.outbox.next().unwrap();
        for p in [&first, &second] {
            c.on_event(
                Event::Outgoing(Outgoing::Publish(p.pkid)),
                &mut eventloop,
                Phase::Running,
            );
        }
        eventloop
            .state
            .events
            .push_back(Event::Incoming(Packet::PubAck(PubAck::new(first.pkid))));
        c.connection_lost(&mut eventloop, Phase::Running);
        assert_eq!(c.devices[0].acked_ranges(), [[1, 1]]);
        assert_eq!(c.outbox.unacked(), 1, "only seq 2 is resent");
        assert!(!c.connected);
        assert!(eventloop.state.events.is_empty() && eventloop.pending.is_empty());
        // After the reconnect, seq 2 goes out again as a resend.
        c.on_event(connack(), &mut eventloop, Phase::Running);
        let status = c.outbox.next().unwrap();
        assert_eq!(status.topic, "fleetmon/v1/sim-00000/status");
        let again = c.outbox.next().unwrap();
        assert!(again.dup);
        c.on_event(
            Event::Outgoing(Outgoing::Publish(again.pkid)),
            &mut eventloop,
            Phase::Running,
        );
        c.on_event(
            Event::Incoming(Packet::PubAck(PubAck::new(again.pkid))),
            &mut eventloop,
            Phase::Running,
        );
        assert_eq!(c.devices[0].acked_ranges(), [[1, 2]]);
        let summary = &c.devices[0].summary;
        assert_eq!(summary.resends, 1);
        assert_eq!(summary.batches_sent, 2);
    }

    fn event(c: &mut Connection, eventloop: &mut EventLoop, event: Event) {
        c.on_event(event, eventloop, Phase::Running);
    }

    /// Hands everything the outbox lets go, as written.
    fn write_all(c: &mut Connection, eventloop: &mut EventLoop) -> Vec<Publish> {
        let handed: Vec<Publish> = std::iter::from_fn(|| c.outbox.next()).collect();
        for p in &handed {
            event(c, eventloop, Event::Outgoing(Outgoing::Publish(p.pkid)));
        }
        handed
    }

    fn puback(c: &mut Connection, eventloop: &mut EventLoop, pkid: u16) {
        event(
            c,
            eventloop,
            Event::Incoming(Packet::PubAck(PubAck::new(pkid))),
        );
    }

    /// Corrupted copies count when written, never go out twice, and the batch follows on the
    /// next connection; extra copies count when acknowledged.
    #[tokio::test]
    async fn injected_faults_are_counted_as_they_happen() {
        let mut c = connection_with(
            Faults {
                corrupt: 1.0,
                duplicate: 1.0,
                ..Faults::default()
            },
            1,
        );
        let mut eventloop = eventloop(&c);
        c.produce();
        // Only the corrupted copy goes; the server closes the connection.
        let first = write_all(&mut c, &mut eventloop);
        assert_eq!(first.len(), 1);
        assert!(fleetmon_protocol::decode(&first[0].payload, &Default::default()).is_err());
        assert_eq!(c.devices[0].summary.corrupted, 1);
        assert_eq!(
            c.devices[0].summary.batches_sent, 0,
            "a corrupted copy is not a sent batch"
        );
        c.connection_lost(&mut eventloop, Phase::Running);
        // Reconnected: the good batch, acknowledged, then its extra copy.
        let good = write_all(&mut c, &mut eventloop);
        assert_eq!(good.len(), 1);
        let (batch, _) = fleetmon_protocol::decode(&good[0].payload, &Default::default()).unwrap();
        assert_eq!(batch.seq, 1);
        puback(&mut c, &mut eventloop, good[0].pkid);
        let copy = write_all(&mut c, &mut eventloop);
        assert_eq!(copy.len(), 1);
        assert_eq!(copy[0].payload, good[0].payload, "identical bytes");
        assert_eq!(
            c.devices[0].summary.duplicated, 0,
            "counted once acknowledged"
        );
        puback(&mut c, &mut eventloop, copy[0].pkid);
        let s = &c.devices[0].summary;
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.corrupted, 1);
        assert_eq!((s.batches_sent, s.batches_acked), (1, 1));
        assert_eq!(c.outbox.unacked(), 0);
        assert!(
            write_all(&mut c, &mut eventloop).is_empty(),
            "no third copy"
        );
    }

    #[tokio::test]
    async fn a_lost_batch_is_dropped_unless_it_is_the_last() {
        let mut c = connection_with(
            Faults {
                loss: 1.0,
                ..Faults::default()
            },
            1,
        );
        for _ in 0..4 {
            c.produce();
        }
        // Seq 1 is never lost; 2 and 3 are; 4 is held until the end of the run.
        assert_eq!(c.devices[0].summary.lost_seqs, [2, 3]);
        assert_eq!(c.outbox.unacked(), 1);
        c.drain(Instant::now());
        assert_eq!(c.outbox.unacked(), 2, "the last seq is sent after all");
        let s = &c.devices[0].summary;
        assert_eq!(s.lost_seqs, [2, 3]);
        assert_eq!(s.batches_produced, 4);
    }

    /// Three devices behind one connection: one client id and Last Will (the head's), one
    /// packet-id space, and each device's own seqs, acknowledgements and backlog.
    #[tokio::test]
    async fn devices_sharing_a_connection_keep_their_own_accounts() {
        let mut c = connection_with(Faults::default(), 3);
        let mut eventloop = eventloop(&c);
        assert_eq!(eventloop.mqtt_options.client_id(), "sim-00000");
        let will = eventloop.mqtt_options.last_will().expect("a Last Will");
        assert_eq!(will.topic, "fleetmon/v1/sim-00000/status");
        event(&mut c, &mut eventloop, connack());
        c.produce();
        let handed = write_all(&mut c, &mut eventloop);
        let topics: Vec<&str> = handed.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "fleetmon/v1/sim-00000/status",
                "fleetmon/v1/sim-00000/telemetry",
                "fleetmon/v1/sim-00001/telemetry",
                "fleetmon/v1/sim-00002/telemetry",
            ],
            "only the head says online; every device sends its own batch"
        );
        let mut pkids: Vec<u16> = handed.iter().map(|p| p.pkid).collect();
        pkids.dedup();
        assert_eq!(pkids.len(), 4, "packet ids are the connection's: {pkids:?}");
        for p in &handed[1..] {
            let (batch, _) = fleetmon_protocol::decode(&p.payload, &Default::default()).unwrap();
            assert_eq!(batch.seq, 1);
        }
        // Device 1's batch is acknowledged; then the connection breaks.
        puback(&mut c, &mut eventloop, handed[2].pkid);
        assert_eq!(c.devices[1].acked_ranges(), [[1, 1]]);
        assert!(c.devices[0].acked_ranges().is_empty() && c.devices[2].acked_ranges().is_empty());
        c.connection_lost(&mut eventloop, Phase::Running);
        event(&mut c, &mut eventloop, connack());
        c.produce();
        let again = write_all(&mut c, &mut eventloop);
        let sent: Vec<(String, u64, bool)> = again[1..]
            .iter()
            .map(|p| {
                let (b, _) = fleetmon_protocol::decode(&p.payload, &Default::default()).unwrap();
                (b.device, b.seq, p.dup)
            })
            .collect();
        // Seq first, so devices take turns; resends carry DUP.
        assert_eq!(
            sent,
            [
                ("sim-00000".into(), 1, true),
                ("sim-00002".into(), 1, true),
                ("sim-00000".into(), 2, false),
                ("sim-00001".into(), 2, false),
                ("sim-00002".into(), 2, false),
            ]
        );
        for p in &again {
            puback(&mut c, &mut eventloop, p.pkid);
        }
        assert_eq!(c.outbox.unacked(), 0);
        // Each device's backlog is its own: with nothing acknowledged, ten ticks fill all three.
        c.connection_lost(&mut eventloop, Phase::Running);
        for _ in 0..12 {
            c.produce();
        }
        assert_eq!(c.outbox.unacked(), 30);
        let summaries = c.finish();
        for s in &summaries {
            assert_eq!(s.acked_seqs, [[1, 2]], "{}", s.device);
            assert_eq!(
                (s.batches_produced, s.batches_skipped),
                (12, 2),
                "{}",
                s.device
            );
            assert_eq!(s.connections, 2);
        }
        assert_eq!(summaries[0].resends, 1);
        assert_eq!(summaries[1].resends, 0);
    }
}
