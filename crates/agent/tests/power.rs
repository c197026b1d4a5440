//! Power-aware sampling: the agent switches to `low_power_interval` when a battery discharges
//! below the configured charge (the Pi + UPS HAT fixture, 76 % and discharging), and when the
//! server commands it on the control topic; `agent_low_power` reports the mode.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{RunningAgent, agent_config, free_addr, start_server, wait_for};
use fleetmon_agent::spool::Spool;
use fleetmon_protocol::{Limits, decode};

fn low_power_of(spool: &Spool, seq: u64) -> f64 {
    let payload = spool.read(seq).expect("spool read").expect("a live batch");
    let (batch, _) = decode(&payload, &Limits::default()).expect("a valid batch");
    batch
        .samples
        .iter()
        .find(|s| s.metric == "agent_low_power")
        .expect("agent_low_power is reported")
        .value
}

#[test]
fn a_battery_discharging_below_the_threshold_slows_sampling() {
    let spool_dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pi4-ups");
    // No server: batches stay in the spool, where the test reads them.
    let mut config = agent_config("ups-pi", free_addr(), spool_dir.path());
    config.collect.sys_root = fixture.join("sys");
    config.interval = Duration::from_millis(100);
    config.low_power_interval = Duration::from_secs(1);
    config.low_power_below_charge = 0.8;
    let agent = RunningAgent::start(config);
    std::thread::sleep(Duration::from_millis(2500));
    let low = agent.stats.low_power.load(Ordering::Relaxed);
    agent.stop();
    assert!(low, "76 % and discharging is below 80 %");
    let spool = Spool::open(spool_dir.path(), 16 << 20).unwrap();
    let produced = spool.next_seq() - 1;
    // The first batch (100 ms) finds the battery low; then one per second: 2 or 3 more,
    // against 25 at the normal interval.
    assert!((2..=5).contains(&produced), "{produced} batches in 2.5 s");
    assert_eq!(
        low_power_of(&spool, 1),
        0.0,
        "the first batch ran at the normal interval"
    );
    assert_eq!(low_power_of(&spool, produced), 1.0);
}

#[test]
fn the_server_commands_low_power_over_the_control_topic() {
    let data = tempfile::tempdir().unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_addr(), free_addr());
    let server = start_server(data.path(), http, mqtt);
    let device = "agent-control";
    let mut config = agent_config(device, mqtt, spool_dir.path());
    config.interval = Duration::from_millis(100);
    config.low_power_interval = Duration::from_secs(1);
    let agent = RunningAgent::start(config);
    wait_for(Duration::from_secs(20), || {
        (server.device(device)?["batches_received"].as_u64()? >= 3).then_some(())
    })
    .expect("the agent is connected and sending");
    assert!(!agent.stats.low_power.load(Ordering::Relaxed));

    // An operator's client publishes the command; the server routes it to the device.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = rumqttc::MqttOptions::new("operator", mqtt.ip().to_string(), mqtt.port());
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        client
            .publish(
                fleetmon_protocol::Topic::control(device),
                rumqttc::QoS::AtLeastOnce,
                false,
                r#"{"command":"low_power","enabled":true}"#,
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
                tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await
            {
                break;
            }
        }
    });
    let switched = wait_for(Duration::from_secs(10), || {
        agent.stats.low_power.load(Ordering::Relaxed).then_some(())
    });
    // The server sees the mode in the device's latest values.
    let reported = wait_for(Duration::from_secs(10), || {
        let d = server.device(device)?;
        d["last_values"]
            .as_array()?
            .iter()
            .any(|v| v["metric"] == "agent_low_power" && v["value"] == 1.0)
            .then_some(())
    });
    agent.stop();
    assert!(switched.is_some(), "the command switched the mode");
    assert!(reported.is_some(), "agent_low_power = 1 reached the server");
}
