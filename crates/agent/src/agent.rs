//! The agent's main loop: collect every interval into a batch, append it to the spool, and
//! let the MQTT link drain the spool (or, while MQTT is down and `server.http_url` is set,
//! the HTTP fallback). Collection never waits for the network: while the link
//! is down, batches accumulate in the spool (bounded; the oldest are dropped and counted).
//!
//! # Power-aware sampling
//! The interval is `interval`, or `low_power_interval` while in low-power mode: when a
//! battery is discharging below `low_power_below_charge`, or while the server's last
//! `{"command":"low_power","enabled":true}` holds (`enabled: false` hands the decision back
//! to the battery rule). The mode is reported as `agent_low_power` (0/1).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetmon_protocol::{Batch, Limits, Sample, ValidationError, encode_columnar};
use tokio::time::{Instant, sleep_until};
use tracing::{error, info, warn};

use crate::collect::{AgentStats, Collector, Out, read_text, system};
use crate::config::Config;
use crate::probe::{self, Probes};
use crate::spool::{Spool, SpoolError};
use crate::uplink::http::{HttpError, HttpUplink};
use crate::uplink::mqtt::{LinkConfig, MqttLink, Wake};
use crate::uplink::tls::{self, TlsError};

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Batches in flight at once on the MQTT connection.
const WINDOW: u16 = 16;

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Drops samples the protocol would refuse (a sensor label too long, say), so one bad
/// reading never blocks a whole batch. Returns how many were dropped.
pub fn sanitize(device: &str, samples: &mut Vec<Sample>) -> usize {
    let limits = Limits::default();
    let mut removed = 0;
    samples.truncate(limits.max_samples);
    loop {
        let probe = Batch {
            device: device.to_owned(),
            boot_id: String::new(),
            seq: 0,
            sent_at_ms: 0,
            dropped_before: 0,
            samples: std::mem::take(samples),
        };
        let result = probe.validate(&limits);
        *samples = probe.samples;
        let index = match result {
            Ok(()) => return removed,
            Err(
                ValidationError::MetricName { sample, .. }
                | ValidationError::LabelName { sample, .. }
                | ValidationError::DeviceLabel { sample }
                | ValidationError::LabelValueTooLong { sample, .. }
                | ValidationError::TooManyLabels { sample, .. }
                | ValidationError::NegativeTimestamp { sample, .. },
            ) => sample,
            Err(_) => return removed,
        };
        warn!(metric = %samples[index].metric, "sample breaks the protocol's rules; dropped");
        samples.remove(index);
        removed += 1;
    }
}

/// True when a battery discharges below `threshold`.
fn battery_low(samples: &[Sample], threshold: f64) -> bool {
    samples
        .iter()
        .filter(|s| s.metric == "battery_discharging" && s.value > 0.0)
        .any(|d| {
            samples.iter().any(|c| {
                c.metric == "battery_charge_ratio" && c.labels == d.labels && c.value < threshold
            })
        })
}

