//! One MQTT 3.1.1 connection, from CONNECT to close.
//!
//! The reading half runs here: it decodes packets, hands telemetry to ingest and queues the
//! answers. A writer task owns the writing half and sends, in order, every queued packet; a
//! PUBACK (or PUBREC) waits in that queue until its batch is durable, so acknowledgements
//! follow durability and keep the order of the publishes (§4.6) while the reader keeps
//! reading. A payload that is not a valid batch, or a topic outside the fleetmon tree, closes
//! the connection without an acknowledgement: MQTT 3.1.1 has no negative PUBACK, and §3.3.5
//! says a server that refuses a PUBLISH must close the connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetmon_protocol::{Topic, decode};
use rumqttc::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::Context;
use super::broker::{Delivery, min_qos};
use super::filter;
use crate::fleet::{Reason, Transport};
use crate::ingest::{Accepted, Pending};
use crate::listener::{Connection, Established};
use crate::telemetry::RejectLabels;

/// How many packets may wait for the writer.
const QUEUE: usize = 1024;
/// Longest status or control payload kept or routed.
const MAX_CONTROL_PAYLOAD: usize = 64 << 10;

enum Job {
    /// Send `packet` once `pending` says the batch is durable.
    Ack {
        pending: Pending,
        packet: Packet,
    },
    Send(Packet),
}

enum ReadError {
    Closed,
    Protocol(rumqttc::Error),
    Io(std::io::Error),
}

/// Serves one connection until it closes.
pub async fn run(conn: Established, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let peer = conn.peer.to_string();
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut buf = BytesMut::with_capacity(4096);
    let max = ctx.max_packet_bytes;

    let connect = match timeout(ctx.connect_timeout, read_packet(&mut reader, &mut buf, max)).await
    {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(_)) => {
            tracing::warn!(%peer, "first packet was not CONNECT; closing");
            return;
        }
        Ok(Err(ReadError::Protocol(
            e @ (rumqttc::Error::InvalidProtocol | rumqttc::Error::InvalidProtocolLevel(_)),
        ))) => {
            tracing::warn!(%peer, error = %e, "CONNECT refused: this endpoint speaks MQTT 3.1.1");
            let _ = write_packet(
                &mut writer,
                &connack(ConnectReturnCode::RefusedProtocolVersion),
                max,
            )
            .await;
            return;
        }
        Ok(Err(ReadError::Protocol(e))) => {
            tracing::warn!(%peer, error = %e, "malformed CONNECT; closing");
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within {:?}; closing", ctx.connect_timeout);
            return;
        }
    };
    if connect.protocol != rumqttc::Protocol::V4 {
        tracing::warn!(%peer, "CONNECT refused: MQTT 5 is not served yet; use MQTT 3.1.1");
        let _ = write_packet(
            &mut writer,
            &connack(ConnectReturnCode::RefusedProtocolVersion),
            max,
        )
        .await;
        return;
    }
    let client_id = if connect.client_id.is_empty() {
        if !connect.clean_session {
            let _ = write_packet(&mut writer, &connack(ConnectReturnCode::BadClientId), max).await;
            return;
        }
        format!("fleetmon-auto-{}", ctx.next_auto_id())
    } else {
        connect.client_id.clone()
    };

    let (deliveries_tx, deliveries_rx) = mpsc::channel(QUEUE);
    let (session_id, mut kicked) = ctx.broker.register(&client_id, deliveries_tx);
    if write_packet(&mut writer, &connack(ConnectReturnCode::Success), max)
        .await
        .is_err()
    {
        ctx.broker.unregister(&client_id, session_id);
        return;
    }
    ctx.state.telemetry.mqtt_connections.inc();
    ctx.state.telemetry.mqtt_connections_opened.inc();
    tracing::debug!(%peer, client_id, keep_alive = connect.keep_alive, "MQTT session open");

    let (jobs, jobs_rx) = mpsc::channel(QUEUE);
    let mut writer_task = tokio::spawn(write_loop(writer, jobs_rx, deliveries_rx, max));
    let mut session = Session {
        ctx: Arc::clone(&ctx),
        client_id,
        peer,
        jobs,
        devices: HashSet::new(),
    };
    // §3.1.2.10: close after one and a half keepalive periods without a packet.
    let keepalive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));

    let reason = loop {
        let read = async {
            match keepalive {
                Some(k) => timeout(k, read_packet(&mut reader, &mut buf, max))
                    .await
                    .ok(),
                None => Some(read_packet(&mut reader, &mut buf, max).await),
            }
        };
        let packet = tokio::select! {
            biased;
            _ = &mut kicked => break Reason::TakenOver,
            _ = shutdown.changed() => break Reason::ServerShutdown,
            _ = &mut writer_task => break Reason::Rejected,
            r = read => r,
        };
        match packet {
            None => break Reason::KeepaliveExpired,
            Some(Err(ReadError::Closed)) => break Reason::ConnectionLost,
            Some(Err(ReadError::Io(e))) => {
                tracing::debug!(peer = %session.peer, error = %e, "MQTT read failed");
                break Reason::ConnectionLost;
            }
            Some(Err(ReadError::Protocol(e))) => {
                tracing::warn!(peer = %session.peer, client_id = %session.client_id, error = %e, "malformed MQTT packet; closing");
                session.count_reject("mqtt_packet");
                break Reason::Rejected;
            }
            Some(Ok(p)) => {
                if let Err(reason) = session.handle(p).await {
                    break reason;
                }
            }
        }
    };

    if reason != Reason::Graceful
        && let Some(will) = connect.last_will
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
    // Let already durable acknowledgements go out, briefly; the connection may be gone.
    if !writer_task.is_finished() {
        let _ = timeout(Duration::from_secs(2), &mut writer_task).await;
        writer_task.abort();
    }
}

