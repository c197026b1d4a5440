//! One MQTT connection (3.1.1 or 5), from CONNECT to close.
//!
//! The reading half runs here: it decodes packets, hands telemetry to ingest and queues the
//! answers. A writer task owns the writing half and sends, in order, every queued packet; a
//! PUBACK (or PUBREC) waits in that queue until its batch is durable, so acknowledgements
//! follow durability and keep the order of the publishes (§4.6) while the reader keeps
//! reading.
//!
//! A payload that is not a valid batch, or a topic outside the fleetmon tree, is never
//! acknowledged. MQTT 3.1.1 has no negative PUBACK, and its §3.3.5 says a server refusing a
//! PUBLISH must close the connection, so we do. MQTT 5 has reason codes: the publish gets a
//! PUBACK with "payload format invalid", "topic name invalid" or "not authorized", and the
//! connection stays up.
//!
//! Every publish counts against its device's message rate ([`crate::ratelimit`]). Over it,
//! MQTT 5 refuses the publish with PUBACK (or PUBREC) "quota exceeded" and the reason string
//! "message rate too high"; MQTT 3.1.1, which cannot refuse, holds the publish and stops
//! reading the connection until the device's next token is due (TCP then slows the sender).
//! Either way the batch is not stored yet, and never acknowledged before it is.
//!
//! On the TLS listener the connection speaks for the device its certificate names, and only
//! for it ([`crate::security::acl`]): its client id, Last Will, publishes and subscriptions
//! stay under its own id, every refusal is a security event, and the session ends when the
//! certificate is revoked or used again elsewhere.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetmon_protocol::{Topic, decode};
use rumqttc::{Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

use super::Context;
use super::broker::{Delivery, min_qos};
use super::codec::{self, CodecError, ConnectRefusal, In, Out, Refusal, Version, Will};
use super::filter;
use crate::fleet::{Reason, Transport};
use crate::ingest::{Accepted, Pending};
use crate::listener::{Connection, Established, Incoming};
use crate::security::acl;
use crate::security::events::Kind;
use crate::security::live::Close;
use crate::telemetry::{ReasonLabels, RejectLabels};

/// How many packets may wait for the writer.
const QUEUE: usize = 1024;
/// Longest status or control payload kept or routed.
const MAX_CONTROL_PAYLOAD: usize = 64 << 10;

enum Job {
    /// Send `out` once `pending` says the batch is durable.
    Ack {
        pending: Pending,
        out: Out,
    },
    Send(Out),
}

enum ReadError {
    Closed,
    /// Closed in the middle of a packet.
    Truncated,
    Codec(CodecError),
    Io(std::io::Error),
}

type Reader = ReadHalf<Box<dyn Connection>>;
type Writer = WriteHalf<Box<dyn Connection>>;

/// Serves one connection until it closes.
pub async fn run(conn: Established, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let peer_addr = conn.peer;
    let peer = conn.peer.to_string();
    let mut identity = conn.identity;
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut buf = BytesMut::with_capacity(4096);
    let max = ctx.max_packet_bytes;

    let first = timeout(
        ctx.connect_timeout,
        read_in(&mut reader, &mut buf, None, max),
    )
    .await;
    let connect = match first {
        Ok(Ok(In::Connect(c))) => c,
        Ok(Ok(_)) => {
            tracing::warn!(%peer, "first packet was not CONNECT; closing");
            protocol_error(&ctx, "not_connect_first");
            return;
        }
        Ok(Err(ReadError::Codec(e @ CodecError::UnsupportedProtocol { .. }))) => {
            tracing::warn!(%peer, error = %e, "CONNECT refused");
            protocol_error(&ctx, e.kind());
            let refusal = Out::ConnAck(Some(ConnectRefusal::ProtocolVersion));
            let _ = write_out(&mut writer, Version::V4, refusal, max).await;
            return;
        }
        Ok(Err(ReadError::Codec(e))) => {
            tracing::warn!(%peer, error = %e, "malformed CONNECT; closing");
            protocol_error(&ctx, e.kind());
            return;
        }
        Ok(Err(ReadError::Truncated)) => {
            tracing::debug!(%peer, "closed in the middle of its CONNECT");
            protocol_error(&ctx, "truncated");
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within {:?}; closing", ctx.connect_timeout);
            return;
        }
    };
    let version = connect.version;
    let device = identity.as_ref().map(|i| i.device.clone());
    if let Some(device) = &device {
        let will = connect.will.as_ref().map(|w| {
            Topic::parse(&w.topic)
                .map_err(|_| acl::Denied::Publish {
                    device: device.clone(),
                    topic: w.topic.clone(),
                })
                .and_then(|t| acl::publish(device, &t, &w.topic))
        });
        let allowed =
            acl::client_id(device, &connect.client_id).and_then(|_| will.unwrap_or(Ok(())));
        if let Err(denied) = allowed {
            let now = ctx.state.now_ms();
            let events = &ctx.state.security.events;
            events.record(
                now,
                Kind::AclViolation,
                Some(device),
                Some(peer_addr),
                denied.to_string(),
            );
            let refusal = Out::ConnAck(Some(ConnectRefusal::NotAuthorized));
            let _ = write_out(&mut writer, version, refusal, max).await;
            return;
        }
    }
    let client_id = if let Some(device) = &device {
        device.clone()
    } else if connect.client_id.is_empty() {
        if !connect.clean_session && version == Version::V4 {
            let refusal = Out::ConnAck(Some(ConnectRefusal::ClientId));
            let _ = write_out(&mut writer, version, refusal, max).await;
            return;
        }
        format!("fleetmon-auto-{}", ctx.next_auto_id())
    } else {
        connect.client_id.clone()
    };

    let (deliveries_tx, deliveries_rx) = mpsc::channel(QUEUE);
    let (session_id, mut kicked) = ctx.broker.register(&client_id, deliveries_tx);
    if write_out(&mut writer, version, Out::ConnAck(None), max)
        .await
        .is_err()
    {
        ctx.broker.unregister(&client_id, session_id);
        return;
    }
    ctx.state.telemetry.mqtt_connections.inc();
    ctx.state.telemetry.mqtt_connections_opened.inc();
    tracing::debug!(%peer, client_id, ?version, keep_alive = connect.keep_alive, "MQTT session open");

    let (jobs, jobs_rx) = mpsc::channel(QUEUE);
    let (pings, pings_rx) = mpsc::channel(1);
    let mut writer_task = tokio::spawn(write_loop(
        writer,
        version,
        Queues {
            jobs: jobs_rx,
            pings: pings_rx,
            deliveries: deliveries_rx,
        },
        max,
    ));
    let mut session = Session {
        ctx: Arc::clone(&ctx),
        version,
        client_id,
        peer,
        peer_addr,
        jobs,
        pings,
        devices: HashSet::new(),
        will_on_disconnect: false,
        identity: device,
        held: None,
    };
    // §3.1.2.10: close after one and a half keepalive periods without a packet.
    let keepalive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));

    let reason = loop {
        let held = session.held.take();
        let read = async {
            // A publish over its device's rate: nothing more is read until it is due.
            if let Some((due, p)) = held {
                tokio::time::sleep_until(due).await;
                return Some(Ok(In::Publish(p)));
            }
            let next = read_in(&mut reader, &mut buf, Some(version), max);
            match keepalive {
                Some(k) => timeout(k, next).await.ok(),
                None => Some(next.await),
            }
        };
        let closed = async {
            match identity.as_mut() {
                Some(i) => (&mut i.close).await.ok(),
                None => std::future::pending().await,
            }
        };
        let packet = tokio::select! {
            biased;
            _ = &mut kicked => break Reason::TakenOver,
            c = closed => match c {
                Some(Close::Revoked) | None => break Reason::Revoked,
                Some(Close::Shared { .. }) => break Reason::TakenOver,
            },
            _ = shutdown.changed() => break Reason::ServerShutdown,
            _ = &mut writer_task => break Reason::Rejected,
            r = read => r,
        };
        match packet {
            None => break Reason::KeepaliveExpired,
            Some(Err(ReadError::Closed)) => break Reason::ConnectionLost,
            Some(Err(ReadError::Truncated)) => {
                tracing::debug!(peer = %session.peer, client_id = %session.client_id, "closed in the middle of a packet");
                protocol_error(&ctx, "truncated");
                break Reason::ConnectionLost;
            }
            Some(Err(ReadError::Io(e))) => {
                tracing::debug!(peer = %session.peer, error = %e, "MQTT read failed");
                break Reason::ConnectionLost;
            }
            Some(Err(ReadError::Codec(e))) => {
                tracing::warn!(peer = %session.peer, client_id = %session.client_id, error = %e, "malformed MQTT packet; closing");
                session.count_reject("mqtt_packet");
                protocol_error(&ctx, e.kind());
                break Reason::Rejected;
            }
            Some(Ok(p)) => {
                if let Err(reason) = session.handle(p).await {
                    break reason;
                }
            }
        }
    };

    if (reason != Reason::Graceful || session.will_on_disconnect)
        && let Some(will) = connect.will
    {
        session.publish_will(will);
    }
    ctx.broker.unregister(&session.client_id, session_id);
    let now = ctx.state.now_ms();
    {
        let mut registry = ctx.state.registry_mut();
        for device in &session.devices {
            registry.session_closed(device, now, ctx.state.offline_after_ms, reason);
        }
    }
    ctx.state.telemetry.mqtt_connections.dec();
    tracing::debug!(peer = %session.peer, client_id = %session.client_id, ?reason, "MQTT session closed");
    drop(session);
    drop(identity);
    // Let already durable acknowledgements go out, briefly; the connection may be gone.
    if !writer_task.is_finished() {
        let _ = timeout(Duration::from_secs(2), &mut writer_task).await;
        writer_task.abort();
    }
}

