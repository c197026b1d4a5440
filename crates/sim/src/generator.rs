//! The moving values of one simulated device: every metric of the data model that its
//! model's profile has, evolving like a real machine instead of white noise.
//!
//! CPU follows the local time of day with random bursts (a backup, an update); memory, disk,
//! network and process counts move with it; the CPU temperature follows the load with thermal
//! lag on top of a daily ambient cycle; batteries drain and charge (see `battery.rs`); probe
//! round trips wander and spike during congestion. Counters only grow, ratios stay in `[0, 1]`.
//! Values depend only on the device's seed and the timestamps it is stepped at.

use fastrand::Rng;
use fleetmon_protocol::{Batch, Sample};

use crate::battery::Battery;
use crate::identity::Identity;
use crate::model::Profile;
use crate::scenario::{DeviceFaults, FaultKind};
use crate::signal::{
    Bursts, Counter, Lag, MeanReverting, diurnal, gaussian, happens, mix, poisson, uniform,
};

/// Reported as `device_info{agent_version}`.
const AGENT_VERSION: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));
/// Local hour of peak activity and of the warmest ambient temperature.
const BUSY_HOUR: f64 = 14.0;
const WARM_HOUR: f64 = 15.0;

/// Counters of one network interface.
#[derive(Debug, Clone)]
struct NetCounters {
    rx_bytes: Counter,
    tx_bytes: Counter,
    rx_packets: Counter,
    tx_packets: Counter,
    rx_errors: Counter,
    tx_errors: Counter,
    rx_drops: Counter,
    tx_drops: Counter,
}

/// The evolving state of one device's measurements.
#[derive(Debug, Clone)]
pub struct Generator {
    identity: Identity,
    profile: &'static Profile,
    rng: Rng,
    last_ts_ms: Option<i64>,
    elapsed_s: f64,
    cores: Vec<MeanReverting>,
    cpu_burst: Bursts,
    burst_core: usize,
    loads: [Lag; 3],
    memory_total: f64,
    memory_used: MeanReverting,
    swap_used: Lag,
    fs_used: Vec<f64>,
    disk_read: Counter,
    disk_written: Counter,
    net: Vec<NetCounters>,
    net_burst: Bursts,
    cpu_temp: Lag,
    temp_noise: MeanReverting,
    ambient: Lag,
    humidity: MeanReverting,
    battery: Option<Battery>,
    processes: MeanReverting,
    rtt_walk: MeanReverting,
    loss_walk: MeanReverting,
    congestion: Bursts,
    /// Value faults (see [`crate::scenario`]) and their own random stream, so a fault
    /// changes only what it is about: everything else matches the healthy run.
    faults: DeviceFaults,
    fault_rng: Rng,
    /// Per filesystem: the fill fault under way (its start) and the bytes used then.
    fill_from: Vec<Option<(i64, f64)>>,
}

