//! The MQTT link: one rumqttc event loop, polled by the agent's main loop.
//!
//! # Delivery
//! Batches go out QoS 1 on `fleetmon/v1/{device}/telemetry`, oldest seq first, loaded from the
//! spool a few at a time (at most `window` in flight, at most `max_batches_per_second` handed
//! to the network, so a backlog after an outage drains at a bounded rate). A batch leaves the
//! spool only when its PUBACK arrives. When the connection is lost, PUBACKs already read are
//! credited first, then everything unacknowledged is forgotten here and loaded from the spool
//! again after the next CONNACK (see [`super::outbox`] for why rumqttc's own resend is not
//! used). Reconnects wait a jittered exponential backoff.
//!
//! # Status and control
//! The Last Will is a retained `offline` on `fleetmon/v1/{device}/status`; after every CONNACK
//! a retained `online` goes out first, and [`MqttLink::close`] sends a retained `offline`
//! before DISCONNECT. The link subscribes to `fleetmon/v1/{device}/control`; a
//! `{"command":"low_power","enabled":true|false}` there sets [`MqttLink::low_power_command`].
//!
//! # Round-trip time
//! The MQTT keepalive PINGREQ/PINGRESP pair is timed: an application-level echo to the server
//! that costs no extra traffic. [`MqttLink::server_probe`] summarises the last pings.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleetmon_protocol::Topic;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, Request, Subscribe, TlsConfiguration, Transport,
};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::outbox::{Kind, Outbox};
use crate::collect::AgentStats;
use crate::probe::Window;
use crate::spool::{Spool, SpoolError};

/// How the link connects.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub device: String,
    pub host: String,
    pub port: u16,
    /// TLS client configuration; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Batches in flight at once.
    pub window: u16,
    pub max_batches_per_second: u32,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub keep_alive: Duration,
    /// A written batch without PUBACK for this long means the connection is stuck.
    pub ack_timeout: Duration,
}

/// What woke the link.
#[derive(Debug)]
pub enum Wake {
    Mqtt(Result<Event, ConnectionError>),
    Reconnect,
    AckTimeout,
    Refill,
}

/// The agent's MQTT connection.
pub struct MqttLink {
    cfg: LinkConfig,
    eventloop: EventLoop,
    _client: AsyncClient,
    outbox: Outbox,
    connected: bool,
    /// Highest seq loaded from the spool into the outbox on this connection.
    loaded_through: Option<u64>,
    tokens: f64,
    last_refill: Instant,
    /// Set when a backlog waits for rate tokens.
    refill_at: Option<Instant>,
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    stats: Arc<AgentStats>,
    telemetry_topic: String,
    status_topic: String,
    control_topic: String,
    ping_sent: Option<Instant>,
    pings: Window,
    failures: u64,
    closing: bool,
    offline_acked: bool,
    disconnect_sent: bool,
    low_power_command: Option<bool>,
}

impl std::fmt::Debug for MqttLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttLink")
            .field("device", &self.cfg.device)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

fn options(cfg: &LinkConfig, status_topic: &str) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.device.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive)
        // The spool, not the broker session, is what survives a reconnect.
        .set_clean_session(true)
        .set_inflight(cfg.window)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            status_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(tls) = &cfg.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    o
}

