//! Hostile MQTT over real TCP against a real `fleetmon server` process: malformed packets,
//! packets out of order, lies about lengths, half a packet. Each offending connection is closed
//! without an acknowledgement and nothing it sent is stored, the server never panics and keeps
//! serving, a well-behaved device connected since before keeps getting PUBACKs, and
//! `/metrics` counts every violation by reason.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{RawClient, ServerProcess, free_addr, get, one_sample_batch, wait_for};
use fleetmon_protocol::encode_protobuf;
use rumqttc::{Packet, PubAck};

/// `fleetmon server` with its log in `log` (to look for panics afterwards).
fn start_logged_server(dir: &Path, log: &Path) -> ServerProcess {
    let (http, mqtt) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["server", "--data-dir"])
        .arg(dir)
        .args(["--http-listen", &http.to_string()])
        .args(["--mqtt-listen", &mqtt.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the server log"))
        .spawn()
        .expect("spawn fleetmon server");
    let server = ServerProcess { child, http, mqtt };
    let up = wait_for(Duration::from_secs(20), || {
        (get(&server.url("/healthz")).0 == 200).then_some(())
    });
    assert!(up.is_some(), "fleetmon server did not come up");
    server
}

fn mqtt_str(s: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(s.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(s);
    out
}

/// A packet: first byte, remaining length (one or more bytes), body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn connect(name: &[u8], level: u8, client_id: &str) -> Vec<u8> {
    let mut body = mqtt_str(name);
    body.extend([level, 0x02, 0x00, 0x3c]);
    if level == 5 {
        body.push(0x00);
    }
    body.extend(mqtt_str(client_id.as_bytes()));
    packet(0x10, &body)
}

/// A QoS 1 PUBLISH (first byte `first`, so the QoS bits can lie) with packet id 7.
fn publish(first: u8, level: u8, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    body.extend(7u16.to_be_bytes());
    if level == 5 {
        body.push(0x00);
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// What one hostile connection does.
struct Case {
    what: &'static str,
    /// Connect properly first (MQTT level 4 or 5), or start with the hostile bytes.
    connect_first: Option<u8>,
    bytes: Vec<u8>,
    /// Close our sending side after the bytes (a truncated packet).
    then_close: bool,
    /// The `fleetmon_mqtt_protocol_errors_total` reason it must be counted under.
    reason: &'static str,
}

/// Runs `case` on a new connection; returns everything the server sent after the CONNACK
/// (if any) until it closed the connection. Fails if it does not close within 5 s.
fn run(addr: SocketAddr, case: &Case) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the MQTT endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    if let Some(level) = case.connect_first {
        s.write_all(&connect(b"MQTT", level, &format!("hostile-{level}")))
            .expect("send CONNECT");
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack[..2]).expect("a CONNACK");
        assert_eq!(connack[0], 0x20, "{}: expected a CONNACK", case.what);
        let rest = usize::from(connack[1]);
        let mut body = vec![0u8; rest];
        s.read_exact(&mut body).expect("the CONNACK's body");
        assert_eq!(body.get(1), Some(&0), "{}: CONNECT refused", case.what);
    }
    // The server may close while we still write (it does not wait for a body it refused).
    let _ = s.write_all(&case.bytes);
    if case.then_close {
        s.shutdown(Shutdown::Write).expect("half-close");
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "{}: the server did not close the connection: {e}",
                case.what
            ),
        }
    }
}

