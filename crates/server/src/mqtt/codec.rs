//! MQTT 3.1.1 and MQTT 5 on the wire, one vocabulary inside.
//!
//! rumqttc's `mqttbytes` has a codec per protocol version with its own packet types. Sessions
//! speak [`In`] and [`Out`] instead, and this module translates: the version is read off the
//! CONNECT's protocol level, then every packet of the connection goes through that version's
//! codec. What MQTT 5 adds that we use is the reason code on acknowledgements, so a refused
//! publish is answered with a negative PUBACK instead of a closed connection; its properties
//! are accepted and ignored (we never grant topic aliases, so none may be used).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Packet as P4, Publish};

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// A Last Will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub struct ConnectIn {
    pub version: Version,
    pub client_id: String,
    pub keep_alive: u16,
    pub clean_session: bool,
    pub will: Option<Will>,
}

/// What a client sent.
#[derive(Debug)]
pub enum In {
    Connect(ConnectIn),
    Publish(Publish),
    PubRel(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        pkid: u16,
        topics: Vec<String>,
    },
    PingReq,
    /// DISCONNECT; `with_will` when an MQTT 5 client asked for its will to be published.
    Disconnect {
        with_will: bool,
    },
    /// PUBACK, PUBREC or PUBCOMP for something we delivered.
    DeliveryAck,
    /// A packet only a server may send, or AUTH (not supported).
    Unexpected(&'static str),
}

/// Why a publish was refused (an MQTT 5 reason code; MQTT 3.1.1 closes instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PayloadFormatInvalid,
    TopicNameInvalid,
    NotAuthorized,
    /// Over a per-device limit (series per device).
    QuotaExceeded,
    /// Over the device's message rate. MQTT 5 allows 0x96 "message rate too high" only in
    /// DISCONNECT, so this is "quota exceeded" (0x97) with the reason string
    /// [`RATE_TOO_HIGH`].
    RateTooHigh,
}

/// The reason string of a PUBACK or PUBREC refusing a publish over the device's rate.
pub const RATE_TOO_HIGH: &str = "message rate too high";

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    ProtocolVersion,
    ClientId,
    /// A device certificate's client id or Last Will outside its own topics.
    NotAuthorized,
    /// Over the connection limits: MQTT 5 "quota exceeded", MQTT 3.1.1 "server unavailable".
    QuotaExceeded,
}

/// What the server sends.
#[derive(Debug, Clone)]
pub enum Out {
    ConnAck(Option<ConnectRefusal>),
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    /// A negative PUBACK (QoS 1) or PUBREC (QoS 2): MQTT 5 only.
    Refuse {
        pkid: u16,
        qos: QoS,
        why: Refusal,
    },
    SubAck {
        pkid: u16,
        /// The granted QoS, or why a filter was refused.
        granted: Vec<Result<QoS, Refusal>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    Publish(Publish),
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0} bytes more needed")]
    Incomplete(usize),
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed MQTT 3.1.1 packet: {0}")]
    V4(rumqttc::mqttbytes::Error),
    #[error("malformed MQTT 5 packet: {0}")]
    V5(m5::Error),
    #[error("CONNECT names protocol {name:?} level {level}; this server speaks MQTT 3.1.1 and 5")]
    UnsupportedProtocol { name: String, level: u8 },
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error("a topic alias was used, but none was granted")]
    TopicAlias,
}

/// Reads the first packet, which must be a CONNECT, choosing the codec by its protocol level.
pub fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<In>, CodecError> {
    let (header_len, remaining) = match frame(buf, max)? {
        Some(f) => f,
        None => return Ok(None),
    };
    let body = &buf[header_len..header_len + remaining];
    // CONNECT: u16 name length, name, level.
    let name_len = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (name, level) = match name_len {
        Some(n) if body.len() > 2 + n => (
            String::from_utf8_lossy(&body[2..2 + n]).into_owned(),
            body[2 + n],
        ),
        _ => (String::new(), 0),
    };
    match (buf.first().map(|b| b >> 4), name.as_str(), level) {
        (Some(1), "MQTT", 4) => read(Version::V4, buf, max),
        (Some(1), "MQTT", 5) => read(Version::V5, buf, max),
        (Some(1), _, _) => Err(CodecError::UnsupportedProtocol { name, level }),
        _ => read(Version::V4, buf, max),
    }
}

