//! Device tags, health with reasons, list filters and fleet roll-ups, through the HTTP API.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{get, post};
use fleetmon_protocol::{Batch, Sample, encode_json};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use serde_json::{Value, json};

fn put(url: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.put(url).send_json(body).expect("PUT");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn batch(device: &str, samples: Vec<Sample>) -> Vec<u8> {
    encode_json(&Batch {
        device: device.into(),
        boot_id: "b".into(),
        seq: 1,
        sent_at_ms: 0,
        dropped_before: 0,
        samples,
    })
}

fn start(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Server {
    let mut config = ServerConfig::local(dir);
    config.offline_after = Duration::from_secs(60);
    let policy = dir.join("firmware-policy.toml");
    std::fs::write(
        &policy,
        "[[minimum]]\nmodel = \"rpi4\"\nversion = \"2.0.0\"\n\n[[vulnerable]]\nadvisory = \"FM-2026-001\"\nversions = \">=1.2.0, <1.3.2\"\n",
    )
    .expect("write the firmware policy");
    config.firmware_policy = Some(policy);
    rt.block_on(Server::start(config, Arc::new(SystemClock)))
        .expect("start the server")
}

fn ids(list: &Value) -> Vec<&str> {
    list["devices"]
        .as_array()
        .expect("a device list")
        .iter()
        .map(|d| d["id"].as_str().expect("a device id"))
        .collect()
}

#[test]
fn tags_health_filters_and_rollups() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());

    let (s, _) = put(
        &format!("{base}/api/v1/devices/d1/tags"),
        &json!({"site": "north", "group": "pilot", "lat": "52.5", "lon": "13.4"}),
    );
    assert_eq!(s, 200);
    put(
        &format!("{base}/api/v1/devices/d2/tags"),
        &json!({"site": "south", "group": "pilot"}),
    );
    put(
        &format!("{base}/api/v1/devices/d4/tags"),
        &json!({"site": "south"}),
    );
    let (s, e) = put(
        &format!("{base}/api/v1/devices/d1/tags"),
        &json!({"bad-name": "x"}),
    );
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("\"bad-name\""), "{e}");
    let (s, e) = put(
        &format!("{base}/api/v1/devices/d1/tags"),
        &json!({"site": 3}),
    );
    assert_eq!(s, 400, "{e}");

    let ts = fleetmon_tsdb::db::system_clock();
    let ingest = format!("{base}/api/v1/ingest");
    post(
        &ingest,
        &batch(
            "d1",
            vec![
                Sample::new("battery_charge_ratio", ts, 0.05).with_label("battery", "ups"),
                Sample::new("battery_discharging", ts, 1.0).with_label("battery", "ups"),
                Sample::new("device_info", ts, 1.0)
                    .with_label("firmware", "2.1.0")
                    .with_label("model", "rpi4"),
            ],
        ),
    );
    post(
        &ingest,
        &batch(
            "d2",
            vec![Sample::new("temperature_celsius", ts, 72.5).with_label("sensor", "soc")],
        ),
    );
    post(
        &ingest,
        &batch(
            "d3",
            vec![Sample::new("temperature_celsius", ts, 40.0).with_label("sensor", "soc")],
        ),
    );
    let info = Sample::new("device_info", ts, 1.0)
        .with_label("firmware", "1.3.0")
        .with_label("model", "gateway");
    post(&ingest, &batch("d5", vec![info]));

    let (_, d1) = get(&format!("{base}/api/v1/devices/d1"));
    assert_eq!(d1["health"]["level"], "critical");
    assert_eq!(d1["health"]["reasons"][0]["check"], "battery_low");
    assert_eq!(
        d1["health"]["reasons"][0]["message"],
        "battery ups at 5 %, discharging"
    );
    assert_eq!(d1["firmware"], "2.1.0");
    let reasons = d1["health"]["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().all(|r| r["check"] != "firmware_outdated"),
        "2.1.0 is above the rpi4 minimum: {d1}"
    );
    let (_, d5) = get(&format!("{base}/api/v1/devices/d5"));
    assert_eq!(d5["health"]["level"], "critical", "{d5}");
    let reasons = d5["health"]["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r["check"] == "firmware_vulnerable"
            && r["message"] == "firmware 1.3.0 is vulnerable: FM-2026-001 (>=1.2.0, <1.3.2)"),
        "{d5}"
    );
    assert!(
        reasons.iter().all(|r| r["check"] != "firmware_outdated"),
        "the rpi4 minimum does not apply to a gateway: {d5}"
    );
    assert_eq!(d1["model"], "rpi4");
    assert_eq!(d1["tags"]["site"], "north");
    let (_, d2) = get(&format!("{base}/api/v1/devices/d2"));
    assert_eq!(d2["health"]["level"], "warning");
    assert_eq!(
        d2["health"]["reasons"][0]["message"],
        "temperature soc at 72.5 °C"
    );
    let (_, d4) = get(&format!("{base}/api/v1/devices/d4"));
    assert_eq!(d4["status"], "offline");
    assert_eq!(
        d4["health"]["reasons"][0]["message"],
        "offline (never seen)"
    );

    let list = |q: &str| get(&format!("{base}/api/v1/devices?{q}")).1;
    assert_eq!(ids(&list("health=critical")), ["d1", "d4", "d5"]);
    assert_eq!(ids(&list("health=ok")), ["d3"]);
    assert_eq!(ids(&list("site=south")), ["d2", "d4"]);
    assert_eq!(ids(&list("site=south&status=online")), ["d2"]);
    assert_eq!(ids(&list("group=pilot&health=warning")), ["d2"]);
    assert_eq!(ids(&list("firmware=2.1.0")), ["d1"]);
    assert_eq!(ids(&list("model=rpi4")), ["d1"]);
    assert_eq!(ids(&list("q=d")).len(), 5);
    let page = list("limit=2&offset=1");
    assert_eq!(
        (ids(&page), &page["matched"], &page["total"]),
        (vec!["d2", "d3"], &json!(5), &json!(5))
    );
    let (s, e) = get(&format!("{base}/api/v1/devices?health=purple"));
    assert_eq!(s, 400, "{e}");
    let (s, _) = get(&format!("{base}/api/v1/devices?colour=red"));
    assert_eq!(s, 400);

    let (_, fleet) = get(&format!("{base}/api/v1/fleet"));
    assert_eq!(fleet["fleet"]["total"], 5);
    assert_eq!(fleet["fleet"]["critical"], 3);
    assert_eq!(fleet["sites"]["south"]["total"], 2);
    assert_eq!(fleet["sites"]["south"]["warning"], 1);
    assert_eq!(fleet["sites"]["(none)"]["total"], 2);
    assert_eq!(fleet["groups"]["pilot"]["critical"], 1);

    // Tags are labels of the device's series, and survive a restart.
    let (_, samples) = get(&format!(
        "{base}/api/v1/samples?device=d1&metric=battery_charge_ratio"
    ));
    assert_eq!(samples["series"][0]["labels"]["site"], "north");
    rt.block_on(server.shutdown());
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());
    let (_, d1) = get(&format!("{base}/api/v1/devices/d1"));
    assert_eq!(d1["tags"]["group"], "pilot");
    let (_, samples) = get(&format!(
        "{base}/api/v1/samples?device=d1&metric=battery_charge_ratio"
    ));
    assert_eq!(samples["series"][0]["labels"]["group"], "pilot");
    rt.block_on(server.shutdown());
}

