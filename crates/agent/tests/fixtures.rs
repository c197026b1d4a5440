//! Collection against fixture trees that mimic real boards (`tests/fixtures/*`): a Raspberry
//! Pi 4 with a UPS HAT, a laptop, and a board with no sensors. Exact values are asserted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fleetmon_agent::collect::{AgentStats, Collector, Out, Roots};
use fleetmon_protocol::{Batch, Limits};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn roots(name: &str) -> Roots {
    let f = fixture(name);
    Roots {
        proc_root: f.join("proc"),
        sys_root: f.join("sys"),
        etc_root: f.join("etc"),
        host_root: f.join("host"),
    }
}

/// metric{k=v,...} → value, for exact lookups.
fn collect(name: &str, firmware: &str) -> BTreeMap<String, f64> {
    let mut c = Collector::new(
        roots(name),
        firmware.to_owned(),
        Arc::new(AgentStats::default()),
    );
    let mut out = Out::new(1_700_000_000_000);
    let errors = c.collect_checked(&mut out);
    assert!(errors.is_empty(), "{errors:?}");
    // Every collection is a valid batch.
    let batch = Batch {
        device: "d".into(),
        boot_id: String::new(),
        seq: 1,
        sent_at_ms: 0,
        dropped_before: 0,
        samples: out.samples.clone(),
    };
    batch.validate(&Limits::default()).expect("a valid batch");
    let mut m = BTreeMap::new();
    for s in out.samples {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        assert!(m.insert(key.clone(), s.value).is_none(), "duplicate {key}");
    }
    m
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} missing; have {:#?}", m.keys()))
}

fn family(m: &BTreeMap<String, f64>, metric: &str) -> Vec<String> {
    m.keys()
        .filter(|k| k.split('{').next() == Some(metric))
        .cloned()
        .collect()
}

fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[test]
fn raspberry_pi_4_with_a_ups_hat() {
    let m = collect("pi4-ups", "4942b76");
    assert_eq!(get(&m, "load1"), 0.52);
    assert_eq!(get(&m, "load15"), 0.30);
    assert_eq!(get(&m, "memory_total_bytes"), 3_884_328.0 * 1024.0);
    assert_eq!(get(&m, "memory_available_bytes"), 3_012_345.0 * 1024.0);
    assert_eq!(
        get(&m, "memory_used_ratio"),
        1.0 - 3_012_345.0 / 3_884_328.0
    );
    assert_eq!(get(&m, "swap_total_bytes"), 102_396.0 * 1024.0);
    assert_eq!(get(&m, "swap_used_bytes"), 10_240.0 * 1024.0);
    assert_eq!(get(&m, "swap_used_ratio"), 10_240.0 / 102_396.0);
    // Whole disk only: no partitions, no loop or ram devices.
    assert_eq!(
        get(&m, "disk_read_bytes_total{disk=mmcblk0}"),
        1_834_562.0 * 512.0
    );
    assert_eq!(
        get(&m, "disk_written_bytes_total{disk=mmcblk0}"),
        987_654.0 * 512.0
    );
    assert_eq!(family(&m, "disk_read_bytes_total").len(), 1);
    // Network: every interface but lo, all eight counters.
    assert_eq!(
        get(&m, "network_receive_bytes_total{interface=eth0}"),
        98_765_432.0
    );
    assert_eq!(
        get(&m, "network_receive_packets_total{interface=eth0}"),
        123_456.0
    );
    assert_eq!(get(&m, "network_receive_errors_total{interface=eth0}"), 3.0);
    assert_eq!(get(&m, "network_receive_drops_total{interface=eth0}"), 7.0);
    assert_eq!(
        get(&m, "network_transmit_bytes_total{interface=eth0}"),
        12_345_678.0
    );
    assert_eq!(
        get(&m, "network_transmit_packets_total{interface=eth0}"),
        65_432.0
    );
    assert_eq!(
        get(&m, "network_transmit_errors_total{interface=eth0}"),
        1.0
    );
    assert_eq!(get(&m, "network_transmit_drops_total{interface=eth0}"), 2.0);
    assert_eq!(get(&m, "network_receive_bytes_total{interface=wlan0}"), 0.0);
    assert_eq!(family(&m, "network_receive_bytes_total").len(), 2);
    // Temperatures: the thermal zone and the hwmon channel; rpi_volt has no temperature.
    assert_eq!(get(&m, "temperature_celsius{sensor=cpu-thermal}"), 48.686);
    assert_eq!(
        get(&m, "temperature_celsius{sensor=cpu_thermal_temp1}"),
        48.686
    );
    assert_eq!(family(&m, "temperature_celsius").len(), 2);
    // The UPS HAT: capacity, voltage, current (negative: discharging), power = V × |I|.
    assert_eq!(get(&m, "battery_charge_ratio{battery=ups-hat}"), 0.76);
    assert_eq!(get(&m, "battery_voltage_volts{battery=ups-hat}"), 3.912);
    assert_eq!(get(&m, "battery_current_amperes{battery=ups-hat}"), -0.812);
    assert_eq!(
        get(&m, "battery_power_watts{battery=ups-hat}"),
        3.912 * 0.812
    );
    assert_eq!(get(&m, "battery_discharging{battery=ups-hat}"), 1.0);
    assert_eq!(get(&m, "power_source_mains"), 0.0);
    // System.
    assert_eq!(get(&m, "uptime_seconds"), 12_345.67);
    assert_eq!(get(&m, "processes"), 3.0);
    // Ports: tcp 22 (v4 and v6, once), 80 (v6), 3306 on loopback; udp 68 and 5353; the
    // established tcp and the connected udp socket are not listening.
    assert_eq!(get(&m, "listening_ports"), 5.0);
    for (proto, port) in [
        ("tcp", 22),
        ("tcp", 80),
        ("tcp", 3306),
        ("udp", 68),
        ("udp", 5353),
    ] {
        assert_eq!(
            get(
                &m,
                &format!("listening_port{{port={port},protocol={proto}}}")
            ),
            1.0
        );
    }
    let info = "device_info{agent_version=0.1.0,firmware=4942b76,kernel=6.6.31+rpt-rpi-v8,\
                model=Raspberry Pi 4 Model B Rev 1.5,os=Debian GNU/Linux 12 (bookworm)}";
    assert_eq!(get(&m, info), 1.0);
    // The agent's own cost, from the fixture's /proc/self.
    assert_eq!(get(&m, "agent_cpu_seconds_total"), 300.0 / ticks());
    assert_eq!(get(&m, "agent_resident_bytes"), 4321.0 * 1024.0);
    assert_eq!(get(&m, "agent_spool_dropped_batches_total"), 0.0);
    // Filesystems: the real ones only (statvfs runs on the fixture's host/ tree).
    let fs = family(&m, "filesystem_size_bytes");
    assert_eq!(
        fs,
        vec![
            "filesystem_size_bytes{fstype=ext4,mountpoint=/}".to_owned(),
            "filesystem_size_bytes{fstype=vfat,mountpoint=/boot/firmware}".to_owned(),
        ]
    );
    // No usage without a previous read.
    assert!(family(&m, "cpu_usage_ratio").is_empty());
}

