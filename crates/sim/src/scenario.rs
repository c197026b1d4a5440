//! Scenarios: faults that change what devices *report* (a CPU that overheats, a battery that
//! fails, a disk that fills...), each on a chosen subset of the fleet from a start time for a
//! while, read from a TOML file (`fleetmon sim --scenario FILE`, format in
//! `docs/simulator.md`):
//!
//! ```toml
//! [[fault]]
//! kind = "overheat"
//! devices = "0..10"      # indices 0 to 9; or a list [3, 7]; or a fraction 0.05 / "5%"
//! start = "10m"          # from the start of the run
//! duration = "30m"       # optional: until the end of the run when left out
//! celsius = 95           # what the kind takes (see `FaultKind`)
//! ```
//!
//! A [`Scenario`] becomes per-device [`DeviceFaults`] (absolute windows in milliseconds) that
//! the [`crate::Generator`] applies while it makes the device's samples. The transport faults
//! (loss, duplicates, corruption, outages, clock skew) are [`crate::Faults`].

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::Model;
use crate::signal::mix;

/// Metrics an `anomaly` fault may shift.
pub const ANOMALY_METRICS: [&str; 8] = [
    "cpu_usage_ratio",
    "memory_used_ratio",
    "temperature_celsius",
    "probe_rtt_seconds",
    "probe_jitter_seconds",
    "probe_loss_ratio",
    "load1",
    "processes",
];

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when the scenario was not read from text.
    #[error("scenario {path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// What a fault does to the devices it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// The CPU temperature climbs from its normal reading to `celsius` over `ramp`, and stays.
    Overheat { celsius: f64, ramp_ms: i64 },
    /// The charger is disconnected and the charge falls by a full battery per `empty_in` on
    /// top of the normal drain, so the battery is empty within `empty_in` (battery models only;
    /// the lost charge stays lost after the window).
    BatteryDrain { empty_in_ms: i64 },
    /// Every core at least `ratio` busy.
    Cpu { ratio: f64 },
    /// Memory use at least `ratio`, swap use (models with swap) at least `swap_ratio`.
    Memory { ratio: f64, swap_ratio: f64 },
    /// The free space of the filesystem at `mountpoint` is used up steadily over `full_in`,
    /// to nearly the last byte (what was written stays after the window).
    DiskFill { mountpoint: String, full_in_ms: i64 },
    /// Probe round trip, jitter and loss held near the given values (each optional).
    Network {
        rtt_seconds: Option<f64>,
        jitter_seconds: Option<f64>,
        loss_ratio: Option<f64>,
    },
    /// A service listens on a port that is not in the device's usual set.
    ListeningPort { protocol: String, port: u16 },
    /// `device_info` reports this firmware version.
    Firmware { version: String },
    /// `shift` is added to `metric` (ratios stay within 0..1): a level shift, or a spike
    /// when the window is short.
    Anomaly { metric: String, shift: f64 },
}

impl FaultKind {
    /// The name used in scenario files and the ground truth.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Overheat { .. } => "overheat",
            FaultKind::BatteryDrain { .. } => "battery-drain",
            FaultKind::Cpu { .. } => "cpu",
            FaultKind::Memory { .. } => "memory",
            FaultKind::DiskFill { .. } => "disk-fill",
            FaultKind::Network { .. } => "network",
            FaultKind::ListeningPort { .. } => "listening-port",
            FaultKind::Firmware { .. } => "firmware",
            FaultKind::Anomaly { .. } => "anomaly",
        }
    }

    /// Whether the fault can change anything on a device of `model`.
    fn applies_to(&self, model: Model) -> bool {
        match self {
            FaultKind::BatteryDrain { .. } => model.profile().battery,
            FaultKind::DiskFill { mountpoint, .. } => model
                .profile()
                .filesystems
                .iter()
                .any(|f| f.mountpoint == mountpoint),
            _ => true,
        }
    }
}

/// Which devices of the fleet a fault applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSet {
    /// Indices `start..end`.
    Range(usize, usize),
    List(Vec<usize>),
    /// About this fraction of the fleet, chosen by a hash of the fault's position and the
    /// device index (the same devices on every run).
    Fraction(f64),
}

