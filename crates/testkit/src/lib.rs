//! Test support shared by the crates' end-to-end tests: a `fleetmon server` child process on
//! free loopback ports (killed when dropped, or with SIGKILL on demand), a blocking HTTP client
//! that never panics on a bad status, and polling with a deadline. It depends on no fleetmon
//! crate, so the agent's tests may use it too.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        // No answer at all (connection refused, timeout): status 0 and the error's text.
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// GET `url`: status and JSON body (or the text as a JSON string).
pub fn get(url: &str) -> (u16, Value) {
    answer(agent().get(url).call())
}

/// POST `body` to `url`: status and JSON body.
pub fn post(url: &str, body: &[u8]) -> (u16, Value) {
    answer(agent().post(url).send(body))
}

/// Retries `check` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `fleetmon` binary for crates that cannot name it with `CARGO_BIN_EXE_fleetmon`:
/// `$FLEETMON_BIN`, else beside the running test's target directory, else
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

/// A `fleetmon server` child process, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
}

impl ServerProcess {
    /// Starts `bin server` on `data_dir` and the two addresses (plus `extra` flags) and waits
    /// until it answers `/healthz`.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        http: SocketAddr,
        mqtt: SocketAddr,
        extra: &[&str],
    ) -> Self {
        let child = Command::new(bin)
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-listen",
                &http.to_string(),
                "--mqtt-listen",
                &mqtt.to_string(),
            ])
            .args(extra)
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

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The device detail, when the server knows the device.
    pub fn device(&self, id: &str) -> Option<Value> {
        let (status, v) = get(&self.url(&format!("/api/v1/devices/{id}")));
        (status == 200).then_some(v)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
