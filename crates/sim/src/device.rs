//! One simulated device: its own MQTT connection, producing a batch every interval, tracking
//! which batches the server acknowledged, reconnecting and resending when the server goes
//! away, and saying goodbye properly at the end.
//!
//! # Life of a device
//! 1. Wait for its start offset (devices are staggered over the first interval).
//! 2. **Running**: connect (Last Will `offline` on the status topic, retained, QoS 1); after
//!    every CONNACK publish a retained `online`. Every tick, produce a batch into the
//!    [`Outbox`] whether connected or not; when more than the backlog bound are
//!    unacknowledged, skip the tick and count it. When the connection fails, keep polling the
//!    event loop after a short random backoff; it reconnects and the outbox re-sends.
//! 3. **Draining** (after the last tick, the run's end, or `stop`): produce no more, wait up
//!    to `drain_timeout` for every batch's PUBACK.
//! 4. **Closing**: publish a retained `offline`, wait briefly for its PUBACK, then send
//!    DISCONNECT. If that fails the connection is just dropped, and the broker publishes the
//!    Last Will (also `offline`).
//!
//! The event loop is polled in a `select!` with the timers. The outbox assigns packet ids and
//! feeds `EventLoop::pending` directly; see [`crate::outbox`] for why.
//!
//! # Injected faults
//! The device follows its [`FaultPlan`] (see [`crate::faults`]): a batch chosen to be lost is
//! held back and dropped once the next one is produced (so the last seq is always sent); a
//! batch chosen to be corrupted is queued after a corrupted copy of itself; an acknowledged
//! batch chosen to be duplicated is queued once more. At the start of its outage window the
//! device stops handing batches and waits until it is connected, has been acknowledged a
//! message on this connection (so the server knows whom the connection speaks for) and has
//! nothing in flight (so the server's duplicate count stays exact); then it drops the
//! connection without DISCONNECT and polls nothing for the outage's length (so a busy server
//! delays the window, it never shortens it). Ticks keep producing into the outbox meanwhile.
//! An outage that has not begun when the run stops producing is cancelled.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fastrand::Rng;
use fleetmon_protocol::{Format, SeqSet, Topic, encode_columnar, encode_json, encode_protobuf};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, Request,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tracing::{debug, warn};

use crate::faults::{FaultPlan, LossGate};
use crate::generator::Generator;
use crate::identity::Identity;
use crate::options::Endpoint;
use crate::outbox::{Kind, Outbox};
use crate::signal::mix;
use crate::stats::FleetStats;
use crate::summary::DeviceSummary;
use crate::truth::Outage;

/// Messages handed to the event loop at once (and so the largest packet id).
const WINDOW: u16 = 32;
/// MQTT keepalive; a dead connection is noticed within about twice this.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Reconnect backoff, drawn uniformly so a fleet does not reconnect in lockstep.
const BACKOFF_MS: std::ops::RangeInclusive<u64> = 100..=250;
/// A written message still unacknowledged after this long means the connection is stuck
/// (or a write was lost): drop it and resend on a new one.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final `offline` status and DISCONNECT may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a device needs to know, fixed for the run.
#[derive(Debug, Clone)]
pub(crate) struct DeviceConfig {
    pub identity: Identity,
    pub endpoint: Endpoint,
    pub start_at: Instant,
    pub interval: Duration,
    pub batches: Option<u64>,
    pub first_seq: u64,
    pub format: Format,
    pub drain_timeout: Duration,
    pub max_unacked: usize,
    pub faults: FaultPlan,
    /// The scenario's value faults, applied by the generator.
    pub value_faults: crate::scenario::DeviceFaults,
    /// The start of the run, which outage windows are relative to.
    pub run_started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining { until: Instant },
    Closing { until: Instant },
}

/// Where the device is in its injected outage.
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

/// What woke the device up.
enum Wake {
    Stop,
    Tick,
    Deadline,
    Reconnect,
    AckTimeout,
    Outage,
    Mqtt(Result<Event, ConnectionError>),
}

