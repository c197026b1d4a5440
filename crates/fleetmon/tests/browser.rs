//! The dashboard in a real browser: a `fleetmon server` and a `fleetmon sim` fleet as child
//! processes, then `web-tests/dashboard.mjs` drives Debian's chromium through every view
//! (see that script for what it checks). Screenshots land in `target/browser-artifacts/`.
//!
//! The server runs with a rule that fires at once for two devices (so the alerts view has
//! something to list and silence) and a mutual-TLS listener, which a client without a
//! certificate knocks on before the browser starts (so the security view has an event).
//!
//! Needs `/usr/bin/chromium`, `node` and `web-tests/node_modules`: `scripts/install-test-deps`
//! installs them. Without them the test fails and says so; it never skips silently.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{ServerProcess, free_addr, get, start_fleet, start_server, wait_for};
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

/// The alert rule: fires (no `for`) for two devices as soon as they report CPU use.
const RULES: &str = r#"groups:
  - name: browser
    interval: 1s
    rules:
      - alert: CpuBusy
        expr: max by (device) (cpu_usage_ratio{device=~"sim-0000[12]"}) >= 0
        for: 0s
        labels:
          severity: warning
        annotations:
          summary: 'CPU of {{ $labels.device }} at {{ $value | humanizePercentage }}'
"#;

/// `fleetmon ca --ca-dir DIR ARGS...`, which must succeed.
fn ca(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["ca", "--ca-dir", dir.to_str().expect("a UTF-8 path")])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fleetmon ca");
    assert!(
        out.status.success(),
        "fleetmon ca {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS client that trusts the CA but has no certificate of its own: the server refuses
/// it and records a `no_client_certificate` security event.
fn knock_without_certificate(addr: SocketAddr, ca_pem: &Path) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem).expect("the CA file") {
        roots
            .add(c.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).expect("connect to the TLS listener");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let name = ServerName::try_from("localhost").expect("a server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // An MQTT CONNECT; the server answers with an alert and closes.
    let _ = tls.write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0]);
    let _ = tls.flush();
    let mut buf = [0u8; 64];
    let _ = tls.read(&mut buf);
}

/// A `fleetmon sim` child process, killed when dropped.
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
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("write the rules");
    let rules = rules.to_str().expect("a UTF-8 path");
    let ca_dir = dir.path().join("ca");
    ca(&ca_dir, &["init"]);
    ca(&ca_dir, &["server-cert"]);
    let tls = free_addr();
    let tls_addr = tls.to_string();
    let server = start_server(
        &dir.path().join("data"),
        free_addr(),
        free_addr(),
        &[
            "--firmware-policy",
            policy,
            "--no-builtin-rules",
            "--rules",
            rules,
            "--evaluation-interval",
            "1s",
            "--ca-dir",
            ca_dir.to_str().expect("a UTF-8 path"),
            "--mqtt-tls-listen",
            &tls_addr,
        ],
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
    // Enough history for the charts: every device online and a few batches each.
    let _sim = start_fleet(&server, DEVICES, "1s", 15);
    let firing = wait_for(Duration::from_secs(30), || {
        let (_, alerts) = get(&server.url("/api/v1/alerts"));
        let n = alerts["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == "CpuBusy" && a["state"] == "firing")
            .count();
        (n == 2).then_some(())
    });
    assert!(firing.is_some(), "the CpuBusy alerts did not fire");
    knock_without_certificate(tls, &ca_dir.join("ca.pem"));
    let event = wait_for(Duration::from_secs(10), || {
        let (_, events) = get(&server.url("/api/v1/events?kind=no_client_certificate"));
        (!events["events"].as_array()?.is_empty()).then_some(())
    });
    assert!(
        event.is_some(),
        "no no_client_certificate event after a TLS client without a certificate"
    );

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