/// How long a refused connection may take to send its CONNECT before it is just closed.
const REFUSAL_READ: Duration = Duration::from_secs(1);

/// Answers a connection refused by the connection limits: reads its CONNECT (briefly) to
/// learn the version, answers CONNACK "quota exceeded" (MQTT 5) or "server unavailable"
/// (MQTT 3.1.1), and closes. A TLS connection is closed at once: a handshake to say no
/// costs the server more than the client.
pub async fn refuse_connection(incoming: Incoming, max: usize) {
    if incoming.is_tls() {
        return;
    }
    let Ok(conn) = incoming.establish().await else {
        return;
    };
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut buf = BytesMut::with_capacity(512);
    let read = timeout(REFUSAL_READ, read_in(&mut reader, &mut buf, None, max)).await;
    if let Ok(Ok(In::Connect(c))) = read {
        let refusal = Out::ConnAck(Some(ConnectRefusal::QuotaExceeded));
        let _ = write_out(&mut writer, c.version, refusal, max).await;
    }
}

struct Session {
    ctx: Arc<Context>,
    version: Version,
    client_id: String,
    peer: String,
    peer_addr: std::net::SocketAddr,
    jobs: mpsc::Sender<Job>,
    /// PINGREQs to answer, ahead of the acknowledgements waiting for durability.
    pings: mpsc::Sender<()>,
    /// Devices this connection spoke for; they are online while it lasts.
    devices: HashSet<String>,
    /// An MQTT 5 client asked for its will on DISCONNECT.
    will_on_disconnect: bool,
    /// The device a client certificate proved; ACLs apply when set.
    identity: Option<String>,
    /// MQTT 3.1.1: a publish over its device's rate, handled again when due.
    held: Option<(Instant, Publish)>,
}