struct Device {
    cfg: DeviceConfig,
    generator: Generator,
    /// The device clock of the last batch: batches get strictly increasing times, as a real
    /// device's readings do, even when ticks bunch up under load.
    last_clock_ms: i64,
    outbox: Outbox,
    summary: DeviceSummary,
    stats: Arc<FleetStats>,
    telemetry_topic: String,
    status_topic: String,
    connected: bool,
    /// Failures since the last CONNACK; only the first of an outage is logged.
    failures: u64,
    rng: Rng,
    disconnect_sent: bool,
    /// Seqs written at least once, and acknowledged; copied into the summary at the end.
    sent: SeqSet,
    acked: SeqSet,
    /// The batch chosen to be lost, held until it is certain not to be the last.
    losses: LossGate<(u32, Vec<u8>)>,
    outage: OutageState,
    /// A PUBACK arrived on the current connection.
    spoke: bool,
}

/// Runs one device until it has drained and closed; returns what it did.
pub(crate) async fn run_device(
    cfg: DeviceConfig,
    mut stop: watch::Receiver<bool>,
    stats: Arc<FleetStats>,
) -> DeviceSummary {
    let id = &cfg.identity;
    let summary = DeviceSummary {
        device: id.device.clone(),
        model: id.model.as_str().to_owned(),
        site: id.site.name.to_owned(),
        boot_id: id.boot_id.clone(),
        first_seq: cfg.first_seq,
        clock_skew_ms: cfg.faults.clock_skew_ms,
        value_faults: cfg.value_faults.windows.clone(),
        ..DeviceSummary::default()
    };
    let outage = cfg
        .faults
        .outage
        .map_or(OutageState::None, |w| OutageState::Pending {
            start: crate::later(cfg.run_started, w.start),
            length: w.length,
        });
    let mut generator = Generator::new(id);
    generator.set_faults(cfg.value_faults.clone());
    let mut device = Device {
        generator,
        last_clock_ms: i64::MIN,
        outbox: Outbox::new(WINDOW, cfg.max_unacked),
        telemetry_topic: Topic::telemetry(&id.device),
        status_topic: Topic::status(&id.device),
        rng: Rng::with_seed(mix(id.value_seed, 0xB0FF)),
        summary,
        stats,
        connected: false,
        failures: 0,
        disconnect_sent: false,
        sent: SeqSet::new(),
        acked: SeqSet::new(),
        losses: LossGate::default(),
        outage,
        spoke: false,
        cfg,
    };

    // The stagger: nothing happens before the start offset, unless the run is stopped.
    tokio::select! {
        () = sleep_until(device.cfg.start_at) => {}
        _ = stop.wait_for(|stopped| *stopped) => return device.summary,
    }

    let (client, eventloop) = connect_options(&device.cfg, &device.status_topic);
    device.run(eventloop, &mut stop).await;
    // The client kept the request channel open while polling; it is no longer needed.
    drop(client);
    device.summary
}

/// The MQTT client of a device: client id = device id, Last Will `offline` retained.
fn connect_options(cfg: &DeviceConfig, status_topic: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(
        cfg.identity.device.clone(),
        cfg.endpoint.host.clone(),
        cfg.endpoint.port,
    );
    options
        .set_keep_alive(KEEP_ALIVE)
        // The outbox, not the broker session, is what survives a reconnect.
        .set_clean_session(true)
        .set_inflight(WINDOW)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            status_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    (client, eventloop)
}

