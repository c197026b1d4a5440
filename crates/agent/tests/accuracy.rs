//! Accuracy against the live machine: what the agent reports must match what `/proc`,
//! `statvfs` (through `df`) and `/proc/stat` say at the same moment. The expectations are
//! computed here, independently of the agent's parsers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetmon_agent::collect::{AgentStats, Collector, Roots};
use fleetmon_protocol::Sample;

fn collector() -> Collector {
    Collector::new(
        Roots::default(),
        "unknown".into(),
        Arc::new(AgentStats::default()),
    )
}

fn value(samples: &[Sample], metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.metric == metric
                && label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
}

fn meminfo() -> BTreeMap<String, f64> {
    std::fs::read_to_string("/proc/meminfo")
        .expect("/proc and df output parse")
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').expect("/proc and df output parse");
            let kb: f64 = v
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .expect("/proc and df output parse");
            (k.to_owned(), kb)
        })
        .collect()
}

#[test]
fn memory_and_swap_ratios_match_proc_meminfo() {
    let before = meminfo();
    let samples = collector().collect(0);
    let after = meminfo();
    for m in [&before, &after] {
        let used = 1.0 - m["MemAvailable"] / m["MemTotal"];
        let got = value(&samples, "memory_used_ratio", None).expect("/proc and df output parse");
        assert!((got - used).abs() <= 0.01, "memory {got} vs {used}");
        let swap = if m["SwapTotal"] > 0.0 {
            (m["SwapTotal"] - m["SwapFree"]) / m["SwapTotal"]
        } else {
            0.0
        };
        let got = value(&samples, "swap_used_ratio", None).expect("/proc and df output parse");
        assert!((got - swap).abs() <= 0.01, "swap {got} vs {swap}");
        assert_eq!(
            value(&samples, "memory_total_bytes", None).expect("/proc and df output parse"),
            m["MemTotal"] * 1024.0
        );
    }
}

#[test]
fn filesystem_ratios_match_df() {
    let samples = collector().collect(0);
    let mounts: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == "filesystem_used_ratio")
        .collect();
    assert!(!mounts.is_empty(), "the root filesystem at least");
    for s in mounts {
        let mp = &s.labels["mountpoint"];
        // df -P: 1024-blocks Used Available Capacity; Use% = used / (used + avail).
        let out = std::process::Command::new("df")
            .args(["-P", "-B1", mp])
            .output()
            .expect("/proc and df output parse");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text
            .lines()
            .nth(1)
            .expect("/proc and df output parse")
            .split_whitespace()
            .collect();
        let size: f64 = f[1].parse().expect("/proc and df output parse");
        let used: f64 = f[2].parse().expect("/proc and df output parse");
        let avail: f64 = f[3].parse().expect("/proc and df output parse");
        let want = used / (used + avail);
        assert!(
            (s.value - want).abs() <= 0.01,
            "{mp}: {} vs df {want}",
            s.value
        );
        let got_size = value(&samples, "filesystem_size_bytes", Some(("mountpoint", mp)))
            .expect("/proc and df output parse");
        assert_eq!(got_size, size, "{mp} size");
    }
}

/// interface → [rx bytes, rx packets, tx bytes, tx packets].
fn net_dev() -> BTreeMap<String, [f64; 4]> {
    std::fs::read_to_string("/proc/net/dev")
        .expect("/proc and df output parse")
        .lines()
        .skip(2)
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("/proc and df output parse");
            let v: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().expect("/proc and df output parse"))
                .collect();
            (name.trim().to_owned(), [v[0], v[1], v[8], v[9]])
        })
        .collect()
}