/// The fixed header's length and the remaining length, once the whole packet is buffered.
fn frame(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, CodecError> {
    let mut remaining = 0usize;
    for i in 1..5 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            if remaining > max {
                return Err(CodecError::TooLarge {
                    size: remaining,
                    max,
                });
            }
            return Ok((buf.len() >= i + 1 + remaining).then_some((i + 1, remaining)));
        }
    }
    Err(CodecError::V4(
        rumqttc::mqttbytes::Error::MalformedRemainingLength,
    ))
}

/// Reads the next packet of a connection of `version`; `Ok(None)` when more bytes are needed.
pub fn read(version: Version, buf: &mut BytesMut, max: usize) -> Result<Option<In>, CodecError> {
    match version {
        Version::V4 => match P4::read(buf, max) {
            Ok(p) => Ok(Some(from_v4(p))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                Err(CodecError::TooLarge { size, max })
            }
            Err(e) => Err(CodecError::V4(e)),
        },
        Version::V5 => {
            // A DISCONNECT with reason 0 may have no body at all (MQTT 5 §3.14.2.1), which
            // rumqttc's v5 reader refuses; read it here.
            if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                let _ = buf.split_to(2);
                return Ok(Some(In::Disconnect { with_will: false }));
            }
            let limit = u32::try_from(max).ok();
            match p5::Packet::read(buf, limit) {
                Ok(p) => from_v5(p).map(Some),
                Err(m5::Error::InsufficientBytes(_)) => Ok(None),
                Err(m5::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
                    Err(CodecError::TooLarge {
                        size: pkt_size,
                        max,
                    })
                }
                Err(e) => Err(CodecError::V5(e)),
            }
        }
    }
}

fn from_v4(p: P4) -> In {
    match p {
        P4::Connect(c) => In::Connect(ConnectIn {
            version: Version::V4,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean_session: c.clean_session,
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
            }),
        }),
        P4::Publish(p) => In::Publish(p),
        P4::PubRel(r) => In::PubRel(r.pkid),
        P4::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| (f.path, f.qos)).collect(),
        },
        P4::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            topics: u.topics,
        },
        P4::PingReq => In::PingReq,
        P4::Disconnect => In::Disconnect { with_will: false },
        P4::PubAck(_) | P4::PubRec(_) | P4::PubComp(_) => In::DeliveryAck,
        P4::ConnAck(_) => In::Unexpected("CONNACK"),
        P4::SubAck(_) => In::Unexpected("SUBACK"),
        P4::UnsubAck(_) => In::Unexpected("UNSUBACK"),
        P4::PingResp => In::Unexpected("PINGRESP"),
    }
}