impl Device {
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
                // A device that never got through has no status to take back.
                let never_connected = self.summary.connections == 0 && !self.connected;
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
            let ack_deadline = self
                .outbox
                .oldest_write()
                .filter(|_| self.connected)
                .map(|t| t + ACK_TIMEOUT);
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
                    if self.cfg.batches.is_some_and(|n| self.ticks() >= n) {
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
                        device = %self.cfg.identity.device,
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
                            warn!(device = %self.cfg.identity.device, %error, "MQTT connection refused; retrying");
                        } else {
                            debug!(device = %self.cfg.identity.device, %error, "MQTT connection failed; retrying");
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
            self.stats.disconnected();
        }
        if let OutageState::Away { start_ms, .. } = self.outage {
            // The run ended while away.
            self.back_from_outage(start_ms);
        }
        self.summary.clean_disconnect = self.disconnect_sent;
        self.summary.sent_seqs = self.sent.ranges().to_vec();
        self.summary.acked_seqs = self.acked.ranges().to_vec();
        let counts = &self.summary.samples_per_batch;
        self.summary.samples_sent = counts.total_in(&self.summary.sent_seqs);
        self.summary.samples_acked = counts.total_in(&self.summary.acked_seqs);
        debug!(
            device = %self.cfg.identity.device,
            produced = self.summary.batches_produced,
            acked = self.summary.batches_acked,
            "device finished"
        );
    }

    /// Stops producing; waits for acknowledgements until the drain deadline. A batch held
    /// back to be lost turns out to be the last one and is sent after all. An outage not yet
    /// begun is cancelled; one under way ends first, and the deadline moves past it.
    fn drain(&mut self, now: Instant) -> Phase {
        if let Some((seq, (samples, payload))) = self.losses.finish() {
            self.enqueue(seq, samples, payload);
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
    /// Last Will) and stays away until `end`. Returns what [`Device::connection_lost`] does.
    fn go_away(&mut self, eventloop: &mut EventLoop, end: Instant, phase: Phase) -> bool {
        debug!(device = %self.cfg.identity.device, "injected outage: dropping the connection");
        eventloop.clean();
        let offline_acked = self.connection_lost(eventloop, phase);
        self.outbox.hold(false);
        self.outage = OutageState::Away {
            end,
            start_ms: wall_clock_ms(),
        };
        offline_acked
    }

    /// The outage window is over (or the run ended during it); records it.
    fn back_from_outage(&mut self, start_ms: i64) {
        self.summary.outages.push(Outage {
            start_ms,
            end_ms: wall_clock_ms(),
        });
        self.outage = OutageState::None;
    }

    /// Queues the final `offline` status (now if connected, else after the next CONNACK).
    fn close(&mut self, now: Instant) -> Phase {
        if self.connected {
            let publish = self.status(false);
            self.outbox.push_status(false, publish);
        }
        Phase::Closing {
            until: now + CLOSE_TIMEOUT,
        }
    }

    /// Ticks so far: batches produced plus those held back. The `batches` option counts
    /// ticks, so a run against a server that never answers still ends.
    fn ticks(&self) -> u64 {
        self.summary.batches_produced + self.summary.batches_skipped
    }

    /// Produces the next batch into the outbox, unless the backlog is full.
    fn produce(&mut self) {
        if self.outbox.is_full() {
            self.summary.batches_skipped += 1;
            self.stats.skipped();
            if self.summary.batches_skipped == 1 {
                debug!(device = %self.cfg.identity.device, "backlog full; holding back new batches");
            }
            return;
        }
        let seq = self.cfg.first_seq + self.summary.batches_produced;
        let device_clock = wall_clock_ms()
            .saturating_add(self.cfg.faults.clock_skew_ms)
            .max(self.last_clock_ms.saturating_add(1));
        self.last_clock_ms = device_clock;
        let batch = self.generator.batch(seq, device_clock);
        let payload = match self.cfg.format {
            Format::Protobuf => encode_protobuf(&batch),
            Format::Columnar => encode_columnar(&batch),
            Format::Json => encode_json(&batch),
        };
        let samples = u32::try_from(batch.samples.len()).unwrap_or(u32::MAX);
        self.summary.samples_per_batch.record(seq, samples);
        self.summary.batches_produced += 1;
        self.stats.produced();
        let lose = self.cfg.faults.lost(seq);
        let admitted = self.losses.admit(seq, (samples, payload), lose);
        self.summary.lost_seqs.extend(admitted.lost);
        if let Some((samples, payload)) = admitted.send {
            self.enqueue(seq, samples, payload);
        }
    }

    /// Queues batch `seq` for sending, after a corrupted copy if the plan says so.
    fn enqueue(&mut self, seq: u64, samples: u32, payload: Vec<u8>) {
        if self.cfg.faults.corrupted(seq) {
            let bad = self
                .cfg
                .faults
                .corrupt_payload(seq, &payload, self.cfg.format);
            let publish = Publish::new(self.telemetry_topic.clone(), QoS::AtLeastOnce, bad);
            self.outbox.push_corrupt(seq, publish);
        }
        let publish = Publish::new(self.telemetry_topic.clone(), QoS::AtLeastOnce, payload);
        self.outbox.push_telemetry(seq, samples, publish);
    }

    /// A retained status message.
    fn status(&self, online: bool) -> Publish {
        let mut publish = Publish::new(
            self.status_topic.clone(),
            QoS::AtLeastOnce,
            if online { "online" } else { "offline" },
        );
        publish.retain = true;
        publish
    }

    /// Accounts for one event; returns the kind of message a PUBACK acknowledged.
    fn on_event(&mut self, event: Event, eventloop: &mut EventLoop, phase: Phase) -> Option<Kind> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                if self.failures > 0 || self.summary.connections > 0 {
                    debug!(device = %self.cfg.identity.device, failures = self.failures, "reconnected");
                }
                self.failures = 0;
                self.connected = true;
                self.summary.connections += 1;
                self.stats.connected();
                // The outbox re-sends everything unacknowledged; nothing left over from the
                // previous connection may go out twice.
                eventloop.pending.clear();
                let online = !matches!(phase, Phase::Closing { .. });
                let publish = self.status(online);
                self.outbox.push_status(online, publish);
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let (kind, publish) = self.outbox.acked_publish(ack.pkid)?;
                self.spoke = true;
                match kind {
                    Kind::Telemetry { seq, .. } if self.acked.insert(seq) => {
                        self.summary.batches_acked += 1;
                        self.stats.acked();
                        // Not while closing: the copy could not be waited for.
                        let closing = matches!(phase, Phase::Closing { .. });
                        if !closing && self.cfg.faults.duplicated(seq) {
                            self.outbox.push_duplicate(seq, publish);
                        }
                    }
                    Kind::Duplicate { .. } => self.summary.duplicated += 1,
                    _ => {}
                }
                Some(kind)
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let written = self.outbox.written(pkid, Instant::now())?;
                match written.kind {
                    Kind::Telemetry { seq, .. } => {
                        if self.sent.insert(seq) {
                            self.summary.batches_sent += 1;
                        } else {
                            self.summary.resends += 1;
                        }
                    }
                    Kind::Corrupt { .. } if written.first => self.summary.corrupted += 1,
                    _ => {}
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
            self.stats.disconnected();
        }
        self.spoke = false;
        self.summary.duplicates_unconfirmed += self.outbox.connection_lost();
        // rumqttc moved its unacknowledged publishes here; the outbox owns them now.
        eventloop.pending.clear();
        offline_acked
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use rumqttc::PubAck;

    use super::*;
    use crate::options::Endpoint;

    fn device() -> Device {
        device_with(crate::faults::Faults::default())
    }

    fn device_with(faults: crate::faults::Faults) -> Device {
        let identity = Identity::new(1, 0, "sim-00000".into());
        let cfg = DeviceConfig {
            identity: identity.clone(),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 1,
            },
            start_at: Instant::now(),
            interval: Duration::from_secs(1),
            batches: None,
            first_seq: 1,
            format: Format::Protobuf,
            drain_timeout: Duration::from_secs(1),
            max_unacked: 10,
            faults: faults.plan(1, 0, 1, Duration::from_secs(1)),
            value_faults: Default::default(),
            run_started: Instant::now(),
        };
        Device {
            generator: Generator::new(&identity),
            last_clock_ms: i64::MIN,
            outbox: Outbox::new(WINDOW, 10),
            telemetry_topic: Topic::telemetry(&identity.device),
            status_topic: Topic::status(&identity.device),
            rng: Rng::with_seed(1),
            summary: DeviceSummary::default(),
            stats: Arc::new(FleetStats::default()),
            connected: true,
            failures: 0,
            disconnect_sent: false,
            sent: SeqSet::new(),
            acked: SeqSet::new(),
            losses: LossGate::default(),
            outage: OutageState::None,
            spoke: false,
            cfg,
        }
    }

    /// Regression: a PUBACK read just before the connection failed stays buffered in the
    /// event loop. It must count for the batch it acknowledged, not for whatever reuses its
    /// packet id on the next connection.
    #[tokio::test]
    async fn pubacks_buffered_at_a_failure_are_credited_before_resending() {
        let mut d = device();
        let (_client, mut eventloop) = connect_options(&d.cfg, &d.status_topic);
        d.produce();
        d.produce();
        let first = d.outbox.next().unwrap();
        let second = d.outbox.next().unwrap();
        for p in [&first, &second] {
            d.on_event(
                Event::Outgoing(Outgoing::Publish(p.pkid)),
                &mut eventloop,
                Phase::Running,
            );
        }
        eventloop
            .state
            .events
            .push_back(Event::Incoming(Packet::PubAck(PubAck::new(first.pkid))));
        d.connection_lost(&mut eventloop, Phase::Running);
        assert_eq!(d.acked.ranges(), &[[1, 1]]);
        assert_eq!(d.outbox.unacked(), 1, "only seq 2 is resent");
        assert!(!d.connected);
        assert!(eventloop.state.events.is_empty() && eventloop.pending.is_empty());
        // After the reconnect, seq 2 goes out again as a resend.
        d.on_event(
            Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
                rumqttc::ConnectReturnCode::Success,
                false,
            ))),
            &mut eventloop,
            Phase::Running,
        );
        let status = d.outbox.next().unwrap();
        assert_eq!(status.topic, "fleetmon/v1/sim-00000/status");
        let again = d.outbox.next().unwrap();
        assert!(again.dup);
        d.on_event(
            Event::Outgoing(Outgoing::Publish(again.pkid)),
            &mut eventloop,
            Phase::Running,
        );
        d.on_event(
            Event::Incoming(Packet::PubAck(PubAck::new(again.pkid))),
            &mut eventloop,
            Phase::Running,
        );
        assert_eq!(d.acked.ranges(), &[[1, 2]]);
        assert_eq!(d.summary.resends, 1);
        assert_eq!(d.summary.batches_sent, 2);
    }

    fn event(d: &mut Device, eventloop: &mut EventLoop, event: Event) {
        d.on_event(event, eventloop, Phase::Running);
    }

    /// Hands everything the outbox lets go, as written; returns the packet ids.
    fn write_all(d: &mut Device, eventloop: &mut EventLoop) -> Vec<(u16, Vec<u8>)> {
        let handed: Vec<Publish> = std::iter::from_fn(|| d.outbox.next()).collect();
        for p in &handed {
            event(d, eventloop, Event::Outgoing(Outgoing::Publish(p.pkid)));
        }
        handed
            .into_iter()
            .map(|p| (p.pkid, p.payload.to_vec()))
            .collect()
    }

    fn puback(d: &mut Device, eventloop: &mut EventLoop, pkid: u16) {
        event(
            d,
            eventloop,
            Event::Incoming(Packet::PubAck(PubAck::new(pkid))),
        );
    }

    /// Corrupted copies count when written, never go out twice, and the batch follows on the
    /// next connection; extra copies count when acknowledged.
    #[tokio::test]
    async fn injected_faults_are_counted_as_they_happen() {
        let mut d = device_with(crate::faults::Faults {
            corrupt: 1.0,
            duplicate: 1.0,
            ..crate::faults::Faults::default()
        });
        let (_client, mut eventloop) = connect_options(&d.cfg, &d.status_topic);
        d.produce();
        // Only the corrupted copy goes; the server closes the connection.
        let first = write_all(&mut d, &mut eventloop);
        assert_eq!(first.len(), 1);
        assert!(fleetmon_protocol::decode(&first[0].1, &Default::default()).is_err());
        assert_eq!(d.summary.corrupted, 1);
        assert_eq!(
            d.summary.batches_sent, 0,
            "a corrupted copy is not a sent batch"
        );
        d.connection_lost(&mut eventloop, Phase::Running);
        // Reconnected: the good batch, acknowledged, then its extra copy.
        let good = write_all(&mut d, &mut eventloop);
        assert_eq!(good.len(), 1);
        let (batch, _) = fleetmon_protocol::decode(&good[0].1, &Default::default()).unwrap();
        assert_eq!(batch.seq, 1);
        puback(&mut d, &mut eventloop, good[0].0);
        let copy = write_all(&mut d, &mut eventloop);
        assert_eq!(copy.len(), 1);
        assert_eq!(copy[0].1, good[0].1, "identical bytes");
        assert_eq!(d.summary.duplicated, 0, "counted once acknowledged");
        puback(&mut d, &mut eventloop, copy[0].0);
        assert_eq!(d.summary.duplicated, 1);
        assert_eq!(d.summary.corrupted, 1);
        assert_eq!((d.summary.batches_sent, d.summary.batches_acked), (1, 1));
        assert_eq!(d.outbox.unacked(), 0);
        assert!(
            write_all(&mut d, &mut eventloop).is_empty(),
            "no third copy"
        );
    }

    #[tokio::test]
    async fn a_lost_batch_is_dropped_unless_it_is_the_last() {
        let mut d = device_with(crate::faults::Faults {
            loss: 1.0,
            ..crate::faults::Faults::default()
        });
        for _ in 0..4 {
            d.produce();
        }
        // Seq 1 is never lost; 2 and 3 are; 4 is held until the end of the run.
        assert_eq!(d.summary.lost_seqs, [2, 3]);
        assert_eq!(d.outbox.unacked(), 1);
        d.drain(Instant::now());
        assert_eq!(d.outbox.unacked(), 2, "the last seq is sent after all");
        assert_eq!(d.summary.lost_seqs, [2, 3]);
        assert_eq!(d.summary.batches_produced, 4);
    }
}
