//! End-to-end integrity under injected faults: a simulated fleet that loses, duplicates and
//! corrupts batches, goes offline in groups and runs skewed clocks, against a real server;
//! and the same without outages with devices sharing connections behind gateways.
//! Afterwards every device's counters in `GET /api/v1/devices/{id}` must equal the
//! simulator's ground truth exactly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{get, wait_for};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use fleetmon_sim::{Faults, SimOptions, Truth};
use serde_json::json;

/// Runs `options` against a fresh in-process server; while it runs, `during` may poll the
/// API (given its base URL). Then checks every device's counters against the truth.
fn run_and_check(options: SimOptions, during: impl FnOnce(&str)) -> Truth {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = rt
        .block_on(Server::start(
            ServerConfig::local(dir.path()),
            Arc::new(SystemClock),
        ))
        .expect("server starts");
    let base = format!("http://{}", server.http_addr());
    let devices = options.devices;
    let batches = options.batches;
    let outages = usize::from(options.faults.outage.is_some());
    let per_connection = options.devices_per_connection;
    let options = SimOptions {
        mqtt: server.mqtt_addr().to_string(),
        ..options
    };
    let sim = rt.spawn(fleetmon_sim::run(options, std::future::pending()));
    during(&base);
    let summary = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), sim).await })
        .expect("the run ends")
        .expect("no panic")
        .expect("run");
    let truth = Truth::of(&summary);
    assert_eq!(truth.devices.len(), devices);

    let (mut lost, mut duplicated, mut corrupted) = (0, 0, 0);
    for (d, t) in summary.devices.iter().zip(&truth.devices) {
        let (status, api) = get(&format!("{base}/api/v1/devices/{}", t.device));
        assert_eq!(status, 200, "{}: {api}", t.device);
        let id = &t.device;
        assert_eq!(Some(t.produced), batches, "{id}");
        assert_eq!(api["seqs"], json!(d.acked_seqs), "{id}: stored seqs");
        assert_eq!(t.acked, t.produced - t.lost, "{id}: all but the lost acked");
        assert_eq!(api["batches_received"], t.acked, "{id}");
        assert_eq!(api["batches_duplicate"], t.duplicated, "{id}: duplicates");
        assert_eq!(api["batches_rejected"], t.corrupted, "{id}: corrupt");
        assert_eq!(api["batches_missing"], t.lost, "{id}: missing");
        assert_eq!(d.duplicates_unconfirmed, 0, "{id}");
        assert_eq!(
            d.resends, 0,
            "{id}: nothing was in flight when a connection dropped"
        );
        // One outage each (when asked for), then a graceful goodbye at the end. Behind a
        // gateway only the connection's first device publishes a status.
        assert_eq!(t.outages.len(), outages, "{id}");
        assert!(d.clean_disconnect, "{id}");
        let index = summary.devices.iter().position(|x| x.device == *id);
        let head = index.is_some_and(|i| i.is_multiple_of(per_connection));
        let reported = if head { json!("offline") } else { json!(null) };
        assert_eq!(api["reported_status"], reported, "{id}");
        assert_eq!(api["status"], "offline", "{id}");
        // The server counts a device as on a connection once it has spoken on it. When a
        // neighbour's corrupted batch made the server close a shared connection after this
        // device's last batch, the new connection never spoke for it: it stayed offline,
        // with the reason of the connection it last spoke on.
        let reason = &api["last_disconnect"]["reason"];
        if head {
            assert_eq!(reason, "graceful", "{id}");
        } else {
            assert!(
                reason == "graceful" || reason == "rejected",
                "{id}: {reason}"
            );
        }
        lost += t.lost;
        duplicated += t.duplicated;
        corrupted += t.corrupted;
    }
    assert!(
        lost > 0 && duplicated > 0 && corrupted > 0,
        "every fault injected: {lost} {duplicated} {corrupted}"
    );
    let skewed = truth
        .devices
        .iter()
        .filter(|t| t.clock_skew_ms != 0)
        .count();
    assert_eq!(skewed, devices / 2);
    rt.block_on(server.shutdown());
    truth
}

