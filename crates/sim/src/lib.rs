//! # fleetmon-sim: a fleet of simulated devices speaking the real protocol
//!
//! Each simulated device publishes protocol v1 batches (`fleetmon/v1/{device}/telemetry`,
//! QoS 1) of values that move like a real Raspberry Pi, gateway or battery-powered sensor node
//! would, and records exactly which batches the server acknowledged. By default each device
//! has its own MQTT connection (one tokio task each); with `devices_per_connection` N, one task
//! drives N devices over one shared connection, as behind a gateway, so a fleet of 100,000
//! needs 100,000 / N sockets instead of 100,000. The `fleetmon sim` and `fleetmon demo` commands call
//! [`run`]; tests use its [`Summary`] to check the server stored every acknowledged batch
//! exactly once. With [`Faults`] in the options, devices also lose, duplicate and corrupt
//! batches, go offline and run wrong clocks on purpose, and the [`Truth`] says exactly what a
//! server's integrity counters should show.
//!
//! ## Layout
//! - [`options`]: [`SimOptions`], checked before anything starts.
//! - [`identity`]: who each device is (model, site, boot id), from the seed.
//! - [`model`]: the device models and their hardware facts.
//! - `signal`, `battery`: random walks, daily cycles, bursts, lags, counters; a Li-ion battery.
//! - [`generator`]: one device's evolving values, as batches.
//! - `outbox`: a connection's unacknowledged messages and the packet-id → (device, seq)
//!   mapping that survives reconnects.
//! - `device`: one device's own state: its batches, seqs, backlog and summary.
//! - `connection`: one MQTT connection's life for its devices: connect, publish, reconnect,
//!   drain, close; who speaks for whom when devices share it.
//! - [`summary`]: what the run did, as seq ranges.
//! - [`faults`]: which batches are lost, duplicated or corrupted, offline windows, clock skew.
//! - [`scenario`]: value faults (overheating, a failing battery, a filling disk, a new
//!   listening port...) on chosen devices from a start time for a while, from a TOML file.
//! - [`truth`]: the ground truth of the injected faults, as a server should count them.
//! - `stats`, `progress`: live counters and the optional progress bar.

pub mod faults;
pub mod generator;
pub mod identity;
pub mod model;
pub mod options;
pub mod scenario;
pub mod summary;
pub mod truth;

mod battery;
mod connection;
mod device;
mod error;
mod outbox;
mod progress;
mod signal;
mod stats;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::info;

pub use error::SimError;
pub use faults::Faults;
pub use identity::Identity;
pub use model::Model;
pub use options::SimOptions;
pub use scenario::{DeviceFaults, Scenario, ScenarioError};
pub use summary::{DeviceSummary, SampleCounts, Summary};
pub use truth::{DeviceTruth, Outage, Truth};

use connection::{ConnectionConfig, run_connection};
use device::DeviceConfig;
use progress::Progress;
use stats::FleetStats;

/// `now + d`, saturating at a far future instead of panicking on overflow (a huge duration
/// given on the command line means "practically never").
pub(crate) fn later(now: Instant, d: std::time::Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(now)
}

/// Unacknowledged batches a device holds before it stops producing new ones (per device, also
/// when devices share a connection).
pub const MAX_UNACKED: usize = 1_000;

