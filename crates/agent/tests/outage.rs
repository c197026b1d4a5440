//! The agent against a real `fleetmon server`: the server is killed (`kill -9`) and restarted
//! on the same ports and data directory while the agent keeps collecting. Every batch must
//! arrive, be stored exactly once, and leave no gap; with a spool smaller than the outage,
//! the server's count of batches dropped on the device equals the agent's drop counter.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{RunningAgent, agent_config, free_addr, seq_ranges, start_server, wait_for};
use fleetmon_agent::spool::Spool;

#[test]
fn every_batch_survives_a_server_outage_exactly_once_and_in_order() {
    let data = tempfile::tempdir().expect("test setup");
    let spool_dir = tempfile::tempdir().expect("test setup");
    let (http, mqtt) = (free_addr(), free_addr());
    let mut server = start_server(data.path(), http, mqtt);
    let device = "agent-outage";
    let agent = RunningAgent::start(agent_config(device, mqtt, spool_dir.path()));

    let before = wait_for(Duration::from_secs(20), || {
        let d = server.device(device)?;
        let n = d["batches_received"].as_u64()?;
        (n >= 5).then_some(n)
    })
    .expect("batches arrive before the outage");
    assert_eq!(
        server.device(device).expect("test setup")["reported_status"],
        "online",
        "the birth message is retained as the device's status"
    );

    server.kill9();
    std::thread::sleep(Duration::from_secs(3));
    // The agent kept collecting into its spool.
    let spooled = agent.stats.spool_bytes.load(Ordering::Relaxed);
    assert!(spooled > 0, "batches wait in the spool during the outage");
    let server = start_server(data.path(), http, mqtt);

    // The backlog drains: more than the outage's worth arrives, with no gap.
    let drained = wait_for(Duration::from_secs(30), || {
        let d = server.device(device)?;
        let ranges = seq_ranges(&d);
        (ranges.len() == 1 && ranges[0][1] >= before + 25).then_some(ranges[0][1])
    })
    .expect("the backlog drains after the server is back");
    agent.stop();

    // After a clean stop, what the server lacks is exactly what is still spooled.
    let spool = Spool::open(spool_dir.path(), 16 << 20).expect("test setup");
    let produced = spool.next_seq() - 1;
    let left: Vec<u64> = spool.seqs().collect();
    let d = server.device(device).expect("test setup");
    let ranges = seq_ranges(&d);
    assert_eq!(ranges.len(), 1, "no gap: {ranges:?}");
    assert_eq!(ranges[0][0], 1);
    let stored = ranges[0][1];
    assert!(stored >= drained);
    assert!(
        left.iter().all(|&s| s > stored) && stored + left.len() as u64 == produced,
        "stored 1..={stored}, spool holds {left:?}, produced {produced}"
    );
    // Exactly once: every stored seq counted once as received.
    assert_eq!(d["batches_received"].as_u64().expect("test setup"), stored);
    assert_eq!(d["batches_missing"].as_u64().expect("test setup"), 0);
    assert_eq!(
        d["batches_dropped_on_device"].as_u64().expect("test setup"),
        0
    );
    assert_eq!(d["reported_status"], "offline", "a clean stop says offline");
}

const SMALL_SPOOL: u64 = 6 * 1024;

#[test]
fn with_a_small_spool_the_servers_dropped_count_equals_the_agents() {
    let data = tempfile::tempdir().expect("test setup");
    let spool_dir = tempfile::tempdir().expect("test setup");
    let (http, mqtt) = (free_addr(), free_addr());
    let mut server = start_server(data.path(), http, mqtt);
    let device = "agent-small-spool";
    let mut config = agent_config(device, mqtt, spool_dir.path());
    // A few batches' worth (a batch is about 0.5 KiB): a 3 s outage at 10 batches/s
    // overflows it.
    config.spool.max_bytes = SMALL_SPOOL;
    let agent = RunningAgent::start(config);

    wait_for(Duration::from_secs(20), || {
        (server.device(device)?["batches_received"].as_u64()? >= 3).then_some(())
    })
    .expect("batches arrive before the outage");
    server.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let dropped = agent.stats.spool_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the outage overflowed the spool");
    let server = start_server(data.path(), http, mqtt);

    // Drops are reported in the next batch's dropped_before; the server sums them.
    let mut last = (0, 0, serde_json::Value::Null);
    let seen = wait_for(Duration::from_secs(30), || {
        let mut d = server.device(device)?;
        let agent_dropped = agent.stats.spool_dropped.load(Ordering::Relaxed);
        let on_device = d["batches_dropped_on_device"].as_u64()?;
        d["last_values"] = serde_json::Value::Null;
        last = (agent_dropped, on_device, d.clone());
        (on_device == agent_dropped && on_device > 0).then_some(d)
    });
    agent.stop();
    let d = seen.unwrap_or_else(|| {
        panic!("the server's dropped count never reached the agent's: (agent, server, detail) = {last:?}")
    });
    let spool = Spool::open(spool_dir.path(), SMALL_SPOOL).expect("test setup");
    assert_eq!(
        d["batches_dropped_on_device"].as_u64().expect("test setup"),
        spool.dropped_total(),
        "server and agent agree on the drops"
    );
    // The dropped batches are the server's only gaps.
    let final_d = server.device(device).expect("test setup");
    assert_eq!(
        final_d["batches_missing"].as_u64().expect("test setup"),
        spool.dropped_total()
    );
    assert_eq!(
        final_d["batches_dropped_on_device"]
            .as_u64()
            .expect("test setup"),
        spool.dropped_total()
    );
}

#[test]
fn while_mqtt_is_unreachable_batches_go_over_http() {
    let data = tempfile::tempdir().unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_addr(), free_addr());
    let server = start_server(data.path(), http, mqtt);
    let device = "agent-http";
    // MQTT points at a port nobody listens on.
    let mut config = agent_config(device, free_addr(), spool_dir.path());
    config.server.http_url = format!("http://{http}");
    let agent = RunningAgent::start(config);
    let d = wait_for(Duration::from_secs(20), || {
        let d = server.device(device)?;
        (d["batches_received"].as_u64()? >= 10).then_some(d)
    })
    .expect("batches arrive over HTTP");
    agent.stop();
    assert_eq!(d["transport"], "http");
    let ranges = seq_ranges(&d);
    assert_eq!(ranges.len(), 1, "no gap: {ranges:?}");
    assert_eq!(ranges[0][0], 1);
    assert_eq!(d["batches_duplicate"].as_u64().unwrap(), 0);
}
