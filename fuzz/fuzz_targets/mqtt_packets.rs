//! A connection's packets after CONNECT, as the server reads them, in MQTT 3.1.1 or 5 (the
//! first input byte chooses). Reading must never panic and never loop without consuming; for
//! every packet read, the answer the server would send is written and a client reads it back
//! as what was meant, and a PUBLISH written back (as the server routes it) reads back equal.
#![no_main]

use bytes::BytesMut;
use fleetmon_server::mqtt::codec::{In, Out, Refusal, Version, read, write};
use libfuzzer_sys::fuzz_target;
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::v5 as p5;

const MAX: usize = 4096;

/// What a client reads from `bytes`: one whole packet and nothing else.
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per answer"
)]
enum Client {
    V4(rumqttc::Packet),
    V5(p5::Packet),
}

fn client_read(version: Version, mut bytes: BytesMut) -> Client {
    let p = match version {
        Version::V4 => {
            Client::V4(rumqttc::Packet::read(&mut bytes, MAX).expect("client reads the answer"))
        }
        Version::V5 => {
            Client::V5(p5::Packet::read(&mut bytes, None).expect("client reads the answer"))
        }
    };
    assert!(bytes.is_empty(), "bytes left after the answer");
    p
}

fn written(version: Version, out: Out) -> BytesMut {
    let mut bytes = BytesMut::new();
    write(version, out, &mut bytes, MAX).expect("the server can write its answer");
    bytes
}

/// The PUBACK/PUBREC id of an answer.
fn ack_pkid(c: &Client) -> Option<u16> {
    match c {
        Client::V4(rumqttc::Packet::PubAck(a)) => Some(a.pkid),
        Client::V4(rumqttc::Packet::PubRec(a)) => Some(a.pkid),
        Client::V5(p5::Packet::PubAck(a)) => Some(a.pkid),
        Client::V5(p5::Packet::PubRec(a)) => Some(a.pkid),
        _ => None,
    }
}

fn answer(version: Version, packet: In) {
    match packet {
        In::Publish(p) => {
            // Routed to a subscriber as read.
            let mut bytes = written(version, Out::Publish(p.clone()));
            match read(version, &mut bytes, MAX) {
                Ok(Some(In::Publish(q))) => {
                    assert_eq!(
                        (&q.topic, q.qos, &q.payload, q.pkid, q.retain),
                        (&p.topic, p.qos, &p.payload, p.pkid, p.retain)
                    );
                    assert!(bytes.is_empty());
                }
                other => panic!("a written PUBLISH read back as {other:?}"),
            }
            // Acknowledged, or (MQTT 5) refused with a reason code.
            let (ok, refused) = match p.qos {
                QoS::AtMostOnce => return,
                QoS::AtLeastOnce => (Out::PubAck(p.pkid), QoS::AtLeastOnce),
                QoS::ExactlyOnce => (Out::PubRec(p.pkid), QoS::ExactlyOnce),
            };
            let c = client_read(version, written(version, ok));
            assert_eq!(ack_pkid(&c), Some(p.pkid));
            if version == Version::V5 {
                let why = Refusal::PayloadFormatInvalid;
                let out = Out::Refuse {
                    pkid: p.pkid,
                    qos: refused,
                    why,
                };
                let c = client_read(version, written(version, out));
                assert_eq!(ack_pkid(&c), Some(p.pkid));
            }
        }
        In::PubRel(pkid) => match client_read(version, written(version, Out::PubComp(pkid))) {
            Client::V4(rumqttc::Packet::PubComp(c)) => assert_eq!(c.pkid, pkid),
            Client::V5(p5::Packet::PubComp(c)) => assert_eq!(c.pkid, pkid),
            _ => panic!("PUBCOMP read back as something else"),
        },
        In::Subscribe { pkid, filters } => {
            let granted: Vec<_> = filters
                .iter()
                .map(|(_, q)| {
                    if *q == QoS::ExactlyOnce {
                        Err(Refusal::TopicNameInvalid)
                    } else {
                        Ok(*q)
                    }
                })
                .collect();
            let n = granted.len();
            match client_read(version, written(version, Out::SubAck { pkid, granted })) {
                Client::V4(rumqttc::Packet::SubAck(a)) => {
                    assert_eq!((a.pkid, a.return_codes.len()), (pkid, n))
                }
                Client::V5(p5::Packet::SubAck(a)) => {
                    assert_eq!((a.pkid, a.return_codes.len()), (pkid, n))
                }
                _ => panic!("SUBACK read back as something else"),
            }
        }
        In::Unsubscribe { pkid, topics } => {
            let count = topics.len();
            match client_read(version, written(version, Out::UnsubAck { pkid, count })) {
                Client::V4(rumqttc::Packet::UnsubAck(a)) => assert_eq!(a.pkid, pkid),
                Client::V5(p5::Packet::UnsubAck(a)) => {
                    assert_eq!((a.pkid, a.reasons.len()), (pkid, count))
                }
                _ => panic!("UNSUBACK read back as something else"),
            }
        }
        In::PingReq => match client_read(version, written(version, Out::PingResp)) {
            Client::V4(rumqttc::Packet::PingResp) | Client::V5(p5::Packet::PingResp(_)) => {}
            _ => panic!("PINGRESP read back as something else"),
        },
        In::Connect(_) | In::Disconnect { .. } | In::DeliveryAck | In::Unexpected(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 {
        Version::V4
    } else {
        Version::V5
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match read(version, &mut buf, MAX) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a packet was read but nothing consumed");
                answer(version, packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting for more must not consume");
                break;
            }
            // The session closes the connection on any error.
            Err(_) => break,
        }
    }
});