impl DeviceSet {
    /// Whether device `index` belongs, for the fault at position `fault_no`.
    pub fn contains(&self, fault_no: usize, index: usize) -> bool {
        match self {
            DeviceSet::Range(a, b) => (*a..*b).contains(&index),
            DeviceSet::List(l) => l.contains(&index),
            DeviceSet::Fraction(f) => {
                let h = mix(mix(0x5CE7_A210, fault_no as u64), index as u64);
                ((h >> 11) as f64 / (1u64 << 53) as f64) < *f
            }
        }
    }

    /// The highest index named, for checking against the fleet size.
    fn highest(&self) -> Option<usize> {
        match self {
            DeviceSet::Range(_, b) => b.checked_sub(1),
            DeviceSet::List(l) => l.iter().max().copied(),
            DeviceSet::Fraction(_) => None,
        }
    }
}

/// One fault of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioFault {
    pub kind: FaultKind,
    pub devices: DeviceSet,
    /// From the start of the run.
    pub start: Duration,
    /// `None`: until the end of the run.
    pub duration: Option<Duration>,
    /// Line of its `[[fault]]` in the file (0 when not read from a file).
    pub line: usize,
}

/// A list of value faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    /// Where it was read from, for messages.
    pub source: String,
    pub faults: Vec<ScenarioFault>,
}

/// One fault window of one device, in absolute milliseconds (the device's clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    #[serde(flatten)]
    pub kind: FaultKind,
    pub start_ms: i64,
    /// `None`: until the end of the run.
    pub end_ms: Option<i64>,
}

impl FaultWindow {
    /// Whether the window covers `ts_ms`.
    pub fn active(&self, ts_ms: i64) -> bool {
        ts_ms >= self.start_ms && self.end_ms.is_none_or(|e| ts_ms < e)
    }
}

/// The value faults of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceFaults {
    pub windows: Vec<FaultWindow>,
}