/// Everything the running agent owns.
pub struct Agent {
    config: Config,
    collector: Collector,
    spool: Spool,
    link: MqttLink,
    http: Option<Arc<HttpUplink>>,
    stats: Arc<AgentStats>,
    probes: Probes,
    boot_id: String,
    battery_low: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device", &self.config.device_id)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Opens the spool and prepares the link; nothing is sent until [`Agent::run`].
    pub fn new(config: Config) -> Result<Self, AgentError> {
        let stats = Arc::new(AgentStats::default());
        let spool = Spool::open(&config.spool.dir, config.spool.max_bytes)?;
        stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        stats
            .spool_dropped
            .store(spool.dropped_total(), Ordering::Relaxed);
        let roots = config.roots();
        let firmware = system::firmware_version(
            config.collect.firmware_file.as_deref(),
            config.collect.firmware_command.as_deref(),
        );
        let boot_id = read_text(&roots.proc_root.join("sys/kernel/random/boot_id"))
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect();
        let collector = Collector::new(roots, firmware, stats.clone());
        let (host, port) = config
            .mqtt_addr()
            .unwrap_or_else(|| ("127.0.0.1".into(), 1883));
        let tls = match &config.server.tls_ca_file {
            Some(ca) => Some(tls::client_config(
                ca,
                config
                    .server
                    .tls_cert_file
                    .as_deref()
                    .zip(config.server.tls_key_file.as_deref()),
            )?),
            None => None,
        };
        let link = MqttLink::new(
            LinkConfig {
                device: config.device_id.clone(),
                host,
                port,
                tls,
                window: WINDOW,
                max_batches_per_second: config.server.max_batches_per_second,
                reconnect_min: Duration::from_millis(500).min(config.server.reconnect_max),
                reconnect_max: config.server.reconnect_max,
                keep_alive: config.server.keep_alive,
                ack_timeout: Duration::from_secs(30),
            },
            stats.clone(),
        );
        let client = config
            .server
            .tls_cert_file
            .as_deref()
            .zip(config.server.tls_key_file.as_deref());
        let http = if config.server.http_url.is_empty() {
            None
        } else {
            Some(Arc::new(HttpUplink::new(
                &config.server.http_url,
                config.server.tls_ca_file.as_deref(),
                client,
            )?))
        };
        Ok(Self {
            config,
            collector,
            spool,
            link,
            http,
            stats,
            probes: Probes::default(),
            boot_id,
            battery_low: false,
        })
    }

    /// The counters the agent reports about itself.
    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    fn low_power(&self) -> bool {
        self.link.low_power_command().unwrap_or(false) || self.battery_low
    }

    fn interval(&self) -> Duration {
        if self.low_power() {
            self.config.low_power_interval
        } else {
            self.config.interval
        }
    }

    /// One collection into the spool.
    fn tick(&mut self) {
        let low = self.low_power();
        if self.stats.low_power.swap(low, Ordering::Relaxed) != low {
            info!(low_power = low, interval = ?self.interval(), "sampling mode changed");
        }
        let mut out = Out::new(wall_clock_ms());
        self.collector.collect_into(&mut out);
        self.link.server_probe().report("server", &mut out);
        probe::report(&self.probes, &mut out);
        let mut samples = out.samples;
        sanitize(&self.config.device_id, &mut samples);
        self.battery_low = battery_low(&samples, self.config.low_power_below_charge);
        if samples.is_empty() {
            return;
        }
        let (device, boot_id) = (&self.config.device_id, &self.boot_id);
        let sent_at_ms = wall_clock_ms();
        // Frame version 2 (columnar): about 8 to 12 bytes a sample, against 38 in version 1.
        // The server reads both, so a spool of version 1 batches from before an upgrade drains.
        let result = self.spool.append_with(|seq, dropped_before| {
            encode_columnar(&Batch {
                device: device.clone(),
                boot_id: boot_id.clone(),
                seq,
                sent_at_ms,
                dropped_before,
                samples: samples.clone(),
            })
        });
        if let Err(e) = result {
            error!(error = %e, "could not spool a batch; it is lost");
        }
        self.stats
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
        self.stats
            .spool_dropped
            .store(self.spool.dropped_total(), Ordering::Relaxed);
    }

