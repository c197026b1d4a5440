//! Injected faults against a real broker (`mosquitto`), checked from the outside: a subscriber
//! records every telemetry and status message, and what it saw must match the ground truth
//! exactly. Lost seqs never appear, duplicated seqs appear exactly twice, corrupted payloads
//! fail the checksum (mosquitto does not check it, so it acknowledges them and the correct
//! batch follows), every device drops its connection once without DISCONNECT (the broker
//! publishes its Last Will) and comes back, and skewed clocks show in the timestamps.
//!
//! The broker is frozen across the start of the first outage window, so batches are in
//! flight when it begins: a device that dropped its connection then would resend batches the
//! broker may already have delivered, and the subscriber would see copies the truth does not
//! count.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetmon_protocol::{DecodeError, Format, Limits, decode};
use fleetmon_sim::{Faults, SimOptions, Truth, run};

use common::{Broker, Subscriber};

/// What the subscriber saw of one device.
#[derive(Debug, Default)]
struct Seen {
    /// Seqs of decodable batches in arrival order (duplicates included).
    seqs: Vec<u64>,
    /// Payloads that failed their checksum.
    corrupt: u64,
    /// `sent_at_ms` minus the arrival time, per batch.
    clock_offsets_ms: Vec<i64>,
    statuses: Vec<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock after 1970")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_subscriber_sees_matches_the_truth() {
    let broker = Broker::start();
    let telemetry = Subscriber::start(&broker, "test-telemetry", "fleetmon/v1/+/telemetry").await;
    let status = Subscriber::start(&broker, "test-status", "fleetmon/v1/+/status").await;
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let skew = Duration::from_secs(3_600);
    let (devices, batches) = (8, 40);
    let opts = SimOptions {
        mqtt: broker.addr(),
        devices,
        interval: Duration::from_millis(30),
        batches: Some(batches),
        seed: 5,
        prefix: "flt-".into(),
        faults: Faults {
            loss: 0.1,
            duplicate: 0.1,
            corrupt: 0.05,
            outage: Some(Duration::from_millis(600)),
            outage_groups: 2,
            outage_at: Some(Duration::from_millis(500)),
            clock_skew: skew,
        },
        truth: Some(truth_path.clone()),
        ..SimOptions::default()
    };
    let sim = tokio::spawn(run(opts, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(350)).await;
    broker.pause();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.resume();
    let summary = tokio::time::timeout(Duration::from_secs(60), sim)
        .await
        .expect("the run ends")
        .expect("no panic")
        .expect("run");

    // The truth file is the summary's truth.
    let truth: Truth = serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    assert_eq!(truth, Truth::of(&summary));
    assert_eq!(truth.seed, 5);

    // Wait for every acknowledged copy: batches, extra copies, corrupted copies.
    let expected: u64 = truth
        .devices
        .iter()
        .map(|d| d.acked + d.duplicated + d.corrupted)
        .sum();
    let messages = telemetry
        .wait_for(expected as usize, Duration::from_secs(10))
        .await;
    // Nothing beyond what the truth accounts for arrives late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages_after = telemetry.wait_for(0, Duration::ZERO).await;
    assert_eq!(messages.len() as u64, expected);
    assert_eq!(
        messages_after.len(),
        messages.len(),
        "unexpected extra messages"
    );

    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for m in &messages {
        let device = m
            .topic
            .strip_prefix("fleetmon/v1/")
            .and_then(|t| t.strip_suffix("/telemetry"))
            .unwrap()
            .to_owned();
        let arrived = now_ms();
        let s = seen.entry(device.clone()).or_default();
        match decode(&m.payload, &Limits::default()) {
            Ok((batch, Format::Protobuf)) => {
                assert_eq!(batch.device, device);
                s.seqs.push(batch.seq);
                s.clock_offsets_ms.push(batch.sent_at_ms - arrived);
                assert!(batch.samples.iter().all(|x| x.ts_ms == batch.sent_at_ms));
            }
            Ok((_, format)) => panic!("unexpected format {format:?}"),
            Err(DecodeError::Checksum { .. }) => s.corrupt += 1,
            Err(e) => panic!("{device}: a corrupted payload must fail its checksum, got {e}"),
        }
    }
    for m in status.wait_for(0, Duration::ZERO).await {
        let device = m
            .topic
            .strip_prefix("fleetmon/v1/")
            .and_then(|t| t.strip_suffix("/status"))
            .unwrap()
            .to_owned();
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        seen.entry(device).or_default().statuses.push(text);
    }

    let (mut lost, mut duplicated, mut corrupted) = (0, 0, 0);
    for (index, (d, t)) in summary.devices.iter().zip(&truth.devices).enumerate() {
        let s = seen.get(&t.device).unwrap();
        let first = t.first_seq;
        let last = t.last_seq.unwrap();
        assert_eq!((first, last), (1, batches), "{}", t.device);
        assert_eq!(t.produced, batches);

        // Lost seqs never appear; everything else was sent and acknowledged.
        let mut distinct: Vec<u64> = s.seqs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let expected: Vec<u64> = (first..=last)
            .filter(|q| !t.lost_seqs.contains(q))
            .collect();
        assert_eq!(distinct, expected, "{}: seqs seen", t.device);
        assert_eq!(t.lost, t.lost_seqs.len() as u64);
        assert_eq!(t.sent, t.produced - t.lost, "{}", t.device);
        assert_eq!(t.acked, t.sent, "{}", t.device);
        assert!(!t.lost_seqs.contains(&first) && !t.lost_seqs.contains(&last));

        // Duplicated seqs appear exactly twice, the others once.
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        for q in &s.seqs {
            *counts.entry(*q).or_default() += 1;
        }
        assert!(counts.values().all(|&c| c <= 2), "{}: {counts:?}", t.device);
        let twice = counts.values().filter(|&&c| c == 2).count() as u64;
        assert_eq!(twice, t.duplicated, "{}: duplicates", t.device);
        assert_eq!(s.corrupt, t.corrupted, "{}: corrupted", t.device);

        // First copies arrive in seq order, the backlog after the outage included.
        let mut firsts = Vec::new();
        for q in &s.seqs {
            if !firsts.contains(q) {
                firsts.push(*q);
            }
        }
        assert!(firsts.is_sorted(), "{}: {firsts:?}", t.device);

        // One outage each: dropped without DISCONNECT (the Last Will), then back.
        assert_eq!(t.outages.len(), 1, "{}", t.device);
        let o = t.outages[0];
        assert!(o.end_ms - o.start_ms >= 300, "{}: offline {o:?}", t.device);
        assert_eq!(
            s.statuses,
            ["online", "offline", "online", "offline"],
            "{}",
            t.device
        );
        assert!(d.connections >= 2 && d.clean_disconnect, "{}", t.device);
        // Nothing was in flight when the connection dropped: no resend, nothing uncertain.
        assert_eq!(d.resends, 0, "{}", t.device);
        assert_eq!(d.duplicates_unconfirmed, 0, "{}", t.device);

        // Skewed clocks: index % 4 == 0 ahead, == 1 behind.
        let want = match index % 4 {
            0 => skew.as_millis() as i64,
            1 => -(skew.as_millis() as i64),
            _ => 0,
        };
        assert_eq!(t.clock_skew_ms, want);
        assert!(
            s.clock_offsets_ms
                .iter()
                .all(|off| (off - want).abs() < 5_000),
            "{}: {:?}",
            t.device,
            s.clock_offsets_ms
        );
        lost += t.lost;
        duplicated += t.duplicated;
        corrupted += t.corrupted;
    }
    // The faults did happen (seeded, so these are fixed numbers for this seed).
    assert!(
        lost >= 10 && duplicated >= 10 && corrupted >= 5,
        "{lost} {duplicated} {corrupted}"
    );
    assert_eq!(summary.batches_lost, lost);
    assert_eq!(summary.batches_duplicated, duplicated);
    assert_eq!(summary.batches_corrupted, corrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_injects_the_same_faults() {
    let broker = Broker::start();
    let opts = |prefix: &str| SimOptions {
        mqtt: broker.addr(),
        devices: 3,
        interval: Duration::from_millis(20),
        batches: Some(30),
        seed: 11,
        prefix: prefix.into(),
        faults: Faults {
            loss: 0.2,
            duplicate: 0.2,
            corrupt: 0.1,
            ..Faults::default()
        },
        ..SimOptions::default()
    };
    let a = run(opts("a-"), std::future::pending()).await.unwrap();
    let b = run(opts("b-"), std::future::pending()).await.unwrap();
    let faults = |s: &fleetmon_sim::Summary| {
        s.devices
            .iter()
            .map(|d| (d.lost_seqs.clone(), d.duplicated, d.corrupted))
            .collect::<Vec<_>>()
    };
    assert_eq!(faults(&a), faults(&b));
    assert!(a.batches_lost > 0 && a.batches_duplicated > 0 && a.batches_corrupted > 0);
}