impl Session {
    async fn send(&self, out: Out) -> Result<(), Reason> {
        self.jobs
            .send(Job::Send(out))
            .await
            .map_err(|_| Reason::ConnectionLost)
    }

    async fn handle(&mut self, packet: In) -> Result<(), Reason> {
        match packet {
            In::Publish(p) => self.publish(p).await,
            In::PubRel(pkid) => self.send(Out::PubComp(pkid)).await,
            In::Subscribe { pkid, filters } => {
                let mut granted = Vec::with_capacity(filters.len());
                let mut retained = Vec::new();
                for (path, qos) in &filters {
                    if let Some(device) = &self.identity
                        && let Err(denied) = acl::subscribe(device, path)
                    {
                        self.acl_violation(&denied);
                        granted.push(Err(Refusal::NotAuthorized));
                        continue;
                    }
                    match filter::validate(path) {
                        Ok(()) => {
                            let g = min_qos(*qos, QoS::AtLeastOnce);
                            retained.extend(self.ctx.broker.subscribe(&self.client_id, path, g));
                            granted.push(Ok(g));
                        }
                        Err(e) => {
                            tracing::warn!(client_id = %self.client_id, error = %e, "subscription refused");
                            granted.push(Err(Refusal::TopicNameInvalid));
                        }
                    }
                }
                self.send(Out::SubAck { pkid, granted }).await?;
                for d in retained {
                    self.send(Out::Publish(delivery_packet(d, 0))).await?;
                }
                Ok(())
            }
            In::Unsubscribe { pkid, topics } => {
                for topic in &topics {
                    self.ctx.broker.unsubscribe(&self.client_id, topic);
                }
                let count = topics.len();
                self.send(Out::UnsubAck { pkid, count }).await
            }
            In::PingReq => match self.pings.try_send(()) {
                // Full: a PINGRESP is on its way already, which answers this one too.
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => Ok(()),
                Err(mpsc::error::TrySendError::Closed(())) => Err(Reason::ConnectionLost),
            },
            In::Disconnect { with_will } => {
                self.will_on_disconnect = with_will;
                Err(Reason::Graceful)
            }
            // Acknowledgements of what we delivered: delivery is at most once per connection.
            In::DeliveryAck => Ok(()),
            In::Connect(_) | In::Unexpected(_) => {
                let (what, reason) = match &packet {
                    In::Unexpected(name) => (*name, "server_packet"),
                    _ => ("a second CONNECT", "second_connect"),
                };
                tracing::warn!(client_id = %self.client_id, packet = what, "protocol violation; closing");
                self.count_reject("mqtt_packet");
                protocol_error(&self.ctx, reason);
                Err(Reason::Rejected)
            }
        }
    }

