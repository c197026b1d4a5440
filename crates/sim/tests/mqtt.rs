//! The simulator against a real MQTT broker (`mosquitto`): every batch is published,
//! acknowledged and decodable, seqs run 1..=N per device, devices announce themselves `online`
//! and leave a retained `offline` behind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleetmon_protocol::{Format, Limits, Topic, decode};
use fleetmon_sim::{SimOptions, Summary, run};

use common::{Broker, Received, Subscriber, retained_statuses};

fn options(broker: &Broker, devices: usize, batches: u64, format: Format) -> SimOptions {
    SimOptions {
        mqtt: broker.addr(),
        devices,
        interval: Duration::from_millis(50),
        duration: None,
        batches: Some(batches),
        seed: 42,
        prefix: "sim-".into(),
        first_seq: 1,
        format,
        progress: false,
        drain_timeout: Duration::from_secs(10),
        ..SimOptions::default()
    }
}

/// Every device produced, sent and got acknowledged exactly seqs 1..=batches.
fn assert_all_acknowledged(summary: &Summary, devices: usize, batches: u64) {
    assert_eq!(summary.devices.len(), devices);
    for d in &summary.devices {
        assert_eq!(d.batches_produced, batches, "{}", d.device);
        assert_eq!(d.acked_seqs, [[1, batches]], "{}", d.device);
        assert_eq!(d.sent_seqs, [[1, batches]], "{}", d.device);
        assert_eq!(d.batches_acked, batches);
        assert_eq!(d.batches_skipped, 0);
        assert!(
            d.clean_disconnect,
            "{} did not disconnect cleanly",
            d.device
        );
        assert_eq!(d.samples_acked, d.samples_sent);
        assert!(
            d.samples_acked >= 20 * batches,
            "{}: {} samples",
            d.device,
            d.samples_acked
        );
    }
    assert!(summary.all_acked());
    assert_eq!(summary.batches_acked, devices as u64 * batches);
}

/// What the broker delivered is exactly what the summary says was acknowledged, each batch
/// once, on its own device's topic, decoding to what the device produced.
fn assert_delivered_once(summary: &Summary, messages: &[Received]) {
    let by_device: BTreeMap<&str, _> = summary
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d))
        .collect();
    let mut seen = BTreeSet::new();
    for m in messages {
        let (batch, format) = decode(&m.payload, &Limits::default()).expect("payload decodes");
        assert_eq!(format, Format::Protobuf);
        let topic = Topic::parse(&m.topic).expect("a fleetmon topic");
        assert_eq!(
            topic,
            Topic::Telemetry {
                device: &batch.device
            }
        );
        let d = by_device[batch.device.as_str()];
        assert_eq!(batch.boot_id, d.boot_id);
        assert_eq!(batch.dropped_before, 0);
        assert_eq!(
            Some(batch.samples.len() as u32),
            d.samples_per_batch.get(batch.seq)
        );
        assert!(batch.samples.iter().all(|s| s.ts_ms == batch.sent_at_ms));
        assert!(
            seen.insert((batch.device.clone(), batch.seq)),
            "duplicate {}#{}",
            batch.device,
            batch.seq
        );
    }
    let expected: BTreeSet<(String, u64)> = summary
        .devices
        .iter()
        .flat_map(|d| {
            d.acked_seqs
                .iter()
                .flat_map(|r| (r[0]..=r[1]).map(|seq| (d.device.clone(), seq)))
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_is_acknowledged_and_decodes() {
    let broker = Broker::start();
    let telemetry = Subscriber::start(&broker, "test-telemetry", "fleetmon/v1/+/telemetry").await;
    let status = Subscriber::start(&broker, "test-status-live", "fleetmon/v1/+/status").await;
    let (devices, batches) = (5, 10);

    let summary = run(
        options(&broker, devices, batches, Format::Protobuf),
        std::future::pending(),
    )
    .await
    .expect("run");
    assert_all_acknowledged(&summary, devices, batches);
    for d in &summary.devices {
        assert_eq!(d.connections, 1);
        assert_eq!(d.resends, 0);
    }
    let ids: Vec<&str> = summary.devices.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sim-00000",
            "sim-00001",
            "sim-00002",
            "sim-00003",
            "sim-00004"
        ]
    );

    // What the broker delivered is what the summary says was acknowledged.
    let messages = telemetry
        .wait_for(devices * batches as usize, Duration::from_secs(5))
        .await;
    assert_delivered_once(&summary, &messages);

    // Birth then goodbye, live; and `offline` is what stays retained.
    let live = status.wait_for(2 * devices, Duration::from_secs(5)).await;
    for id in &ids {
        let sequence: Vec<String> = live
            .iter()
            .filter(|m| m.topic == format!("fleetmon/v1/{id}/status"))
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(sequence, ["online", "offline"], "{id}");
    }
    let retained = retained_statuses(&broker, devices).await;
    assert_eq!(retained.len(), devices, "{retained:?}");
    assert!(retained.values().all(|s| s == "offline"), "{retained:?}");
}

