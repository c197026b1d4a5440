//! `fleetmon demo`: a server with its defaults plus a simulated fleet in one process, and the
//! URL to open. Open on loopback, without device or operator authentication (unless the data
//! directory has operator accounts): a demo, and it says so.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use fleetmon_protocol::Format;
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use fleetmon_sim::SimOptions;

use crate::cli::DemoArgs;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.devices == 0 || args.devices > 100_000 {
        bail!("--devices {}: expected 1 to 100000", args.devices);
    }
    if args.interval < std::time::Duration::from_millis(10) {
        bail!("--interval {:?}: expected at least 10ms", args.interval);
    }
    let mut config = ServerConfig::local(&args.data_dir);
    config.firmware_policy = Some(demo_firmware_policy(&args.data_dir)?);
    config.http_listen = free_or_ephemeral(args.http_listen);
    config.mqtt_listen = free_or_ephemeral(args.mqtt_listen);
    let server = Server::start(config, Arc::new(SystemClock))
        .await
        .context("starting the demo server")?;
    let http = server.http_addr();
    let mqtt = server.mqtt_addr();
    crate::say(&format!(
        "\n  fleetmon demo\n  dashboard  http://{http}/\n  devices    http://{http}/api/v1/devices\n  mqtt       {mqtt}   (mosquitto_sub -h {} -p {} -t 'fleetmon/v1/+/status' -v)\n  data       {}\n  fleet      {} simulated devices, one batch every {}\n  security   {}\n  Ctrl-C stops.\n",
        mqtt.ip(),
        mqtt.port(),
        args.data_dir.display(),
        args.devices,
        humantime::format_duration(args.interval),
        if server.operators().is_open() {
            "open on loopback: no operator login, devices not authenticated: demo only"
        } else {
            "operators log in (accounts exist in the data directory); devices not authenticated: demo only"
        }
    ));
    // What an operator would have set: each simulated device's site and group.
    for index in 0..args.devices {
        let device = format!("demo-{index:05}");
        let identity = fleetmon_sim::Identity::new(1, index, device.clone());
        let tags = [
            ("site", identity.site.name),
            ("group", identity.model.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        server
            .state()
            .set_tags(&device, tags)
            .context("tagging the demo fleet")?;
    }
    // Each device carries on after the last batch the server stored of it, as a real agent
    // with its persisted seq would, so a rerun shows neither duplicates nor gaps.
    let resume = {
        let registry = server.state().registry();
        (0..args.devices)
            .filter_map(|i| {
                let id = format!("demo-{i:05}");
                let last = registry.get(&id)?.integrity.stored().last()?;
                Some((id, last + 1))
            })
            .collect()
    };
    let options = SimOptions {
        mqtt: mqtt.to_string(),
        devices: args.devices,
        interval: args.interval,
        seed: 1,
        prefix: "demo-".to_owned(),
        resume,
        format: Format::Protobuf,
        drain_timeout: std::time::Duration::from_secs(5),
        // No end (duration, batches), no progress bar, no faults.
        ..SimOptions::default()
    };
    let summary = fleetmon_sim::run(options, crate::wait_for_signal()).await;
    match summary {
        Ok(s) => tracing::info!(
            batches = s.batches_sent,
            acked = s.batches_acked,
            "simulated fleet stopped"
        ),
        Err(e) => tracing::error!(error = %e, "simulated fleet failed"),
    }
    server.shutdown().await;
    Ok(())
}

/// `addr` if it can be bound now, else the same IP with a port the OS picks.
fn free_or_ephemeral(addr: SocketAddr) -> SocketAddr {
    match TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "address taken; using a free port");
            SocketAddr::new(addr.ip(), 0)
        }
    }
}

/// The demo's firmware policy, so the simulated fleet shows what a real one would: a
/// vulnerable gateway release, an old Raspberry Pi image, battery sensors behind the minimum.
/// Written once into the data directory; edit it there and restart to see the health change.
const DEMO_FIRMWARE_POLICY: &str = r#"# fleetmon demo firmware policy (see docs/health.md). Edit and restart the demo.
[[minimum]]
model = "*"
version = "1.5.0"

[[vulnerable]]
advisory = "FM-DEMO-0001 gateway TLS bypass"
versions = ">=3.2.0, <3.2.1"

[[vulnerable]]
advisory = "FM-DEMO-0002 kernel privilege escalation"
versions = ">=2024.06.0, <2024.09.0"
"#;

fn demo_firmware_policy(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join("firmware-policy.toml");
    if !path.exists() {
        std::fs::write(&path, DEMO_FIRMWARE_POLICY)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}
