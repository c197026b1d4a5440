//! Helpers for the tests that run the agent against a real `fleetmon server` process.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fleetmon_agent::agent::Agent;
use fleetmon_agent::collect::AgentStats;
use fleetmon_agent::config::Config;
use serde_json::Value;

/// The `fleetmon` server binary. The agent may not depend on the server crates, so the test
/// finds the binary that `cargo build -p fleetmon` (or `cargo test --workspace`) put in the
/// target directory: `$FLEETMON_BIN`, else next to this test's own target directory, else
/// `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
pub fn fleetmon_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("FLEETMON_BIN") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/outage-xxxx → target/debug/fleetmon
        if let Some(debug) = exe.parent().and_then(Path::parent) {
            candidates.push(debug.join("fleetmon"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/fleetmon"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/fleetmon"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the fleetmon server binary is needed for this test; build it with \
                 `cargo build -p fleetmon` or set FLEETMON_BIN (looked at {candidates:?})"
            )
        })
}

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn get(url: &str) -> (u16, Value) {
    match http().get(url).call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `fleetmon server` child process, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, http: SocketAddr, mqtt: SocketAddr) -> Self {
        let child = Command::new(fleetmon_bin())
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-listen",
                &http.to_string(),
                "--mqtt-listen",
                &mqtt.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn fleetmon server");
        let server = Self { child, http, mqtt };
        let up = wait_for(Duration::from_secs(20), || {
            (get(&format!("http://{http}/healthz")).0 == 200).then_some(())
        });
        assert!(up.is_some(), "fleetmon server did not come up on {http}");
        server
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
    }

    /// The device detail, when the server knows the device.
    pub fn device(&self, id: &str) -> Option<Value> {
        let (status, v) = get(&format!("http://{}/api/v1/devices/{id}", self.http));
        (status == 200).then_some(v)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