struct Session {
    ctx: Arc<Context>,
    client_id: String,
    peer: String,
    jobs: mpsc::Sender<Job>,
    /// Devices this connection spoke for; they are online while it lasts.
    devices: HashSet<String>,
}

impl Session {
    async fn send(&self, packet: Packet) -> Result<(), Reason> {
        self.jobs
            .send(Job::Send(packet))
            .await
            .map_err(|_| Reason::ConnectionLost)
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Reason> {
        match packet {
            Packet::Publish(p) => self.publish(p).await,
            Packet::PubRel(r) => self.send(Packet::PubComp(PubComp::new(r.pkid))).await,
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut retained = Vec::new();
                for f in &s.filters {
                    match filter::validate(&f.path) {
                        Ok(()) => {
                            let granted = min_qos(f.qos, QoS::AtLeastOnce);
                            retained.extend(self.ctx.broker.subscribe(
                                &self.client_id,
                                &f.path,
                                granted,
                            ));
                            codes.push(SubscribeReasonCode::Success(granted));
                        }
                        Err(e) => {
                            tracing::warn!(client_id = %self.client_id, error = %e, "subscription refused");
                            codes.push(SubscribeReasonCode::Failure);
                        }
                    }
                }
                self.send(Packet::SubAck(SubAck::new(s.pkid, codes)))
                    .await?;
                for d in retained {
                    self.send(Packet::Publish(delivery_packet(d, 0))).await?;
                }
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                for topic in &u.topics {
                    self.ctx.broker.unsubscribe(&self.client_id, topic);
                }
                self.send(Packet::UnsubAck(UnsubAck::new(u.pkid))).await
            }
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect => Err(Reason::Graceful),
            // Acknowledgements of what we delivered: delivery is at most once per connection.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => Ok(()),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                tracing::warn!(client_id = %self.client_id, "client sent a packet only a server may send; closing");
                self.count_reject("mqtt_packet");
                Err(Reason::Rejected)
            }
        }
    }

    async fn publish(&mut self, p: Publish) -> Result<(), Reason> {
        let topic = match Topic::parse(&p.topic) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(client_id = %self.client_id, peer = %self.peer, reason = %e, "publish refused, not acknowledged; closing");
                self.count_reject("topic");
                return Err(Reason::Rejected);
            }
        };
        let device = topic.device().to_owned();
        self.speak_for(&device);
        match topic {
            Topic::Telemetry { .. } => self.telemetry(&device, p).await,
            Topic::Status { .. } | Topic::Control { .. } | Topic::ControlReply { .. } => {
                if p.payload.len() > MAX_CONTROL_PAYLOAD {
                    tracing::warn!(device, client_id = %self.client_id, bytes = p.payload.len(), "status/control payload too large; closing");
                    self.count_reject("too_large");
                    return Err(Reason::Rejected);
                }
                if matches!(topic, Topic::Status { .. }) {
                    self.record_status(&device, &p.payload);
                }
                self.forward(&p.topic, &p.payload, p.qos, p.retain);
                match p.qos {
                    QoS::AtMostOnce => Ok(()),
                    QoS::AtLeastOnce => self.send(Packet::PubAck(PubAck::new(p.pkid))).await,
                    QoS::ExactlyOnce => self.send(Packet::PubRec(PubRec::new(p.pkid))).await,
                }
            }
        }
    }

    async fn telemetry(&mut self, device: &str, p: Publish) -> Result<(), Reason> {
        let batch = match decode(&p.payload, &self.ctx.state.limits) {
            Ok((batch, _)) if batch.device == device => batch,
            Ok((batch, _)) => {
                tracing::warn!(device, batch_device = %batch.device, client_id = %self.client_id, "batch rejected, not acknowledged: its device differs from the topic's; closing");
                self.reject_batch(device, "device_mismatch").await;
                return Err(Reason::Rejected);
            }
            Err(e) => {
                tracing::warn!(device, client_id = %self.client_id, peer = %self.peer, reason = %e, "batch rejected, not acknowledged; closing");
                self.reject_batch(device, e.kind()).await;
                return Err(Reason::Rejected);
            }
        };
        let pending = self.ctx.ingest.submit(batch, Transport::Mqtt).await;
        self.forward(&p.topic, &p.payload, p.qos, false);
        let ack = match p.qos {
            QoS::AtMostOnce => return Ok(()),
            QoS::AtLeastOnce => Packet::PubAck(PubAck::new(p.pkid)),
            QoS::ExactlyOnce => Packet::PubRec(PubRec::new(p.pkid)),
        };
        self.jobs
            .send(Job::Ack {
                pending,
                packet: ack,
            })
            .await
            .map_err(|_| Reason::ConnectionLost)
    }

    /// Marks `device` as spoken for by this connection (online while it lasts).
    fn speak_for(&mut self, device: &str) {
        if !self.devices.contains(device) {
            self.devices.insert(device.to_owned());
            let now = self.ctx.state.now_ms();
            self.ctx
                .state
                .registry_mut()
                .session_opened(device, now, &self.peer);
        } else {
            let now = self.ctx.state.now_ms();
            self.ctx.state.registry_mut().entry(device).seen(now);
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
    fn publish_will(&mut self, will: LastWill) {
        if let Ok(Topic::Status { device }) = Topic::parse(&will.topic)
            && will.message.len() <= MAX_CONTROL_PAYLOAD
        {
            self.record_status(device, &will.message);
        }
        if will.message.len() <= MAX_CONTROL_PAYLOAD {
            self.forward(&will.topic, &will.message, will.qos, will.retain);
        }
    }

    async fn reject_batch(&self, device: &str, reason: &'static str) {
        self.count_reject(reason);
        self.ctx.ingest.record_corrupt(device).await;
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

/// Sends queued packets in order; acknowledgements wait for durability. Ends when the queue
/// closes, the connection breaks, or storage fails (the batch must not be acknowledged).
async fn write_loop(
    mut writer: WriteHalf<Box<dyn Connection>>,
    mut jobs: mpsc::Receiver<Job>,
    mut deliveries: mpsc::Receiver<Delivery>,
    max: usize,
) {
    let mut next_pkid: u16 = 0;
    loop {
        let packet = tokio::select! {
            biased;
            job = jobs.recv() => match job {
                None => return,
                Some(Job::Send(p)) => p,
                Some(Job::Ack { pending, packet }) => match pending.await {
                    Ok(Ok(Accepted::Stored | Accepted::Duplicate)) => packet,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "batch not durable; closing without acknowledgement");
                        return;
                    }
                    Err(_) => return,
                },
            },
            Some(d) = deliveries.recv() => {
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                Packet::Publish(delivery_packet(d, next_pkid))
            }
        };
        if write_packet(&mut writer, &packet, max).await.is_err() {
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

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck::new(code, false))
}

async fn read_packet(
    reader: &mut ReadHalf<Box<dyn Connection>>,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ReadError> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(rumqttc::Error::InsufficientBytes(n)) => {
                buf.reserve(n.min(max));
                match reader.read_buf(buf).await {
                    Ok(0) => return Err(ReadError::Closed),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            Err(e) => return Err(ReadError::Protocol(e)),
        }
    }
}

async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
    max: usize,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(packet.size() + 5);
    packet
        .write(&mut out, max)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    writer.write_all(&out).await?;
    writer.flush().await
}
