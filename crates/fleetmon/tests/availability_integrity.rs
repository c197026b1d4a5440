//! Availability reasons and integrity accounting, through the real endpoints.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{RawClient, get, post, wait_for};
use fleetmon_protocol::{Batch, Sample, encode_json, encode_protobuf};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use rumqttc::{Connect, LastWill, Packet, PubAck, Publish, QoS};

fn batch(device: &str, seq: u64) -> Batch {
    Batch {
        device: device.into(),
        boot_id: "boot".into(),
        seq,
        sent_at_ms: 0,
        dropped_before: if seq == 5 { 3 } else { 0 },
        samples: vec![Sample::new(
            "uptime_seconds",
            1_700_000_000_000 + seq as i64 * 1000,
            seq as f64,
        )],
    }
}

fn start(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Server {
    let mut config = ServerConfig::local(dir);
    config.offline_after = Duration::from_millis(800);
    config.missing_grace = Duration::from_millis(300);
    rt.block_on(Server::start(config, Arc::new(SystemClock)))
        .expect("start the server")
}

#[test]
fn integrity_counters_add_up_and_survive_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());
    let ingest = format!("{base}/api/v1/ingest");

    for seq in [1, 2, 5, 2] {
        let (status, _) = post(&ingest, &encode_json(&batch("d1", seq)));
        assert_eq!(status, 200);
    }
    // A corrupt payload on d1's topic, from a standard client.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.mqtt_addr().port().to_string(),
            "-q",
            "1",
        ])
        .args([
            "-t",
            "fleetmon/v1/d1/telemetry",
            "-m",
            "{\"device\":\"d1\",\"seq\":",
        ])
        .output()
        .expect("mosquitto_pub (Debian mosquitto-clients) is needed");
    assert!(
        !out.status.success(),
        "a corrupt batch must not be acknowledged"
    );

    let integrity = |base: &str| get(&format!("{base}/api/v1/devices/d1")).1["integrity"].clone();
    let i = integrity(&base);
    assert_eq!(
        i["missing"], 0,
        "gap 3-4 is still within the grace period: {i}"
    );
    std::thread::sleep(Duration::from_millis(400));
    let i = integrity(&base);
    assert_eq!(
        (
            &i["received"],
            &i["duplicate"],
            &i["missing"],
            &i["corrupt"],
            &i["device_dropped"]
        ),
        (&3.into(), &1.into(), &2.into(), &1.into(), &3.into()),
        "{i}"
    );
    // Seq 3 arrives after it was counted missing: late and out of order; 4 is still missing.
    post(&ingest, &encode_protobuf(&batch("d1", 3)));
    let i = integrity(&base);
    assert_eq!(
        (&i["late"], &i["out_of_order"], &i["missing"]),
        (&1.into(), &1.into(), &1.into()),
        "{i}"
    );
    let (_, report) = get(&format!("{base}/api/v1/integrity"));
    assert_eq!(report["totals"]["received"], 4);
    assert_eq!(report["devices"][0]["id"], "d1");
    assert_eq!(report["devices"][0]["late"], 1);

    // Every counter comes back from the WAL after a restart.
    let before = integrity(&base);
    rt.block_on(server.shutdown());
    let server = start(&rt, dir.path());
    let after = integrity(&format!("http://{}", server.http_addr()));
    assert_eq!(before, after);
    rt.block_on(server.shutdown());
}

#[test]
fn silent_device_goes_offline_by_keepalive_and_its_will_is_published() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());

    let mut watcher = RawClient::connect(server.mqtt_addr(), "watcher");
    watcher.send(Packet::Subscribe(rumqttc::Subscribe::new(
        "fleetmon/v1/+/status",
        QoS::AtLeastOnce,
    )));
    assert!(matches!(watcher.recv(), Some(Packet::SubAck(_))));

    let mut connect = Connect::new("quiet");
    connect.keep_alive = 1;
    connect.last_will = Some(LastWill::new(
        "fleetmon/v1/quiet/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let mut quiet = RawClient::connect_with(server.mqtt_addr(), connect);
    let mut online = Publish::new("fleetmon/v1/quiet/status", QoS::AtLeastOnce, "online");
    online.pkid = 1;
    online.retain = true;
    quiet.send(Packet::Publish(online));
    assert_eq!(quiet.recv(), Some(Packet::PubAck(PubAck::new(1))));
    let (_, d) = get(&format!("{base}/api/v1/devices/quiet"));
    assert_eq!(d["status"], "online");

    // Now silence, with the socket open: the server must give up after 1.5 × keepalive.
    let silent_since = Instant::now();
    let offline = wait_for(Duration::from_secs(5), || {
        let (_, d) = get(&format!("{base}/api/v1/devices/quiet"));
        (d["status"] == "offline").then_some(d)
    })
    .expect("the silent device never went offline");
    assert!(
        silent_since.elapsed() <= Duration::from_millis(2_500),
        "took {:?}",
        silent_since.elapsed()
    );
    assert_eq!(offline["last_disconnect"]["reason"], "keepalive_expired");
    assert_eq!(
        offline["reported_status"], "offline",
        "the Last Will updates the status"
    );
    // The watcher saw the birth, then the will.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match watcher.recv() {
            Some(Packet::Publish(p)) => seen.push(String::from_utf8_lossy(&p.payload).into_owned()),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(seen, ["online", "offline"]);
    rt.block_on(server.shutdown());
}

#[test]
fn graceful_disconnects_are_told_apart_and_flapping_is_flagged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());
    for i in 0..5u16 {
        let mut c = RawClient::connect(server.mqtt_addr(), "flappy");
        let mut p = Publish::new(
            "fleetmon/v1/flappy/telemetry",
            QoS::AtLeastOnce,
            encode_protobuf(&batch("flappy", u64::from(i) + 1)),
        );
        p.pkid = 1;
        c.send(Packet::Publish(p));
        assert_eq!(c.recv(), Some(Packet::PubAck(PubAck::new(1))));
        c.send(Packet::Disconnect);
        assert_eq!(c.recv(), None);
    }
    let d = wait_for(Duration::from_secs(5), || {
        let (_, d) = get(&format!("{base}/api/v1/devices/flappy"));
        (d["status"] == "offline").then_some(d)
    })
    .expect("offline after the last disconnect");
    assert_eq!(d["last_disconnect"]["reason"], "graceful");
    assert_eq!(d["flapping"], true);
    assert_eq!(d["availability"].as_array().unwrap().len(), 10);

    // An HTTP-only device times out after --offline-after.
    post(
        &format!("{base}/api/v1/ingest"),
        &encode_json(&batch("web", 1)),
    );
    let d = wait_for(Duration::from_secs(5), || {
        let (_, d) = get(&format!("{base}/api/v1/devices/web"));
        (d["last_disconnect"]["reason"] == "timeout").then_some(d)
    })
    .expect("the HTTP device's timeout was never recorded");
    assert_eq!(d["status"], "offline");
    assert_eq!(d["flapping"], false);
    rt.block_on(server.shutdown());
}
