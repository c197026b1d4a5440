//! Abuse limits against a real `fleetmon server` over real sockets: a device over its message
//! rate is refused on MQTT 5 (PUBACK "quota exceeded", "message rate too high") and keeps its
//! batch to resend, is slowed on MQTT 3.1.1 with every batch still stored exactly once, and
//! gets 429 with `Retry-After` over HTTP; connections over the per-address limit are refused
//! while the others keep being served; a reconnect storm is slowed; a socket that never sends
//! CONNECT, or declares a packet over the limit, is closed without the server waiting for it.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use common::{RawClient, free_addr, get, start_server, wait_for};
use fleetmon_protocol::{Batch, Sample, Topic, encode_json};
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5 as p5;
use serde_json::Value;

fn batch(device: &str, seq: u64) -> Vec<u8> {
    let now = fleetmon_tsdb::db::system_clock();
    encode_json(&Batch {
        device: device.into(),
        boot_id: "b".into(),
        seq,
        sent_at_ms: now,
        dropped_before: 0,
        samples: vec![Sample {
            metric: "cpu_usage_ratio".into(),
            labels: BTreeMap::new(),
            ts_ms: now + seq as i64,
            value: 0.5,
        }],
    })
}

fn metrics(server: &common::ServerProcess) -> String {
    ureq::get(&server.url("/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("read /metrics")
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn events(server: &common::ServerProcess, kind: &str) -> Vec<Value> {
    let (status, body) = get(&server.url(&format!("/api/v1/events?kind={kind}")));
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no events array in {body}"))
}

/// A raw MQTT 5 client, to see exactly which reason codes the server sends.
struct Raw5 {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw5 {
    /// Connects and returns the client and the server's CONNACK.
    fn connect(addr: SocketAddr, client_id: &str) -> (Self, Option<p5::ConnAck>) {
        let stream = TcpStream::connect(addr).expect("connect to the MQTT endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let mut c = Raw5 {
            stream,
            buf: BytesMut::new(),
        };
        let connect = p5::Connect {
            keep_alive: 30,
            client_id: client_id.into(),
            clean_start: true,
            properties: None,
        };
        c.send(p5::Packet::Connect(connect, None, None));
        let connack = match c.recv() {
            Some(p5::Packet::ConnAck(a)) => Some(a),
            _ => None,
        };
        (c, connack)
    }

    fn send(&mut self, p: p5::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).expect("encode a packet");
        self.stream.write_all(&out).expect("send a packet");
    }

    fn publish(&mut self, topic: &str, payload: Vec<u8>, pkid: u16) {
        let mut p = p5::Publish::new(topic, m5::QoS::AtLeastOnce, payload, None);
        p.pkid = pkid;
        self.send(p5::Packet::Publish(p));
    }

    /// The next PUBACK.
    fn puback(&mut self) -> p5::PubAck {
        match self.recv() {
            Some(p5::Packet::PubAck(a)) => a,
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }

    /// The next packet, or None when the server closed the connection.
    fn recv(&mut self) -> Option<p5::Packet> {
        common::read_packet(&mut self.stream, &mut self.buf, common::v5_packet)
    }
}

fn is_rate_refusal(a: &p5::PubAck) -> bool {
    a.reason == p5::PubAckReason::QuotaExceeded
        && a.properties
            .as_ref()
            .and_then(|p| p.reason_string.as_deref())
            == Some("message rate too high")
}

#[test]
fn mqtt5_over_the_rate_is_refused_and_the_device_resends_later() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A token every 2 s, 3 at once.
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &[
            "--device-message-rate",
            "0.5",
            "--device-message-burst",
            "3",
        ],
    );
    let (mut c, connack) = Raw5::connect(server.mqtt, "d5");
    let connack = connack.expect("a CONNACK");
    assert_eq!(connack.code, p5::ConnectReturnCode::Success);
    // The packet limit is advertised: the payload limit plus room for the topic.
    let max = connack.properties.and_then(|p| p.max_packet_size);
    assert_eq!(max, Some((1 << 20) + (64 << 10)));

    let topic = Topic::telemetry("d5");
    for seq in 1..=5u64 {
        c.publish(&topic, batch("d5", seq), seq as u16);
    }
    let acks: Vec<p5::PubAck> = (0..5).map(|_| c.puback()).collect();
    let accepted: Vec<u16> = acks
        .iter()
        .filter(|a| a.reason == p5::PubAckReason::Success)
        .map(|a| a.pkid)
        .collect();
    let refused: Vec<u16> = acks
        .iter()
        .filter(|a| is_rate_refusal(a))
        .map(|a| a.pkid)
        .collect();
    assert_eq!(accepted, [1, 2, 3], "{acks:?}");
    assert_eq!(refused, [4, 5], "{acks:?}");

    // Another device has its own budget.
    let (mut other, _) = Raw5::connect(server.mqtt, "other");
    other.publish(&Topic::telemetry("other"), batch("other", 1), 1);
    assert_eq!(other.puback().reason, p5::PubAckReason::Success);

    // The device kept the refused batches; it resends each until it is accepted.
    for seq in [4u64, 5] {
        let stored = wait_for(Duration::from_secs(20), || {
            c.publish(&topic, batch("d5", seq), 100 + seq as u16);
            let a = c.puback();
            if a.reason == p5::PubAckReason::Success {
                return Some(());
            }
            assert!(is_rate_refusal(&a), "{a:?}");
            std::thread::sleep(Duration::from_millis(300));
            None
        });
        assert!(stored.is_some(), "batch {seq} was never accepted");
    }
    let d = server.device("d5").expect("device d5");
    assert_eq!(d["batches_received"], 5, "{d}");
    assert_eq!(d["batches_duplicate"], 0, "{d}");
    assert_eq!(
        d["batches_rejected"], 0,
        "a rate refusal is not corrupt: {d}"
    );

    let m = metrics(&server);
    let refusals = metric(
        &m,
        "fleetmon_ingest_rejected_total{transport=\"mqtt\",reason=\"rate_limited\"}",
    );
    assert!(refusals >= 2.0, "refusals not counted:\n{m}");
    // Reported once for the minute, not once per refused message.
    let limited = events(&server, "rate_limited");
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["device"], "d5");
    assert!(
        limited[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("0.5 messages/s")),
        "{limited:?}"
    );
}

#[test]
fn mqtt311_over_the_rate_is_slowed_and_every_batch_is_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &["--device-message-rate", "4", "--device-message-burst", "2"],
    );
    let mut c = RawClient::connect(server.mqtt, "d4");
    let topic = Topic::telemetry("d4");
    let n = 10u16;
    for seq in 1..=n {
        c.publish(&topic, batch("d4", u64::from(seq)), seq);
    }
    // MQTT 3.1.1 cannot refuse: every batch is acknowledged, in order, none dropped.
    for seq in 1..=n {
        match c.recv() {
            Some(rumqttc::Packet::PubAck(a)) => assert_eq!(a.pkid, seq),
            other => panic!("expected PUBACK {seq}, got {other:?}"),
        }
    }
    let d = server.device("d4").expect("device d4");
    assert_eq!(d["batches_received"], u64::from(n), "{d}");
    assert_eq!(d["batches_duplicate"], 0, "{d}");
    assert_eq!(d["batches_rejected"], 0, "{d}");
    // ... but it was slowed: publishes were held back, none refused.
    let m = metrics(&server);
    let held = metric(
        &m,
        "fleetmon_ingest_delayed_total{transport=\"mqtt\",reason=\"rate_limited\"}",
    );
    assert!(held >= 1.0, "nothing was held back:\n{m}");
    let refused = metric(
        &m,
        "fleetmon_ingest_rejected_total{transport=\"mqtt\",reason=\"rate_limited\"}",
    );
    assert_eq!(refused, 0.0, "{m}");
    // The connection is still in good shape.
    c.send(rumqttc::Packet::PingReq);
    assert_eq!(c.recv(), Some(rumqttc::Packet::PingResp));
    assert_eq!(events(&server, "rate_limited").len(), 1);
}

