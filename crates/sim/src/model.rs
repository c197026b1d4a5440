//! The kinds of device the simulator can be, and the fixed facts of each: cores, memory,
//! filesystems, network interfaces, sensors, whether it runs on a battery, and the typical
//! levels its values move around. [`crate::generator`] turns a profile into moving values.

use serde::{Deserialize, Serialize};

/// A simulated device model. The string form is the `model` label of `device_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// A Raspberry Pi 4 class single-board computer on mains power, wired Ethernet.
    Rpi4,
    /// An industrial gateway: dual core, no swap, a LAN port and a cellular uplink.
    Gateway,
    /// A small Linux sensor node on a Li-ion battery, Wi-Fi, with an ambient sensor.
    BatterySensor,
}

impl Model {
    /// Every model, in declaration order.
    pub const ALL: [Model; 3] = [Model::Rpi4, Model::Gateway, Model::BatterySensor];

    /// The name used in labels and the summary: `rpi4`, `gateway`, `battery-sensor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Rpi4 => "rpi4",
            Model::Gateway => "gateway",
            Model::BatterySensor => "battery-sensor",
        }
    }

    /// The model's hardware and workload facts.
    pub(crate) fn profile(self) -> &'static Profile {
        match self {
            Model::Rpi4 => &RPI4,
            Model::Gateway => &GATEWAY,
            Model::BatterySensor => &BATTERY_SENSOR,
        }
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mounted filesystem.
#[derive(Debug)]
pub(crate) struct Filesystem {
    pub mountpoint: &'static str,
    pub fstype: &'static str,
    pub size_bytes: f64,
}

/// A network interface and its typical traffic.
#[derive(Debug)]
pub(crate) struct Interface {
    pub name: &'static str,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    /// Mean packet sizes, to derive packet counters from byte counters.
    pub rx_packet_bytes: f64,
    pub tx_packet_bytes: f64,
    /// Errors and drops per packet (radio links are worse than copper).
    pub error_rate: f64,
    pub drop_rate: f64,
}

/// Fixed facts of a model and the levels its workload moves around.
#[derive(Debug)]
pub(crate) struct Profile {
    pub cores: usize,
    /// Installed memory; a device gets one of these.
    pub memory_choices: &'static [f64],
    pub swap_bytes: Option<f64>,
    pub filesystems: &'static [Filesystem],
    pub disk: &'static str,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub interfaces: &'static [Interface],
    /// Typical CPU usage ratio at the quiet time of day, and the extra at the busy time.
    pub cpu_base: f64,
    pub cpu_daily: f64,
    pub memory_base: f64,
    /// CPU temperature rise above ambient at 100 % CPU, and its thermal time constant.
    pub heat_gain_c: f64,
    pub heat_idle_c: f64,
    pub thermal_tau_s: f64,
    /// Outdoors (a large daily ambient swing) or indoors.
    pub outdoor: bool,
    /// Has an ambient temperature and humidity sensor.
    pub ambient_sensor: bool,
    pub battery: bool,
    pub processes_base: f64,
    /// The services listening on the device, `(protocol, port)`: fixed, as on a real
    /// embedded device (a new one is what the `listening-port` scenario fault adds).
    pub listening_ports: &'static [(&'static str, u16)],
    /// Round-trip time multiplier of the uplink relative to the site's wired baseline.
    pub rtt_factor: f64,
    pub os: &'static str,
    pub kernels: &'static [&'static str],
    pub firmwares: &'static [&'static str],
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

static RPI4: Profile = Profile {
    cores: 4,
    memory_choices: &[2.0 * GIB, 4.0 * GIB, 4.0 * GIB, 8.0 * GIB],
    swap_bytes: Some(512.0 * MIB),
    filesystems: &[Filesystem {
        mountpoint: "/",
        fstype: "ext4",
        size_bytes: 29.7 * GIB,
    }],
    disk: "mmcblk0",
    disk_read_bytes_per_s: 12_000.0,
    disk_write_bytes_per_s: 35_000.0,
    interfaces: &[Interface {
        name: "eth0",
        rx_bytes_per_s: 18_000.0,
        tx_bytes_per_s: 9_000.0,
        rx_packet_bytes: 620.0,
        tx_packet_bytes: 310.0,
        error_rate: 1e-6,
        drop_rate: 2e-5,
    }],
    cpu_base: 0.08,
    cpu_daily: 0.10,
    memory_base: 0.32,
    heat_gain_c: 38.0,
    heat_idle_c: 18.0,
    thermal_tau_s: 90.0,
    outdoor: false,
    ambient_sensor: false,
    battery: false,
    processes_base: 160.0,
    listening_ports: &[
        ("tcp", 22),
        ("tcp", 80),
        ("tcp", 443),
        ("tcp", 9100),
        ("udp", 68),
        ("udp", 123),
    ],
    rtt_factor: 1.0,
    os: "debian-12",
    kernels: &[
        "6.6.51+rpt-rpi-v8",
        "6.6.62+rpt-rpi-v8",
        "6.12.25+rpt-rpi-v8",
    ],
    firmwares: &["2024.06.1", "2024.09.0", "2024.11.2", "2025.02.0"],
};

