//! Property tests of the server's MQTT codec (the CI side of `fuzz/`): hostile bytes in either
//! protocol version never panic and end as "wait for more", a packet, or a typed error; and
//! every packet the server writes reads back, by a client, as what the server meant.
//! Regression cases found by fuzzing are at the end, one test each.

use bytes::BytesMut;
use fleetmon_server::mqtt::codec::{
    CodecError, ConnectRefusal, In, Out, Refusal, Version, read, read_connect, write,
};
use proptest::prelude::*;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Publish, QoS};

const MAX: usize = 1 << 16;

/// Reads packets off `buf` the way a session does, until it waits or fails; checks that
/// waiting never consumes and that a packet always does.
fn drain(version: Option<Version>, buf: &mut BytesMut) -> Result<Vec<In>, CodecError> {
    let mut version = version;
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        let r = match version {
            None => read_connect(buf, MAX),
            Some(v) => read(v, buf, MAX),
        };
        match r {
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting for more consumed bytes");
                return Ok(packets);
            }
            Ok(Some(p)) => {
                assert!(buf.len() < before, "a packet was read without consuming");
                if let (None, In::Connect(c)) = (version, &p) {
                    version = Some(c.version);
                }
                packets.push(p);
            }
            Err(e) => {
                // Every error says what was wrong and has a counting label.
                assert!(!e.to_string().is_empty());
                assert!(!e.kind().is_empty());
                return Err(e);
            }
        }
    }
}

/// A remaining-length varint.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A packet with any type and flags and a correct remaining length over an arbitrary body.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(first, body)| {
        let mut p = vec![first];
        p.extend(varint(body.len()));
        p.extend(body);
        p
    })
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V4), Just(Version::V5)]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::PayloadFormatInvalid),
        Just(Refusal::TopicNameInvalid),
        Just(Refusal::NotAuthorized),
        Just(Refusal::QuotaExceeded),
    ]
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        "[a-z0-9/_+-]{1,40}|\\PC{1,20}",
        qos(),
        proptest::collection::vec(any::<u8>(), 0..300),
        1..=u16::MAX,
        any::<bool>(),
    )
        .prop_map(|(topic, qos, payload, pkid, retain)| {
            let mut p = Publish::new(topic, qos, payload);
            p.pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
            p.retain = retain;
            p
        })
}

/// Everything the server writes, in the shapes sessions produce. MQTT 3.1.1 sessions close
/// instead of refusing a publish, so they never write `Refuse`.
fn out(v: Version) -> BoxedStrategy<Out> {
    let pkid = 1..=u16::MAX;
    let connack = prop_oneof![
        Just(None),
        Just(Some(ConnectRefusal::ProtocolVersion)),
        Just(Some(ConnectRefusal::ClientId)),
        Just(Some(ConnectRefusal::NotAuthorized)),
    ];
    let granted = proptest::collection::vec(
        prop_oneof![
            prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)].prop_map(Ok),
            refusal().prop_map(Err)
        ],
        1..20,
    );
    let common = prop_oneof![
        connack.prop_map(Out::ConnAck),
        pkid.clone().prop_map(Out::PubAck),
        pkid.clone().prop_map(Out::PubRec),
        pkid.clone().prop_map(Out::PubComp),
        (pkid.clone(), granted).prop_map(|(pkid, granted)| Out::SubAck { pkid, granted }),
        (pkid.clone(), 1..20usize).prop_map(|(pkid, count)| Out::UnsubAck { pkid, count }),
        Just(Out::PingResp),
        publish().prop_map(Out::Publish),
    ];
    match v {
        Version::V4 => common.boxed(),
        Version::V5 => prop_oneof![
            common,
            (
                pkid,
                prop_oneof![Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)],
                refusal()
            )
                .prop_map(|(pkid, qos, why)| Out::Refuse { pkid, qos, why }),
        ]
        .boxed(),
    }
}

/// What a packet means to a client, in either version.
#[derive(Debug, PartialEq)]
enum Seen {
    ConnAck(Option<ConnectRefusal>),
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    Refused {
        pkid: u16,
        qos: QoS,
        why: Refusal,
    },
    SubAck {
        pkid: u16,
        granted: Vec<Result<QoS, Refusal>>,
    },
    UnsubAck {
        pkid: u16,
        count: Option<usize>,
    },
    PingResp,
    Publish {
        topic: String,
        qos: QoS,
        payload: Vec<u8>,
        pkid: u16,
        retain: bool,
    },
}

