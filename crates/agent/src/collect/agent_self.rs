//! The agent's own cost: CPU seconds and resident memory from `<proc_root>/self/stat` and
//! `<proc_root>/self/status`, and counters kept by the uplink and the spool in [`AgentStats`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{CollectError, Out, Roots, read_opt};

/// Counters the other parts of the agent update and the collector reports.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Payload bytes handed to the network (MQTT publishes and HTTP bodies, resends included).
    pub uplink_bytes: AtomicU64,
    /// Bytes the spool holds on disk.
    pub spool_bytes: AtomicU64,
    /// Batches the spool dropped because it was full, since the spool was created.
    pub spool_dropped: AtomicU64,
    /// True while sampling at the low-power interval.
    pub low_power: AtomicBool,
}

/// utime + stime of `/proc/self/stat`, in clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After ')': state is field 3 of the man page; utime is 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn collect(roots: &Roots, stats: &AgentStats, out: &mut Out) -> Result<(), CollectError> {
    let path = roots.proc_root.join("self/stat");
    if let Some(text) = read_opt(&path)? {
        let ticks = cpu_ticks(&text).ok_or_else(|| CollectError::parse(&path, "utime/stime"))?;
        let hz = rustix::param::clock_ticks_per_second();
        out.push("agent_cpu_seconds_total", &[], ticks as f64 / hz as f64);
    }
    if let Some(text) = read_opt(&roots.proc_root.join("self/status"))?
        && let Some(kb) = text.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_ascii_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    {
        out.push("agent_resident_bytes", &[], (kb * 1024) as f64);
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    out.push("agent_uplink_bytes_total", &[], get(&stats.uplink_bytes));
    out.push("agent_spool_bytes", &[], get(&stats.spool_bytes));
    out.push(
        "agent_spool_dropped_batches_total",
        &[],
        get(&stats.spool_dropped),
    );
    out.push(
        "agent_low_power",
        &[],
        f64::from(u8::from(stats.low_power.load(Ordering::Relaxed))),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ticks_skips_a_command_with_spaces() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5";
        assert_eq!(super::cpu_ticks(stat), Some(300));
    }
}