    /// While MQTT is down, drains the spool over HTTP (oldest first, at most the configured
    /// rate for one interval), removing what the server answered 200 for.
    async fn http_fallback(&mut self) {
        let Some(http) = self.http.clone() else {
            return;
        };
        if self.link.is_connected() || self.spool.is_empty() {
            return;
        }
        let budget = (f64::from(self.config.server.max_batches_per_second)
            * self.interval().as_secs_f64())
        .ceil()
        .max(1.0) as usize;
        let mut batches = Vec::new();
        for seq in self.spool.after(None, budget) {
            match self.spool.read(seq) {
                Ok(Some(p)) => batches.push((seq, p)),
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "reading the spool failed");
                    return;
                }
            }
        }
        let stats = self.stats.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let mut acked = Vec::new();
            for (seq, payload) in batches {
                stats
                    .uplink_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                match http.post(&payload) {
                    Ok(()) => acked.push(seq),
                    Err(e) => return (acked, Some(e)),
                }
            }
            (acked, None)
        })
        .await;
        let Ok((acked, failure)) = sent else {
            return;
        };
        if let Some(e) = failure {
            warn!(error = %e, "HTTP fallback failed; batches stay in the spool");
        }
        for seq in acked {
            if let Err(e) = self.spool.ack(seq) {
                error!(error = %e, "spool update failed");
            }
        }
        self.stats
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
    }

    /// Runs until `shutdown` completes, then says goodbye to the server and flushes the spool.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        enum Step {
            Stop,
            Tick,
            Link(Wake),
        }
        if !self.config.probe.targets.is_empty() {
            tokio::spawn(probe::run_tcp_probes(
                self.config.probe.targets.clone(),
                self.config.probe.count,
                self.config.probe.timeout,
                self.config.interval,
                self.probes.clone(),
            ));
        }
        info!(
            device = %self.config.device_id,
            server = %self.config.server.mqtt,
            tls = self.config.server.tls_ca_file.is_some(),
            spool = %self.config.spool.dir.display(),
            next_seq = self.spool.next_seq(),
            "agent running"
        );
        self.collector.prime();
        let mut next_tick = Instant::now() + self.interval();
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.link.feed(&self.spool) {
                error!(error = %e, "reading the spool failed");
            }
            let step = tokio::select! {
                biased;
                () = &mut shutdown => Step::Stop,
                () = sleep_until(next_tick) => Step::Tick,
                wake = self.link.wait() => Step::Link(wake),
            };
            match step {
                Step::Stop => break,
                Step::Tick => {
                    self.tick();
                    self.http_fallback().await;
                    // Never catch up in a burst after a stall: the next tick is one interval on.
                    next_tick = Instant::now().max(next_tick) + self.interval();
                }
                Step::Link(wake) => {
                    let was_low = self.low_power();
                    if let Err(e) = self.link.handle(wake, &mut self.spool) {
                        error!(error = %e, "spool update failed");
                    }
                    if self.low_power() != was_low {
                        // A command takes effect at once, not after the old interval.
                        next_tick = Instant::now() + Duration::from_millis(1);
                    }
                }
            }
        }
        info!("stopping");
        self.link
            .close(&mut self.spool, Duration::from_secs(2))
            .await?;
        self.spool.flush()?;
        Ok(())
    }
}

/// Runs the agent on a single-threaded runtime until SIGINT or SIGTERM.
pub fn run_blocking(config: Config) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(async {
        let agent = Agent::new(config)?;
        agent.run(shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_battery_means_discharging_below_the_threshold() {
        let s = |m: &str, v: f64| Sample::new(m, 0, v).with_label("battery", "BAT0");
        assert!(battery_low(
            &[
                s("battery_discharging", 1.0),
                s("battery_charge_ratio", 0.1)
            ],
            0.2
        ));
        assert!(!battery_low(
            &[
                s("battery_discharging", 0.0),
                s("battery_charge_ratio", 0.1)
            ],
            0.2
        ));
        assert!(!battery_low(
            &[
                s("battery_discharging", 1.0),
                s("battery_charge_ratio", 0.5)
            ],
            0.2
        ));
    }

    #[test]
    fn samples_the_protocol_refuses_are_dropped_alone() {
        let mut samples = vec![
            Sample::new("ok", 0, 1.0),
            Sample::new("bad name", 0, 1.0),
            Sample::new("t", 0, 1.0).with_label("sensor", "x".repeat(2000)),
            Sample::new("ok2", 0, 1.0),
        ];
        assert_eq!(sanitize("d", &mut samples), 2);
        let names: Vec<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["ok", "ok2"]);
    }
}