/// What the server meant by `out`, as far as `v` can say it.
fn meant(v: Version, out: &Out) -> Seen {
    match out {
        Out::ConnAck(r) => Seen::ConnAck(*r),
        Out::PubAck(p) => Seen::PubAck(*p),
        Out::PubRec(p) => Seen::PubRec(*p),
        Out::PubComp(p) => Seen::PubComp(*p),
        Out::Refuse { pkid, qos, why } => Seen::Refused {
            pkid: *pkid,
            qos: *qos,
            why: *why,
        },
        Out::SubAck { pkid, granted } => Seen::SubAck {
            pkid: *pkid,
            granted: granted
                .iter()
                .map(|g| match (v, g) {
                    (_, Ok(q)) => Ok(*q),
                    // 3.1.1 has one failure code; 5 tells "not authorized" from the rest.
                    (Version::V4, Err(_)) => Err(Refusal::TopicNameInvalid),
                    (Version::V5, Err(Refusal::NotAuthorized)) => Err(Refusal::NotAuthorized),
                    (Version::V5, Err(_)) => Err(Refusal::TopicNameInvalid),
                })
                .collect(),
        },
        Out::UnsubAck { pkid, count } => Seen::UnsubAck {
            pkid: *pkid,
            count: (v == Version::V5).then_some(*count),
        },
        Out::PingResp => Seen::PingResp,
        Out::Publish(p) => Seen::Publish {
            topic: p.topic.clone(),
            qos: p.qos,
            payload: p.payload.to_vec(),
            pkid: p.pkid,
            retain: p.retain,
        },
    }
}