impl DeviceFaults {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks scenario text; `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<Self, ScenarioError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Invalid {
            path: source.to_owned(),
            line: e.span().map_or(0, |s| line_of(s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let mut faults = Vec::with_capacity(raw.fault.len());
        for (i, f) in raw.fault.iter().enumerate() {
            let fault = f
                .check(i + 1)
                .map_err(|(offset, message)| ScenarioError::Invalid {
                    path: source.to_owned(),
                    line: line_of(offset),
                    message,
                })?;
            // The line of the fault's `[[fault]]` header.
            let kind_at = f.kind.span().start.min(text.len());
            let header = text[..kind_at].rfind("[[fault]]").unwrap_or(kind_at);
            faults.push(ScenarioFault {
                line: line_of(header),
                ..fault
            });
        }
        if faults.is_empty() {
            return Err(ScenarioError::Invalid {
                path: source.to_owned(),
                line: 1,
                message: "no [[fault]] tables; a scenario lists at least one".to_owned(),
            });
        }
        Ok(Self {
            source: source.to_owned(),
            faults,
        })
    }

    /// Checks the faults against a fleet of `devices` devices.
    pub fn check_fleet(&self, devices: usize) -> Result<(), ScenarioError> {
        for (i, f) in self.faults.iter().enumerate() {
            if let Some(h) = f.devices.highest()
                && h >= devices
            {
                return Err(ScenarioError::Invalid {
                    path: self.source.clone(),
                    line: f.line,
                    message: format!(
                        "fault {} ({}): key `devices` names device {h}, but the fleet has {devices} devices (0..{devices})",
                        i + 1,
                        f.kind.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The fault windows of device `index` (of model `model`) in a run that started at
    /// `origin_ms`.
    pub fn device_faults(&self, index: usize, model: Model, origin_ms: i64) -> DeviceFaults {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        let windows = self
            .faults
            .iter()
            .enumerate()
            .filter(|(i, f)| f.devices.contains(*i, index) && f.kind.applies_to(model))
            .map(|(_, f)| {
                let start_ms = origin_ms.saturating_add(ms(f.start));
                FaultWindow {
                    kind: f.kind.clone(),
                    start_ms,
                    end_ms: f.duration.map(|d| start_ms.saturating_add(ms(d))),
                }
            })
            .collect();
        DeviceFaults { windows }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    fault: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDevices {
    Text(String),
    List(Vec<i64>),
    Fraction(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    devices: Spanned<RawDevices>,
    start: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    celsius: Option<Spanned<f64>>,
    ramp: Option<Spanned<String>>,
    empty_in: Option<Spanned<String>>,
    ratio: Option<Spanned<f64>>,
    swap_ratio: Option<Spanned<f64>>,
    mountpoint: Option<Spanned<String>>,
    full_in: Option<Spanned<String>>,
    rtt_seconds: Option<Spanned<f64>>,
    jitter_seconds: Option<Spanned<f64>>,
    loss_ratio: Option<Spanned<f64>>,
    protocol: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    version: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    shift: Option<Spanned<f64>>,
}

/// Every kind and the keys it takes besides kind, devices, start and duration.
const KINDS: [(&str, &[&str]); 9] = [
    ("overheat", &["celsius", "ramp"]),
    ("battery-drain", &["empty_in"]),
    ("cpu", &["ratio"]),
    ("memory", &["ratio", "swap_ratio"]),
    ("disk-fill", &["mountpoint", "full_in"]),
    ("network", &["rtt_seconds", "jitter_seconds", "loss_ratio"]),
    ("listening-port", &["protocol", "port"]),
    ("firmware", &["version"]),
    ("anomaly", &["metric", "shift"]),
];

/// An error at a byte offset of the text.
type At = (usize, String);

impl RawFault {
    /// The keys given besides the common ones, with their offsets.
    fn params(&self) -> Vec<(&'static str, usize)> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, span: Option<std::ops::Range<usize>>| {
            if let Some(s) = span {
                out.push((name, s.start));
            }
        };
        add("celsius", self.celsius.as_ref().map(Spanned::span));
        add("ramp", self.ramp.as_ref().map(Spanned::span));
        add("empty_in", self.empty_in.as_ref().map(Spanned::span));
        add("ratio", self.ratio.as_ref().map(Spanned::span));
        add("swap_ratio", self.swap_ratio.as_ref().map(Spanned::span));
        add("mountpoint", self.mountpoint.as_ref().map(Spanned::span));
        add("full_in", self.full_in.as_ref().map(Spanned::span));
        add("rtt_seconds", self.rtt_seconds.as_ref().map(Spanned::span));
        add(
            "jitter_seconds",
            self.jitter_seconds.as_ref().map(Spanned::span),
        );
        add("loss_ratio", self.loss_ratio.as_ref().map(Spanned::span));
        add("protocol", self.protocol.as_ref().map(Spanned::span));
        add("port", self.port.as_ref().map(Spanned::span));
        add("version", self.version.as_ref().map(Spanned::span));
        add("metric", self.metric.as_ref().map(Spanned::span));
        add("shift", self.shift.as_ref().map(Spanned::span));
        out
    }

    fn check(&self, n: usize) -> Result<ScenarioFault, At> {
        let kind_at = self.kind.span().start;
        let kind = self.kind.get_ref().as_str();
        let Some((_, keys)) = KINDS.iter().find(|(k, _)| *k == kind) else {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err((
                kind_at,
                format!(
                    "fault {n}: key `kind`: unknown kind {kind:?}; expected one of {}",
                    known.join(", ")
                ),
            ));
        };
        let label = format!("fault {n} ({kind})");
        for (key, at) in self.params() {
            if !keys.contains(&key) {
                return Err((
                    at,
                    format!(
                        "{label}: key `{key}` does not apply to this kind; it takes {}",
                        if keys.is_empty() {
                            "no other keys".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    ),
                ));
            }
        }
        let err = |at: usize, key: &str, why: String| (at, format!("{label}: key `{key}`: {why}"));
        let duration = |v: &Option<Spanned<String>>, key: &str, default: Option<Duration>| match v {
            Some(s) => parse_duration(s.get_ref())
                .map(Some)
                .map_err(|why| err(s.span().start, key, why)),
            None => Ok(default),
        };
        let positive = |v: Option<Duration>, at: usize, key: &str| -> Result<i64, At> {
            let d = v.unwrap_or_default();
            if d.is_zero() {
                return Err(err(at, key, "must be longer than zero, e.g. \"2h\"".into()));
            }
            Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4))
        };
        let span_of = |v: &Option<Spanned<String>>| v.as_ref().map_or(kind_at, |s| s.span().start);
        let number = |v: &Option<Spanned<f64>>,
                      key: &str,
                      default: Option<f64>,
                      range: std::ops::RangeInclusive<f64>|
         -> Result<Option<f64>, At> {
            match v {
                Some(s) => {
                    let x = *s.get_ref();
                    if x.is_finite() && range.contains(&x) {
                        Ok(Some(x))
                    } else {
                        Err(err(
                            s.span().start,
                            key,
                            format!("{x} is out of range; expected {range:?}"),
                        ))
                    }
                }
                None => Ok(default),
            }
        };
        let required = |v: Option<f64>, key: &str| -> Result<f64, At> {
            v.ok_or_else(|| (kind_at, format!("{label}: key `{key}` is required")))
        };

        let start = duration(&self.start, "start", Some(Duration::ZERO))?.unwrap_or_default();
        let run_for = duration(&self.duration, "duration", None)?;
        if let (Some(d), Some(s)) = (run_for, &self.duration)
            && d.is_zero()
        {
            return Err(err(
                s.span().start,
                "duration",
                "must be longer than zero; leave it out for \"until the end of the run\"".into(),
            ));
        }
        let devices = check_devices(self.devices.get_ref())
            .map_err(|why| err(self.devices.span().start, "devices", why))?;

        let kind = match kind {
            "overheat" => FaultKind::Overheat {
                celsius: required(
                    number(&self.celsius, "celsius", Some(95.0), -60.0..=200.0)?,
                    "celsius",
                )?,
                ramp_ms: i64::try_from(
                    duration(&self.ramp, "ramp", Some(Duration::from_secs(300)))?
                        .unwrap_or_default()
                        .as_millis(),
                )
                .unwrap_or(i64::MAX / 4),
            },
            "battery-drain" => FaultKind::BatteryDrain {
                empty_in_ms: positive(
                    duration(
                        &self.empty_in,
                        "empty_in",
                        Some(Duration::from_secs(3 * 3600)),
                    )?,
                    span_of(&self.empty_in),
                    "empty_in",
                )?,
            },
            "cpu" => FaultKind::Cpu {
                ratio: required(
                    number(&self.ratio, "ratio", Some(0.97), 0.0..=1.0)?,
                    "ratio",
                )?,
            },
            "memory" => FaultKind::Memory {
                ratio: required(
                    number(&self.ratio, "ratio", Some(0.95), 0.0..=1.0)?,
                    "ratio",
                )?,
                swap_ratio: required(
                    number(&self.swap_ratio, "swap_ratio", Some(0.9), 0.0..=1.0)?,
                    "swap_ratio",
                )?,
            },
            "disk-fill" => FaultKind::DiskFill {
                mountpoint: self
                    .mountpoint
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |m| m.get_ref().clone()),
                full_in_ms: positive(
                    duration(
                        &self.full_in,
                        "full_in",
                        Some(Duration::from_secs(2 * 3600)),
                    )?,
                    span_of(&self.full_in),
                    "full_in",
                )?,
            },
            "network" => {
                let rtt = number(&self.rtt_seconds, "rtt_seconds", None, 0.0..=60.0)?;
                let jitter = number(&self.jitter_seconds, "jitter_seconds", None, 0.0..=60.0)?;
                let loss = number(&self.loss_ratio, "loss_ratio", None, 0.0..=1.0)?;
                if rtt.is_none() && jitter.is_none() && loss.is_none() {
                    return Err((
                        kind_at,
                        format!(
                            "{label}: give at least one of rtt_seconds, jitter_seconds, loss_ratio"
                        ),
                    ));
                }
                FaultKind::Network {
                    rtt_seconds: rtt,
                    jitter_seconds: jitter,
                    loss_ratio: loss,
                }
            }
            "listening-port" => {
                let protocol = self
                    .protocol
                    .as_ref()
                    .map_or_else(|| "tcp".to_owned(), |p| p.get_ref().clone());
                if protocol != "tcp" && protocol != "udp" {
                    let at = self.protocol.as_ref().map_or(kind_at, |p| p.span().start);
                    return Err(err(
                        at,
                        "protocol",
                        format!("{protocol:?}; expected \"tcp\" or \"udp\""),
                    ));
                }
                let Some(port) = &self.port else {
                    return Err((kind_at, format!("{label}: key `port` is required")));
                };
                let p = u16::try_from(*port.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        err(
                            port.span().start,
                            "port",
                            format!("{} is not a port; expected 1 to 65535", port.get_ref()),
                        )
                    })?;
                FaultKind::ListeningPort { protocol, port: p }
            }
            "firmware" => {
                let Some(v) = &self.version else {
                    return Err((kind_at, format!("{label}: key `version` is required")));
                };
                let version = v.get_ref().trim().to_owned();
                if version.is_empty() || version.len() > 64 {
                    return Err(err(
                        v.span().start,
                        "version",
                        "expected 1 to 64 characters, e.g. \"2024.11.2\"".into(),
                    ));
                }
                FaultKind::Firmware { version }
            }
            "anomaly" => {
                let metric = self
                    .metric
                    .as_ref()
                    .map_or_else(|| "cpu_usage_ratio".to_owned(), |m| m.get_ref().clone());
                if !ANOMALY_METRICS.contains(&metric.as_str()) {
                    let at = self.metric.as_ref().map_or(kind_at, |m| m.span().start);
                    return Err(err(
                        at,
                        "metric",
                        format!(
                            "{metric:?} cannot be shifted; expected one of {}",
                            ANOMALY_METRICS.join(", ")
                        ),
                    ));
                }
                let shift = required(number(&self.shift, "shift", None, -1e9..=1e9)?, "shift")?;
                FaultKind::Anomaly { metric, shift }
            }
            _ => unreachable!("kinds were checked above"),
        };
        Ok(ScenarioFault {
            kind,
            devices,
            start,
            duration: run_for,
            line: 0,
        })
    }
}

fn check_devices(raw: &RawDevices) -> Result<DeviceSet, String> {
    let fraction = |f: f64| {
        if f > 0.0 && f <= 1.0 {
            Ok(DeviceSet::Fraction(f))
        } else {
            Err(format!(
                "{f} is not a fraction of the fleet; expected more than 0 and at most 1 (for one device write [{f}])"
            ))
        }
    };
    match raw {
        RawDevices::Fraction(f) => fraction(*f),
        RawDevices::List(l) => {
            if l.is_empty() {
                return Err("the list is empty".to_owned());
            }
            l.iter()
                .map(|i| usize::try_from(*i).map_err(|_| format!("{i} is not a device index")))
                .collect::<Result<Vec<_>, _>>()
                .map(DeviceSet::List)
        }
        RawDevices::Text(t) => {
            let t = t.trim();
            if let Some(p) = t.strip_suffix('%') {
                let pct: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{t:?}: expected a percentage such as \"5%\""))?;
                return fraction(pct / 100.0);
            }
            let bad = || {
                format!(
                    "{t:?}: expected a range such as \"0..10\" (end excluded), a list such as [1, 4], or a fraction such as 0.05 or \"5%\""
                )
            };
            let (a, b) = t.split_once("..").ok_or_else(bad)?;
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            if b <= a {
                return Err(format!("{t:?} is an empty range; the end is excluded"));
            }
            Ok(DeviceSet::Range(a, b))
        }
    }
}

/// `"90s"`, `"10m"`, `"1h30m"`, `"2d"`, `"500ms"`; a bare `"0"` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{s:?} is not a duration; expected e.g. \"90s\", \"10m\", \"1h30m\"");
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let add = n.checked_mul(unit_ms).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(add))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# a scenario
[[fault]]
kind = "overheat"
devices = "0..3"
start = "10m"
duration = "30m"
celsius = 97

[[fault]]
kind = "network"
devices = [4, 6]
start = "1h"
loss_ratio = 0.3

[[fault]]
kind = "firmware"
devices = "10%"
version = "2023.01.0"
"#;

    #[test]
    fn a_scenario_parses_into_windows() {
        let s = Scenario::parse(FILE, "s.toml").unwrap();
        assert_eq!(s.faults.len(), 3);
        assert_eq!(s.faults[0].line, 3);
        assert_eq!(s.faults[1].line, 10);
        assert_eq!(
            s.faults[0].kind,
            FaultKind::Overheat {
                celsius: 97.0,
                ramp_ms: 300_000
            }
        );
        assert_eq!(s.faults[0].devices, DeviceSet::Range(0, 3));
        assert_eq!(s.faults[1].duration, None);
        let d1 = s.device_faults(1, Model::Rpi4, 1_000);
        assert_eq!(
            d1.windows.len(),
            1 + usize::from(s.faults[2].devices.contains(2, 1))
        );
        assert_eq!(d1.windows[0].start_ms, 1_000 + 600_000);
        assert_eq!(d1.windows[0].end_ms, Some(1_000 + 2_400_000));
        assert!(d1.windows[0].active(1_000 + 600_000));
        assert!(!d1.windows[0].active(1_000 + 2_400_000));
        let d4 = s.device_faults(4, Model::Gateway, 0);
        assert!(
            d4.windows
                .iter()
                .any(|w| w.kind.name() == "network" && w.end_ms.is_none())
        );
        // About a tenth of a large fleet gets the firmware fault.
        let n = (0..10_000)
            .filter(|i| s.faults[2].devices.contains(2, *i))
            .count();
        assert!((800..1_200).contains(&n), "{n}");
        assert!(s.check_fleet(7).is_ok());
        assert!(
            s.check_fleet(6)
                .unwrap_err()
                .to_string()
                .contains("s.toml:10")
        );
    }

    #[test]
    fn kinds_that_need_hardware_skip_devices_without_it() {
        let s = Scenario::parse(
            "[[fault]]\nkind = \"battery-drain\"\ndevices = \"0..5\"\nempty_in = \"2h\"\n",
            "b.toml",
        )
        .unwrap();
        assert!(s.device_faults(0, Model::Rpi4, 0).is_empty());
        assert_eq!(s.device_faults(0, Model::BatterySensor, 0).windows.len(), 1);
    }

    fn error(text: &str) -> String {
        Scenario::parse(text, "x.toml").unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let e = error("[[fault]]\nkind = \"overheet\"\ndevices = \"0..2\"\n");
        assert!(
            e.starts_with("scenario x.toml:2: fault 1: key `kind`: unknown kind"),
            "{e}"
        );
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = \"0..2\"\n\nceslius = 3\n");
        assert!(
            e.starts_with("scenario x.toml:5:") && e.contains("ceslius"),
            "{e}"
        );
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = \"0..2\"\ncelsius = 3\n");
        assert!(
            e.contains("x.toml:4: fault 1 (cpu): key `celsius` does not apply"),
            "{e}"
        );
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = \"2..2\"\n");
        assert!(
            e.contains("x.toml:3:") && e.contains("key `devices`"),
            "{e}"
        );
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = 3\n");
        assert!(e.contains("key `devices`") && e.contains("[3]"), "{e}");
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = \"0..2\"\nstart = \"10 minutes\"\n");
        assert!(e.contains("x.toml:4:") && e.contains("key `start`"), "{e}");
        let e = error("[[fault]]\nkind = \"cpu\"\ndevices = \"0..2\"\nratio = 1.5\n");
        assert!(
            e.contains("key `ratio`") && e.contains("out of range"),
            "{e}"
        );
        let e = error("[[fault]]\nkind = \"listening-port\"\ndevices = [1]\nport = 70000\n");
        assert!(e.contains("x.toml:4:") && e.contains("key `port`"), "{e}");
        let e = error("[[fault]]\nkind = \"firmware\"\ndevices = [1]\n");
        assert!(e.contains("key `version` is required"), "{e}");
        let e = error("[[fault]]\nkind = \"network\"\ndevices = [1]\n");
        assert!(e.contains("at least one of"), "{e}");
        let e =
            error("[[fault]]\nkind = \"anomaly\"\ndevices = [1]\nmetric = \"uptime\"\nshift = 1\n");
        assert!(e.contains("key `metric`"), "{e}");
        let e = error("[[fault]]\nkind = \"cpu\"\n");
        assert!(e.contains("devices"), "{e}");
        let e = error("[[faults]]\nkind = \"cpu\"\n");
        assert!(e.contains("x.toml:1:") && e.contains("faults"), "{e}");
        let e = error("# nothing\n");
        assert!(e.contains("no [[fault]]"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "m", "10 m", "1x", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
