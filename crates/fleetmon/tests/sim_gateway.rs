//! Gateway mode end to end: `fleetmon sim --devices-per-connection 50` runs 200 devices over
//! four MQTT connections into a real `fleetmon server` process. Every acknowledged batch is
//! stored exactly once, every device is listed and online while the connection that speaks
//! for it is open, and all go offline, with the connection's reason, when the sim ends.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SimProcess, free_addr, get, start_server, wait_for};
use fleetmon_sim::Summary;
use serde_json::Value;

const DEVICES: usize = 200;
const PER_CONNECTION: usize = 50;
const BATCHES: u64 = 40;

/// The server's own gauge of open MQTT connections.
fn open_connections(metrics_url: &str) -> Option<u64> {
    let (_, body) = get(metrics_url);
    body.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix("fleetmon_mqtt_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn two_hundred_devices_at_fifty_per_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["sim", "--mqtt", &server.mqtt.to_string()])
        .args(["--devices", &DEVICES.to_string()])
        .args(["--devices-per-connection", &PER_CONNECTION.to_string()])
        .args(["--interval", "250ms", "--batches", &BATCHES.to_string()])
        .args(["--first-seq", "1", "--prefix", "gw-", "--quiet"])
        .args(["--drain-timeout", "30s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fleetmon sim");
    let mut stdout = child.stdout.take().expect("the sim's stdout");
    let mut sim = SimProcess::from(child);

    // While it runs: every device listed and online, over four connections.
    let list_url = server.url("/api/v1/devices?limit=1000");
    let mut last = Value::Null;
    let running = wait_for(Duration::from_secs(60), || {
        if let Some(status) = sim.try_wait() {
            panic!("the sim ended early ({status}) before its devices came up");
        }
        let (_, list) = get(&list_url);
        let up = list["devices"].as_array()?.len() == DEVICES && list["online"] == DEVICES;
        last = list;
        up.then_some(())
    });
    assert!(
        running.is_some(),
        "not all {DEVICES} devices online: {}",
        last["online"]
    );
    assert_eq!(
        open_connections(&server.url("/metrics")),
        Some((DEVICES / PER_CONNECTION) as u64),
        "devices share connections"
    );

    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read the summary");
    let started = Instant::now();
    let exited = wait_for(Duration::from_secs(60), || sim.try_wait());
    assert!(
        exited.is_some_and(|s| s.success()),
        "the sim did not end cleanly within {:?}",
        started.elapsed()
    );
    let summary: Summary = serde_json::from_str(&out).expect("the sim prints its summary");
    assert_eq!(summary.devices.len(), DEVICES);
    assert!(summary.all_acked(), "unacknowledged batches left");
    assert_eq!(summary.batches_acked, DEVICES as u64 * BATCHES);

    let base = server.url("");
    for d in &summary.devices {
        assert_eq!(d.acked_seqs, [[1, BATCHES]], "{}", d.device);
        assert!(d.clean_disconnect, "{}", d.device);
        common::assert_stored_exactly_once(&base, d);
    }

    // The connections closed with DISCONNECT: every device offline, reason graceful. Only a
    // connection's head (its first device) published a status.
    let offline = wait_for(Duration::from_secs(10), || {
        let (_, list) = get(&list_url);
        (list["offline"] == DEVICES).then_some(list)
    });
    let list = offline.expect("devices still online after the sim ended");
    for d in list["devices"].as_array().expect("a device list") {
        let id = d["id"].as_str().expect("an id");
        assert_eq!(d["last_disconnect"]["reason"], "graceful", "{d}");
        let index: usize = id
            .trim_start_matches("gw-")
            .parse()
            .expect("a numbered device");
        let head = index.is_multiple_of(PER_CONNECTION);
        let expected = if head { "offline".into() } else { Value::Null };
        assert_eq!(d["reported_status"], expected, "{id}");
        // Online once (its first message on the connection), offline once (its close).
        let detail = server.device(id).expect("a device detail");
        let changes: Vec<(&Value, &Value)> = detail["availability"]
            .as_array()
            .expect("an availability history")
            .iter()
            .map(|t| (&t["status"], &t["reason"]))
            .collect();
        assert_eq!(
            changes,
            [
                (&"online".into(), &"connected".into()),
                (&"offline".into(), &"graceful".into())
            ],
            "{id}"
        );
    }
    assert_eq!(open_connections(&server.url("/metrics")), Some(0));
}
