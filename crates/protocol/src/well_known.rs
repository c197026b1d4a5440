//! The static string table of frame version 2: metric names, label names and common label
//! values the agent sends in every collection (DESIGN.md's metric table and the agent's
//! collectors). A v2 batch refers to these by index, so a well-known name costs one byte and
//! never crosses the wire as text.
//!
//! **Append-only.** An entry's index is part of frame version 2: entries are only ever added
//! at the end, never removed, reordered or changed. A batch says how many entries it relies
//! on, so a newer sender that uses entries an older server does not know is refused with a
//! clear error, and an older sender keeps decoding on a newer server. Changing an existing
//! entry needs a new frame version. `docs/protocol.md` lists the table; a test holds the two
//! together.

/// The well-known strings of frame version 2, index = position.
pub const WELL_KNOWN: &[&str] = &[
    // 0..: metric names, cpu, memory, disk.
    "cpu_usage_ratio",
    "cpu_core_usage_ratio",
    "load1",
    "load5",
    "load15",
    "memory_total_bytes",
    "memory_available_bytes",
    "memory_used_ratio",
    "swap_total_bytes",
    "swap_used_bytes",
    "swap_used_ratio",
    "filesystem_size_bytes",
    "filesystem_avail_bytes",
    "filesystem_used_ratio",
    "disk_read_bytes_total",
    "disk_written_bytes_total",
    // 16..: network.
    "network_receive_bytes_total",
    "network_receive_packets_total",
    "network_receive_errors_total",
    "network_receive_drops_total",
    "network_transmit_bytes_total",
    "network_transmit_packets_total",
    "network_transmit_errors_total",
    "network_transmit_drops_total",
    // 24..: environment and power.
    "temperature_celsius",
    "humidity_ratio",
    "battery_charge_ratio",
    "battery_voltage_volts",
    "battery_current_amperes",
    "battery_power_watts",
    "battery_discharging",
    "power_source_mains",
    // 32..: system, probes, the agent's own cost.
    "uptime_seconds",
    "processes",
    "listening_ports",
    "listening_port",
    "device_info",
    "probe_rtt_seconds",
    "probe_jitter_seconds",
    "probe_loss_ratio",
    "agent_cpu_seconds_total",
    "agent_resident_bytes",
    "agent_uplink_bytes_total",
    "agent_spool_bytes",
    "agent_spool_dropped_batches_total",
    "agent_low_power",
    // 46..: label names.
    "core",
    "mountpoint",
    "fstype",
    "disk",
    "interface",
    "sensor",
    "battery",
    "target",
    "protocol",
    "port",
    "os",
    "kernel",
    "firmware",
    "agent_version",
    "model",
    // 61..: label values seen on most devices.
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "server",
    "tcp",
    "udp",
    "unknown",
    "/",
    "/boot",
    "/boot/firmware",
    "ext4",
    "vfat",
    "tmpfs",
    "btrfs",
    "xfs",
    "f2fs",
    "overlay",
    "mmcblk0",
    "mmcblk1",
    "sda",
    "sdb",
    "nvme0n1",
    "vda",
    "eth0",
    "eth1",
    "wlan0",
    "wlan1",
    "usb0",
    "wwan0",
    "end0",
    "cpu",
    "cpu-thermal",
    "BAT0",
    "BAT1",
];

/// Index of `s` in [`WELL_KNOWN`], if it is there.
pub fn index_of(s: &str) -> Option<u32> {
    // A linear scan of ~100 short strings, once per distinct string of a batch: cheaper than
    // building a map on a device, and the table is a constant.
    WELL_KNOWN
        .iter()
        .position(|w| *w == s)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_unique_and_one_byte_indices() {
        let mut seen = std::collections::HashSet::new();
        for s in WELL_KNOWN {
            assert!(seen.insert(*s), "{s} appears twice");
        }
        // Room is left below 128 for a batch's own strings to stay one-byte indices too.
        assert!(WELL_KNOWN.len() < 128);
    }

    #[test]
    fn docs_list_exactly_this_table() {
        let doc = include_str!("../../../docs/protocol.md");
        let (begin, end) = (
            "<!-- well-known table: begin -->\n",
            "<!-- well-known table: end -->",
        );
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        let mut expected = String::from("```text\n");
        for (i, s) in WELL_KNOWN.iter().enumerate() {
            expected.push_str(&format!("{i:>3}  {s}\n"));
        }
        expected.push_str("```\n");
        assert_eq!(
            &doc[start..stop],
            expected,
            "docs/protocol.md's table differs"
        );
    }

    #[test]
    fn indices_are_frozen() {
        // Append-only: these positions are part of frame version 2.
        assert_eq!(index_of("cpu_usage_ratio"), Some(0));
        assert_eq!(index_of("network_receive_bytes_total"), Some(16));
        assert_eq!(index_of("temperature_celsius"), Some(24));
        assert_eq!(index_of("uptime_seconds"), Some(32));
        assert_eq!(index_of("core"), Some(46));
        assert_eq!(index_of("0"), Some(61));
        assert_eq!(index_of("BAT1"), Some(99));
        assert_eq!(WELL_KNOWN.len(), 100);
    }
}