    /// Refuses a publish: MQTT 5 answers with a reason code and goes on; MQTT 3.1.1 closes.
    async fn refuse(&self, p: &Publish, why: Refusal) -> Result<(), Reason> {
        match (self.version, p.qos) {
            (Version::V4, _) => Err(Reason::Rejected),
            (Version::V5, QoS::AtMostOnce) => Ok(()),
            (Version::V5, qos) => {
                self.send(Out::Refuse {
                    pkid: p.pkid,
                    qos,
                    why,
                })
                .await
            }
        }
    }

    async fn publish(&mut self, p: Publish) -> Result<(), Reason> {
        let topic = match Topic::parse(&p.topic) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(client_id = %self.client_id, peer = %self.peer, reason = %e, "publish refused, not acknowledged");
                self.count_reject("topic");
                return self.refuse(&p, Refusal::TopicNameInvalid).await;
            }
        };
        if let Some(own) = &self.identity
            && let Err(denied) = acl::publish(own, &topic, &p.topic)
        {
            self.acl_violation(&denied);
            self.count_reject("not_authorized");
            return self.refuse(&p, Refusal::NotAuthorized).await;
        }
        let device = topic.device().to_owned();
        let action = match self.version {
            Version::V5 => "refused",
            Version::V4 => "delayed",
        };
        let rate = self
            .ctx
            .state
            .check_device_rate(&device, Some(self.peer_addr), action);
        if let Err(limited) = rate {
            return match self.version {
                Version::V5 => {
                    self.count_reject("rate_limited");
                    self.refuse(&p, Refusal::RateTooHigh).await
                }
                Version::V4 => {
                    self.count("rate_limited");
                    let wait = Duration::from_millis(limited.retry_after_ms.unsigned_abs());
                    self.held = Some((Instant::now() + wait, p));
                    Ok(())
                }
            };
        }
        self.speak_for(&device);
        match topic {
            Topic::Telemetry { .. } => self.telemetry(&device, p).await,
            Topic::Status { .. } | Topic::Control { .. } | Topic::ControlReply { .. } => {
                if p.payload.len() > MAX_CONTROL_PAYLOAD {
                    tracing::warn!(device, client_id = %self.client_id, bytes = p.payload.len(), "status/control payload too large; refused");
                    self.count_reject("too_large");
                    return self.refuse(&p, Refusal::PayloadFormatInvalid).await;
                }
                if matches!(topic, Topic::Status { .. }) {
                    self.record_status(&device, &p.payload);
                }
                self.forward(&p.topic, &p.payload, p.qos, p.retain);
                match p.qos {
                    QoS::AtMostOnce => Ok(()),
                    QoS::AtLeastOnce => self.send(Out::PubAck(p.pkid)).await,
                    QoS::ExactlyOnce => self.send(Out::PubRec(p.pkid)).await,
                }
            }
        }
    }

    async fn telemetry(&mut self, device: &str, p: Publish) -> Result<(), Reason> {
        let batch = match decode(&p.payload, &self.ctx.state.limits) {
            Ok((batch, _)) if batch.device == device => batch,
            Ok((batch, _)) => {
                tracing::warn!(device, batch_device = %batch.device, client_id = %self.client_id, "batch rejected, not acknowledged: its device differs from the topic's");
                self.reject_batch(device, "device_mismatch").await;
                return self.refuse(&p, Refusal::NotAuthorized).await;
            }
            Err(e) => {
                tracing::warn!(device, client_id = %self.client_id, peer = %self.peer, reason = %e, "batch rejected, not acknowledged");
                self.reject_batch(device, e.kind()).await;
                return self.refuse(&p, Refusal::PayloadFormatInvalid).await;
            }
        };
        if let Err(why) = self.ctx.state.check_series_budget(&batch) {
            tracing::warn!(device, client_id = %self.client_id, reason = %why, "batch rejected, not acknowledged");
            self.reject_batch(device, "too_many_series").await;
            return self.refuse(&p, Refusal::QuotaExceeded).await;
        }
        let pending = self.ctx.ingest.submit(batch, Transport::Mqtt).await;
        self.forward(&p.topic, &p.payload, p.qos, false);
        let out = match p.qos {
            QoS::AtMostOnce => return Ok(()),
            QoS::AtLeastOnce => Out::PubAck(p.pkid),
            QoS::ExactlyOnce => Out::PubRec(p.pkid),
        };
        self.jobs
            .send(Job::Ack { pending, out })
            .await
            .map_err(|_| Reason::ConnectionLost)
    }

    /// Marks `device` as spoken for by this connection (online while it lasts).
    fn speak_for(&mut self, device: &str) {
        let now = self.ctx.state.now_ms();
        let mut registry = self.ctx.state.registry_mut();
        if self.devices.insert(device.to_owned()) {
            registry.session_opened(device, now, &self.peer);
        } else {
            registry.entry(device).seen(now);
        }
    }

    fn record_status(&self, device: &str, payload: &[u8]) {
        let status = String::from_utf8_lossy(payload).into_owned();
        self.ctx.state.registry_mut().entry(device).reported_status = Some(status);
    }

    fn forward(&self, topic: &str, payload: &Bytes, qos: QoS, retain: bool) {
        if retain {
            self.ctx.broker.retain(topic, payload.clone(), qos);
        }
        let routed = self.ctx.broker.route(topic, payload, qos);
        if routed.dropped > 0 {
            self.ctx
                .state
                .telemetry
                .mqtt_dropped_deliveries
                .inc_by(routed.dropped as u64);
        }
    }

    /// The Last Will, published as if the client had sent it.
    fn publish_will(&mut self, will: Will) {
        if will.payload.len() > MAX_CONTROL_PAYLOAD {
            return;
        }
        if let Ok(Topic::Status { device }) = Topic::parse(&will.topic) {
            self.record_status(device, &will.payload);
        }
        self.forward(&will.topic, &will.payload, will.qos, will.retain);
    }

    fn acl_violation(&self, denied: &acl::Denied) {
        let state = &self.ctx.state;
        state.security.events.record(
            state.now_ms(),
            Kind::AclViolation,
            self.identity.as_deref(),
            Some(self.peer_addr),
            denied.to_string(),
        );
    }

    async fn reject_batch(&self, device: &str, reason: &'static str) {
        self.count_reject(reason);
        self.ctx.ingest.record_corrupt(device).await;
    }

    /// Counts a publish held back (MQTT 3.1.1).
    fn count(&self, reason: &'static str) {
        self.ctx
            .state
            .telemetry
            .delayed
            .get_or_create(&RejectLabels {
                transport: "mqtt",
                reason,
            })
            .inc();
    }

    fn count_reject(&self, reason: &'static str) {
        self.ctx
            .state
            .telemetry
            .rejected
            .get_or_create(&RejectLabels {
                transport: "mqtt",
                reason,
            })
            .inc();
    }
}

