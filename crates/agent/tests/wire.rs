//! What the agent puts on the wire, against a real `fleetmon server`: its batches are frame
//! version 2 (columnar) and the server stores every sample of them exactly, over HTTP and
//! MQTT; and a spool of version 1 (protobuf) batches left by an agent from before the upgrade
//! drains unchanged, the numbering carrying on after it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RunningAgent, agent_config, free_addr, seq_ranges, start_server, wait_for};
use fleetmon_agent::spool::Spool;
use fleetmon_protocol::{Batch, Format, Limits, Sample, decode, encode_protobuf};
use fleetmon_testkit::{ServerProcess, get, post};

type SeriesKey = (String, BTreeMap<String, String>);

/// Every stored point of `device`, by series, values as bits (so -0.0 and 0.0 differ).
fn stored(server: &ServerProcess, device: &str) -> BTreeMap<SeriesKey, Vec<(i64, u64)>> {
    let (status, body) = get(&server.url(&format!("/api/v1/samples?device={device}")));
    assert_eq!(status, 200, "{body}");
    let mut out = BTreeMap::new();
    for s in body["series"].as_array().expect("series") {
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(s["labels"].clone()).expect("labels");
        labels.remove("device");
        let metric = s["metric"].as_str().expect("metric").to_owned();
        let points = s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| {
                let ts = p[0].as_i64().expect("ts");
                let v = p[1].as_f64().expect("a finite value");
                (ts, v.to_bits())
            })
            .collect();
        out.insert((metric, labels), points);
    }
    out
}

/// Asserts that every sample of `batches` is stored with its exact time and value.
fn assert_stored_exactly(server: &ServerProcess, device: &str, batches: &[Batch]) {
    let stored = stored(server, device);
    let mut checked = 0;
    for b in batches {
        for s in &b.samples {
            let key = (s.metric.clone(), s.labels.clone());
            let points = stored
                .get(&key)
                .unwrap_or_else(|| panic!("series {key:?} of batch {} is not stored", b.seq));
            assert!(
                points.contains(&(s.ts_ms, s.value.to_bits())),
                "batch {}: {key:?} at {} = {} not stored exactly; stored {points:?}",
                b.seq,
                s.ts_ms,
                s.value
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

fn wait_for_seqs(server: &ServerProcess, device: &str, through: u64) -> Vec<[u64; 2]> {
    wait_for(Duration::from_secs(30), || {
        let ranges = seq_ranges(&server.device(device)?);
        (ranges.len() == 1 && ranges[0][0] == 1 && ranges[0][1] >= through).then_some(ranges)
    })
    .unwrap_or_else(|| panic!("{device}: batches 1..={through} never all arrived"))
}

#[test]
fn the_agent_sends_version_2_and_the_server_stores_it_exactly() {
    let data = tempfile::tempdir().expect("test setup");
    let spool_dir = tempfile::tempdir().expect("test setup");
    let (http, mqtt) = (free_addr(), free_addr());
    let device = "agent-wire-v2";
    let config = agent_config(device, mqtt, spool_dir.path());

    // Collect with no server yet: the batches wait in the spool, where the test reads them.
    let agent = RunningAgent::start(config.clone());
    std::thread::sleep(Duration::from_millis(800));
    agent.stop();
    let batches: Vec<Batch> = {
        let spool = Spool::open(spool_dir.path(), 16 << 20).expect("spool opens");
        spool
            .seqs()
            .map(|seq| {
                let payload = spool.read(seq).expect("spool read").expect("a live batch");
                assert_eq!(&payload[..4], b"FMB\x02", "batch {seq} is frame version 2");
                let (batch, format) = decode(&payload, &Limits::default()).expect("valid");
                assert_eq!(format, Format::Columnar);
                assert_eq!(batch.seq, seq);
                batch
            })
            .collect()
    };
    assert!(batches.len() >= 3, "{} batches in 0.8 s", batches.len());
    let last = batches.last().expect("batches").seq;

    // The first batch over HTTP...
    let server = start_server(data.path(), http, mqtt);
    let first = {
        let spool = Spool::open(spool_dir.path(), 16 << 20).expect("spool opens");
        spool.read(1).expect("spool read").expect("batch 1")
    };
    // (A version 2 frame whose body is cut short is refused, saying what was wrong.)
    let body = &first[8..first.len() - 3];
    let mut cut = b"FMB\x02".to_vec();
    cut.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    cut.extend_from_slice(body);
    let (status, answer) = post(&server.url("/api/v1/ingest"), &cut);
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().expect("an error message");
    assert!(error.contains("columnar (v2) body"), "{error}");
    let (status, answer) = post(&server.url("/api/v1/ingest"), &first);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "stored");

    // ...and the whole spool over MQTT once the agent is back (batch 1 again: a duplicate).
    let agent = RunningAgent::start(config);
    wait_for_seqs(&server, device, last);
    agent.stop();
    assert_stored_exactly(&server, device, &batches);
    let d = server.device(device).expect("device known");
    assert_eq!(d["batches_duplicate"], 1, "batch 1 came twice: {d}");
}

#[test]
fn a_spool_of_version_1_batches_drains_after_an_upgrade() {
    let data = tempfile::tempdir().expect("test setup");
    let spool_dir = tempfile::tempdir().expect("test setup");
    let (http, mqtt) = (free_addr(), free_addr());
    let device = "agent-upgraded";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;

    // What an agent from before frame version 2 left behind: three protobuf batches.
    let old: Vec<Batch> = {
        let mut spool = Spool::open(spool_dir.path(), 16 << 20).expect("spool opens");
        let mut old = Vec::new();
        for i in 0..3i64 {
            let ts = now - 3000 + i * 1000;
            let samples = vec![
                Sample::new("cpu_usage_ratio", ts, 0.1 + 0.2),
                Sample::new("temperature_celsius", ts, 47.25 + i as f64)
                    .with_label("sensor", "cpu-thermal"),
                Sample::new("old_agent_metric", ts, -0.0).with_label("zone", "attic"),
                Sample::new("network_receive_bytes_total", ts, 564_306_040.0 + i as f64)
                    .with_label("interface", "eth0"),
            ];
            let seq = spool
                .append_with(|seq, dropped_before| {
                    encode_protobuf(&Batch {
                        device: device.into(),
                        boot_id: "old-boot".into(),
                        seq,
                        sent_at_ms: ts,
                        dropped_before,
                        samples: samples.clone(),
                    })
                })
                .expect("append");
            let payload = spool.read(seq).expect("read").expect("live");
            assert_eq!(&payload[..4], b"FMB\x01");
            old.push(decode(&payload, &Limits::default()).expect("valid").0);
        }
        old
    };

    // The upgraded agent drains them first, then carries on with version 2 batches.
    let server = start_server(data.path(), http, mqtt);
    let agent = RunningAgent::start(agent_config(device, mqtt, spool_dir.path()));
    let ranges = wait_for_seqs(&server, device, 5);
    agent.stop();
    assert_eq!(ranges.len(), 1, "no gap: {ranges:?}");
    assert_stored_exactly(&server, device, &old);
    let stored = stored(&server, device);
    assert!(
        stored.contains_key(&("agent_uplink_bytes_total".to_owned(), BTreeMap::new())),
        "the new agent's own batches arrived too"
    );
}
