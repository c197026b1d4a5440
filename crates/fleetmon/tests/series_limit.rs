//! A device cannot blow up the index: a batch that would give it more series than
//! `--max-series-per-device` is refused with a message naming the limit (HTTP 422; MQTT 3.1.1
//! closes the connection, unacknowledged), counted as rejected, and the server keeps serving
//! it and others; series it already has always pass, so a resend is accepted.

mod common;

use std::collections::BTreeMap;

use common::{RawClient, free_addr, get, post, start_server};
use fleetmon_protocol::{Batch, Sample, Topic, encode_json};

fn batch(device: &str, seq: u64, metrics: &[&str]) -> Vec<u8> {
    let now = fleetmon_tsdb::db::system_clock();
    encode_json(&Batch {
        device: device.into(),
        boot_id: "b".into(),
        seq,
        sent_at_ms: now,
        dropped_before: 0,
        samples: metrics
            .iter()
            .map(|m| Sample {
                metric: (*m).into(),
                labels: BTreeMap::new(),
                ts_ms: now + seq as i64,
                value: 1.0,
            })
            .collect(),
    })
}

#[test]
fn a_device_over_its_series_limit_is_refused_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &["--max-series-per-device", "5"],
    );
    let ingest = server.url("/api/v1/ingest");

    let (s, _) = post(&ingest, &batch("d1", 0, &["a", "b", "c", "d"]));
    assert_eq!(s, 200);
    let (s, e) = post(&ingest, &batch("d1", 1, &["a", "e", "f"]));
    assert_eq!(s, 422, "{e}");
    let why = e["error"].as_str().unwrap();
    assert!(
        why.contains("\"d1\"") && why.contains("6 series") && why.contains('5'),
        "{why}"
    );
    // Known series pass; one more fits exactly.
    let (s, _) = post(&ingest, &batch("d1", 2, &["a", "b"]));
    assert_eq!(s, 200);
    let (s, _) = post(&ingest, &batch("d1", 3, &["a", "e"]));
    assert_eq!(s, 200);

    // Over MQTT 3.1.1 the refused batch closes the connection without a PUBACK.
    let mut c = RawClient::connect(server.mqtt, "d1");
    c.publish(&Topic::telemetry("d1"), batch("d1", 4, &["g"]), 1);
    assert!(
        !matches!(c.recv(), Some(rumqttc::Packet::PubAck(_))),
        "a batch over the limit was acknowledged"
    );
    // Another device is unaffected.
    let (s, _) = post(&ingest, &batch("d2", 0, &["a", "b", "c", "d", "e"]));
    assert_eq!(s, 200);

    let (_, d1) = get(&server.url("/api/v1/devices/d1"));
    assert_eq!(d1["batches_received"], 3);
    assert_eq!(d1["batches_rejected"], 1, "{d1}");
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("too_many_series"),
        "rejections not counted"
    );
}
