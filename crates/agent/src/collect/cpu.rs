//! CPU usage from `/proc/stat` and load averages from `/proc/loadavg`.
//!
//! Usage is a rate, so it needs two reads: `cpu_usage_ratio` is the busy share of the time
//! that passed between the previous collection (or [`CpuState::prime`]) and this one, exactly
//! as psutil's `cpu_percent(interval=...)` computes it: total = user + nice + system + idle +
//! iowait + irq + softirq + steal (guest time is already inside user and nice), busy = total
//! − idle − iowait. The first collection without a previous read reports no usage.

use std::collections::BTreeMap;

use super::{CollectError, Out, Roots, read, read_opt};

/// Jiffies of one cpu line: (busy, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    pub busy: u64,
    pub total: u64,
}

/// The last cpu times read, `None` for the aggregate before the first read.
#[derive(Debug, Default)]
pub struct CpuState {
    all: Option<Times>,
    cores: BTreeMap<String, Times>,
}

/// Parses `/proc/stat` into the aggregate and per-core times (`cpu0` → `"0"`).
pub fn parse_stat(text: &str) -> (Option<Times>, BTreeMap<String, Times>) {
    let mut all = None;
    let mut cores = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(id) = name.strip_prefix("cpu") else {
            continue;
        };
        let v: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        let total = (0..8).map(get).sum::<u64>();
        let idle = get(3) + get(4);
        let t = Times {
            busy: total.saturating_sub(idle),
            total,
        };
        if id.is_empty() {
            all = Some(t);
        } else {
            cores.insert(id.to_owned(), t);
        }
    }
    (all, cores)
}

/// Busy share between two reads; `None` when no time passed (or the counters went back).
pub fn usage(prev: Times, now: Times) -> Option<f64> {
    let dt = now.total.checked_sub(prev.total)?;
    if dt == 0 {
        return None;
    }
    let db = now.busy.saturating_sub(prev.busy);
    Some((db as f64 / dt as f64).clamp(0.0, 1.0))
}

impl CpuState {
    /// Reads the times without reporting.
    pub fn prime(&mut self, roots: &Roots) -> Result<(), CollectError> {
        let text = read(&roots.proc_root.join("stat"))?;
        (self.all, self.cores) = parse_stat(&text);
        Ok(())
    }

    pub fn collect(&mut self, roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
        let path = roots.proc_root.join("stat");
        if let Some(text) = read_opt(&path)? {
            let (all, cores) = parse_stat(&text);
            if let (Some(prev), Some(now)) = (self.all, all)
                && let Some(u) = usage(prev, now)
            {
                out.push("cpu_usage_ratio", &[], u);
            }
            for (core, now) in &cores {
                if let Some(u) = self.cores.get(core).and_then(|prev| usage(*prev, *now)) {
                    out.push("cpu_core_usage_ratio", &[("core", core)], u);
                }
            }
            self.all = all;
            self.cores = cores;
        }
        let path = roots.proc_root.join("loadavg");
        if let Some(text) = read_opt(&path)? {
            let mut f = text.split_ascii_whitespace();
            for name in ["load1", "load5", "load15"] {
                let v: f64 = f
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| CollectError::parse(&path, name))?;
                out.push(name, &[], v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_iowait_as_idle_and_ignores_guest() {
        let a = "cpu  100 0 100 700 100 0 0 0 50 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        let b = "cpu  200 0 200 1300 300 0 0 0 90 0\ncpu0 150 0 50 350 50 0 0 0 0 0\n";
        let (pa, ca) = parse_stat(a);
        let (pb, cb) = parse_stat(b);
        // busy +200, total +1000 (guest not added).
        assert_eq!(usage(pa.unwrap(), pb.unwrap()), Some(0.2));
        assert_eq!(usage(ca["0"], cb["0"]), Some(1.0));
        assert_eq!(usage(pb.unwrap(), pb.unwrap()), None);
    }
}
