//! Enrolment with the real binaries: `fleetmon ca enrol-token`, then
//! `fleetmon-agent enrol` writes the device's own key (0600), its certificate and the CA
//! where its configuration expects them, and `fleetmon-agent run` sends batches over mutual
//! TLS with them. The token works once.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ServerProcess, fleetmon_bin, free_addr, wait_for};

fn fleetmon_ca(ca_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(fleetmon_bin())
        .args(["ca", "--ca-dir"])
        .arg(ca_dir)
        .args(args)
        .output()
        .expect("run fleetmon ca");
    assert!(
        out.status.success(),
        "fleetmon ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn agent(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmon-agent"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run fleetmon-agent")
}

#[test]
fn an_enrolled_agent_sends_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_dir = dir.path().join("ca");
    fleetmon_ca(&ca_dir, &["init"]);
    fleetmon_ca(&ca_dir, &["server-cert"]);
    let token = fleetmon_ca(&ca_dir, &["enrol-token", "pi-enrolled", "--ttl", "10m"]);
    let tls = free_addr();
    let server = ServerProcess::start(
        &fleetmon_bin(),
        &dir.path().join("data"),
        free_addr(),
        free_addr(),
        &[
            "--ca-dir",
            ca_dir.to_str().expect("utf-8 path"),
            "--mqtt-tls-listen",
            &tls.to_string(),
        ],
    );

    let dev = dir.path().join("device");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"pi-enrolled\"\ninterval = \"1s\"\n[server]\nmqtt = \"{tls}\"\n\
             tls_ca_file = \"{d}/ca.pem\"\ntls_cert_file = \"{d}/device.pem\"\n\
             tls_key_file = \"{d}/device.key\"\nreconnect_max = \"1s\"\n[spool]\ndir = \"{d}/spool\"\n",
            d = dev.display()
        ),
    )
    .expect("write agent config");

    let url = server.url("");
    let out = agent(
        &["enrol", "--server", &url, "--token", token.trim()],
        &config,
    );
    assert!(
        out.status.success(),
        "enrol: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(dev.join("device.key"))
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dev.join("device.pem").is_file() && dev.join("ca.pem").is_file());
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains(token.trim()),
        "the token was printed: {said}"
    );

    // Once only.
    let again = agent(
        &["enrol", "--server", &url, "--token", token.trim()],
        &config,
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let mut run = Command::new(env!("CARGO_BIN_EXE_fleetmon-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the agent");
    let received = wait_for(Duration::from_secs(30), || {
        server
            .device("pi-enrolled")
            .and_then(|d| d["batches_received"].as_u64())
            .filter(|n| *n >= 2)
    });
    let _ = run.kill();
    let _ = run.wait();
    assert!(received.is_some(), "no batches over mutual TLS");
    let (_, events) = common::get(&server.url("/api/v1/events?device=pi-enrolled"));
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"enrolled") && kinds.contains(&"enrolment_refused"),
        "{kinds:?}"
    );
}
