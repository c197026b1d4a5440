//! Bad input on every ingest surface gets a clear error, is never acknowledged, and leaves the
//! server serving everyone else.

mod common;

use common::{RawClient, free_addr, get, one_sample_batch, post, start_server};
use fleetmon_protocol::{encode_json, encode_protobuf};
use rumqttc::{Packet, PubAck};

#[test]
fn bad_mqtt_publishes_close_the_connection_without_puback() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);

    // A healthy device stays connected through everything below.
    let mut good = RawClient::connect(server.mqtt, "good");
    good.publish(
        "fleetmon/v1/good/telemetry",
        encode_protobuf(&one_sample_batch("good", 1)),
        1,
    );
    assert_eq!(good.recv(), Some(Packet::PubAck(PubAck::new(1))));

    let mut wrong_crc = encode_protobuf(&one_sample_batch("bad", 1));
    wrong_crc[5] ^= 0xff;
    let mut garbage_pb = b"FMB\x01".to_vec();
    let body = b"\xff\xff\xff\xff\x0f";
    garbage_pb.extend_from_slice(&crc32c(body).to_le_bytes());
    garbage_pb.extend_from_slice(body);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "bad JSON",
            "fleetmon/v1/bad/telemetry",
            b"{\"device\": \"bad\", \"seq\": ".to_vec(),
        ),
        ("bad protobuf", "fleetmon/v1/bad/telemetry", garbage_pb),
        ("wrong checksum", "fleetmon/v1/bad/telemetry", wrong_crc),
        (
            "oversized",
            "fleetmon/v1/bad/telemetry",
            vec![b' '; (1 << 20) + 10],
        ),
        (
            "unknown topic",
            "somewhere/else",
            encode_json(&one_sample_batch("bad", 1)),
        ),
        (
            "device differs from topic",
            "fleetmon/v1/other/telemetry",
            encode_json(&one_sample_batch("bad", 1)),
        ),
    ];
    for (what, topic, payload) in cases {
        let mut bad = RawClient::connect(server.mqtt, "bad");
        bad.publish(topic, payload, 7);
        assert_eq!(
            bad.recv(),
            None,
            "{what}: expected the connection closed without PUBACK"
        );
    }

    // Still serving the good device, on the same connection.
    good.publish(
        "fleetmon/v1/good/telemetry",
        encode_protobuf(&one_sample_batch("good", 2)),
        2,
    );
    assert_eq!(good.recv(), Some(Packet::PubAck(PubAck::new(2))));
    let (_, dev) = get(&server.url("/api/v1/devices/good"));
    assert_eq!(dev["batches_received"], 2);
    let (_, bad) = get(&server.url("/api/v1/devices/bad"));
    assert_eq!(
        bad["batches_received"], 0,
        "nothing of the bad device was stored"
    );
    assert!(bad["batches_rejected"].as_u64().unwrap() >= 3);
    let (_, metrics) = get(&server.url("/metrics"));
    let metrics = metrics.as_str().unwrap().to_owned();
    for reason in ["json", "protobuf", "checksum", "topic", "device_mismatch"] {
        assert!(
            metrics.contains(&format!(
                "fleetmon_ingest_rejected_total{{transport=\"mqtt\",reason=\"{reason}\"}} 1"
            )),
            "no reject counted for {reason}:\n{metrics}"
        );
    }
}

#[test]
fn bad_http_bodies_get_4xx_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let url = server.url("/api/v1/ingest");

    let mut wrong_crc = encode_protobuf(&one_sample_batch("d", 1));
    wrong_crc[5] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "bad JSON",
            b"{\"device\":".to_vec(),
            400,
            "JSON does not decode",
        ),
        (
            "wrong field",
            br#"{"device":"d","seq":1,"samples":[{"metric":"m","ts":1,"value":1}]}"#.to_vec(),
            400,
            "unknown field `ts`",
        ),
        (
            "bad name",
            br#"{"device":"d","seq":1,"samples":[{"metric":"1m","ts_ms":1,"value":1}]}"#.to_vec(),
            400,
            "metric name \"1m\" is invalid",
        ),
        ("wrong checksum", wrong_crc, 400, "checksum mismatch"),
        ("not a batch", b"hello".to_vec(), 400, "neither JSON"),
        ("empty", Vec::new(), 400, "payload is empty"),
        (
            "oversized",
            vec![b' '; (1 << 20) + 10],
            413,
            "at most 1048576 bytes",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, json) = post(&url, &body);
        assert_eq!(got, status, "{what}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{what}: error {error:?} should mention {message:?}"
        );
    }
    let (status, json) = post(&url, &encode_json(&one_sample_batch("d", 1)));
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "stored");
    let (status, json) = post(&url, &encode_protobuf(&one_sample_batch("d", 1)));
    assert_eq!(status, 200);
    assert_eq!(json["status"], "duplicate");
    let (status, json) = get(&server.url("/api/v1/nope"));
    assert_eq!(status, 404);
    assert!(json["error"].as_str().unwrap().contains("/api/v1/nope"));
    let (status, _) = get(&server.url("/api/v1/devices?status=sideways"));
    assert_eq!(status, 400);
}

fn crc32c(bytes: &[u8]) -> u32 {
    // Castagnoli CRC, bitwise: enough for a test and independent of the code under test.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