#[test]
fn http_over_the_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A token every 10 s: the third batch cannot be in budget.
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &[
            "--device-message-rate",
            "0.1",
            "--device-message-burst",
            "2",
        ],
    );
    let ingest = server.url("/api/v1/ingest");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut answers = Vec::new();
    for seq in 1..=3 {
        let mut r = agent
            .post(&ingest)
            .send(&batch("h1", seq)[..])
            .expect("POST /api/v1/ingest");
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = r.body_mut().read_to_string().expect("read the answer");
        answers.push((r.status().as_u16(), retry_after, body));
    }
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(answers[1].0, 200, "{answers:?}");
    let (status, retry_after, body) = &answers[2];
    assert_eq!(*status, 429, "{body}");
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "Retry-After {retry_after:?}"
    );
    let why: Value = serde_json::from_str(body).expect("a JSON error");
    let why = why["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("\"h1\"") && why.contains("message rate"),
        "{why}"
    );
    let d = server.device("h1").expect("device h1");
    assert_eq!(d["batches_received"], 2, "{d}");
    let m = metrics(&server);
    let refused = metric(
        &m,
        "fleetmon_ingest_rejected_total{transport=\"http\",reason=\"rate_limited\"}",
    );
    assert_eq!(refused, 1.0, "{m}");
    assert_eq!(events(&server, "rate_limited").len(), 1);
}

