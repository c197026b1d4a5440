//! The walking skeleton end to end: a simulated fleet over real MQTT into a real server, every
//! batch stored exactly once, devices online while connected and offline after.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{get, post, wait_for};
use fleetmon_protocol::{Batch, Format, Sample, encode_json};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use fleetmon_sim::SimOptions;

const DEVICES: usize = 20;
const BATCHES: u64 = 15;

#[test]
fn twenty_devices_every_batch_stored_once_then_offline() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::local(dir.path());
    config.offline_after = Duration::from_millis(1500);
    let server = rt
        .block_on(Server::start(config, Arc::new(SystemClock)))
        .unwrap();
    let base = format!("http://{}", server.http_addr());

    let options = SimOptions {
        mqtt: server.mqtt_addr().to_string(),
        devices: DEVICES,
        interval: Duration::from_millis(100),
        batches: None,
        duration: None,
        prefix: "e2e-".into(),
        drain_timeout: Duration::from_secs(10),
        ..SimOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = rt.spawn(fleetmon_sim::run(options, async move {
        let _ = stopped.await;
    }));

    // While the fleet runs: all twenty online, each past BATCHES batches.
    let running = wait_for(Duration::from_secs(30), || {
        let (_, list) = get(&format!("{base}/api/v1/devices"));
        let devices = list["devices"].as_array()?;
        let ready = devices.len() == DEVICES
            && list["online"] == DEVICES
            && devices.iter().all(|d| {
                d["status"] == "online" && d["batches_received"].as_u64() >= Some(BATCHES)
            });
        ready.then_some(())
    });
    assert!(
        running.is_some(),
        "20 devices never all showed online with {BATCHES} batches"
    );

    let _ = stop.send(());
    let summary = rt.block_on(sim).unwrap().expect("simulation ran");
    assert_eq!(summary.devices.len(), DEVICES);

    for d in &summary.devices {
        common::assert_stored_exactly_once(&base, d);
    }
    assert_eq!(summary.batches_acked, summary.batches_sent);

    // The simulator disconnected gracefully: every device offline, with the reason.
    let offline = wait_for(Duration::from_secs(5), || {
        let (_, list) = get(&format!("{base}/api/v1/devices"));
        (list["offline"] == DEVICES).then_some(list)
    });
    let list = offline.expect("devices still online after the fleet stopped");
    for d in list["devices"].as_array().unwrap() {
        assert_eq!(d["last_disconnect"]["reason"], "graceful", "{d}");
        assert_eq!(d["reported_status"], "offline");
    }

    // A device that only speaks HTTP goes offline once --offline-after has passed.
    let batch = Batch {
        device: "http-only".into(),
        boot_id: "b".into(),
        seq: 1,
        sent_at_ms: 0,
        dropped_before: 0,
        samples: vec![Sample::new("uptime_seconds", 1_700_000_000_000, 5.0)],
    };
    let (status, _) = post(&format!("{base}/api/v1/ingest"), &encode_json(&batch));
    assert_eq!(status, 200);
    let (_, d) = get(&format!("{base}/api/v1/devices/http-only"));
    assert_eq!(d["status"], "online");
    let went_offline = wait_for(Duration::from_secs(5), || {
        let (_, d) = get(&format!("{base}/api/v1/devices/http-only"));
        (d["status"] == "offline").then_some(())
    });
    assert!(
        went_offline.is_some(),
        "HTTP device still online after the timeout"
    );

    // The dashboard's device list is real HTML listing the devices.
    let (status, page) = get(&format!("{base}/devices"));
    assert_eq!(status, 200);
    let page = page.as_str().unwrap();
    assert!(page.contains("<table") && page.contains("e2e-00019") && page.contains("http-only"));

    rt.block_on(server.shutdown());
}

#[test]
fn json_fleet_lands_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt
        .block_on(Server::start(
            ServerConfig::local(dir.path()),
            Arc::new(SystemClock),
        ))
        .unwrap();
    let options = SimOptions {
        mqtt: server.mqtt_addr().to_string(),
        devices: 3,
        interval: Duration::from_millis(50),
        batches: Some(5),
        format: Format::Json,
        prefix: "json-".into(),
        first_seq: 1_000,
        ..SimOptions::default()
    };
    let summary = rt
        .block_on(fleetmon_sim::run(options, std::future::pending()))
        .unwrap();
    assert_eq!(summary.batches_acked, 15);
    let (_, list) = get(&format!("http://{}/api/v1/devices", server.http_addr()));
    let per_device: BTreeMap<String, u64> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["batches_received"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_device.len(), 3);
    assert!(per_device.values().all(|&n| n == 5), "{per_device:?}");
    let (_, d) = get(&format!(
        "http://{}/api/v1/devices/json-00000",
        server.http_addr()
    ));
    assert_eq!(d["seqs"], serde_json::json!([[1_000, 1_004]]));
    rt.block_on(server.shutdown());
}

/// Regression: with many devices on a short interval, a tick used to cancel the simulator's
/// MQTT poll halfway through connecting, so connections were dropped and retried hundreds of
/// times per run. Every device must connect exactly once and never resend.
#[test]
fn many_fast_devices_connect_once_each() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), common::free_addr(), common::free_addr(), &[]);
    let options = SimOptions {
        mqtt: server.mqtt.to_string(),
        devices: 200,
        interval: Duration::from_millis(10),
        batches: Some(20),
        prefix: "fast-".into(),
        ..SimOptions::default()
    };
    let summary = rt
        .block_on(fleetmon_sim::run(options, std::future::pending()))
        .unwrap();
    assert_eq!(summary.batches_acked, 200 * 20);
    let reconnected: Vec<_> = summary
        .devices
        .iter()
        .filter(|d| d.connections != 1 || d.resends != 0)
        .map(|d| (d.device.as_str(), d.connections, d.resends))
        .collect();
    assert!(
        reconnected.is_empty(),
        "devices that reconnected: {reconnected:?}"
    );
}
