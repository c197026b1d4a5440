//! Collection: one file per source of the DESIGN.md metric table, all reading plain files under
//! configurable roots (`proc_root`, `sys_root`, `etc_root`), so tests run against fixture
//! trees that mimic real boards and the agent can run in a container against a host's `/proc`.
//!
//! A source that the device does not have (no battery, no thermal zone, no swap device list)
//! yields no series and no error. A file that exists but cannot be parsed is an error for that
//! source only; [`Collector::collect`] logs it and carries on with the other sources.
//!
//! | file | metrics |
//! |---|---|
//! | [`cpu`] | `cpu_usage_ratio`, `cpu_core_usage_ratio{core}`, `load1`, `load5`, `load15` |
//! | [`memory`] | `memory_*`, `swap_*` |
//! | [`filesystem`] | `filesystem_{size,avail}_bytes{mountpoint,fstype}`, `filesystem_used_ratio` |
//! | [`disk`] | `disk_{read,written}_bytes_total{disk}` |
//! | [`net`] | `network_{receive,transmit}_{bytes,packets,errors,drops}_total{interface}` |
//! | [`thermal`] | `temperature_celsius{sensor}`, `humidity_ratio{sensor}` |
//! | [`power`] | `battery_*{battery}`, `power_source_mains` |
//! | [`system`] | `uptime_seconds`, `processes`, `device_info{...}` |
//! | [`ports`] (+ [`sock_diag`]) | `listening_ports`, `listening_port{protocol,port}` |
//! | [`agent_self`] | `agent_cpu_seconds_total`, `agent_resident_bytes`, `agent_uplink_bytes_total`, `agent_spool_bytes`, `agent_spool_dropped_batches_total` |

pub mod agent_self;
pub mod cpu;
pub mod disk;
pub mod filesystem;
pub mod memory;
pub mod net;
pub mod ports;
pub mod power;
pub mod sock_diag;
pub mod system;
pub mod thermal;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetmon_protocol::Sample;
use tracing::warn;

pub use agent_self::AgentStats;

/// Why one source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot parse {what}")]
    Parse { path: PathBuf, what: String },
}

impl CollectError {
    pub(crate) fn parse(path: &Path, what: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.to_owned(),
            what: what.into(),
        }
    }
}

/// Where the sources live. Defaults are the live machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    /// Holds `os-release` (`<etc_root>/os-release`).
    pub etc_root: PathBuf,
    /// Prefix for mount points before `statvfs` (the host's `/` when run in a container).
    pub host_root: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            etc_root: "/etc".into(),
            host_root: "/".into(),
        }
    }
}

/// Reads a file; `Ok(None)` when it (or its directory) does not exist, so an absent sensor
/// is not an error.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CollectError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        // Some sysfs attributes refuse reads when the hardware is absent (ENODEV, EINVAL,
        // EIO): treat those as "no value" too.
        Err(e) if matches!(e.raw_os_error(), Some(19 | 22 | 5 | 61 | 95)) => Ok(None),
        Err(source) => Err(CollectError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a file that must exist when the source exists.
pub(crate) fn read(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a one-number file (sysfs attributes); `None` when absent or not a number.
pub(crate) fn read_num(path: &Path) -> Option<f64> {
    read_opt(path).ok().flatten()?.trim().parse().ok()
}

/// Reads a one-line text attribute, trimmed; `None` when absent or empty.
pub fn read_text(path: &Path) -> Option<String> {
    let s = read_opt(path).ok().flatten()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_owned())
}

/// Entries of a directory sorted by name; empty when the directory does not exist.
pub(crate) fn dir_entries(path: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    v.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    v
}

/// Orders `hwmon2` before `hwmon10`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let d = s.trim_end_matches(|c: char| c.is_ascii_digit());
        (d.to_owned(), s[d.len()..].parse::<u64>().unwrap_or(0))
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// Samples of one collection, all with the same timestamp.
#[derive(Debug)]
pub struct Out {
    ts_ms: i64,
    pub samples: Vec<Sample>,
}

impl Out {
    pub fn new(ts_ms: i64) -> Self {
        Self {
            ts_ms,
            samples: Vec::new(),
        }
    }

    /// Adds a sample; non-finite values are dropped (a sensor glitch is not a measurement).
    pub fn push(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        if !value.is_finite() {
            return;
        }
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.push(Sample {
            metric: metric.to_owned(),
            labels,
            ts_ms: self.ts_ms,
            value,
        });
    }
}

/// Reads every source; keeps the state that rates need (cpu times) between collections.
#[derive(Debug)]
pub struct Collector {
    roots: Roots,
    cpu: cpu::CpuState,
    info: system::StaticInfo,
    stats: Arc<AgentStats>,
}

impl Collector {
    /// `firmware` is the firmware version string, already resolved from the configured file or
    /// command (see [`system::firmware_version`]).
    pub fn new(roots: Roots, firmware: String, stats: Arc<AgentStats>) -> Self {
        let info = system::StaticInfo::read(&roots, firmware);
        Self {
            roots,
            cpu: cpu::CpuState::default(),
            info,
            stats,
        }
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// Reads the cpu times now, so the next collection reports usage over the interval since.
    pub fn prime(&mut self) {
        if let Err(error) = self.cpu.prime(&self.roots) {
            warn!(%error, "cpu times unreadable");
        }
    }

    /// One collection of every source into `out`; returns the sources that failed (the
    /// others are still collected).
    pub fn collect_checked(&mut self, out: &mut Out) -> Vec<(&'static str, CollectError)> {
        let r = &self.roots;
        let results: [(&'static str, Result<(), CollectError>); 10] = [
            ("cpu", self.cpu.collect(r, out)),
            ("memory", memory::collect(r, out)),
            ("filesystem", filesystem::collect(r, out)),
            ("disk", disk::collect(r, out)),
            ("network", net::collect(r, out)),
            ("thermal", thermal::collect(r, out)),
            ("power", power::collect(r, out)),
            ("system", system::collect(r, &self.info, out)),
            ("ports", ports::collect(r, out)),
            ("agent", agent_self::collect(r, &self.stats, out)),
        ];
        results
            .into_iter()
            .filter_map(|(source, result)| result.err().map(|e| (source, e)))
            .collect()
    }

    /// One collection into `out`; failures are logged per source.
    pub fn collect_into(&mut self, out: &mut Out) {
        for (source, error) in self.collect_checked(out) {
            warn!(source, %error, "collection failed for one source");
        }
    }

    /// One collection at `ts_ms`.
    pub fn collect(&mut self, ts_ms: i64) -> Vec<Sample> {
        let mut out = Out::new(ts_ms);
        self.collect_into(&mut out);
        out.samples
    }
}