/// Runs the simulation until every device has produced its batches, the duration has passed,
/// or `stop` resolves; then drains, says `offline`, disconnects and returns what happened.
///
/// Must be called inside a tokio runtime (it spawns one task per connection). A broker that is
/// unreachable is not an error: devices keep retrying, and the summary shows what was
/// acknowledged.
pub async fn run(
    opts: SimOptions,
    stop: impl Future<Output = ()> + Send,
) -> Result<Summary, SimError> {
    let endpoint = opts.validate()?;
    let started = Instant::now();
    let stats = Arc::new(FleetStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = opts
        .progress
        .then(|| Progress::start(&opts, Arc::clone(&stats)));
    info!(
        devices = opts.devices,
        connections = opts.connections(),
        mqtt = %opts.mqtt,
        interval = ?opts.interval,
        format = opts.format.as_str(),
        "starting simulated fleet"
    );

    let n = opts.devices;
    let per_connection = opts.devices_per_connection;
    let connections = opts.connections();
    let mut tasks = Vec::with_capacity(connections);
    // Scenario windows are relative to this moment, on the devices' clocks.
    let origin_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for c in 0..connections {
        let first = c * per_connection;
        let devices: Vec<DeviceConfig> = (first..n.min(first + per_connection))
            .map(|index| {
                let identity = Identity::new(opts.seed, index, opts.device_id(index));
                let first_seq = opts
                    .resume
                    .get(&identity.device)
                    .copied()
                    .unwrap_or(opts.first_seq);
                let value_faults = opts
                    .scenario
                    .as_ref()
                    .map(|s| s.device_faults(index, identity.model, origin_ms))
                    .unwrap_or_default();
                DeviceConfig {
                    identity,
                    first_seq,
                    faults: opts.faults.plan(opts.seed, index, first_seq, opts.interval),
                    value_faults,
                }
            })
            .collect();
        // Spread the connections over the first interval.
        let offset = opts.interval.mul_f64(c as f64 / connections as f64);
        let cfg = ConnectionConfig {
            endpoint: endpoint.clone(),
            start_at: later(started, offset),
            interval: opts.interval,
            batches: opts.batches,
            format: opts.format,
            drain_timeout: opts.drain_timeout,
            max_unacked: MAX_UNACKED,
            // Outages need one device per connection (checked above): the device's own.
            outage: devices.first().and_then(|d| d.faults.outage),
            run_started: started,
        };
        let head = devices
            .first()
            .map(|d| d.identity.device.clone())
            .unwrap_or_default();
        let task = tokio::spawn(run_connection(
            cfg,
            devices,
            stop_rx.clone(),
            Arc::clone(&stats),
        ));
        tasks.push((head, task));
    }
    drop(stop_rx);

    // Collect in device order; meanwhile watch for the end of the run.
    let collector = tokio::spawn(async move {
        let mut devices = Vec::with_capacity(n);
        for (device, task) in tasks {
            match task.await {
                Ok(summaries) => devices.extend(summaries),
                Err(e) => {
                    return Err(SimError::DeviceTask {
                        device,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(devices)
    });
    tokio::pin!(collector);
    tokio::pin!(stop);
    let deadline = opts.duration.map(|d| later(started, d));
    let mut stopping = false;
    let collected = loop {
        tokio::select! {
            joined = &mut collector => break joined,
            () = &mut stop, if !stopping => {
                info!("stop requested; draining");
                stopping = true;
                let _ = stop_tx.send(true);
            }
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() && !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
            }
        }
    };
    if let Some(progress) = progress {
        progress.finish();
    }
    let devices = collected.map_err(|e| SimError::DeviceTask {
        device: "(collector)".to_owned(),
        reason: e.to_string(),
    })??;
    let summary = Summary {
        seed: opts.seed,
        ..Summary::from_devices(devices, started.elapsed().as_secs_f64())
    };
    info!(
        batches_produced = summary.batches_produced,
        batches_acked = summary.batches_acked,
        batches_skipped = summary.batches_skipped,
        resends = summary.resends,
        elapsed_s = summary.elapsed_secs,
        "simulated fleet finished"
    );
    if !opts.faults.is_none() {
        info!(
            lost = summary.batches_lost,
            duplicated = summary.batches_duplicated,
            corrupted = summary.batches_corrupted,
            "injected faults"
        );
    }
    if let Some(path) = &opts.truth {
        Truth::of(&summary).write(path)?;
        info!(path = %path.display(), "ground truth written");
    }
    Ok(summary)
}