#[test]
fn malformed_mqtt_closes_only_the_offending_connection() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("server.log");
    let server = start_logged_server(&dir.path().join("data"), &log);

    // A healthy device, connected before everything below and on the same connection after.
    let mut good = RawClient::connect(server.mqtt, "good");
    let mut seq = 1;
    good.publish(
        "fleetmon/v1/good/telemetry",
        encode_protobuf(&one_sample_batch("good", seq)),
        1,
    );
    assert_eq!(good.recv(), Some(Packet::PubAck(PubAck::new(1))));

    let valid = encode_protobuf(&one_sample_batch("bad", 1));
    let topic = b"fleetmon/v1/bad/telemetry";
    let mut bad_utf8_topic = topic.to_vec();
    bad_utf8_topic[12] = 0xff; // fleetmon/v1/\xffad/telemetry
    let mut truncated = publish(0x32, 4, topic, &valid);
    truncated.truncate(truncated.len() / 2);
    let case = |what, connect_first, bytes, reason| Case {
        what,
        connect_first,
        bytes,
        then_close: false,
        reason,
    };
    let cases = vec![
        case(
            "garbage first bytes",
            None,
            vec![0xff; 8],
            "remaining_length",
        ),
        // A TLS ClientHello on the plaintext port: looks like a CONNECT with a nonsense name.
        case(
            "TLS ClientHello first",
            None,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            "protocol_version",
        ),
        case(
            "PUBLISH before CONNECT",
            None,
            publish(0x32, 4, topic, &valid),
            "not_connect_first",
        ),
        case(
            "bad protocol name",
            None,
            connect(b"MQXX", 4, "x"),
            "protocol_version",
        ),
        case(
            "bad protocol level",
            None,
            connect(b"MQTT", 3, "x"),
            "protocol_version",
        ),
        case(
            "CONNECT with a 5-byte remaining length",
            None,
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
            "remaining_length",
        ),
        case(
            "PUBLISH with a 5-byte remaining length",
            Some(4),
            vec![0x32, 0x80, 0x80, 0x80, 0x80, 0x01],
            "remaining_length",
        ),
        // 256 MiB promised: refused from the header, before any of it is read.
        case(
            "PUBLISH larger than the maximum packet",
            Some(4),
            vec![0x32, 0xff, 0xff, 0xff, 0x7f],
            "too_large",
        ),
        case(
            "MQTT 5 PUBLISH larger than the maximum packet",
            Some(5),
            vec![0x32, 0xff, 0xff, 0xff, 0x7f],
            "too_large",
        ),
        case(
            "reserved packet type 0",
            Some(4),
            vec![0x00, 0x00],
            "packet_type",
        ),
        case(
            "reserved packet type 15",
            Some(4),
            vec![0xf0, 0x00],
            "packet_type",
        ),
        case(
            "MQTT 5 reserved packet type 0",
            Some(5),
            vec![0x00, 0x00],
            "packet_type",
        ),
        case(
            "PUBLISH with QoS 3",
            Some(4),
            publish(0x36, 4, topic, &valid),
            "qos",
        ),
        case(
            "MQTT 5 PUBLISH with QoS 3",
            Some(5),
            publish(0x36, 5, topic, &valid),
            "qos",
        ),
        Case {
            what: "half a PUBLISH, then close",
            connect_first: Some(4),
            bytes: truncated,
            then_close: true,
            reason: "truncated",
        },
        case(
            "topic that is not UTF-8",
            Some(4),
            publish(0x32, 4, &bad_utf8_topic, &valid),
            "utf8",
        ),
        case(
            "MQTT 5 topic that is not UTF-8",
            Some(5),
            publish(0x32, 5, &bad_utf8_topic, &valid),
            "utf8",
        ),
        case(
            "SUBSCRIBE with no filters",
            Some(4),
            packet(0x82, &[0x00, 0x01]),
            "empty_subscription",
        ),
        case(
            "MQTT 5 SUBSCRIBE with no filters",
            Some(5),
            packet(0x82, &[0x00, 0x01, 0x00]),
            "empty_subscription",
        ),
        case(
            "UNSUBSCRIBE with no filters",
            Some(4),
            packet(0xa2, &[0x00, 0x01]),
            "empty_subscription",
        ),
        // A property length whose varint runs past the packet's end.
        case(
            "MQTT 5 SUBSCRIBE with a property length past its end",
            Some(5),
            packet(0x82, &[0x00, 0x01, 0x80]),
            "malformed",
        ),
        case(
            "second CONNECT",
            Some(4),
            connect(b"MQTT", 4, "again"),
            "second_connect",
        ),
        case(
            "MQTT 5 second CONNECT",
            Some(5),
            connect(b"MQTT", 5, "again"),
            "second_connect",
        ),
        case(
            "a server's packet (CONNACK) from a client",
            Some(4),
            vec![0x20, 0x02, 0x00, 0x00],
            "server_packet",
        ),
    ];

    for case in &cases {
        let got = run(server.mqtt, case);
        // The only answer a hostile connection may get is a CONNACK refusing its protocol.
        let refused_connack = got.len() == 4 && got[0] == 0x20 && got[3] != 0;
        assert!(
            got.is_empty() || (case.reason == "protocol_version" && refused_connack),
            "{}: answered {got:02x?} before closing",
            case.what
        );
        // The well-behaved device is still served, on its old connection.
        seq += 1;
        let pkid = u16::try_from(seq).expect("few cases");
        good.publish(
            "fleetmon/v1/good/telemetry",
            encode_protobuf(&one_sample_batch("good", seq)),
            pkid,
        );
        assert_eq!(
            good.recv(),
            Some(Packet::PubAck(PubAck::new(pkid))),
            "after {}: the good device lost its PUBACK",
            case.what
        );
    }

    assert_eq!(get(&server.url("/healthz")).0, 200);
    let good_dev = server.device("good").expect("the good device is known");
    assert_eq!(good_dev["batches_received"], seq);
    if let Some(bad) = server.device("bad") {
        assert_eq!(
            bad["batches_received"], 0,
            "a hostile batch was stored: {bad}"
        );
    }

    // Every violation is counted under its reason (the half packet is counted when the server
    // sees the close, so allow it a moment).
    let mut expected = std::collections::BTreeMap::<&str, u64>::new();
    for case in &cases {
        *expected.entry(case.reason).or_default() += 1;
    }
    let counted = wait_for(Duration::from_secs(5), || {
        let (_, metrics) = get(&server.url("/metrics"));
        let metrics = metrics.as_str()?.to_owned();
        let all = expected.iter().all(|(reason, n)| {
            metrics.contains(&format!(
                "fleetmon_mqtt_protocol_errors_total{{reason=\"{reason}\"}} {n}\n"
            ))
        });
        all.then_some(())
    });
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(
        counted.is_some(),
        "expected protocol errors {expected:?}, got:\n{}",
        metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("protocol_errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(good);
    drop(server);
    let log = std::fs::read_to_string(&log).expect("read the server log");
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}