#[test]
fn battery_drain_and_time_to_empty() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&rt, dir.path());
    let base = format!("http://{}", server.http_addr());
    let ingest = format!("{base}/api/v1/ingest");
    // A battery draining 5 % an hour for the last two hours, now at 70 %: empty in 14 h.
    let now = fleetmon_tsdb::db::system_clock();
    let history: Vec<Sample> = (0..=120)
        .map(|m| {
            let t = now - (120 - m) * 60_000;
            let charge = 0.80 - 0.05 * (m as f64 / 60.0);
            Sample::new("battery_charge_ratio", t, (charge * 100.0).round() / 100.0)
                .with_label("battery", "BAT0")
        })
        .collect();
    post(&ingest, &batch("bat1", history));
    let (_, b) = get(&format!("{base}/api/v1/devices/bat1"));
    let tte = b["battery"]["time_to_empty_seconds"]
        .as_f64()
        .expect("an estimate");
    assert!((tte - 14.0 * 3600.0).abs() < 0.1 * 14.0 * 3600.0, "{b}");
    assert!((b["battery"]["drain_ratio_per_hour"].as_f64().unwrap() - 0.05).abs() < 0.005);
    assert_eq!(b["battery"]["charging"], false);
    let (low, high) = (
        b["battery"]["time_to_empty_low_seconds"].as_f64().unwrap(),
        b["battery"]["time_to_empty_high_seconds"].as_f64().unwrap(),
    );
    assert!(low <= tte && tte <= high && high - low < 0.5 * tte, "{b}");

    // A disk losing 100 MB a minute with 6 GB left: full in an hour; a steady one: no forecast.
    let disk: Vec<Sample> = (0..=60)
        .flat_map(|m| {
            let t = now - (60 - m) * 60_000;
            [
                Sample::new("filesystem_avail_bytes", t, 12e9 - 1e8 * m as f64)
                    .with_label("mountpoint", "/data"),
                Sample::new("filesystem_avail_bytes", t, 5e9).with_label("mountpoint", "/"),
            ]
        })
        .collect();
    post(&ingest, &batch("disk1", disk));
    let (_, d) = get(&format!("{base}/api/v1/devices/disk1"));
    let full = d["disk_full"].as_array().expect("disk forecasts");
    assert_eq!(full.len(), 1, "{d}");
    assert_eq!(full[0]["mountpoint"], "/data");
    let eta = full[0]["eta_seconds"].as_f64().unwrap();
    assert!((eta - 3600.0).abs() < 120.0, "{d}");

    rt.block_on(server.shutdown());
}

