//! The simulator survives its server dying: the broker is frozen (so published batches pile
//! up unacknowledged), killed with SIGKILL and restarted empty on the same port. Devices must
//! reconnect and resend until every batch is acknowledged by the new broker. The broker keeps
//! nothing across the restart, so this checks the simulator's outbox, not server durability.

mod common;

use std::time::Duration;

use fleetmon_protocol::Format;
use fleetmon_sim::{SimOptions, run};

use common::{Broker, retained_statuses};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_resend_everything_after_the_broker_is_killed() {
    resend_everything_after_a_kill(5, 1).await;
}

/// The same with three devices behind each connection: every device's batches come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sharing_connections_resend_everything_after_the_broker_is_killed() {
    resend_everything_after_a_kill(6, 3).await;
}

async fn resend_everything_after_a_kill(devices: usize, devices_per_connection: usize) {
    let mut broker = Broker::start();
    let batches = 60;
    let opts = SimOptions {
        mqtt: broker.addr(),
        devices,
        devices_per_connection,
        interval: Duration::from_millis(50),
        duration: None,
        batches: Some(batches),
        seed: 7,
        prefix: "res-".into(),
        first_seq: 1,
        format: Format::Protobuf,
        progress: false,
        drain_timeout: Duration::from_secs(20),
        ..SimOptions::default()
    };
    let sim = tokio::spawn(run(opts, std::future::pending()));

    tokio::time::sleep(Duration::from_millis(700)).await;
    // Frozen: batches keep being written, none acknowledged.
    broker.pause();
    tokio::time::sleep(Duration::from_millis(400)).await;
    broker.kill();
    // Down: connections are refused; devices keep producing and retrying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();

    let summary = tokio::time::timeout(Duration::from_secs(60), sim)
        .await
        .expect("the run ends")
        .expect("no panic")
        .expect("run");
    assert_eq!(summary.devices.len(), devices);
    for d in &summary.devices {
        assert_eq!(d.batches_produced, batches, "{}", d.device);
        assert_eq!(
            d.acked_seqs,
            [[1, batches]],
            "{}: unacknowledged {:?}",
            d.device,
            d.unacked_seqs()
        );
        assert!(d.connections >= 2, "{} never reconnected", d.device);
        assert!(
            d.resends > 0,
            "{}: batches written to the frozen broker must be resent",
            d.device
        );
        assert_eq!(d.batches_skipped, 0);
        assert!(d.clean_disconnect);
    }
    assert!(summary.all_acked());
    // Only each connection's head publishes a status.
    let heads = devices.div_ceil(devices_per_connection);
    let retained = retained_statuses(&broker, heads).await;
    assert_eq!(retained.len(), heads, "{retained:?}");
    assert!(retained.values().all(|s| s == "offline"), "{retained:?}");
}