#[test]
fn server_counters_equal_the_simulators_truth() {
    const DEVICES: usize = 20;
    let options = SimOptions {
        devices: DEVICES,
        interval: Duration::from_millis(50),
        batches: Some(80),
        seed: 2026,
        prefix: "flt-".into(),
        first_seq: 1_000,
        drain_timeout: Duration::from_secs(20),
        faults: Faults {
            loss: 0.05,
            duplicate: 0.05,
            corrupt: 0.02,
            outage: Some(Duration::from_millis(1_500)),
            outage_groups: 2,
            outage_at: Some(Duration::from_millis(1_000)),
            clock_skew: Duration::from_secs(30),
        },
        ..SimOptions::default()
    };
    // During the first group's window (even indexes): dropped without DISCONNECT, so the
    // server saw the connection lost and published the Last Will.
    run_and_check(options, |base| {
        let group0: Vec<String> = (0..DEVICES)
            .step_by(2)
            .map(|i| format!("flt-{i:05}"))
            .collect();
        let mut last = Vec::new();
        let away = wait_for(Duration::from_secs(10), || {
            let (_, list) = get(&format!("{base}/api/v1/devices"));
            let devices = list["devices"].as_array()?;
            last = devices
                .iter()
                .map(|d| {
                    let (id, status) = (&d["id"], &d["status"]);
                    let (reported, reason) =
                        (&d["reported_status"], &d["last_disconnect"]["reason"]);
                    format!("{id} {status} {reported} {reason}")
                })
                .collect();
            let offline = devices
                .iter()
                .filter(|d| group0.iter().any(|id| d["id"] == id.as_str()))
                .filter(|d| {
                    d["status"] == "offline"
                        && d["reported_status"] == "offline"
                        && d["last_disconnect"]["reason"] == "connection_lost"
                })
                .count();
            (offline == group0.len()).then_some(())
        });
        assert!(
            away.is_some(),
            "the first outage group never showed offline with reason connection_lost: {last:#?}"
        );
    });
}

/// The acceptance scenario, shortened: 200 devices, loss 5 %, duplicates 2 %,
/// corruption 1 %, one outage per device group (4 groups), clock skew on half the devices.
/// 4,000 batches a second keep acknowledgements in flight much of the time, so outages and
/// corrupted payloads start while the server is busy.
#[test]
fn two_hundred_devices_under_faults_match_the_truth_exactly() {
    let options = SimOptions {
        devices: 200,
        interval: Duration::from_millis(50),
        batches: Some(100),
        seed: 77,
        prefix: "acc-".into(),
        first_seq: 1,
        drain_timeout: Duration::from_secs(30),
        faults: Faults {
            loss: 0.05,
            duplicate: 0.02,
            corrupt: 0.01,
            outage: Some(Duration::from_millis(1_500)),
            outage_groups: 4,
            outage_at: Some(Duration::from_millis(1_000)),
            clock_skew: Duration::from_secs(120),
        },
        ..SimOptions::default()
    };
    let truth = run_and_check(options, |_| {});
    let outages: usize = truth.devices.iter().map(|d| d.outages.len()).sum();
    assert_eq!(outages, 200);
}

/// Gateway mode under faults: 120 devices, 40 per connection, with loss, duplicates,
/// corruption (a corrupted payload makes the server close the whole shared connection) and
/// skewed clocks. Every device's counters still equal its own truth exactly.
#[test]
fn devices_sharing_connections_under_faults_match_the_truth_exactly() {
    let options = SimOptions {
        devices: 120,
        devices_per_connection: 40,
        interval: Duration::from_millis(50),
        batches: Some(60),
        seed: 5,
        prefix: "gwf-".into(),
        first_seq: 1,
        drain_timeout: Duration::from_secs(30),
        faults: Faults {
            loss: 0.05,
            duplicate: 0.03,
            corrupt: 0.005,
            clock_skew: Duration::from_secs(45),
            ..Faults::default()
        },
        ..SimOptions::default()
    };
    let truth = run_and_check(options, |_| {});
    assert!(truth.devices.iter().all(|d| d.outages.is_empty()));
}