/// Tags from a file by id pattern (reloaded on SIGHUP, the API's winning), attached to the
/// device's series; link utilisation against a configured capacity as a series and a reason.
#[test]
fn tags_from_a_file_and_link_utilisation() {
    let dir = tempfile::tempdir().unwrap();
    let tags = dir.path().join("device-tags.toml");
    let limits = dir.path().join("device-limits.toml");
    std::fs::write(
        &tags,
        "[[device]]\nid = \"cell-*\"\nsite = \"harbour\"\ngroup = \"cranes\"\n\n\
         [[device]]\nid = \"cell-2\"\ngroup = \"gates\"\nlat = 53.54\nlon = 9.98\n",
    )
    .unwrap();
    std::fs::write(
        &limits,
        "[[link]]\nmodel = \"*\"\ninterface = \"wwan0\"\ncapacity_bits_per_second = 1e6\ntransmit_bits_per_second = 2e5\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--device-tags",
        tags.to_str().unwrap(),
        "--device-limits",
        limits.to_str().unwrap(),
        "--derive-interval",
        "1s",
    ];
    let server = common::start_server(&data, common::free_addr(), common::free_addr(), &args);

    // Two batches 10 s apart (device time): 230 kB up in 10 s = 184 kbit/s of 200 kbit/s.
    let ts = fleetmon_tsdb::db::system_clock() - 10_000;
    let net = |seq: u64, t: i64, tx: f64| {
        let wwan = |m: &str, v: f64| Sample::new(m, t, v).with_label("interface", "wwan0");
        encode_json(&Batch {
            device: "cell-2".into(),
            boot_id: "b".into(),
            seq,
            sent_at_ms: 0,
            dropped_before: 0,
            samples: vec![
                wwan("network_transmit_bytes_total", tx),
                wwan("network_receive_bytes_total", tx / 10.0),
                Sample::new("cpu_usage_ratio", t, 0.1),
            ],
        })
    };
    let ingest = server.url("/api/v1/ingest");
    assert_eq!(post(&ingest, &net(1, ts, 1_000.0)).0, 200);
    assert_eq!(post(&ingest, &net(2, ts + 10_000, 231_000.0)).0, 200);
    for id in ["cell-1", "gw-1"] {
        let (s, body) = post(
            &ingest,
            &batch(id, vec![Sample::new("cpu_usage_ratio", ts, 0.2)]),
        );
        assert_eq!(s, 200, "{body}");
    }

    let (_, d) = get(&server.url("/api/v1/devices/cell-2"));
    assert_eq!(
        d["tags"],
        json!({"site": "harbour", "group": "gates", "lat": "53.54", "lon": "9.98"})
    );
    let reason = d["health"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "link_saturated")
        .cloned()
        .unwrap_or_else(|| panic!("no link_saturated reason: {d}"));
    assert_eq!(reason["level"], "warning");
    assert_eq!(
        reason["message"],
        "link wwan0 transmit (200 kbit/s capacity) at 92 %"
    );
    let (_, d) = get(&server.url("/api/v1/devices/gw-1"));
    assert_eq!(d["tags"], json!({}));

    // The tags are labels of the stored samples; the utilisation is a derived series.
    let query = |q: &str| {
        let url = server.url(&format!(
            "/prometheus/api/v1/query?query={}",
            q.replace(' ', "%20").replace('"', "%22")
        ));
        get(&url).1["data"]["result"].clone()
    };
    let r = query("cpu_usage_ratio{site=\"harbour\"}");
    let mut devices: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["device"].as_str().unwrap())
        .collect();
    devices.sort_unstable();
    assert_eq!(devices, ["cell-1", "cell-2"]);
    let used = common::wait_for(Duration::from_secs(20), || {
        let r = query("network_utilization_ratio{direction=\"transmit\"}");
        r.as_array().and_then(|a| a.first().cloned())
    })
    .expect("network_utilization_ratio is written");
    assert_eq!(used["metric"]["interface"], "wwan0");
    assert_eq!(used["metric"]["site"], "harbour");
    let v: f64 = used["value"][1].as_str().unwrap().parse().unwrap();
    assert!((v - 0.92).abs() < 1e-9, "{used}");

    // The API's tags win over the file's; a changed file applies on SIGHUP; a broken one is
    // refused and the old tags stay.
    let (s, _) = put(
        &server.url("/api/v1/devices/cell-1/tags"),
        &json!({"site": "dock"}),
    );
    assert_eq!(s, 200);
    let tags_of = |id: &str| get(&server.url(&format!("/api/v1/devices/{id}"))).1["tags"].clone();
    assert_eq!(
        tags_of("cell-1"),
        json!({"site": "dock", "group": "cranes"})
    );
    std::fs::write(&tags, "[[device]]\nid = \"*\"\ngroup = \"all\"\n").unwrap();
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP")
            .success();
        assert!(ok);
    };
    hup(server.child.id());
    common::wait_for(Duration::from_secs(10), || {
        (tags_of("gw-1") == json!({"group": "all"})).then_some(())
    })
    .expect("gw-1 tagged after SIGHUP");
    assert_eq!(tags_of("cell-1"), json!({"site": "dock", "group": "all"}));
    assert_eq!(tags_of("cell-2"), json!({"group": "all"}));
    std::fs::write(&tags, "[[device]]\nid = \"*\"\ngroup = [1]\n").unwrap();
    hup(server.child.id());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tags_of("gw-1"),
        json!({"group": "all"}),
        "a broken file changes nothing"
    );
    assert_eq!(get(&server.url("/healthz")).0, 200);

    // At start a broken tags file stops the server with the file and what is wrong.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("other"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .arg("--device-tags")
        .arg(&tags)
        .output()
        .expect("run fleetmon server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device-tags.toml") && err.contains("tag `group` must be"),
        "{err}"
    );
}