static GATEWAY: Profile = Profile {
    cores: 2,
    memory_choices: &[1.0 * GIB, 2.0 * GIB],
    swap_bytes: None,
    filesystems: &[Filesystem {
        mountpoint: "/",
        fstype: "ext4",
        size_bytes: 7.3 * GIB,
    }],
    disk: "mmcblk2",
    disk_read_bytes_per_s: 4_000.0,
    disk_write_bytes_per_s: 20_000.0,
    interfaces: &[
        Interface {
            name: "eth0",
            rx_bytes_per_s: 45_000.0,
            tx_bytes_per_s: 8_000.0,
            rx_packet_bytes: 410.0,
            tx_packet_bytes: 180.0,
            error_rate: 1e-6,
            drop_rate: 1e-5,
        },
        Interface {
            name: "wwan0",
            rx_bytes_per_s: 6_000.0,
            tx_bytes_per_s: 32_000.0,
            rx_packet_bytes: 260.0,
            tx_packet_bytes: 900.0,
            error_rate: 2e-4,
            drop_rate: 1e-3,
        },
    ],
    cpu_base: 0.12,
    cpu_daily: 0.15,
    memory_base: 0.48,
    heat_gain_c: 25.0,
    heat_idle_c: 14.0,
    thermal_tau_s: 240.0,
    outdoor: false,
    ambient_sensor: false,
    battery: false,
    processes_base: 95.0,
    listening_ports: &[
        ("tcp", 22),
        ("tcp", 53),
        ("tcp", 443),
        ("tcp", 502),
        ("tcp", 1883),
        ("tcp", 8883),
        ("udp", 53),
        ("udp", 123),
        ("udp", 161),
    ],
    rtt_factor: 2.5,
    os: "yocto-5.0",
    kernels: &["6.1.55-imx8mm", "6.6.23-imx8mm"],
    firmwares: &["3.2.0", "3.2.1", "3.3.0"],
};

static BATTERY_SENSOR: Profile = Profile {
    cores: 1,
    memory_choices: &[512.0 * MIB],
    swap_bytes: None,
    filesystems: &[Filesystem {
        mountpoint: "/",
        fstype: "ext4",
        size_bytes: 14.6 * GIB,
    }],
    disk: "mmcblk0",
    disk_read_bytes_per_s: 1_500.0,
    disk_write_bytes_per_s: 4_000.0,
    interfaces: &[Interface {
        name: "wlan0",
        rx_bytes_per_s: 900.0,
        tx_bytes_per_s: 2_200.0,
        rx_packet_bytes: 180.0,
        tx_packet_bytes: 420.0,
        error_rate: 5e-4,
        drop_rate: 2e-3,
    }],
    cpu_base: 0.04,
    cpu_daily: 0.03,
    memory_base: 0.55,
    heat_gain_c: 20.0,
    heat_idle_c: 8.0,
    thermal_tau_s: 60.0,
    outdoor: true,
    ambient_sensor: true,
    battery: true,
    processes_base: 70.0,
    listening_ports: &[("tcp", 22), ("udp", 68)],
    rtt_factor: 1.6,
    os: "debian-12",
    kernels: &["6.6.51+rpt-rpi-v7", "6.6.62+rpt-rpi-v7"],
    firmwares: &["1.4.2", "1.5.0"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_coherent() {
        for model in Model::ALL {
            let p = model.profile();
            assert!(p.cores >= 1);
            assert!(!p.memory_choices.is_empty() && !p.kernels.is_empty());
            assert!(!p.firmwares.is_empty() && !p.filesystems.is_empty());
            assert!(p.cpu_base + p.cpu_daily < 1.0);
            assert!(p.memory_base > 0.0 && p.memory_base < 1.0);
            assert!(p.interfaces.iter().all(|i| i.rx_packet_bytes > 0.0));
        }
        assert_eq!(
            serde_json::to_string(&Model::BatterySensor).unwrap(),
            "\"battery-sensor\""
        );
    }
}
