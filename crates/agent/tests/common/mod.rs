//! Helpers for the tests that run the agent against a real `fleetmon server` process.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fleetmon_agent::agent::Agent;
use fleetmon_agent::collect::AgentStats;
use fleetmon_agent::config::Config;
use serde_json::Value;

#[allow(unused_imports, reason = "each test file uses a different part")]
pub use fleetmon_testkit::{ServerProcess, fleetmon_bin, free_addr, get, wait_for};

/// The workspace's `fleetmon server` (the agent may not depend on the server crates, so the
/// binary is found on disk) on `data_dir` and the two addresses.
pub fn start_server(data_dir: &Path, http: SocketAddr, mqtt: SocketAddr) -> ServerProcess {
    ServerProcess::start(&fleetmon_bin(), data_dir, http, mqtt, &[])
}

/// An agent running on its own thread and runtime until [`RunningAgent::stop`].
pub struct RunningAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<AgentStats>,
}

impl RunningAgent {
    pub fn start(config: Config) -> Self {
        let agent = Agent::new(config.validate().expect("valid config")).expect("agent starts");
        let stats = agent.stats();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(agent.run(async move {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }))
            .expect("agent ran");
        });
        Self {
            stop,
            thread: Some(thread),
            stats,
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("agent thread");
        }
    }
}

/// A config for a test agent against `mqtt`, spooling in `spool`.
pub fn agent_config(device: &str, mqtt: SocketAddr, spool: &Path) -> Config {
    let mut c = Config::from_toml("").expect("empty config");
    c.device_id = device.into();
    c.server.mqtt = mqtt.to_string();
    c.spool.dir = spool.to_owned();
    c.interval = Duration::from_millis(100);
    c.low_power_interval = Duration::from_secs(1);
    c.server.reconnect_max = Duration::from_millis(400);
    c.server.keep_alive = Duration::from_secs(5);
    c
}

/// Received seqs of a device detail as (first, last, count) of its ranges.
pub fn seq_ranges(detail: &Value) -> Vec<[u64; 2]> {
    detail["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|r| [r[0].as_u64().expect("seq"), r[1].as_u64().expect("seq")])
        .collect()
}
