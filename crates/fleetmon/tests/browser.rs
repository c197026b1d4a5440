//! The dashboard in a real browser: a `fleetmon server` and a `fleetmon sim` fleet as child
//! processes, then `web-tests/dashboard.mjs` drives Debian's chromium through every view
//! (see that script for what it checks). Screenshots land in `target/browser-artifacts/`.
//!
//! Needs `/usr/bin/chromium`, `node` and `web-tests/node_modules`: `scripts/install-test-deps`
//! installs them. Without them the test fails and says so; it never skips silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, free_addr, get, start_server, wait_for};
use serde_json::{Value, json};

/// Simulated devices: more than one page of the device list.
const DEVICES: usize = 60;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Fails, naming the fix, when chromium, node or the test's npm packages are missing.
fn require_browser_deps(root: &Path) {
    let fix = "run `scripts/install-test-deps` (as root: it installs chromium and runs \
               `npm ci --prefix web-tests`)";
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: {fix}"
    );
    assert!(
        root.join("web-tests/node_modules/playwright-core").is_dir(),
        "web-tests/node_modules is missing: {fix}"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: {fix}"
    );
}

fn put_tags(server: &ServerProcess, id: &str, tags: &Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .put(&server.url(&format!("/api/v1/devices/{id}/tags")))
        .send_json(tags)
        .expect("PUT tags");
    assert_eq!(r.status().as_u16(), 200, "tags of {id}");
}

/// A `fleetmon sim` child process, killed when dropped.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dashboard_views_in_chromium() {
    let root = repo_root();
    require_browser_deps(&root);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("firmware-policy.toml");
    std::fs::write(
        &policy,
        "[[minimum]]\nmodel = \"*\"\nversion = \"1.5.0\"\n\n[[vulnerable]]\nadvisory = \"FM-TEST-0001\"\nversions = \">=3.2.0, <3.2.1\"\n",
    )
    .expect("write the firmware policy");
    let policy = policy.to_str().expect("a UTF-8 path");
    let server = start_server(
        &dir.path().join("data"),
        free_addr(),
        free_addr(),
        &["--firmware-policy", policy],
    );
    for i in 0..DEVICES {
        let tags = json!({
            "site": format!("site-{}", i % 4),
            "group": format!("group-{}", i % 3),
            "lat": format!("{:.3}", 48.0 + (i % 8) as f64 * 0.9),
            "lon": format!("{:.3}", 2.0 + (i / 8) as f64 * 1.7),
        });
        put_tags(&server, &format!("sim-{i:05}"), &tags);
    }
    // Never reports: offline (never seen). Its site is markup, which must show as text.
    put_tags(
        &server,
        "ghost-1",
        &json!({"site": "<script>alert(1)</script>", "lat": "50.5", "lon": "8.25"}),
    );
    let _sim = Sim(Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["sim", "--mqtt", &server.mqtt.to_string()])
        .args(["--devices", &DEVICES.to_string()])
        .args(["--interval", "1s", "--duration", "10m", "--quiet"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn fleetmon sim"));
    // Enough history for the charts: every device online and a few batches each.
    let ready = wait_for(Duration::from_secs(60), || {
        let (_, list) = get(&server.url("/api/v1/devices"));
        let batches: u64 = list["devices"]
            .as_array()?
            .iter()
            .filter_map(|d| d["batches_received"].as_u64())
            .sum();
        (list["online"] == DEVICES && batches >= 15 * DEVICES as u64).then_some(())
    });
    assert!(ready.is_some(), "the simulated fleet did not come up");

    let artifacts = root.join("target/browser-artifacts");
    let status = Command::new("node")
        .arg(root.join("web-tests/dashboard.mjs"))
        .arg(server.url("/"))
        .arg(&artifacts)
        .current_dir(&root)
        .status()
        .expect("run node web-tests/dashboard.mjs");
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above, screenshots in {}",
        artifacts.display()
    );
}