/// Sends an MQTT 3.1.1 CONNECT and returns the CONNACK's return code (None: closed).
fn connect_v4(
    addr: SocketAddr,
    client_id: &str,
) -> (TcpStream, Option<rumqttc::ConnectReturnCode>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the MQTT endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut out = BytesMut::new();
    rumqttc::Packet::Connect(rumqttc::Connect::new(client_id))
        .write(&mut out, 1 << 20)
        .expect("encode CONNECT");
    stream.write_all(&out).expect("send CONNECT");
    let code = read_v4(&mut stream).and_then(|p| match p {
        rumqttc::Packet::ConnAck(a) => Some(a.code),
        _ => None,
    });
    (stream, code)
}

fn read_v4(stream: &mut TcpStream) -> Option<rumqttc::Packet> {
    common::read_packet(stream, &mut BytesMut::new(), |b| {
        common::v4_packet(b, 1 << 20)
    })
}

/// Whether the server closes `stream` (reads EOF) before its read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 64];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn the_connection_over_the_per_address_limit_is_refused_and_the_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &[
            "--limit-loopback",
            "--mqtt-max-connections-per-address",
            "3",
            "--mqtt-connection-rate",
            "0",
        ],
    );
    let mut clients: Vec<RawClient> = (1..=3)
        .map(|i| RawClient::connect(server.mqtt, &format!("c{i}")))
        .collect();
    // The fourth from this address: MQTT 3.1.1 "server unavailable", MQTT 5 "quota exceeded".
    let (mut s, code) = connect_v4(server.mqtt, "c4");
    assert_eq!(code, Some(rumqttc::ConnectReturnCode::ServiceUnavailable));
    assert!(
        closed_by_server(&mut s),
        "the refused connection stayed open"
    );
    let (_, connack) = Raw5::connect(server.mqtt, "c5");
    assert_eq!(
        connack.map(|a| a.code),
        Some(p5::ConnectReturnCode::QuotaExceeded)
    );
    // The three are served all along.
    for (i, c) in clients.iter_mut().enumerate() {
        let device = format!("c{}", i + 1);
        c.publish(&Topic::telemetry(&device), batch(&device, 1), 1);
        assert!(matches!(c.recv(), Some(rumqttc::Packet::PubAck(_))));
    }
    // One leaves: its place is free again.
    drop(clients.pop());
    let admitted = wait_for(Duration::from_secs(10), || {
        let (_, code) = connect_v4(server.mqtt, "c6");
        (code == Some(rumqttc::ConnectReturnCode::Success)).then_some(())
    });
    assert!(admitted.is_some(), "a freed slot was not reused");

    let m = metrics(&server);
    let refused = metric(
        &m,
        "fleetmon_mqtt_connections_refused_total{reason=\"max_connections_per_address\"}",
    );
    assert!(refused >= 2.0, "{m}");
    let limited = events(&server, "connection_limited");
    assert_eq!(limited.len(), 1, "once a minute per address: {limited:?}");
    assert!(
        limited[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{limited:?}"
    );
}

#[test]
fn a_reconnect_storm_from_one_address_is_slowed_not_served_unbounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &[
            "--limit-loopback",
            "--mqtt-connection-rate",
            "2",
            "--mqtt-connection-burst",
            "2",
        ],
    );
    // 20 connections at once, each answered on its own thread.
    let addr = server.mqtt;
    let storm: Vec<_> = (0..20)
        .map(|i| std::thread::spawn(move || connect_v4(addr, &format!("s{i}")).1))
        .collect();
    let codes: Vec<_> = storm
        .into_iter()
        .map(|t| t.join().expect("a storm thread"))
        .collect();
    let ok = codes
        .iter()
        .filter(|c| **c == Some(rumqttc::ConnectReturnCode::Success))
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == Some(rumqttc::ConnectReturnCode::ServiceUnavailable))
        .count();
    assert_eq!(ok + refused, 20, "{codes:?}");
    // The burst and those that could wait their turn are served; the rest refused.
    assert!(ok > 2 && refused > 0, "{codes:?}");
    let m = metrics(&server);
    assert!(
        metric(&m, "fleetmon_mqtt_connections_delayed_total") >= 1.0,
        "{m}"
    );
    let by_rate = metric(
        &m,
        "fleetmon_mqtt_connections_refused_total{reason=\"connection_rate\"}",
    );
    assert_eq!(by_rate, refused as f64, "{m}");
}