/// Gateway mode: 12 devices, 5 per connection (the last carries 2). Every batch is
/// acknowledged and delivered once; only each connection's head (its first device, whose id
/// is the client id) says online and offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sharing_connections_deliver_every_batch_once() {
    let broker = Broker::start();
    let telemetry =
        Subscriber::start(&broker, "test-gw-telemetry", "fleetmon/v1/+/telemetry").await;
    let status = Subscriber::start(&broker, "test-gw-status", "fleetmon/v1/+/status").await;
    let (devices, batches) = (12, 10);
    let opts = SimOptions {
        devices_per_connection: 5,
        ..options(&broker, devices, batches, Format::Protobuf)
    };
    let summary = run(opts, std::future::pending()).await.expect("run");
    assert_all_acknowledged(&summary, devices, batches);
    for d in &summary.devices {
        assert_eq!((d.connections, d.resends), (1, 0), "{}", d.device);
    }
    let messages = telemetry
        .wait_for(devices * batches as usize, Duration::from_secs(5))
        .await;
    assert_delivered_once(&summary, &messages);
    let heads = ["sim-00000", "sim-00005", "sim-00010"];
    let live = status
        .wait_for(2 * heads.len(), Duration::from_secs(5))
        .await;
    let topics: BTreeSet<&str> = live.iter().map(|m| m.topic.as_str()).collect();
    let expected: BTreeSet<String> = heads
        .iter()
        .map(|h| format!("fleetmon/v1/{h}/status"))
        .collect();
    assert!(
        topics
            .iter()
            .copied()
            .eq(expected.iter().map(String::as_str)),
        "only heads publish status: {topics:?}"
    );
    for head in heads {
        let sequence: Vec<String> = live
            .iter()
            .filter(|m| m.topic == format!("fleetmon/v1/{head}/status"))
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(sequence, ["online", "offline"], "{head}");
    }
    let retained = retained_statuses(&broker, heads.len()).await;
    assert_eq!(retained.len(), heads.len(), "{retained:?}");
    assert!(retained.values().all(|s| s == "offline"), "{retained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_decode_as_json() {
    let broker = Broker::start();
    let telemetry = Subscriber::start(&broker, "test-json", "fleetmon/v1/+/telemetry").await;
    let summary = run(options(&broker, 2, 3, Format::Json), std::future::pending())
        .await
        .expect("run");
    assert_all_acknowledged(&summary, 2, 3);
    let messages = telemetry.wait_for(6, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 6);
    for m in &messages {
        assert_eq!(m.payload.first(), Some(&b'{'));
        let (_, format) = decode(&m.payload, &Limits::default()).expect("JSON decodes");
        assert_eq!(format, Format::Json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_an_unbounded_run_with_everything_acknowledged() {
    let broker = Broker::start();
    let opts = SimOptions {
        batches: None,
        ..options(&broker, 3, 0, Format::Protobuf)
    };
    let stop = tokio::time::sleep(Duration::from_millis(400));
    let summary = run(opts, stop).await.expect("run");
    for d in &summary.devices {
        assert!(
            d.batches_produced >= 3,
            "{}: {}",
            d.device,
            d.batches_produced
        );
        assert_eq!(d.acked_seqs, [[1, d.batches_produced]]);
        assert!(d.clean_disconnect);
    }
    let retained = retained_statuses(&broker, 3).await;
    assert!(retained.len() == 3 && retained.values().all(|s| s == "offline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_broker_is_not_an_error_but_nothing_is_acknowledged() {
    let port = common::free_port();
    let opts = SimOptions {
        mqtt: format!("127.0.0.1:{port}"),
        devices: 2,
        interval: Duration::from_millis(50),
        batches: Some(3),
        drain_timeout: Duration::from_millis(300),
        ..SimOptions::default()
    };
    let summary = run(opts, std::future::pending()).await.expect("run");
    for d in &summary.devices {
        assert_eq!(d.batches_produced, 3);
        assert_eq!(d.batches_acked, 0);
        assert_eq!(d.unacked_seqs(), vec![1, 2, 3]);
        assert_eq!(d.connections, 0);
        assert!(!d.clean_disconnect);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_holds_back_new_batches_and_counts_them() {
    // Nobody listens: nothing is ever acknowledged, so the backlog fills up.
    let port = common::free_port();
    let extra = 25;
    let opts = SimOptions {
        mqtt: format!("127.0.0.1:{port}"),
        devices: 1,
        interval: Duration::from_millis(1),
        batches: Some(fleetmon_sim::MAX_UNACKED as u64 + extra),
        drain_timeout: Duration::from_millis(100),
        ..SimOptions::default()
    };
    let summary = tokio::time::timeout(Duration::from_secs(60), run(opts, std::future::pending()))
        .await
        .expect("a run against a dead server still ends")
        .expect("run");
    let d = &summary.devices[0];
    assert_eq!(d.batches_produced, fleetmon_sim::MAX_UNACKED as u64);
    assert_eq!(d.batches_skipped, extra);
    assert_eq!(summary.batches_skipped, extra);
    assert_eq!(d.batches_acked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_a_run() {
    let broker = Broker::start();
    let opts = SimOptions {
        batches: None,
        duration: Some(Duration::from_millis(300)),
        ..options(&broker, 2, 0, Format::Protobuf)
    };
    let started = std::time::Instant::now();
    let summary = run(opts, std::future::pending()).await.expect("run");
    assert!(started.elapsed() < Duration::from_secs(5));
    for d in &summary.devices {
        // About 300 ms / 50 ms; staggering and scheduling make it a little fuzzy.
        assert!(
            (3..=8).contains(&d.batches_produced),
            "{}: {}",
            d.device,
            d.batches_produced
        );
        assert_eq!(d.acked_seqs, [[1, d.batches_produced]]);
    }
}
