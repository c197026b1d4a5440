//! A realistic fleet workload for tests and benches, shaped like `crates/sim`'s generator (not
//! depending on it): per device 30 series — ratios that wander (full-precision floats), loads
//! with lag, byte gauges rounded to integers, integer counters that only grow, constants
//! (totals, sizes), a linear uptime, temperatures with two decimals, probe round trips — sampled
//! every `step_ms` with a little timestamp jitter, as real agents produce.

#![allow(dead_code)]

use fleetmon_tsdb::Labels;

/// What each series does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ratio,
    Load,
    Constant(f64),
    GaugeBytes(f64),
    Counter(f64),
    Uptime,
    Celsius,
    Rtt,
    Integer(f64),
}

/// One device's series and their state.
#[derive(Debug)]
pub struct Device {
    pub labels: Vec<Labels>,
    kinds: Vec<Kind>,
    state: Vec<f64>,
    rng: fastrand::Rng,
}

const MIX: [(&str, &str, &str); 30] = [
    ("cpu_usage_ratio", "", ""),
    ("cpu_core_usage_ratio", "core", "0"),
    ("cpu_core_usage_ratio", "core", "1"),
    ("cpu_core_usage_ratio", "core", "2"),
    ("cpu_core_usage_ratio", "core", "3"),
    ("load1", "", ""),
    ("load5", "", ""),
    ("load15", "", ""),
    ("memory_total_bytes", "", ""),
    ("memory_available_bytes", "", ""),
    ("memory_used_ratio", "", ""),
    ("swap_total_bytes", "", ""),
    ("swap_used_bytes", "", ""),
    ("filesystem_size_bytes", "mountpoint", "/"),
    ("filesystem_avail_bytes", "mountpoint", "/"),
    ("filesystem_used_ratio", "mountpoint", "/"),
    ("disk_read_bytes_total", "disk", "mmcblk0"),
    ("disk_written_bytes_total", "disk", "mmcblk0"),
    ("network_receive_bytes_total", "interface", "eth0"),
    ("network_transmit_bytes_total", "interface", "eth0"),
    ("network_receive_packets_total", "interface", "eth0"),
    ("network_transmit_packets_total", "interface", "eth0"),
    ("network_receive_errors_total", "interface", "eth0"),
    ("network_receive_drops_total", "interface", "eth0"),
    ("temperature_celsius", "sensor", "cpu"),
    ("uptime_seconds", "", ""),
    ("processes", "", ""),
    ("probe_rtt_seconds", "", ""),
    ("probe_loss_ratio", "", ""),
    ("agent_resident_bytes", "", ""),
];

fn kind(metric: &str) -> Kind {
    match metric {
        "memory_total_bytes" => Kind::Constant(1_073_741_824.0),
        "swap_total_bytes" => Kind::Constant(536_870_912.0),
        "filesystem_size_bytes" => Kind::Constant(31_914_983_424.0),
        "memory_available_bytes" | "swap_used_bytes" | "filesystem_avail_bytes" => {
            Kind::GaugeBytes(4.0e8)
        }
        "agent_resident_bytes" => Kind::GaugeBytes(9.0e6),
        "disk_read_bytes_total" | "disk_written_bytes_total" => Kind::Counter(40_000.0),
        "network_receive_bytes_total" | "network_transmit_bytes_total" => Kind::Counter(12_000.0),
        "network_receive_packets_total" | "network_transmit_packets_total" => Kind::Counter(30.0),
        "network_receive_errors_total" | "network_receive_drops_total" => Kind::Counter(0.01),
        "uptime_seconds" => Kind::Uptime,
        "temperature_celsius" => Kind::Celsius,
        "processes" => Kind::Integer(140.0),
        "probe_rtt_seconds" => Kind::Rtt,
        "load1" | "load5" | "load15" => Kind::Load,
        _ => Kind::Ratio,
    }
}

impl Device {
    /// Device number `n` of a fleet, with `site` and `model` tags like the registry attaches.
    pub fn new(n: usize) -> Self {
        let device = format!("dev-{n:05}");
        let site = format!("site-{}", n % 20);
        let model = ["rpi4", "rpi3", "x86-gw"][n % 3];
        let mut labels = Vec::new();
        let mut kinds = Vec::new();
        for (metric, k, v) in MIX {
            let mut pairs = vec![
                ("device", device.as_str()),
                ("site", site.as_str()),
                ("model", model),
            ];
            if !k.is_empty() {
                pairs.push((k, v));
            }
            labels.push(Labels::from_metric(metric, pairs.iter().copied()).expect("valid labels"));
            kinds.push(kind(metric));
        }
        let mut rng = fastrand::Rng::with_seed(n as u64);
        let state = kinds
            .iter()
            .map(|k| match k {
                Kind::Ratio => rng.f64() * 0.5,
                Kind::Load => rng.f64(),
                Kind::Constant(c) => *c,
                Kind::GaugeBytes(c) => (c * (0.5 + rng.f64())).round(),
                Kind::Counter(_) => (rng.f64() * 1e9).floor(),
                Kind::Uptime => (rng.f64() * 1e6).floor(),
                Kind::Celsius => 45.0,
                Kind::Rtt => 0.02,
                Kind::Integer(c) => *c,
            })
            .collect();
        Self {
            labels,
            kinds,
            state,
            rng,
        }
    }

    /// Advances every series by `step_ms` and returns their new values, in `labels` order.
    pub fn step(&mut self, step_ms: i64) -> Vec<f64> {
        let dt = step_ms as f64 / 1000.0;
        let rng = &mut self.rng;
        let gauss = |rng: &mut fastrand::Rng| (rng.f64() + rng.f64() + rng.f64() - 1.5) * 1.4;
        for (k, s) in self.kinds.iter().zip(&mut self.state) {
            *s = match *k {
                Kind::Ratio => (*s + 0.1 * (0.3 - *s) + 0.03 * gauss(rng)).clamp(0.0, 1.0),
                Kind::Load => (*s * 0.9 + 0.1 * (1.0 + gauss(rng))).max(0.0),
                Kind::Constant(c) => c,
                Kind::GaugeBytes(c) => (*s + c * 0.002 * gauss(rng)).max(0.0).round(),
                Kind::Counter(rate) => {
                    let add = rate * dt * (1.0 + 0.5 * gauss(rng)).max(0.0);
                    *s + add.floor()
                }
                Kind::Uptime => *s + dt,
                Kind::Celsius => {
                    ((*s + 0.1 * (48.0 - *s) + 0.3 * gauss(rng)) * 100.0).round() / 100.0
                }
                Kind::Rtt => (*s * (0.05 * gauss(rng)).exp()).clamp(0.001, 2.0),
                Kind::Integer(c) => (*s + (gauss(rng) * 2.0).round()).clamp(c * 0.5, c * 2.0),
            };
        }
        self.state.clone()
    }

    /// A timestamp jitter of a few milliseconds, as a real agent's scheduler has.
    pub fn jitter(&mut self) -> i64 {
        self.rng.i64(0..20)
    }
}