/// What the active value faults do at one instant.
#[derive(Debug, Default)]
struct Effects<'a> {
    cpu_at_least: Option<f64>,
    memory_at_least: Option<(f64, f64)>,
    /// Target temperature and how far along the ramp (0..1).
    overheat: Option<(f64, f64)>,
    battery_drain_per_s: f64,
    /// Mount point, when the fill started and how long it takes.
    disk_fill: Vec<(&'a str, i64, i64)>,
    rtt: Option<f64>,
    jitter: Option<f64>,
    loss: Option<f64>,
    ports: Vec<(&'a str, u16)>,
    firmware: Option<&'a str>,
    shifts: Vec<(&'a str, f64)>,
}

impl<'a> Effects<'a> {
    fn at(faults: &'a DeviceFaults, ts_ms: i64) -> Self {
        let mut fx = Effects::default();
        for w in faults.windows.iter().filter(|w| w.active(ts_ms)) {
            match &w.kind {
                FaultKind::Overheat { celsius, ramp_ms } => {
                    let along = if *ramp_ms <= 0 {
                        1.0
                    } else {
                        ((ts_ms - w.start_ms) as f64 / *ramp_ms as f64).clamp(0.0, 1.0)
                    };
                    fx.overheat = Some((*celsius, along));
                }
                FaultKind::BatteryDrain { empty_in_ms } => {
                    fx.battery_drain_per_s += 1_000.0 / (*empty_in_ms).max(1) as f64;
                }
                FaultKind::Cpu { ratio } => {
                    fx.cpu_at_least = Some(fx.cpu_at_least.map_or(*ratio, |r| r.max(*ratio)));
                }
                FaultKind::Memory { ratio, swap_ratio } => {
                    fx.memory_at_least = Some((*ratio, *swap_ratio));
                }
                FaultKind::DiskFill {
                    mountpoint,
                    full_in_ms,
                } => fx
                    .disk_fill
                    .push((mountpoint, w.start_ms, (*full_in_ms).max(1))),
                FaultKind::Network {
                    rtt_seconds,
                    jitter_seconds,
                    loss_ratio,
                } => {
                    fx.rtt = rtt_seconds.or(fx.rtt);
                    fx.jitter = jitter_seconds.or(fx.jitter);
                    fx.loss = loss_ratio.or(fx.loss);
                }
                FaultKind::ListeningPort { protocol, port } => fx.ports.push((protocol, *port)),
                FaultKind::Firmware { version } => fx.firmware = Some(version),
                FaultKind::Anomaly { metric, shift } => fx.shifts.push((metric, *shift)),
            }
        }
        fx
    }
}

/// Near `value`: ±5 %, as a measurement held there by a fault still wobbles.
fn near(rng: &mut Rng, value: f64) -> f64 {
    value * (1.0 + 0.05 * (2.0 * rng.f64() - 1.0))
}

impl Generator {
    /// The device's state at the start of the run, from its identity's value seed.
    pub fn new(identity: &Identity) -> Self {
        let profile = identity.model.profile();
        let mut rng = Rng::with_seed(identity.value_seed);
        let uptime = identity.uptime_at_start_s;
        let cores = (0..profile.cores)
            .map(|_| {
                let start = profile.cpu_base * uniform(&mut rng, 0.7, 1.3);
                MeanReverting::new(start, 0.05, 0.015, 0.005, 1.0)
            })
            .collect();
        let load_start = profile.cpu_base * profile.cores as f64;
        let memory_total = profile.memory_choices[rng.usize(0..profile.memory_choices.len())];
        let fs_used = profile
            .filesystems
            .iter()
            .map(|fs| fs.size_bytes * uniform(&mut rng, 0.15, 0.7))
            .collect();
        let counter =
            |rate: f64, rng: &mut Rng| Counter::new(uptime * rate * uniform(rng, 0.5, 1.5));
        let disk_read = counter(profile.disk_read_bytes_per_s, &mut rng);
        let disk_written = counter(profile.disk_write_bytes_per_s, &mut rng);
        let net = profile
            .interfaces
            .iter()
            .map(|i| {
                let rx = uptime * i.rx_bytes_per_s * uniform(&mut rng, 0.5, 1.5);
                let tx = uptime * i.tx_bytes_per_s * uniform(&mut rng, 0.5, 1.5);
                let rx_packets = rx / i.rx_packet_bytes;
                let tx_packets = tx / i.tx_packet_bytes;
                NetCounters {
                    rx_bytes: Counter::new(rx),
                    tx_bytes: Counter::new(tx),
                    rx_packets: Counter::new(rx_packets),
                    tx_packets: Counter::new(tx_packets),
                    rx_errors: Counter::new(rx_packets * i.error_rate),
                    tx_errors: Counter::new(tx_packets * i.error_rate * 0.2),
                    rx_drops: Counter::new(rx_packets * i.drop_rate),
                    tx_drops: Counter::new(tx_packets * i.drop_rate * 0.2),
                }
            })
            .collect();
        let battery = profile.battery.then(|| Battery::new(&mut rng));
        let ambient_start = if profile.outdoor { 14.0 } else { 22.0 };
        Self {
            identity: identity.clone(),
            profile,
            last_ts_ms: None,
            elapsed_s: 0.0,
            cores,
            cpu_burst: Bursts::new(1.0 / 900.0, 20.0, 240.0),
            burst_core: rng.usize(0..profile.cores),
            loads: [
                Lag::new(load_start, 60.0),
                Lag::new(load_start, 300.0),
                Lag::new(load_start, 900.0),
            ],
            memory_total,
            memory_used: MeanReverting::new(profile.memory_base, 1.0 / 600.0, 0.0017, 0.05, 0.97),
            swap_used: Lag::new(profile.swap_bytes.unwrap_or(0.0) * 0.02, 600.0),
            fs_used,
            disk_read,
            disk_written,
            net,
            net_burst: Bursts::new(1.0 / 1_800.0, 30.0, 600.0),
            cpu_temp: Lag::new(
                ambient_start + profile.heat_idle_c + profile.heat_gain_c * profile.cpu_base,
                profile.thermal_tau_s,
            ),
            temp_noise: MeanReverting::new(0.0, 0.1, 0.1, -2.0, 2.0),
            ambient: Lag::new(ambient_start, 900.0),
            humidity: MeanReverting::new(0.0, 1.0 / 1_800.0, 0.0024, -0.3, 0.3),
            battery,
            processes: MeanReverting::new(0.0, 1.0 / 300.0, 0.33, -30.0, 30.0),
            rtt_walk: MeanReverting::new(0.0, 1.0 / 120.0, 0.019, -1.0, 0.4),
            loss_walk: MeanReverting::new(0.001, 1.0 / 600.0, 0.0001, 0.0, 1.0),
            congestion: Bursts::new(1.0 / 3_600.0, 30.0, 600.0),
            faults: DeviceFaults::default(),
            fill_from: vec![None; profile.filesystems.len()],
            fault_rng: Rng::with_seed(mix(identity.value_seed, 0xFA_17)),
            rng,
        }
    }

    /// Applies these value faults from now on (replacing any earlier ones).
    pub fn set_faults(&mut self, faults: DeviceFaults) {
        self.faults = faults;
    }

    /// The device's value faults.
    pub fn faults(&self) -> &DeviceFaults {
        &self.faults
    }

    /// The device this generator speaks for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A batch numbered `seq` with the device's samples at `now_ms`.
    pub fn batch(&mut self, seq: u64, now_ms: i64) -> Batch {
        Batch {
            device: self.identity.device.clone(),
            boot_id: self.identity.boot_id.clone(),
            seq,
            sent_at_ms: now_ms,
            dropped_before: 0,
            samples: self.samples(now_ms),
        }
    }

    /// Advances the state to `ts_ms` and returns one sample of every metric, stamped `ts_ms`.
    pub fn samples(&mut self, ts_ms: i64) -> Vec<Sample> {
        let dt = self
            .last_ts_ms
            .map_or(0.0, |last| (ts_ms - last).max(0) as f64 / 1_000.0);
        self.last_ts_ms = Some(ts_ms);
        self.elapsed_s += dt;
        let p = self.profile;
        let site = self.identity.site;
        let rng = &mut self.rng;
        let frng = &mut self.fault_rng;
        let fx = Effects::at(&self.faults, ts_ms);
        let mut out = Out::new(ts_ms);

        // How busy this hour of the local day is, 0 (night) to 1 (afternoon).
        let busy = (diurnal(ts_ms, site.utc_offset_h, BUSY_HOUR) + 1.0) / 2.0;

        // CPU: a daily rhythm plus bursts that mostly load one core.
        let burst = self.cpu_burst.step(rng, dt);
        let base = p.cpu_base + p.cpu_daily * busy;
        let mut cpu_sum = 0.0;
        let mut per_core = Vec::with_capacity(self.cores.len());
        for (i, core) in self.cores.iter_mut().enumerate() {
            // A burst (a backup, an update) keeps one core busy, not pegged: a healthy device
            // stays clear of the 90 % the CpuHigh rule looks for.
            let extra = if i == self.burst_core { 0.55 } else { 0.2 };
            let mut v = core.step(rng, dt, (base + extra * burst).min(1.0));
            if let Some(at_least) = fx.cpu_at_least {
                v = v.max(at_least + (1.0 - at_least) * frng.f64());
            }
            cpu_sum += v;
            per_core.push(v);
        }
        let cpu = (cpu_sum / self.cores.len() as f64).clamp(0.0, 1.0);
        out.push("cpu_usage_ratio", &[], cpu);
        for (i, v) in per_core.iter().enumerate() {
            out.push("cpu_core_usage_ratio", &[("core", &i.to_string())], *v);
        }
        let runnable = cpu * p.cores as f64 + 0.15 * gaussian(rng).abs();
        for (name, lag) in ["load1", "load5", "load15"]
            .into_iter()
            .zip(&mut self.loads)
        {
            out.push(name, &[], lag.step(dt, runnable).max(0.0));
        }

        // Memory rises a little with the day and with a burst.
        let mut used = self
            .memory_used
            .step(rng, dt, p.memory_base + 0.05 * busy + 0.15 * burst);
        if let Some((at_least, _)) = fx.memory_at_least {
            used = used.max(at_least + (0.995 - at_least).max(0.0) * frng.f64());
        }
        out.push("memory_total_bytes", &[], self.memory_total);
        out.push(
            "memory_available_bytes",
            &[],
            (self.memory_total * (1.0 - used)).round(),
        );
        out.push("memory_used_ratio", &[], used);
        if let Some(swap_total) = p.swap_bytes {
            let pressure = ((used - 0.8) * 5.0).clamp(0.0, 1.0);
            let target = swap_total * (0.02 + 0.9 * pressure);
            let mut swap = self.swap_used.step(dt, target).clamp(0.0, swap_total);
            if let Some((_, at_least)) = fx.memory_at_least {
                let floor = at_least + (0.995 - at_least).max(0.0) * frng.f64();
                swap = swap.max(swap_total * floor);
            }
            let swap = swap.round();
            out.push("swap_total_bytes", &[], swap_total);
            out.push("swap_used_bytes", &[], swap);
            out.push("swap_used_ratio", &[], swap / swap_total);
        }

        // Disk: activity follows the day and bursts; logs fill the filesystem, rotation frees it.
        let activity = (0.5 + busy) * (1.0 + 3.0 * burst);
        let read = p.disk_read_bytes_per_s * activity * (0.3 * gaussian(rng)).exp() * dt;
        let written = p.disk_write_bytes_per_s * activity * (0.3 * gaussian(rng)).exp() * dt;
        for ((fs, used_bytes), fill_from) in p
            .filesystems
            .iter()
            .zip(&mut self.fs_used)
            .zip(&mut self.fill_from)
        {
            *used_bytes += written * 0.05;
            if happens(rng, 1.0 / 21_600.0, dt) {
                *used_bytes -= fs.size_bytes * uniform(rng, 0.002, 0.01);
            }
            // A filling disk (a runaway log, say): what was free is used up steadily, to nearly
            // the last byte, in the fault's time.
            let mut most = 0.98;
            match fx.disk_fill.iter().find(|(m, ..)| *m == fs.mountpoint) {
                Some(&(_, start_ms, full_in_ms)) => {
                    let (from_ms, from_used) =
                        *fill_from.get_or_insert((start_ms.max(ts_ms), *used_bytes));
                    let along = ((ts_ms - from_ms) as f64 / full_in_ms as f64).clamp(0.0, 1.0);
                    let wobble = 0.002 * fs.size_bytes * frng.f64();
                    let target = from_used + (0.9995 * fs.size_bytes - from_used) * along;
                    *used_bytes = used_bytes.max(target - wobble);
                    most = 0.9995;
                }
                None => *fill_from = None,
            }
            *used_bytes = used_bytes.clamp(0.05 * fs.size_bytes, most * fs.size_bytes);
            let labels = [("mountpoint", fs.mountpoint), ("fstype", fs.fstype)];
            out.push("filesystem_size_bytes", &labels, fs.size_bytes.round());
            out.push(
                "filesystem_avail_bytes",
                &labels,
                (fs.size_bytes - *used_bytes).round(),
            );
            out.push(
                "filesystem_used_ratio",
                &labels,
                *used_bytes / fs.size_bytes,
            );
        }
        let disk = [("disk", p.disk)];
        out.push("disk_read_bytes_total", &disk, self.disk_read.add(read));
        out.push(
            "disk_written_bytes_total",
            &disk,
            self.disk_written.add(written),
        );

        // Network: traffic follows the day, with occasional bulk transfers.
        let net_burst = self.net_burst.step(rng, dt);
        for (iface, c) in p.interfaces.iter().zip(&mut self.net) {
            let factor = (0.5 + busy) * (1.0 + 4.0 * net_burst);
            let rx = iface.rx_bytes_per_s * factor * (0.25 * gaussian(rng)).exp() * dt;
            let tx = iface.tx_bytes_per_s * factor * (0.25 * gaussian(rng)).exp() * dt;
            let rx_packets = rx / iface.rx_packet_bytes;
            let tx_packets = tx / iface.tx_packet_bytes;
            let labels = [("interface", iface.name)];
            out.push("network_receive_bytes_total", &labels, c.rx_bytes.add(rx));
            out.push("network_transmit_bytes_total", &labels, c.tx_bytes.add(tx));
            out.push(
                "network_receive_packets_total",
                &labels,
                c.rx_packets.add(rx_packets),
            );
            out.push(
                "network_transmit_packets_total",
                &labels,
                c.tx_packets.add(tx_packets),
            );
            let mut rare = |counter: &mut Counter, mean: f64| {
                let n = poisson(rng, mean);
                counter.add(n as f64)
            };
            let rx_errors = rare(&mut c.rx_errors, rx_packets * iface.error_rate);
            let tx_errors = rare(&mut c.tx_errors, tx_packets * iface.error_rate * 0.2);
            let rx_drops = rare(&mut c.rx_drops, rx_packets * iface.drop_rate);
            let tx_drops = rare(&mut c.tx_drops, tx_packets * iface.drop_rate * 0.2);
            out.push("network_receive_errors_total", &labels, rx_errors);
            out.push("network_transmit_errors_total", &labels, tx_errors);
            out.push("network_receive_drops_total", &labels, rx_drops);
            out.push("network_transmit_drops_total", &labels, tx_drops);
        }

        // Temperatures: ambient follows the day; the CPU follows its load with thermal lag.
        let daily = diurnal(ts_ms, site.utc_offset_h, WARM_HOUR);
        let ambient_target = if p.outdoor {
            14.0 + 8.0 * daily
        } else {
            22.0 + 2.0 * daily
        };
        let ambient = self.ambient.step(dt, ambient_target);
        let cpu_target = ambient + p.heat_idle_c + p.heat_gain_c * cpu;
        let noise = self.temp_noise.step(rng, dt, 0.0);
        let mut cpu_temp = self.cpu_temp.step(dt, cpu_target) + noise;
        if let Some((target, along)) = fx.overheat {
            cpu_temp += (target + noise - cpu_temp) * along;
        }
        out.push(
            "temperature_celsius",
            &[("sensor", "cpu")],
            round_to(cpu_temp, 3),
        );
        if p.ambient_sensor {
            out.push(
                "temperature_celsius",
                &[("sensor", "ambient")],
                round_to(ambient + 0.3 * noise, 2),
            );
            let humidity = 0.55 - 0.2 * daily + self.humidity.step(rng, dt, 0.0);
            out.push(
                "humidity_ratio",
                &[("sensor", "ambient")],
                round_to(humidity.clamp(0.05, 1.0), 3),
            );
        }

        // Power.
        if let Some(battery) = &mut self.battery {
            let r = battery.step_failing(rng, dt, cpu, fx.battery_drain_per_s);
            let bat = [("battery", "BAT0")];
            out.push("battery_charge_ratio", &bat, r.charge_ratio);
            out.push("battery_voltage_volts", &bat, round_to(r.voltage_volts, 3));
            out.push(
                "battery_current_amperes",
                &bat,
                round_to(r.current_amperes, 3),
            );
            out.push("battery_power_watts", &bat, round_to(r.power_watts, 3));
            out.push(
                "battery_discharging",
                &bat,
                f64::from(u8::from(r.discharging)),
            );
            out.push("power_source_mains", &[], f64::from(u8::from(r.mains)));
        }

        // System.
        out.push(
            "uptime_seconds",
            &[],
            (self.identity.uptime_at_start_s + self.elapsed_s).floor(),
        );
        let processes = p.processes_base + 15.0 * burst + self.processes.step(rng, dt, 0.0);
        out.push("processes", &[], processes.round().max(1.0));
        let mut ports: Vec<(&str, u16)> = p.listening_ports.to_vec();
        for extra in &fx.ports {
            if !ports.contains(extra) {
                ports.push(*extra);
            }
        }
        out.push("listening_ports", &[], ports.len() as f64);
        for (protocol, port) in &ports {
            out.push(
                "listening_port",
                &[("protocol", protocol), ("port", &port.to_string())],
                1.0,
            );
        }
        let id = &self.identity;
        out.push(
            "device_info",
            &[
                ("os", id.os),
                ("kernel", id.kernel),
                ("firmware", fx.firmware.unwrap_or(id.firmware)),
                ("agent_version", AGENT_VERSION),
                ("model", id.model.as_str()),
            ],
            1.0,
        );

        // Probes: round trips wander, get slower when busy and spike during congestion.
        let congestion = self.congestion.step(rng, dt);
        let walk = self.rtt_walk.step(rng, dt, 0.0);
        // A congested uplink is slower, jumpier and loses a little, but a healthy one stays
        // inside the built-in network thresholds (500 ms, 100 ms jitter, 10 % loss): the worst
        // case, a cellular gateway at the farthest site at its busiest, is about 450 ms.
        let rtt =
            site.rtt_s * p.rtt_factor * (1.0 + 0.25 * busy) * walk.exp() * (1.0 + 0.4 * congestion);
        let jitter =
            rtt * (0.03 + 0.1 * congestion) * (0.15 * gaussian(rng).clamp(-2.5, 2.5)).exp();
        let loss_base = self.loss_walk.step(rng, dt, 0.001);
        let loss = (loss_base + congestion * uniform(rng, 0.0, 0.06)).clamp(0.0, 1.0);
        let rtt = fx.rtt.map_or(rtt, |v| near(frng, v));
        let jitter = fx.jitter.map_or(jitter, |v| near(frng, v));
        let loss = fx.loss.map_or(loss, |v| near(frng, v).clamp(0.0, 1.0));
        out.push("probe_rtt_seconds", &[], round_to(rtt, 6));
        out.push("probe_jitter_seconds", &[], round_to(jitter, 6));
        out.push("probe_loss_ratio", &[], loss);

        for (metric, shift) in &fx.shifts {
            for s in out.samples.iter_mut().filter(|s| s.metric == *metric) {
                // The CPU sensor, not the room's.
                if s.labels.get("sensor").is_some_and(|v| v != "cpu") {
                    continue;
                }
                s.value += shift;
                if metric.ends_with("_ratio") {
                    s.value = s.value.clamp(0.0, 1.0);
                } else if *metric != "temperature_celsius" {
                    s.value = s.value.max(0.0);
                }
            }
        }
        out.samples
    }
}

/// Rounds to `decimals` decimal places, as a sensor with that resolution would report.
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Collects the samples of one step, all with the same timestamp.
struct Out {
    ts_ms: i64,
    samples: Vec<Sample>,
}

impl Out {
    fn new(ts_ms: i64) -> Self {
        Self {
            ts_ms,
            samples: Vec::with_capacity(40),
        }
    }

    fn push(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        let mut sample = Sample::new(metric, self.ts_ms, value);
        for (name, v) in labels {
            sample = sample.with_label(*name, *v);
        }
        self.samples.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleetmon_protocol::{Limits, decode, encode_json, encode_protobuf};

    use super::*;
    use crate::model::Model;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn series_key(s: &Sample) -> String {
        format!("{}{:?}", s.metric, s.labels)
    }

    /// `steps` batches of one device of `model`, `step_s` seconds apart.
    fn run(model: Model, seed: u64, steps: usize, step_s: i64) -> Vec<Batch> {
        let id = Identity::with_model(seed, 3, "sim-00003".into(), model);
        let mut g = Generator::new(&id);
        (0..steps)
            .map(|i| g.batch(i as u64 + 1, T0 + i as i64 * step_s * 1_000))
            .collect()
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        for model in Model::ALL {
            assert_eq!(run(model, 7, 50, 10), run(model, 7, 50, 10));
            assert_ne!(run(model, 7, 50, 10), run(model, 8, 50, 10));
        }
    }

    #[test]
    fn every_batch_is_valid_and_round_trips() {
        for model in Model::ALL {
            for batch in run(model, 1, 30, 10) {
                batch.validate(&Limits::default()).unwrap();
                let n = batch.samples.len();
                assert!((20..=50).contains(&n), "{model}: {n} samples");
                assert!(batch.samples.iter().all(|s| s.value.is_finite()));
                assert!(batch.samples.iter().all(|s| s.ts_ms == batch.sent_at_ms));
                let (back, _) = decode(&encode_protobuf(&batch), &Limits::default()).unwrap();
                assert_eq!(back, batch);
                let (back, _) = decode(&encode_json(&batch), &Limits::default()).unwrap();
                assert_eq!(back, batch);
            }
        }
    }

    #[test]
    fn ranges_hold_and_counters_never_decrease() {
        for model in Model::ALL {
            for seed in 0..4 {
                // Three simulated days at one-minute steps.
                let batches = run(model, seed, 3 * 1_440, 60);
                let mut last: BTreeMap<String, f64> = BTreeMap::new();
                for batch in &batches {
                    for s in &batch.samples {
                        let m = s.metric.as_str();
                        if m.ends_with("_ratio") {
                            assert!((0.0..=1.0).contains(&s.value), "{m} = {}", s.value);
                        } else {
                            assert!(s.value >= 0.0 || m == "temperature_celsius", "{m}");
                        }
                        if m == "temperature_celsius" {
                            assert!((-40.0..=110.0).contains(&s.value), "{m} = {}", s.value);
                        }
                        let key = series_key(s);
                        if (m.ends_with("_total") || m == "uptime_seconds")
                            && let Some(prev) = last.get(&key)
                        {
                            assert!(s.value >= *prev, "{key} fell: {prev} -> {}", s.value);
                        }
                        last.insert(key, s.value);
                    }
                }
            }
        }
    }

    fn values(batches: &[Batch], metric: &str, label: Option<(&str, &str)>) -> Vec<f64> {
        batches
            .iter()
            .flat_map(|b| &b.samples)
            .filter(|s| s.metric == metric)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
            .map(|s| s.value)
            .collect()
    }

    #[test]
    fn values_move_like_measurements_not_noise() {
        let batches = run(Model::Rpi4, 2, 1_440, 60);
        let cpu = values(&batches, "cpu_usage_ratio", None);
        // Neighbouring samples are close (a random walk), not independent draws.
        let mean_step: f64 =
            cpu.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (cpu.len() - 1) as f64;
        let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
        let spread =
            (cpu.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cpu.len() as f64).sqrt();
        assert!(mean_step < spread, "step {mean_step} vs spread {spread}");
        assert!(spread > 0.01, "cpu should move: {spread}");
        // Counters grow at plausible rates: eth0 receives roughly 18 kB/s over a day.
        let rx = values(
            &batches,
            "network_receive_bytes_total",
            Some(("interface", "eth0")),
        );
        let per_s = (rx[rx.len() - 1] - rx[0]) / (1_439.0 * 60.0);
        assert!((5_000.0..60_000.0).contains(&per_s), "{per_s} B/s");
        // The CPU is warmer than the room and follows the load.
        let temp = values(&batches, "temperature_celsius", Some(("sensor", "cpu")));
        assert!(temp.iter().all(|t| (30.0..90.0).contains(t)));
    }

    #[test]
    fn battery_charge_falls_while_discharging() {
        let mut saw = 0;
        for seed in 0..3 {
            let batches = run(Model::BatterySensor, seed, 2 * 1_440, 60);
            let charge = values(&batches, "battery_charge_ratio", None);
            let discharging = values(&batches, "battery_discharging", None);
            let mains = values(&batches, "power_source_mains", None);
            for i in 1..charge.len() {
                assert_eq!(discharging[i], 1.0 - mains[i]);
                if discharging[i] == 1.0 && discharging[i - 1] == 1.0 {
                    assert!(charge[i] < charge[i - 1] || charge[i] == 0.0);
                    saw += 1;
                }
            }
        }
        assert!(saw > 1_000);
    }

    #[test]
    fn models_report_what_their_hardware_has() {
        let metrics = |model| -> Vec<String> {
            run(model, 1, 1, 10)[0]
                .samples
                .iter()
                .map(series_key)
                .collect()
        };
        let pi = metrics(Model::Rpi4);
        assert_eq!(
            pi.iter()
                .filter(|k| k.starts_with("cpu_core_usage_ratio"))
                .count(),
            4
        );
        assert!(pi.iter().any(|k| k.starts_with("swap_used_ratio")));
        assert!(!pi.iter().any(|k| k.starts_with("battery_")));
        let gw = metrics(Model::Gateway);
        assert!(gw.iter().any(|k| k.contains("wwan0")));
        assert!(!gw.iter().any(|k| k.starts_with("swap_")));
        let sensor = metrics(Model::BatterySensor);
        assert!(sensor.iter().any(|k| k.starts_with("battery_charge_ratio")));
        assert!(sensor.iter().any(|k| k.starts_with("humidity_ratio")));
        // Series are unique within a batch.
        for keys in [pi, gw, sensor] {
            let unique: std::collections::BTreeSet<_> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len());
        }
    }

    /// `steps` one-minute batches of device 3 of `model` with the scenario `toml` applied.
    fn run_faulty(model: Model, toml: &str, steps: usize) -> Vec<Batch> {
        let id = Identity::with_model(1, 3, "sim-00003".into(), model);
        let scenario = crate::Scenario::parse(toml, "test").unwrap();
        let mut g = Generator::new(&id);
        g.set_faults(scenario.device_faults(3, model, T0));
        (0..steps)
            .map(|i| g.batch(i as u64 + 1, T0 + i as i64 * 60_000))
            .collect()
    }

    fn fault(kind: &str, params: &str) -> String {
        format!("[[fault]]\nkind = \"{kind}\"\ndevices = [3]\nstart = \"30m\"\n{params}\n")
    }

    #[test]
    fn value_faults_change_what_they_are_about_and_nothing_else() {
        let healthy = run(Model::Rpi4, 1, 120, 60);
        let cpu = run_faulty(Model::Rpi4, &fault("cpu", "ratio = 0.96"), 120);
        // Before the window the device is exactly the healthy one.
        assert_eq!(healthy[..30], cpu[..30]);
        let usage = values(&cpu, "cpu_usage_ratio", None);
        assert!(usage[30..].iter().all(|v| *v >= 0.96), "{:?}", &usage[30..]);
        assert!(
            values(&healthy, "cpu_usage_ratio", None)
                .iter()
                .all(|v| *v < 0.9)
        );

        let hot = run_faulty(
            Model::Rpi4,
            &fault("overheat", "celsius = 95\nramp = \"10m\""),
            120,
        );
        let temp = values(&hot, "temperature_celsius", Some(("sensor", "cpu")));
        assert!(temp[..30].iter().all(|t| *t < 80.0));
        assert!(temp[40..].iter().all(|t| *t > 90.0), "{:?}", &temp[40..]);

        let mem = run_faulty(Model::Rpi4, &fault("memory", ""), 120);
        assert!(
            values(&mem, "memory_used_ratio", None)[30..]
                .iter()
                .all(|v| *v >= 0.95)
        );
        assert!(
            values(&mem, "swap_used_ratio", None)[30..]
                .iter()
                .all(|v| *v >= 0.9)
        );

        let disk = run_faulty(Model::Rpi4, &fault("disk-fill", "full_in = \"1h\""), 120);
        let avail = values(&disk, "filesystem_avail_bytes", Some(("mountpoint", "/")));
        assert!(
            avail[31..40].windows(2).all(|w| w[1] < w[0]),
            "falls steadily"
        );
        let used = values(&disk, "filesystem_used_ratio", Some(("mountpoint", "/")));
        assert!(used[119] > 0.99, "{}", used[119]);

        let net = run_faulty(Model::Gateway, &fault("network", "loss_ratio = 0.3"), 60);
        let loss = values(&net, "probe_loss_ratio", None);
        assert!(loss[30..].iter().all(|v| (0.28..=0.32).contains(v)));
        assert!(
            values(&net, "probe_rtt_seconds", None)
                .iter()
                .all(|v| *v < 0.5)
        );

        let port = run_faulty(Model::Rpi4, &fault("listening-port", "port = 4444"), 60);
        let open = |b: &Batch| {
            b.samples
                .iter()
                .filter(|s| s.metric == "listening_port")
                .map(|s| s.labels["port"].clone())
                .collect::<Vec<_>>()
        };
        assert!(!open(&port[29]).contains(&"4444".to_owned()));
        assert!(open(&port[30]).contains(&"4444".to_owned()));
        assert_eq!(values(&port, "listening_ports", None)[30], 7.0);

        let fw = run_faulty(
            Model::Rpi4,
            &fault("firmware", "version = \"2023.01.0\"\nduration = \"10m\""),
            60,
        );
        let firmware = |b: &Batch| {
            b.samples
                .iter()
                .find(|s| s.metric == "device_info")
                .map(|s| s.labels["firmware"].clone())
                .unwrap()
        };
        assert_eq!(firmware(&fw[35]), "2023.01.0");
        assert_ne!(firmware(&fw[29]), "2023.01.0");
        assert_ne!(firmware(&fw[40]), "2023.01.0", "back after the window");

        let odd = run_faulty(
            Model::Rpi4,
            &fault(
                "anomaly",
                "metric = \"cpu_usage_ratio\"\nshift = 0.5\nduration = \"2m\"",
            ),
            60,
        );
        let a = values(&odd, "cpu_usage_ratio", None);
        let h = values(&healthy, "cpu_usage_ratio", None);
        assert!(((a[30] - h[30]) - 0.5).abs() < 1e-9);
        assert_eq!(a[32], h[32]);
    }

    #[test]
    fn a_failing_battery_is_empty_within_the_fault_time() {
        for seed in 0..3 {
            let id = Identity::with_model(seed, 3, "sim-00003".into(), Model::BatterySensor);
            let scenario =
                crate::Scenario::parse(&fault("battery-drain", "empty_in = \"90m\""), "t").unwrap();
            let mut g = Generator::new(&id);
            g.set_faults(scenario.device_faults(3, Model::BatterySensor, T0));
            let batches: Vec<Batch> = (0..130)
                .map(|i| g.batch(i + 1, T0 + i as i64 * 60_000))
                .collect();
            let charge = values(&batches, "battery_charge_ratio", None);
            let discharging = values(&batches, "battery_discharging", None);
            assert!(charge[31..].windows(2).all(|w| w[1] < w[0] || w[1] == 0.0));
            assert!(discharging[31..].iter().all(|d| *d == 1.0));
            assert_eq!(charge[121], 0.0, "empty 90 minutes after the start");
        }
    }

    #[test]
    fn healthy_battery_nodes_are_never_within_a_day_of_empty_at_the_start() {
        // What a forecast sees in the first hours of a run: the drain is slow enough that
        // even the emptiest starting charge lasts more than a day.
        for seed in 0..20 {
            let batches = run(Model::BatterySensor, seed, 120, 60);
            let charge = values(&batches, "battery_charge_ratio", None);
            let per_hour = (charge[0] - charge[119]) / (119.0 / 60.0);
            if per_hour > 0.0 {
                assert!(
                    charge[119] / per_hour > 24.0,
                    "seed {seed}: {} h",
                    charge[119] / per_hour
                );
            }
        }
    }
}