fn qos5(q: rumqttc::v5::mqttbytes::QoS) -> QoS {
    use rumqttc::v5::mqttbytes::QoS as Q;
    match q {
        Q::AtMostOnce => QoS::AtMostOnce,
        Q::AtLeastOnce => QoS::AtLeastOnce,
        Q::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Reads one packet the way a client does (rumqttc's own readers).
fn client_reads(v: Version, bytes: &mut BytesMut) -> Seen {
    match v {
        Version::V4 => {
            use rumqttc::{ConnectReturnCode as C, Packet as P, SubscribeReasonCode as S};
            match P::read(bytes, MAX).expect("a 3.1.1 client reads what the server wrote") {
                P::ConnAck(a) => Seen::ConnAck(match a.code {
                    C::Success => None,
                    C::RefusedProtocolVersion => Some(ConnectRefusal::ProtocolVersion),
                    C::BadClientId => Some(ConnectRefusal::ClientId),
                    C::NotAuthorized => Some(ConnectRefusal::NotAuthorized),
                    other => panic!("the server never sends {other:?}"),
                }),
                P::PubAck(a) => Seen::PubAck(a.pkid),
                P::PubRec(a) => Seen::PubRec(a.pkid),
                P::PubComp(a) => Seen::PubComp(a.pkid),
                P::SubAck(a) => Seen::SubAck {
                    pkid: a.pkid,
                    granted: a
                        .return_codes
                        .iter()
                        .map(|c| match c {
                            S::Success(q) => Ok(*q),
                            S::Failure => Err(Refusal::TopicNameInvalid),
                        })
                        .collect(),
                },
                P::UnsubAck(a) => Seen::UnsubAck {
                    pkid: a.pkid,
                    count: None,
                },
                P::PingResp => Seen::PingResp,
                P::Publish(p) => Seen::Publish {
                    topic: p.topic,
                    qos: p.qos,
                    payload: p.payload.to_vec(),
                    pkid: p.pkid,
                    retain: p.retain,
                },
                other => panic!("the server never sends {other:?}"),
            }
        }
        Version::V5 => {
            use p5::{
                ConnectReturnCode as C, PubAckReason as A, PubRecReason as R,
                SubscribeReasonCode as S,
            };
            let why_ack = |r: A| match r {
                A::PayloadFormatInvalid => Refusal::PayloadFormatInvalid,
                A::TopicNameInvalid => Refusal::TopicNameInvalid,
                A::NotAuthorized => Refusal::NotAuthorized,
                A::QuotaExceeded => Refusal::QuotaExceeded,
                other => panic!("the server never refuses with {other:?}"),
            };
            let why_rec = |r: R| match r {
                R::PayloadFormatInvalid => Refusal::PayloadFormatInvalid,
                R::TopicNameInvalid => Refusal::TopicNameInvalid,
                R::NotAuthorized => Refusal::NotAuthorized,
                R::QuotaExceeded => Refusal::QuotaExceeded,
                other => panic!("the server never refuses with {other:?}"),
            };
            match p5::Packet::read(bytes, None)
                .expect("an MQTT 5 client reads what the server wrote")
            {
                p5::Packet::ConnAck(a) => Seen::ConnAck(match a.code {
                    C::Success => None,
                    C::UnsupportedProtocolVersion => Some(ConnectRefusal::ProtocolVersion),
                    C::ClientIdentifierNotValid => Some(ConnectRefusal::ClientId),
                    C::NotAuthorized => Some(ConnectRefusal::NotAuthorized),
                    other => panic!("the server never sends {other:?}"),
                }),
                p5::Packet::PubAck(a) if a.reason == A::Success => Seen::PubAck(a.pkid),
                p5::Packet::PubAck(a) => Seen::Refused {
                    pkid: a.pkid,
                    qos: QoS::AtLeastOnce,
                    why: why_ack(a.reason),
                },
                p5::Packet::PubRec(a) if a.reason == R::Success => Seen::PubRec(a.pkid),
                p5::Packet::PubRec(a) => Seen::Refused {
                    pkid: a.pkid,
                    qos: QoS::ExactlyOnce,
                    why: why_rec(a.reason),
                },
                p5::Packet::PubComp(a) => Seen::PubComp(a.pkid),
                p5::Packet::SubAck(a) => Seen::SubAck {
                    pkid: a.pkid,
                    granted: a
                        .return_codes
                        .iter()
                        .map(|c| match c {
                            S::Success(q) => Ok(qos5(*q)),
                            S::NotAuthorized => Err(Refusal::NotAuthorized),
                            S::TopicFilterInvalid => Err(Refusal::TopicNameInvalid),
                            other => panic!("the server never sends {other:?}"),
                        })
                        .collect(),
                },
                p5::Packet::UnsubAck(a) => Seen::UnsubAck {
                    pkid: a.pkid,
                    count: Some(a.reasons.len()),
                },
                p5::Packet::PingResp(_) => Seen::PingResp,
                p5::Packet::Publish(p) => Seen::Publish {
                    topic: String::from_utf8(p.topic.to_vec()).expect("a UTF-8 topic"),
                    qos: qos5(p.qos),
                    payload: p.payload.to_vec(),
                    pkid: p.pkid,
                    retain: p.retain,
                },
                other => panic!("the server never sends {other:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Any bytes at all, as a connection's first bytes or after CONNECT in either version.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), v in version()) {
        let _ = drain(None, &mut BytesMut::from(&bytes[..]));
        let _ = drain(Some(v), &mut BytesMut::from(&bytes[..]));
    }

    /// Well-framed packets of any type, flags and body, several in a row: the reader gets past
    /// the framing and into every packet's own parser.
    #[test]
    fn framed_garbage_never_panics(packets in proptest::collection::vec(framed(), 1..4), v in version()) {
        let stream: Vec<u8> = packets.concat();
        let _ = drain(None, &mut BytesMut::from(&stream[..]));
        let _ = drain(Some(v), &mut BytesMut::from(&stream[..]));
        // Cut anywhere, the first packet waits for its rest or fails; it is never misread.
        for cut in [1, stream.len() / 2, stream.len().saturating_sub(1)] {
            let _ = drain(Some(v), &mut BytesMut::from(&stream[..cut.min(stream.len())]));
        }
    }

    /// Every packet the server writes, a client reads back as what the server meant, and
    /// nothing is left over.
    #[test]
    fn what_the_server_writes_reads_back((v, out) in version().prop_flat_map(|v| (Just(v), out(v)))) {
        let mut bytes = BytesMut::new();
        let expected = meant(v, &out);
        write(v, out, &mut bytes, MAX).expect("the server can write its packet");
        prop_assert_eq!(client_reads(v, &mut bytes), expected);
        prop_assert!(bytes.is_empty(), "bytes left over");
    }

    /// A PUBLISH the server routes reads back through its own reader unchanged (a bridge or a
    /// test client speaking to it reads what it wrote).
    #[test]
    fn a_routed_publish_reads_back_equal(v in version(), p in publish()) {
        let mut bytes = BytesMut::new();
        write(v, Out::Publish(p.clone()), &mut bytes, MAX).expect("writable");
        match read(v, &mut bytes, MAX) {
            Ok(Some(In::Publish(q))) => {
                prop_assert_eq!((q.topic, q.qos, q.payload, q.pkid, q.retain), (p.topic, p.qos, p.payload, p.pkid, p.retain));
            }
            other => prop_assert!(false, "read back as {:?}", other),
        }
        prop_assert!(bytes.is_empty());
    }
}

fn err(version: Option<Version>, bytes: &[u8]) -> CodecError {
    match drain(version, &mut BytesMut::from(bytes)) {
        Err(e) => e,
        Ok(p) => panic!("{bytes:02x?} read as {p:?}, expected an error"),
    }
}

/// An MQTT 5 SUBSCRIBE whose property length promises a second byte the packet does not have:
/// rumqttc calls it "insufficient bytes" after taking the whole packet off the buffer, which
/// the reader took for "wait for more" and then read the next packet's bytes as its rest.
#[test]
fn regression_v5_property_length_past_the_packet_end_is_malformed() {
    // SUBSCRIBE, remaining length 3: packet id 1, then a property length with its
    // continuation bit set and nothing after it. A PINGREQ follows.
    let bytes = [0x82, 0x03, 0x00, 0x01, 0x80, 0xC0, 0x00];
    let e = err(Some(Version::V5), &bytes);
    assert!(matches!(e, CodecError::FieldTruncated), "{e:?}");
    assert_eq!(e.kind(), "malformed");
}

/// The input `fuzz/fuzz_targets/mqtt_packets.rs` found in its first second against the code
/// before the fix above: an MQTT 5 PUBACK (packet id 0x4100, reason 0xd6) whose property
/// length has its continuation bit set on the packet's last byte.
#[test]
fn regression_fuzz_v5_puback_property_length_past_the_packet_end() {
    let bytes = [0x40, 0x04, 0x41, 0x00, 0xd6, 0xff, 0x00];
    let e = err(Some(Version::V5), &bytes);
    assert!(matches!(e, CodecError::FieldTruncated), "{e:?}");
}

/// rumqttc's 3.1.1 reader accepts an UNSUBSCRIBE with no topic filter (§3.10.3-2 forbids it).
#[test]
fn regression_an_unsubscribe_without_filters_is_refused() {
    for (v, bytes) in [
        (Version::V4, &[0xA2, 0x02, 0x00, 0x01][..]),
        (Version::V5, &[0xA2, 0x03, 0x00, 0x01, 0x00][..]),
    ] {
        let e = err(Some(v), bytes);
        assert!(matches!(e, CodecError::EmptyUnsubscribe), "{v:?}: {e:?}");
        assert_eq!(e.kind(), "empty_subscription");
    }
}

#[test]
fn malformed_packets_get_typed_errors_with_labels() {
    let cases: [(&str, Option<Version>, &[u8], &str); 7] = [
        (
            "reserved type 0",
            Some(Version::V4),
            &[0x00, 0x00],
            "packet_type",
        ),
        (
            "reserved type 15",
            Some(Version::V4),
            &[0xF0, 0x00],
            "packet_type",
        ),
        (
            "QoS 3",
            Some(Version::V4),
            &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            "qos",
        ),
        (
            "5-byte remaining length",
            None,
            &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            "remaining_length",
        ),
        ("too large", None, &[0x10, 0xFF, 0xFF, 0x7F], "too_large"),
        (
            "SUBSCRIBE without filters",
            Some(Version::V4),
            &[0x82, 0x02, 0x00, 0x01],
            "empty_subscription",
        ),
        (
            "bad protocol name",
            None,
            b"\x10\x0c\x00\x04MQXX\x04\x02\x00\x3c\x00\x00",
            "protocol_version",
        ),
    ];
    for (what, v, bytes, kind) in cases {
        assert_eq!(err(v, bytes).kind(), kind, "{what}");
    }
    // A topic that is not UTF-8, in both versions.
    let v4 = [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x'];
    assert_eq!(err(Some(Version::V4), &v4).kind(), "utf8");
    let v5 = [0x30, 0x06, 0x00, 0x02, 0xC3, 0x28, 0x00, b'x'];
    assert_eq!(err(Some(Version::V5), &v5).kind(), "utf8");
}
