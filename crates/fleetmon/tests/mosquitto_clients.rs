//! Standard third-party MQTT clients (Debian's mosquitto-clients) work against the endpoint:
//! a JSON batch published by hand lands in the store, and retained status reaches a later
//! subscriber.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_addr, get, start_server, wait_for};

fn tool(name: &str) -> Command {
    let probe = Command::new(name).arg("--help").output();
    assert!(
        probe.is_ok(),
        "`{name}` not found: install Debian's mosquitto-clients (apt-get install mosquitto-clients)"
    );
    Command::new(name)
}

/// `mosquitto_pub` at QoS 1 to the server on `port`, with `extra` arguments (e.g. `-V mqttv5`).
fn publish(port: &str, extra: &[&str], topic: &str, payload: &str) -> std::process::Output {
    tool("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", port, "-q", "1"])
        .args(extra)
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("run mosquitto_pub")
}

#[test]
fn mosquitto_pub_json_batch_is_stored_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let port = server.mqtt.port().to_string();
    let payload = r#"{"device":"dev1","boot_id":"b1","seq":1,"sent_at_ms":1700000000000,"dropped_before":0,
        "samples":[{"metric":"temperature_celsius","labels":{"sensor":"cpu"},"ts_ms":1700000000000,"value":47.5},
                   {"metric":"battery_charge_ratio","labels":{"battery":"BAT0"},"ts_ms":1700000000000,"value":0.81}]}"#;
    let out = publish(&port, &[], "fleetmon/v1/dev1/telemetry", payload);
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, body) = get(&server.url("/api/v1/samples?device=dev1&metric=temperature_celsius"));
    assert_eq!(status, 200);
    let series = &body["series"][0];
    assert_eq!(series["labels"]["sensor"], "cpu");
    assert_eq!(series["labels"]["device"], "dev1");
    assert_eq!(series["points"][0][0], 1_700_000_000_000i64);
    assert_eq!(series["points"][0][1], 47.5);
    let (_, dev) = get(&server.url("/api/v1/devices/dev1"));
    assert_eq!(dev["batches_received"], 1);
    assert_eq!(dev["seqs"][0][0], 1);
    let values = dev["last_values"].as_array().unwrap();
    assert!(
        values
            .iter()
            .any(|v| v["metric"] == "battery_charge_ratio" && v["value"] == 0.81)
    );

    // A resend of the same (device, seq) is acknowledged and stored once.
    let out = publish(&port, &[], "fleetmon/v1/dev1/telemetry", payload);
    assert!(out.status.success());
    let (_, dev) = get(&server.url("/api/v1/devices/dev1"));
    assert_eq!(dev["batches_received"], 1);
    assert_eq!(dev["batches_duplicate"], 1);

    // A malformed batch: mosquitto_pub sees the connection closed, nothing is stored.
    let out = publish(&port, &[], "fleetmon/v1/dev1/telemetry", "{oops");
    let (_, dev) = get(&server.url("/api/v1/devices/dev1"));
    assert_eq!(dev["batches_received"], 1, "mosquitto_pub said: {out:?}");
    assert_eq!(dev["batches_rejected"], 1);
}

#[test]
fn retained_status_reaches_a_later_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let port = server.mqtt.port().to_string();
    let out = publish(&port, &["-r"], "fleetmon/v1/gw-7/status", "online");
    assert!(out.status.success());
    let out = tool("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "fleetmon/v1/+/status",
            "-v",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "fleetmon/v1/gw-7/status online"
    );
    let reported = wait_for(Duration::from_secs(5), || {
        let (_, dev) = get(&server.url("/api/v1/devices/gw-7"));
        (dev["reported_status"] == "online").then_some(())
    });
    assert!(reported.is_some());
}

#[test]
fn mqtt5_clients_get_reason_codes_and_their_batches_land() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let port = server.mqtt.port().to_string();
    let publish = |topic: &str, payload: &str| publish(&port, &["-V", "mqttv5"], topic, payload);
    let good = r#"{"device":"v5dev","seq":1,"samples":[{"metric":"uptime_seconds","ts_ms":1700000000000,"value":42}]}"#;
    let out = publish("fleetmon/v1/v5dev/telemetry", good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refusals are negative PUBACKs that mosquitto_pub reports by name.
    let out = publish("fleetmon/v1/v5dev/telemetry", "{bad");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Payload format invalid"),
        "{out:?}"
    );
    let out = publish("not/ours", "x");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Topic Name invalid"),
        "{out:?}"
    );

    let (_, dev) = get(&server.url("/api/v1/devices/v5dev"));
    assert_eq!(dev["batches_received"], 1);
    assert_eq!(dev["batches_rejected"], 1);
    // Every session ended with a clean DISCONNECT, none as a protocol violation.
    assert_eq!(dev["last_disconnect"]["reason"], "graceful", "{dev}");
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(
        !metrics.as_str().unwrap().contains("reason=\"mqtt_packet\""),
        "{metrics}"
    );

    // MQTT 3.1 is refused at CONNECT, by name.
    let out = tool("mosquitto_pub")
        .args([
            "-V",
            "mqttv31",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "fleetmon/v1/x/status",
            "-m",
            "online",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unacceptable protocol version"),
        "{out:?}"
    );
}