fn qos_from_v5(q: m5::QoS) -> QoS {
    match q {
        m5::QoS::AtMostOnce => QoS::AtMostOnce,
        m5::QoS::AtLeastOnce => QoS::AtLeastOnce,
        m5::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos_to_v5(q: QoS) -> m5::QoS {
    match q {
        QoS::AtMostOnce => m5::QoS::AtMostOnce,
        QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn utf8(b: Bytes) -> Result<String, CodecError> {
    String::from_utf8(b.to_vec()).map_err(|_| CodecError::TopicNotUtf8)
}

fn from_v5(p: p5::Packet) -> Result<In, CodecError> {
    Ok(match p {
        p5::Packet::Connect(c, will, _login) => In::Connect(ConnectIn {
            version: Version::V5,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean_session: c.clean_start,
            will: match will {
                Some(w) => Some(Will {
                    topic: utf8(w.topic)?,
                    payload: w.message,
                    qos: qos_from_v5(w.qos),
                    retain: w.retain,
                }),
                None => None,
            },
        }),
        p5::Packet::Publish(p) => {
            if p.topic.is_empty() {
                return Err(CodecError::TopicAlias);
            }
            let mut out = Publish::from_bytes(utf8(p.topic)?, qos_from_v5(p.qos), p.payload);
            out.pkid = p.pkid;
            out.retain = p.retain;
            out.dup = p.dup;
            In::Publish(out)
        }
        p5::Packet::PubRel(r) => In::PubRel(r.pkid),
        p5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_from_v5(f.qos)))
                .collect(),
        },
        p5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            topics: u.filters,
        },
        p5::Packet::PingReq(_) => In::PingReq,
        p5::Packet::Disconnect(d) => In::Disconnect {
            with_will: d.reason_code == p5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        p5::Packet::PubAck(_) | p5::Packet::PubRec(_) | p5::Packet::PubComp(_) => In::DeliveryAck,
        p5::Packet::Auth(_) => In::Unexpected("AUTH"),
        p5::Packet::ConnAck(_) => In::Unexpected("CONNACK"),
        p5::Packet::SubAck(_) => In::Unexpected("SUBACK"),
        p5::Packet::UnsubAck(_) => In::Unexpected("UNSUBACK"),
        p5::Packet::PingResp(_) => In::Unexpected("PINGRESP"),
    })
}

/// Appends `out` to `buf` in the connection's version.
pub fn write(version: Version, out: Out, buf: &mut BytesMut, max: usize) -> Result<(), CodecError> {
    match version {
        Version::V4 => to_v4(out).write(buf, max).map(drop).map_err(CodecError::V4),
        Version::V5 => to_v5(out, max)
            .write(buf, u32::try_from(max).ok())
            .map(drop)
            .map_err(CodecError::V5),
    }
}

fn to_v4(out: Out) -> P4 {
    use rumqttc::{
        ConnAck, ConnectReturnCode, PubAck, PubComp, PubRec, SubAck, SubscribeReasonCode, UnsubAck,
    };
    match out {
        Out::ConnAck(refusal) => P4::ConnAck(ConnAck::new(
            match refusal {
                None => ConnectReturnCode::Success,
                Some(ConnectRefusal::ProtocolVersion) => ConnectReturnCode::RefusedProtocolVersion,
                Some(ConnectRefusal::ClientId) => ConnectReturnCode::BadClientId,
                Some(ConnectRefusal::NotAuthorized) => ConnectReturnCode::NotAuthorized,
                Some(ConnectRefusal::QuotaExceeded) => ConnectReturnCode::ServiceUnavailable,
            },
            false,
        )),
        Out::PubAck(pkid) => P4::PubAck(PubAck::new(pkid)),
        Out::PubRec(pkid) => P4::PubRec(PubRec::new(pkid)),
        Out::PubComp(pkid) => P4::PubComp(PubComp::new(pkid)),
        // MQTT 3.1.1 has no negative acknowledgement; sessions close instead of sending this.
        Out::Refuse { .. } => P4::Disconnect,
        Out::SubAck { pkid, granted } => P4::SubAck(SubAck::new(
            pkid,
            granted
                .into_iter()
                .map(|g| g.map_or(SubscribeReasonCode::Failure, SubscribeReasonCode::Success))
                .collect(),
        )),
        Out::UnsubAck { pkid, .. } => P4::UnsubAck(UnsubAck::new(pkid)),
        Out::PingResp => P4::PingResp,
        Out::Publish(p) => P4::Publish(p),
    }
}

/// What a successful MQTT 5 CONNACK tells the client: the largest packet it may send.
fn connack_properties(max: usize) -> p5::ConnAckProperties {
    p5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: Some(u32::try_from(max).unwrap_or(u32::MAX)),
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// `max` is the largest packet accepted, advertised in a successful CONNACK (as the maximum
/// packet size, which counts the fixed header too, so clients stay within it).
fn to_v5(out: Out, max: usize) -> p5::Packet {
    let reason_string = |why| (why == Refusal::RateTooHigh).then(|| RATE_TOO_HIGH.to_owned());
    match out {
        Out::ConnAck(refusal) => p5::Packet::ConnAck(p5::ConnAck {
            session_present: false,
            code: match refusal {
                None => p5::ConnectReturnCode::Success,
                Some(ConnectRefusal::ProtocolVersion) => {
                    p5::ConnectReturnCode::UnsupportedProtocolVersion
                }
                Some(ConnectRefusal::ClientId) => p5::ConnectReturnCode::ClientIdentifierNotValid,
                Some(ConnectRefusal::NotAuthorized) => p5::ConnectReturnCode::NotAuthorized,
                Some(ConnectRefusal::QuotaExceeded) => p5::ConnectReturnCode::QuotaExceeded,
            },
            properties: refusal.is_none().then(|| connack_properties(max)),
        }),
        Out::PubAck(pkid) => p5::Packet::PubAck(p5::PubAck::new(pkid, None)),
        Out::PubRec(pkid) => p5::Packet::PubRec(p5::PubRec::new(pkid, None)),
        Out::PubComp(pkid) => p5::Packet::PubComp(p5::PubComp::new(pkid, None)),
        Out::Refuse { pkid, qos, why } => {
            if qos == QoS::ExactlyOnce {
                let properties = reason_string(why).map(|reason_string| p5::PubRecProperties {
                    reason_string: Some(reason_string),
                    user_properties: Vec::new(),
                });
                let mut rec = p5::PubRec::new(pkid, properties);
                rec.reason = match why {
                    Refusal::PayloadFormatInvalid => p5::PubRecReason::PayloadFormatInvalid,
                    Refusal::TopicNameInvalid => p5::PubRecReason::TopicNameInvalid,
                    Refusal::NotAuthorized => p5::PubRecReason::NotAuthorized,
                    Refusal::QuotaExceeded | Refusal::RateTooHigh => {
                        p5::PubRecReason::QuotaExceeded
                    }
                };
                p5::Packet::PubRec(rec)
            } else {
                let properties = reason_string(why).map(|reason_string| p5::PubAckProperties {
                    reason_string: Some(reason_string),
                    user_properties: Vec::new(),
                });
                let mut ack = p5::PubAck::new(pkid, properties);
                ack.reason = match why {
                    Refusal::PayloadFormatInvalid => p5::PubAckReason::PayloadFormatInvalid,
                    Refusal::TopicNameInvalid => p5::PubAckReason::TopicNameInvalid,
                    Refusal::NotAuthorized => p5::PubAckReason::NotAuthorized,
                    Refusal::QuotaExceeded | Refusal::RateTooHigh => {
                        p5::PubAckReason::QuotaExceeded
                    }
                };
                p5::Packet::PubAck(ack)
            }
        }
        Out::SubAck { pkid, granted } => p5::Packet::SubAck(p5::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|g| match g {
                    Ok(q) => p5::SubscribeReasonCode::Success(qos_to_v5(q)),
                    Err(Refusal::NotAuthorized) => p5::SubscribeReasonCode::NotAuthorized,
                    Err(_) => p5::SubscribeReasonCode::TopicFilterInvalid,
                })
                .collect(),
            properties: None,
        }),
        Out::UnsubAck { pkid, count } => p5::Packet::UnsubAck(p5::UnsubAck {
            pkid,
            reasons: vec![p5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Out::PingResp => p5::Packet::PingResp(p5::PingResp),
        Out::Publish(p) => {
            let mut out = p5::Publish::new(p.topic, qos_to_v5(p.qos), p.payload, None);
            out.pkid = p.pkid;
            out.retain = p.retain;
            p5::Packet::Publish(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn v5_connect(client_id: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        let connect = p5::Connect {
            keep_alive: 30,
            client_id: client_id.into(),
            clean_start: true,
            properties: None,
        };
        p5::Packet::Connect(connect, None, None)
            .write(&mut buf, None)
            .unwrap();
        buf
    }

    #[test]
    fn the_connect_picks_the_version() {
        let mut buf = v5_connect("five");
        match read_connect(&mut buf, 1 << 20).unwrap() {
            Some(In::Connect(c)) => {
                assert_eq!((c.version, c.client_id.as_str()), (Version::V5, "five"))
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::new();
        P4::Connect(rumqttc::Connect::new("four"))
            .write(&mut buf, 1 << 20)
            .unwrap();
        match read_connect(&mut buf, 1 << 20).unwrap() {
            Some(In::Connect(c)) => assert_eq!(c.version, Version::V4),
            other => panic!("{other:?}"),
        }
        // MQTT 3.1 ("MQIsdp", level 3) is named in the refusal.
        let mut buf = BytesMut::from(&b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c"[..]);
        let err = read_connect(&mut buf, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("\"MQIsdp\" level 3"), "{err}");
    }

    #[test]
    fn partial_packets_wait_for_more() {
        let full = v5_connect("x");
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert!(
                read_connect(&mut buf, 1 << 20).unwrap().is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_bare_v5_disconnect_is_graceful() {
        let mut buf = BytesMut::from(&[0xE0, 0x00][..]);
        assert!(matches!(
            read(Version::V5, &mut buf, 1 << 20).unwrap(),
            Some(In::Disconnect { with_will: false })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn refusals_are_reason_codes_in_v5() {
        let mut buf = BytesMut::new();
        write(
            Version::V5,
            Out::Refuse {
                pkid: 7,
                qos: QoS::AtLeastOnce,
                why: Refusal::PayloadFormatInvalid,
            },
            &mut buf,
            1 << 20,
        )
        .unwrap();
        match p5::Packet::read(&mut buf, None).unwrap() {
            p5::Packet::PubAck(a) => {
                assert_eq!(a.pkid, 7);
                assert_eq!(a.reason, p5::PubAckReason::PayloadFormatInvalid);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connack_advertises_the_packet_limit_and_rate_refusals_say_why() {
        let mut buf = BytesMut::new();
        write(Version::V5, Out::ConnAck(None), &mut buf, 70_000).unwrap();
        match p5::Packet::read(&mut buf, None).unwrap() {
            p5::Packet::ConnAck(c) => {
                assert_eq!(c.properties.and_then(|p| p.max_packet_size), Some(70_000));
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::new();
        let refuse = |qos| Out::Refuse {
            pkid: 3,
            qos,
            why: Refusal::RateTooHigh,
        };
        write(Version::V5, refuse(QoS::AtLeastOnce), &mut buf, 1 << 20).unwrap();
        write(Version::V5, refuse(QoS::ExactlyOnce), &mut buf, 1 << 20).unwrap();
        match p5::Packet::read(&mut buf, None).unwrap() {
            p5::Packet::PubAck(a) => {
                assert_eq!(a.reason, p5::PubAckReason::QuotaExceeded);
                let why = a.properties.and_then(|p| p.reason_string);
                assert_eq!(why.as_deref(), Some(RATE_TOO_HIGH));
            }
            other => panic!("{other:?}"),
        }
        match p5::Packet::read(&mut buf, None).unwrap() {
            p5::Packet::PubRec(r) => assert_eq!(r.reason, p5::PubRecReason::QuotaExceeded),
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::new();
        let refused = Out::ConnAck(Some(ConnectRefusal::QuotaExceeded));
        write(Version::V4, refused, &mut buf, 1 << 20).unwrap();
        match P4::read(&mut buf, 1 << 20).unwrap() {
            P4::ConnAck(c) => assert_eq!(c.code, rumqttc::ConnectReturnCode::ServiceUnavailable),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]
        /// Hostile bytes never panic either codec.
        #[test]
        fn garbage_never_panics(kind in 0u8..16, flags in 0u8..16, body in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut framed = BytesMut::from(&[kind << 4 | flags, body.len() as u8][..]);
            framed.extend_from_slice(&body);
            let _ = read_connect(&mut framed.clone(), 1 << 20);
            let _ = read(Version::V4, &mut framed.clone(), 1 << 20);
            let _ = read(Version::V5, &mut framed, 1 << 20);
        }
    }
}