/// Counts a connection closed for breaking the protocol, by `reason`.
fn protocol_error(ctx: &Context, reason: &'static str) {
    ctx.state
        .telemetry
        .mqtt_protocol_errors
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// What the writer sends: packets in order, PINGRESPs at once, deliveries to subscriptions.
struct Queues {
    jobs: mpsc::Receiver<Job>,
    pings: mpsc::Receiver<()>,
    deliveries: mpsc::Receiver<Delivery>,
}

/// Sends queued packets in order; acknowledgements wait for durability. A PINGRESP goes out
/// at once, also while an acknowledgement waits: behind a window of batches queued for a busy
/// store it would come later than the client's keepalive allows, and the client would drop a
/// healthy connection and resend its whole window (MQTT orders PUBACKs, not PINGRESPs). Ends
/// when the queue closes, the connection breaks, or storage fails (the batch must not be
/// acknowledged).
async fn write_loop(mut writer: Writer, version: Version, mut queues: Queues, max: usize) {
    let mut next_pkid: u16 = 0;
    loop {
        let out = tokio::select! {
            biased;
            Some(()) = queues.pings.recv() => Out::PingResp,
            job = queues.jobs.recv() => match job {
                None => return,
                Some(Job::Send(out)) => out,
                Some(Job::Ack { mut pending, out }) => {
                    let outcome = loop {
                        tokio::select! {
                            biased;
                            r = &mut pending => break r,
                            Some(()) = queues.pings.recv() => {
                                if write_out(&mut writer, version, Out::PingResp, max).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    match outcome {
                        Ok(Ok(Accepted::Stored | Accepted::Duplicate)) => out,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "batch not durable; closing without acknowledgement");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            },
            Some(d) = queues.deliveries.recv() => {
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                Out::Publish(delivery_packet(d, next_pkid))
            }
        };
        if write_out(&mut writer, version, out, max).await.is_err() {
            return;
        }
    }
}

fn delivery_packet(d: Delivery, pkid: u16) -> Publish {
    let mut p = Publish::from_bytes(d.topic, d.qos, d.payload);
    p.retain = d.retain;
    p.pkid = if d.qos == QoS::AtMostOnce {
        0
    } else {
        pkid.max(1)
    };
    p
}

/// Reads the next packet; with no version yet, the first packet must be a CONNECT.
async fn read_in(
    reader: &mut Reader,
    buf: &mut BytesMut,
    version: Option<Version>,
    max: usize,
) -> Result<In, ReadError> {
    loop {
        let parsed = match version {
            None => codec::read_connect(buf, max),
            Some(v) => codec::read(v, buf, max),
        };
        match parsed {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {
                buf.reserve(4096);
                match reader.read_buf(buf).await {
                    Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
                    Ok(0) => return Err(ReadError::Truncated),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            Err(e) => return Err(ReadError::Codec(e)),
        }
    }
}

async fn write_out(
    writer: &mut Writer,
    version: Version,
    out: Out,
    max: usize,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64);
    codec::write(version, out, &mut buf, max).map_err(|e| std::io::Error::other(e.to_string()))?;
    writer.write_all(&buf).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Reads exactly `n` bytes the writer sent, or fails after a second.
    async fn read(peer: &mut tokio::io::DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(1), peer.read_exact(&mut buf))
            .await
            .expect("the writer sent nothing")
            .expect("read");
        buf
    }

    #[tokio::test]
    async fn a_ping_is_answered_while_an_acknowledgement_waits_for_the_store() {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let conn: Box<dyn Connection> = Box::new(ours);
        let (_reader, writer) = tokio::io::split(conn);
        let (jobs, jobs_rx) = mpsc::channel(QUEUE);
        let (pings, pings_rx) = mpsc::channel(1);
        let (_deliveries, deliveries_rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(
            writer,
            Version::V4,
            Queues {
                jobs: jobs_rx,
                pings: pings_rx,
                deliveries: deliveries_rx,
            },
            1 << 20,
        ));
        let (durable, pending) = tokio::sync::oneshot::channel();
        jobs.send(Job::Ack {
            pending,
            out: Out::PubAck(7),
        })
        .await
        .unwrap();
        jobs.send(Job::Send(Out::PubAck(8))).await.unwrap();
        pings.send(()).await.unwrap();
        // The batch is not durable yet: only the PINGRESP may go out.
        assert_eq!(read(&mut peer, 2).await, [0xD0, 0x00]);
        // Then the acknowledgements, in order.
        durable.send(Ok(Accepted::Stored)).unwrap();
        assert_eq!(read(&mut peer, 4).await, [0x40, 0x02, 0x00, 0x07]);
        assert_eq!(read(&mut peer, 4).await, [0x40, 0x02, 0x00, 0x08]);
        drop(jobs);
        task.await.unwrap();
    }
}