#[test]
fn network_counters_equal_proc_at_read_time() {
    let before = net_dev();
    let samples = collector().collect(0);
    let after = net_dev();
    let mut checked = 0;
    for (iface, b) in &before {
        if iface == "lo" {
            assert!(
                value(
                    &samples,
                    "network_receive_bytes_total",
                    Some(("interface", iface))
                )
                .is_none()
            );
            continue;
        }
        let a = after[iface];
        for (i, metric) in [
            "network_receive_bytes_total",
            "network_receive_packets_total",
            "network_transmit_bytes_total",
            "network_transmit_packets_total",
        ]
        .iter()
        .enumerate()
        {
            let got = value(&samples, metric, Some(("interface", iface)))
                .expect("/proc and df output parse");
            assert!(
                b[i] <= got && got <= a[i],
                "{iface} {metric}: {got} not in [{}, {}]",
                b[i],
                a[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no interface besides lo");
}

/// disk → (sectors read, sectors written) for whole disks.
fn diskstats() -> BTreeMap<String, (f64, f64)> {
    std::fs::read_to_string("/proc/diskstats")
        .expect("/proc and df output parse")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[2].to_owned(),
                (
                    f[5].parse().expect("/proc and df output parse"),
                    f[9].parse().expect("/proc and df output parse"),
                ),
            )
        })
        .filter(|(name, _)| std::path::Path::new("/sys/block").join(name).exists())
        .filter(|(name, _)| {
            !name.starts_with("loop") && !name.starts_with("ram") && !name.starts_with("zram")
        })
        .collect()
}

#[test]
fn disk_counters_equal_proc_at_read_time() {
    let before = diskstats();
    let samples = collector().collect(0);
    let after = diskstats();
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.metric == "disk_read_bytes_total")
            .count(),
        before.len()
    );
    for (disk, (r0, w0)) in &before {
        let (r1, w1) = after[disk];
        let r = value(&samples, "disk_read_bytes_total", Some(("disk", disk)))
            .expect("/proc and df output parse");
        let w = value(&samples, "disk_written_bytes_total", Some(("disk", disk)))
            .expect("/proc and df output parse");
        assert!(r0 * 512.0 <= r && r <= r1 * 512.0, "{disk} read {r}");
        assert!(w0 * 512.0 <= w && w <= w1 * 512.0, "{disk} written {w}");
    }
}

/// (busy, total) jiffies of the aggregate cpu line, computed like psutil.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc and df output parse");
    let line = stat.lines().next().expect("/proc and df output parse");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("/proc and df output parse"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user/nice).
    let total: f64 = v[..8].iter().sum();
    (total - v[3] - v[4], total)
}

#[test]
fn cpu_usage_is_within_five_points_of_proc_stat_over_the_same_window() {
    let mut c = collector();
    // Load one core for part of the window so the figure is not trivially 0.
    let spin = std::thread::spawn(|| {
        let end = std::time::Instant::now() + Duration::from_millis(600);
        let mut x = 0u64;
        while std::time::Instant::now() < end {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        x
    });
    let (b0, t0) = cpu_times();
    c.prime();
    std::thread::sleep(Duration::from_secs(1));
    let samples = c.collect(0);
    let (b1, t1) = cpu_times();
    spin.join().expect("/proc and df output parse");
    let want = (b1 - b0) / (t1 - t0);
    let got = value(&samples, "cpu_usage_ratio", None).expect("/proc and df output parse");
    assert!((got - want).abs() <= 0.05, "cpu {got} vs /proc/stat {want}");
    assert!(got > 0.0, "a spinning thread was running");
}

#[test]
fn listening_ports_over_netlink_equal_the_proc_net_files() {
    // Both read at nearly the same moment; retry once if a socket came or went in between.
    for attempt in 0..3 {
        let netlink = fleetmon_agent::collect::sock_diag::listening().unwrap();
        let files = fleetmon_agent::collect::ports::from_files(&Roots::default())
            .unwrap()
            .unwrap();
        if netlink == files || attempt == 2 {
            assert_eq!(netlink, files);
            break;
        }
    }
    // And the collector reports that set.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let samples = collector().collect(0);
    assert_eq!(
        value(&samples, "listening_port", Some(("port", &port))),
        Some(1.0),
        "a port bound by this test is listed"
    );
}