#[test]
fn a_laptop() {
    let m = collect("laptop", "unknown");
    assert_eq!(get(&m, "memory_used_ratio"), 0.5);
    assert_eq!(get(&m, "swap_used_bytes"), 2_097_151.0 * 1024.0);
    // /proc/mounts is the fallback when self/mounts is absent; fuse.portal and efivarfs are
    // pseudo.
    assert_eq!(
        family(&m, "filesystem_avail_bytes"),
        vec![
            "filesystem_avail_bytes{fstype=btrfs,mountpoint=/home}".to_owned(),
            "filesystem_avail_bytes{fstype=btrfs,mountpoint=/}".to_owned(),
            "filesystem_avail_bytes{fstype=vfat,mountpoint=/boot/efi}".to_owned(),
        ]
    );
    // zram has a /sys/block entry but is skipped.
    assert_eq!(
        family(&m, "disk_written_bytes_total"),
        vec!["disk_written_bytes_total{disk=nvme0n1}".to_owned()]
    );
    assert_eq!(
        get(&m, "disk_read_bytes_total{disk=nvme0n1}"),
        80_000_000.0 * 512.0
    );
    assert_eq!(
        get(&m, "network_receive_bytes_total{interface=wlp0s20f3}"),
        2e9
    );
    assert_eq!(get(&m, "temperature_celsius{sensor=acpitz}"), 45.0);
    assert_eq!(
        get(&m, "temperature_celsius{sensor=acpitz_thermal_zone2}"),
        40.0
    );
    assert_eq!(get(&m, "temperature_celsius{sensor=x86_pkg_temp}"), 52.0);
    assert_eq!(
        get(&m, "temperature_celsius{sensor=coretemp_Package id 0}"),
        52.0
    );
    assert_eq!(get(&m, "temperature_celsius{sensor=coretemp_Core 0}"), 49.0);
    assert_eq!(get(&m, "temperature_celsius{sensor=nvme_temp1}"), 38.85);
    assert_eq!(family(&m, "temperature_celsius").len(), 6);
    // BAT0: charge from energy_now/energy_full, power from power_now; no current_now.
    assert_eq!(get(&m, "battery_charge_ratio{battery=BAT0}"), 0.7);
    assert_eq!(get(&m, "battery_voltage_volts{battery=BAT0}"), 11.8);
    assert_eq!(get(&m, "battery_power_watts{battery=BAT0}"), 9.5);
    assert_eq!(get(&m, "battery_discharging{battery=BAT0}"), 1.0);
    assert!(family(&m, "battery_current_amperes").is_empty());
    // A mouse battery that is not present gives nothing.
    assert_eq!(family(&m, "battery_charge_ratio").len(), 1);
    assert_eq!(get(&m, "power_source_mains"), 0.0);
    let info = "device_info{agent_version=0.1.0,firmware=unknown,kernel=6.8.0-45-generic,\
                model=20XW0055GE,os=Ubuntu 24.04.1 LTS}";
    assert_eq!(get(&m, info), 1.0);
    // No /proc/net/tcp etc. in this tree: no port series.
    assert!(family(&m, "listening_ports").is_empty());
}

#[test]
fn a_board_with_no_sensors_gives_no_series_and_no_error() {
    let m = collect("bare", "unknown");
    for absent in [
        "temperature_celsius",
        "humidity_ratio",
        "battery_charge_ratio",
        "battery_discharging",
        "power_source_mains",
        "filesystem_size_bytes",
        "disk_read_bytes_total",
        "listening_ports",
        "agent_cpu_seconds_total",
        "processes",
    ] {
        assert!(family(&m, absent).is_empty(), "{absent} should be absent");
    }
    // Old kernel without MemAvailable: free + buffers + cached.
    assert_eq!(get(&m, "memory_available_bytes"), 150_000.0 * 1024.0);
    assert_eq!(get(&m, "memory_used_ratio"), 0.4);
    assert_eq!(get(&m, "swap_used_ratio"), 0.0);
    assert_eq!(
        get(&m, "network_transmit_packets_total{interface=eth0}"),
        20.0
    );
    assert_eq!(get(&m, "uptime_seconds"), 60.5);
    let info = "device_info{agent_version=0.1.0,firmware=unknown,kernel=unknown,model=unknown,\
                os=unknown}";
    assert_eq!(get(&m, info), 1.0);
}

#[test]
fn cpu_usage_is_the_busy_share_between_two_reads() {
    let dir = tempfile::tempdir().expect("fixture");
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&proc_root).expect("fixture");
    std::fs::write(
        proc_root.join("stat"),
        "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n",
    )
    .expect("fixture");
    let r = Roots {
        proc_root: proc_root.clone(),
        sys_root: dir.path().join("sys"),
        etc_root: dir.path().join("etc"),
        host_root: dir.path().join("host"),
    };
    let mut c = Collector::new(r, "unknown".into(), Arc::new(AgentStats::default()));
    c.prime();
    // cpu0: 300 busy of 400 (iowait counts as idle); cpu1: fully idle.
    std::fs::write(
        proc_root.join("stat"),
        "cpu  400 0 100 1500 0 0 0 0 0 0\ncpu0 350 0 50 450 50 0 0 0 0 0\ncpu1 50 0 50 800 0 0 0 0 0 0\n",
    )
    .expect("fixture");
    let samples = c.collect(1);
    let v = |metric: &str, core: Option<&str>| {
        samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("core").map(String::as_str) == core)
            .map(|s| s.value)
    };
    assert_eq!(v("cpu_usage_ratio", None), Some(0.3));
    assert_eq!(v("cpu_core_usage_ratio", Some("0")), Some(0.75));
    assert_eq!(v("cpu_core_usage_ratio", Some("1")), Some(0.0));
}
