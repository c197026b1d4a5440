//! `kill -9` of the server while a fleet publishes QoS 1, ten times over: after each restart,
//! every batch the server acknowledged is there exactly once, and so is every one of its
//! samples.

mod common;

use std::time::Duration;

use common::{free_addr, get, start_server, wait_for};
use fleetmon_sim::SimOptions;

const KILLS: u64 = 10;

#[test]
fn acknowledged_batches_and_samples_survive_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_addr(), free_addr());
    let mut server = start_server(dir.path(), http, mqtt, &[]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = SimOptions {
        mqtt: mqtt.to_string(),
        devices: 8,
        interval: Duration::from_millis(20),
        batches: Some(500),
        prefix: "crash-".into(),
        drain_timeout: Duration::from_secs(30),
        ..SimOptions::default()
    };
    let sim = rt.spawn(fleetmon_sim::run(options, std::future::pending()));

    // Kill mid-stream, each time after the server has stored another share.
    for round in 1..=KILLS {
        let progressed = wait_for(Duration::from_secs(30), || {
            let (_, list) = get(&server.url("/api/v1/devices"));
            let total: u64 = list["devices"]
                .as_array()?
                .iter()
                .filter_map(|d| d["batches_received"].as_u64())
                .sum();
            (total >= round * 300).then_some(())
        });
        assert!(
            progressed.is_some(),
            "round {round}: the fleet made no progress"
        );
        server.kill9();
        std::thread::sleep(Duration::from_millis(100));
        server = start_server(dir.path(), http, mqtt, &[]);
    }

    let summary = rt.block_on(sim).unwrap().expect("simulation ran");
    assert_eq!(summary.devices.len(), 8);
    let mut acked_total = 0;
    for d in &summary.devices {
        let (_, detail) = get(&server.url(&format!("/api/v1/devices/{}", d.device)));
        let stored = common::seqs_of(&detail["seqs"]);
        for [a, b] in &d.acked_seqs {
            for s in *a..=*b {
                assert!(
                    stored.contains(s),
                    "{}: acknowledged batch {s} lost by kill -9",
                    d.device
                );
                acked_total += 1;
            }
        }
        // Resends after a crash were deduplicated: one stored batch per seq.
        assert_eq!(
            detail["batches_received"].as_u64(),
            Some(stored.len()),
            "{}",
            d.device
        );
        // Every sample of every stored batch is in the store, once.
        let stored_ranges = stored.ranges().to_vec();
        let expected = d.samples_per_batch.total_in(&stored_ranges);
        assert!(expected >= d.samples_per_batch.total_in(&d.acked_seqs));
        let (_, samples) = get(&server.url(&format!("/api/v1/samples?device={}", d.device)));
        let mut total = 0u64;
        for series in samples["series"].as_array().unwrap() {
            let metric = series["metric"].as_str().unwrap();
            if fleetmon_server::fleet::derived::is_derived(metric) {
                continue;
            }
            let points = series["points"].as_array().unwrap();
            let mut ts: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
            ts.dedup();
            assert_eq!(
                ts.len(),
                points.len(),
                "{}: a sample stored twice",
                d.device
            );
            total += points.len() as u64;
        }
        assert_eq!(total, expected, "{}: stored samples", d.device);
    }
    assert!(
        acked_total > 2_000,
        "too few acknowledged batches to mean anything: {acked_total}"
    );

    // And once more from a cold start: everything comes back from disk.
    server.kill9();
    let server = start_server(dir.path(), http, mqtt, &[]);
    let (_, list) = get(&server.url("/api/v1/devices"));
    let total: u64 = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["batches_received"].as_u64().unwrap())
        .sum();
    assert!(
        total >= acked_total,
        "after restart {total} < {acked_total} acknowledged"
    );
}