#[test]
fn a_socket_without_connect_and_a_declared_oversized_packet_are_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &["--mqtt-connect-timeout", "1s"],
    );
    let open = |addr| {
        let s = TcpStream::connect(addr).expect("connect to the MQTT endpoint");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("set a read timeout");
        s
    };
    // Nothing at all.
    let mut idle = open(server.mqtt);
    assert!(closed_by_server(&mut idle), "an idle socket was kept");
    // Half a CONNECT.
    let mut half = open(server.mqtt);
    half.write_all(&[0x10, 0x20, 0x00, 0x04, b'M'])
        .expect("send half a CONNECT");
    assert!(closed_by_server(&mut half), "a half CONNECT was kept");
    // A CONNECT declaring 200 MiB: closed on the header, the server never waits for it.
    let mut huge = open(server.mqtt);
    huge.write_all(&[0x10, 0x80, 0x80, 0x80, 0x64])
        .expect("send a huge header");
    assert!(closed_by_server(&mut huge), "a 200 MiB CONNECT was awaited");
    // Likewise a PUBLISH on an open session, on both versions.
    let (mut s, code) = connect_v4(server.mqtt, "big4");
    assert_eq!(code, Some(rumqttc::ConnectReturnCode::Success));
    s.write_all(&[0x32, 0x80, 0x80, 0x80, 0x64])
        .expect("send a huge PUBLISH header");
    assert!(closed_by_server(&mut s), "a 200 MiB PUBLISH was awaited");
    let (mut c5, _) = Raw5::connect(server.mqtt, "big5");
    c5.stream
        .write_all(&[0x32, 0x80, 0x80, 0x80, 0x64])
        .expect("send a huge PUBLISH header");
    assert!(c5.recv().is_none(), "a 200 MiB MQTT 5 PUBLISH was awaited");
    // Still serving.
    let mut good = RawClient::connect(server.mqtt, "good");
    good.publish(&Topic::telemetry("good"), batch("good", 1), 1);
    assert!(matches!(good.recv(), Some(rumqttc::Packet::PubAck(_))));
}

fn wide_batch(device: &str, seq: u64, samples: usize, labels: usize) -> Vec<u8> {
    let now = fleetmon_tsdb::db::system_clock();
    fleetmon_protocol::encode_protobuf(&Batch {
        device: device.into(),
        boot_id: "b".into(),
        seq,
        sent_at_ms: now,
        dropped_before: 0,
        samples: (0..samples)
            .map(|i| Sample {
                metric: "temperature_celsius".into(),
                labels: (0..labels)
                    .map(|l| (format!("l{l}"), format!("{i}")))
                    .collect(),
                ts_ms: now + i as i64,
                value: 1.0,
            })
            .collect(),
    })
}

#[test]
fn the_per_batch_sample_and_label_limits_hold_on_every_transport() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let ingest = server.url("/api/v1/ingest");
    // 10,000 samples is the most a batch may have; one more is refused, naming both.
    let (s, body) = common::post(&ingest, &wide_batch("w", 1, 10_000, 1));
    assert_eq!(s, 200, "{body}");
    let (s, body) = common::post(&ingest, &wide_batch("w", 2, 10_001, 1));
    assert_eq!(s, 400, "{body}");
    let why = body["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("10001 samples") && why.contains("10000"),
        "{why}"
    );
    let (s, body) = common::post(&ingest, &wide_batch("w", 3, 1, 33));
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("33 labels")),
        "{body}"
    );

    // MQTT 5: "payload format invalid", the connection stays up.
    let (mut c5, _) = Raw5::connect(server.mqtt, "w5");
    c5.publish(&Topic::telemetry("w5"), wide_batch("w5", 1, 10_001, 0), 1);
    assert_eq!(c5.puback().reason, p5::PubAckReason::PayloadFormatInvalid);
    c5.publish(&Topic::telemetry("w5"), wide_batch("w5", 2, 10, 0), 2);
    assert_eq!(c5.puback().reason, p5::PubAckReason::Success);
    // MQTT 3.1.1: closed without an acknowledgement.
    let mut c4 = RawClient::connect(server.mqtt, "w4");
    c4.publish(&Topic::telemetry("w4"), wide_batch("w4", 1, 10_001, 0), 1);
    assert_eq!(
        c4.recv(),
        None,
        "a batch over the sample limit was acknowledged"
    );
    let w = server.device("w").expect("device w");
    assert_eq!(w["batches_received"], 1, "{w}");
}