impl MqttLink {
    pub fn new(cfg: LinkConfig, stats: Arc<AgentStats>) -> Self {
        let status_topic = Topic::status(&cfg.device);
        let (client, mut eventloop) = AsyncClient::new(options(&cfg, &status_topic), 10);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        eventloop.set_network_options(network);
        Self {
            telemetry_topic: Topic::telemetry(&cfg.device),
            control_topic: Topic::control(&cfg.device),
            status_topic,
            outbox: Outbox::new(cfg.window),
            backoff: Backoff::new(cfg.reconnect_min, cfg.reconnect_max),
            tokens: f64::from(cfg.max_batches_per_second),
            last_refill: Instant::now(),
            refill_at: None,
            eventloop,
            _client: client,
            connected: false,
            loaded_through: None,
            reconnect_at: None,
            stats,
            ping_sent: None,
            pings: Window::new(20),
            failures: 0,
            closing: false,
            offline_acked: false,
            disconnect_sent: false,
            low_power_command: None,
            cfg,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The last `low_power` command from the server, if any.
    pub fn low_power_command(&self) -> Option<bool> {
        self.low_power_command
    }

    /// Round-trip statistics of the recent keepalive pings.
    pub fn server_probe(&self) -> &Window {
        &self.pings
    }

    /// Loads batches from the spool into the outbox (within the window and the rate) and
    /// hands whatever has room to the event loop.
    pub fn feed(&mut self, spool: &Spool) -> Result<(), SpoolError> {
        self.refill_at = None;
        if !self.connected {
            return Ok(());
        }
        let now = Instant::now();
        let rate = f64::from(self.cfg.max_batches_per_second);
        self.tokens =
            (self.tokens + now.duration_since(self.last_refill).as_secs_f64() * rate).min(rate);
        self.last_refill = now;
        while !self.closing && self.outbox.telemetry() < usize::from(self.cfg.window) {
            let Some(&seq) = spool.after(self.loaded_through, 1).first() else {
                break;
            };
            if self.tokens < 1.0 {
                self.refill_at = Some(now + Duration::from_secs_f64((1.0 - self.tokens) / rate));
                break;
            }
            let Some(payload) = spool.read(seq)? else {
                break;
            };
            self.tokens -= 1.0;
            self.loaded_through = Some(seq);
            let publish = Publish::new(self.telemetry_topic.clone(), QoS::AtLeastOnce, payload);
            self.outbox.push_telemetry(seq, publish);
        }
        while let Some(publish) = self.outbox.next_publish() {
            self.stats
                .uplink_bytes
                .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
            self.eventloop.pending.push_back(Request::Publish(publish));
        }
        Ok(())
    }

    /// Waits for the next thing the link must handle.
    pub async fn wait(&mut self) -> Wake {
        let now = Instant::now();
        let reconnect_at = self.reconnect_at;
        let refill_at = self.refill_at;
        let ack_deadline = self
            .outbox
            .oldest_write()
            .filter(|_| self.connected)
            .map(|t| t + self.cfg.ack_timeout);
        tokio::select! {
            () = sleep_until(reconnect_at.unwrap_or(now)), if reconnect_at.is_some() => Wake::Reconnect,
            () = sleep_until(ack_deadline.unwrap_or(now)), if ack_deadline.is_some() => Wake::AckTimeout,
            () = sleep_until(refill_at.unwrap_or(now)), if refill_at.is_some() => Wake::Refill,
            event = self.eventloop.poll(), if reconnect_at.is_none() => Wake::Mqtt(event),
        }
    }

    /// Handles what [`MqttLink::wait`] returned; acknowledged batches leave the spool.
    pub fn handle(&mut self, wake: Wake, spool: &mut Spool) -> Result<(), SpoolError> {
        match wake {
            Wake::Reconnect => self.reconnect_at = None,
            Wake::Refill => self.refill_at = None,
            Wake::AckTimeout => {
                warn!(
                    timeout_s = self.cfg.ack_timeout.as_secs(),
                    "no PUBACK for a published batch; reconnecting to resend"
                );
                self.eventloop.clean();
                self.connection_lost(spool)?;
            }
            Wake::Mqtt(Ok(event)) => self.on_event(event, spool)?,
            Wake::Mqtt(Err(error)) => {
                self.failures += 1;
                if self.failures == 1 {
                    warn!(%error, server = %format!("{}:{}", self.cfg.host, self.cfg.port), "MQTT connection failed; batches stay in the spool");
                } else {
                    debug!(%error, failures = self.failures, "MQTT reconnect failed");
                }
                self.connection_lost(spool)?;
            }
        }
        Ok(())
    }

    fn status(&self, online: bool) -> Publish {
        let mut p = Publish::new(
            self.status_topic.clone(),
            QoS::AtLeastOnce,
            if online { "online" } else { "offline" },
        );
        p.retain = true;
        p
    }

    fn on_event(&mut self, event: Event, spool: &mut Spool) -> Result<(), SpoolError> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                info!(
                    failures = self.failures,
                    backlog = spool.len(),
                    "MQTT connected"
                );
                self.failures = 0;
                self.connected = true;
                self.backoff.reset();
                self.eventloop.pending.clear();
                self.outbox.clear();
                self.loaded_through = None;
                self.eventloop
                    .pending
                    .push_back(Request::Subscribe(Subscribe::new(
                        &self.control_topic,
                        QoS::AtLeastOnce,
                    )));
                let online = !self.closing;
                let status = self.status(online);
                self.outbox.push_status(online, status);
            }
            Event::Incoming(Packet::PubAck(ack)) => match self.outbox.acked(ack.pkid) {
                Some(Kind::Telemetry { seq }) => {
                    spool.ack(seq)?;
                    self.stats
                        .spool_bytes
                        .store(spool.bytes(), Ordering::Relaxed);
                }
                Some(Kind::Status { online: false }) => self.offline_acked = true,
                _ => {}
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.outbox.written(pkid, Instant::now());
            }
            Event::Outgoing(Outgoing::PingReq) => self.ping_sent = Some(Instant::now()),
            Event::Incoming(Packet::PingResp) => {
                if let Some(sent) = self.ping_sent.take() {
                    self.pings.record(Some(sent.elapsed()));
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => self.disconnect_sent = true,
            Event::Incoming(Packet::Publish(p)) if p.topic == self.control_topic => {
                self.on_control(&p.payload);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_control(&mut self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Command {
            command: String,
            #[serde(default)]
            enabled: bool,
        }
        match serde_json::from_slice::<Command>(payload) {
            Ok(c) if c.command == "low_power" => {
                info!(enabled = c.enabled, "low-power command from the server");
                self.low_power_command = Some(c.enabled);
            }
            Ok(c) => warn!(command = %c.command, "unknown control command ignored"),
            Err(error) => warn!(%error, "unreadable control message ignored"),
        }
    }

    /// The connection is gone: credit PUBACKs already read, forget the rest (the spool keeps
    /// it), and schedule the reconnect.
    fn connection_lost(&mut self, spool: &mut Spool) -> Result<(), SpoolError> {
        let buffered: Vec<Event> = self.eventloop.state.events.drain(..).collect();
        for event in buffered {
            self.on_event(event, spool)?;
        }
        if self.ping_sent.take().is_some() {
            self.pings.record(None);
        }
        self.connected = false;
        self.outbox.clear();
        self.eventloop.pending.clear();
        self.loaded_through = None;
        self.reconnect_at = Some(Instant::now() + self.backoff.next_delay());
        // The acks are durable soon after an outage begins, not only at the next drop.
        spool.flush()
    }

    /// Says goodbye: a retained `offline`, then DISCONNECT, within `timeout`. Batches not yet
    /// acknowledged stay in the spool for the next start.
    pub async fn close(&mut self, spool: &mut Spool, timeout: Duration) -> Result<(), SpoolError> {
        self.closing = true;
        if !self.connected {
            return Ok(());
        }
        let status = self.status(false);
        self.outbox.push_status(false, status);
        let deadline = Instant::now() + timeout;
        let mut asked_disconnect = false;
        while Instant::now() < deadline && self.connected && !self.disconnect_sent {
            if self.offline_acked && !asked_disconnect {
                self.eventloop
                    .pending
                    .push_back(Request::Disconnect(rumqttc::Disconnect));
                asked_disconnect = true;
            }
            self.feed(spool)?;
            let wake = tokio::select! {
                w = self.wait() => w,
                () = sleep_until(deadline) => break,
            };
            if matches!(wake, Wake::Mqtt(Err(_))) {
                break;
            }
            self.handle(wake, spool)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{ConnAck, ConnectReturnCode, PubAck};

    use super::*;

    fn link(rate: u32) -> MqttLink {
        MqttLink::new(
            LinkConfig {
                device: "d1".into(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: None,
                window: 8,
                max_batches_per_second: rate,
                reconnect_min: Duration::from_millis(10),
                reconnect_max: Duration::from_millis(20),
                keep_alive: Duration::from_secs(5),
                ack_timeout: Duration::from_secs(30),
            },
            Arc::new(AgentStats::default()),
        )
    }

    fn spool_with(dir: &std::path::Path, n: u64) -> Spool {
        let mut s = Spool::open(dir, 1 << 20).unwrap();
        for _ in 0..n {
            s.append_with(|seq, _| vec![seq as u8; 10]).unwrap();
        }
        s
    }

    fn connack() -> Wake {
        Wake::Mqtt(Ok(Event::Incoming(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))))
    }

    /// (pkid, first payload byte) of the telemetry publishes waiting in the event loop.
    fn pending_batches(l: &MqttLink) -> Vec<(u16, u8)> {
        l.eventloop
            .pending
            .iter()
            .filter_map(|r| match r {
                Request::Publish(p) if p.topic.ends_with("/telemetry") => {
                    Some((p.pkid, p.payload[0]))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn pubacks_buffered_at_a_failure_are_credited_then_the_rest_reloads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool_with(dir.path(), 3);
        let mut l = link(100);
        l.handle(connack(), &mut spool).unwrap();
        l.feed(&spool).unwrap();
        let sent = pending_batches(&l);
        assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), vec![1, 2, 3]);
        for (pkid, _) in &sent {
            l.handle(
                Wake::Mqtt(Ok(Event::Outgoing(Outgoing::Publish(*pkid)))),
                &mut spool,
            )
            .unwrap();
        }
        // Seq 1's PUBACK was read just before the connection broke.
        l.eventloop
            .state
            .events
            .push_back(Event::Incoming(Packet::PubAck(PubAck::new(sent[0].0))));
        let broken = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        l.handle(Wake::Mqtt(Err(broken)), &mut spool).unwrap();
        assert_eq!(spool.seqs().collect::<Vec<_>>(), vec![2, 3]);
        assert!(!l.is_connected());
        assert!(l.eventloop.pending.is_empty());
        // Nothing is handed while disconnected; after the CONNACK, 2 and 3 again, in order.
        l.feed(&spool).unwrap();
        assert!(pending_batches(&l).is_empty());
        l.handle(connack(), &mut spool).unwrap();
        l.feed(&spool).unwrap();
        let again = pending_batches(&l);
        assert_eq!(again.iter().map(|s| s.1).collect::<Vec<_>>(), vec![2, 3]);
        l.handle(
            Wake::Mqtt(Ok(Event::Incoming(Packet::PubAck(PubAck::new(again[1].0))))),
            &mut spool,
        )
        .unwrap();
        assert_eq!(spool.seqs().collect::<Vec<_>>(), vec![2]);
    }

    #[tokio::test]
    async fn a_backlog_drains_at_the_configured_rate() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool_with(dir.path(), 6);
        let mut l = link(2);
        l.handle(connack(), &mut spool).unwrap();
        l.feed(&spool).unwrap();
        // Two tokens: two batches now, and a wake-up planned for the next.
        assert_eq!(pending_batches(&l).len(), 2);
        let refill = l.refill_at.expect("a refill is planned");
        assert!(refill > Instant::now() && refill <= Instant::now() + Duration::from_millis(500));
        tokio::time::sleep_until(refill).await;
        l.feed(&spool).unwrap();
        assert_eq!(pending_batches(&l).len(), 3);
    }

    #[test]
    fn control_messages_set_the_low_power_command() {
        let mut l = link(1);
        l.on_control(br#"{"command":"low_power","enabled":true}"#);
        assert_eq!(l.low_power_command(), Some(true));
        l.on_control(br#"{"command":"reboot"}"#);
        l.on_control(b"not json");
        assert_eq!(
            l.low_power_command(),
            Some(true),
            "other messages change nothing"
        );
        l.on_control(br#"{"command":"low_power","enabled":false}"#);
        assert_eq!(l.low_power_command(), Some(false));
    }
}
