//! Health: each device's state in words — ok, warning or critical, with every reason.
//!
//! Checks, in order, each adding a reason when it fires (thresholds in [`Thresholds`]):
//! offline; flapping; battery charge; temperature; filesystem, memory and swap use; missing
//! or corrupt batches; clock skew. The level is the worst of the reasons. Metrics come from
//! the device's last values, so a device that reports no battery has no battery reason.

use serde::Serialize;

use super::firmware::{Finding, Policy};
use super::{Device, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// What is wrong with a device.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub level: Level,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub level: Level,
    /// A stable short name, e.g. `battery_low`, `offline`.
    pub check: &'static str,
    pub message: String,
}

/// Warning and critical levels of each check.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub battery_warning: f64,
    pub battery_critical: f64,
    pub temperature_warning_c: f64,
    pub temperature_critical_c: f64,
    pub filesystem_warning: f64,
    pub filesystem_critical: f64,
    pub memory_warning: f64,
    pub swap_warning: f64,
    pub clock_skew_warning_ms: i64,
    /// Share of a link's capacity in use (either direction).
    pub link_warning: f64,
    pub link_critical: f64,
    /// Temperature limits and link capacities per model and device (the temperature ones
    /// over the two temperature levels above).
    pub limits: super::limits::Limits,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            battery_warning: 0.20,
            battery_critical: 0.10,
            temperature_warning_c: 70.0,
            temperature_critical_c: 80.0,
            filesystem_warning: 0.90,
            filesystem_critical: 0.97,
            memory_warning: 0.95,
            swap_warning: 0.80,
            clock_skew_warning_ms: 5_000,
            link_warning: 0.80,
            link_critical: 0.95,
            limits: super::limits::Limits::default(),
        }
    }
}

struct Checker {
    reasons: Vec<Reason>,
}

impl Checker {
    fn add(&mut self, level: Level, check: &'static str, message: String) {
        self.reasons.push(Reason {
            level,
            check,
            message,
        });
    }

    /// Adds a reason when `value` crosses a threshold (higher is worse).
    fn above(
        &mut self,
        value: Option<(f64, String)>,
        warn: f64,
        crit: Option<f64>,
        check: &'static str,
        what: &str,
        fmt: impl Fn(f64) -> String,
    ) {
        let Some((v, who)) = value else { return };
        let level = if crit.is_some_and(|c| v >= c) {
            Level::Critical
        } else if v >= warn {
            Level::Warning
        } else {
            return;
        };
        self.add(level, check, format!("{what}{who} at {}", fmt(v)));
    }
}

/// The largest last value of `metric` over its series, and the series' distinguishing label.
fn worst(d: &Device, metric: &str, label: &str, higher_is_worse: bool) -> Option<(f64, String)> {
    d.last_values
        .of(metric)
        .map(|(labels, _, v)| {
            let who = labels
                .get(label)
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            (v, who)
        })
        .filter(|(v, _)| v.is_finite())
        .reduce(|a, b| {
            let b_worse = if higher_is_worse {
                b.0 > a.0
            } else {
                b.0 < a.0
            };
            if b_worse { b } else { a }
        })
}

/// The device's links with a known capacity: (interface, direction, capacity in bits per
/// second, share of it in use).
pub fn link_utilization<'a>(
    d: &'a Device,
    limits: &'a super::limits::Limits,
) -> impl Iterator<Item = (&'a str, super::link::Direction, f64, f64)> + 'a {
    d.links
        .rates()
        .filter_map(move |(interface, direction, bps)| {
            let capacity = limits.link_capacity(d, interface, direction)?;
            Some((interface, direction, capacity, bps / capacity))
        })
}

/// The fullest link, for the `link_saturated` check: its share in use and its description.
fn busiest_link(d: &Device, limits: &super::limits::Limits) -> Option<(f64, String)> {
    link_utilization(d, limits)
        .filter(|(.., u)| u.is_finite())
        .max_by(|a, b| a.3.total_cmp(&b.3))
        .map(|(interface, direction, capacity, u)| {
            let who = format!(
                " {interface} {} ({} capacity)",
                direction.as_str(),
                bits(capacity)
            );
            (u, who)
        })
}

/// A rate in bits per second, in the unit people read it in.
fn bits(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.3} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.3} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.3} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
    .replace(".000 ", " ")
}

fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// The device's health at `now_ms`.
pub fn assess(
    d: &Device,
    status: Status,
    now_ms: i64,
    missing: u64,
    t: &Thresholds,
    policy: Option<&Policy>,
) -> Health {
    let mut c = Checker {
        reasons: Vec::new(),
    };
    if status == Status::Offline {
        let why = d
            .availability
            .last_offline()
            .map_or(" (never seen)", |tr| tr.reason.as_str());
        let why = if why.starts_with(' ') {
            why.to_owned()
        } else {
            format!(" ({why})")
        };
        c.add(Level::Critical, "offline", format!("offline{why}"));
    }
    if d.availability.is_flapping(now_ms) {
        let n = d.availability.recent_disconnects(now_ms);
        c.add(
            Level::Warning,
            "flapping",
            format!("disconnected {n} times in 10 minutes"),
        );
    }
    if let Some((charge, who)) = worst(d, "battery_charge_ratio", "battery", false) {
        let discharging = d
            .last_values
            .of("battery_discharging")
            .any(|(_, _, v)| v > 0.5);
        let level = if charge <= t.battery_critical {
            Some(Level::Critical)
        } else if charge <= t.battery_warning {
            Some(Level::Warning)
        } else {
            None
        };
        if let Some(level) = level {
            let state = if discharging { ", discharging" } else { "" };
            c.add(
                level,
                "battery_low",
                format!("battery{who} at {}{state}", pct(charge)),
            );
        }
    }
    let temperature = t
        .limits
        .temperature(d)
        .unwrap_or(super::limits::Temperature {
            warning_c: t.temperature_warning_c,
            critical_c: t.temperature_critical_c,
        });
    c.above(
        worst(d, "temperature_celsius", "sensor", true),
        temperature.warning_c,
        Some(temperature.critical_c),
        "temperature_high",
        "temperature",
        |v| format!("{v:.1} °C"),
    );
    c.above(
        worst(d, "filesystem_used_ratio", "mountpoint", true),
        t.filesystem_warning,
        Some(t.filesystem_critical),
        "disk_full",
        "filesystem",
        pct,
    );
    c.above(
        worst(d, "memory_used_ratio", "", true),
        t.memory_warning,
        None,
        "memory_high",
        "memory",
        pct,
    );
    c.above(
        worst(d, "swap_used_ratio", "", true),
        t.swap_warning,
        None,
        "swap_high",
        "swap",
        pct,
    );
    c.above(
        busiest_link(d, &t.limits),
        t.link_warning,
        Some(t.link_critical),
        "link_saturated",
        "link",
        pct,
    );
    if let (Some(policy), Some(firmware)) = (policy, d.info("firmware")) {
        for finding in policy.check(d.tag_or_info("model"), firmware) {
            match finding {
                Finding::Vulnerable { advisory, range } => c.add(
                    Level::Critical,
                    "firmware_vulnerable",
                    format!("firmware {firmware} is vulnerable: {advisory} ({range})"),
                ),
                Finding::BelowMinimum { minimum } => c.add(
                    Level::Warning,
                    "firmware_outdated",
                    format!("firmware {firmware} is below the minimum {minimum}"),
                ),
            }
        }
    }
    if missing > 0 {
        c.add(
            Level::Warning,
            "data_missing",
            format!("{missing} batches missing"),
        );
    }
    let corrupt = d.integrity.counts(now_ms, i64::MAX).corrupt;
    if corrupt > 0 {
        c.add(
            Level::Warning,
            "data_corrupt",
            format!("{corrupt} corrupt batches rejected"),
        );
    }
    if let Some(skew) = d.timing.skew_ms()
        && skew.abs() >= t.clock_skew_warning_ms
    {
        c.add(
            Level::Warning,
            "clock_skew",
            format!(
                "clock {} s {}",
                skew.abs() / 1000,
                if skew > 0 { "ahead" } else { "behind" }
            ),
        );
    }
    let level = c.reasons.iter().map(|r| r.level).max().unwrap_or(Level::Ok);
    Health {
        level,
        reasons: c.reasons,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn device(values: &[(&str, &str, &str, f64)]) -> Device {
        let mut d = Device::default();
        for &(metric, label, value, v) in values {
            let labels = if label.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([(label.to_owned(), value.to_owned())])
            };
            d.last_values.insert((metric.to_owned(), labels), (0, v));
        }
        d
    }

    #[test]
    fn a_healthy_online_device_is_ok() {
        let d = device(&[
            ("battery_charge_ratio", "battery", "BAT0", 0.8),
            ("temperature_celsius", "sensor", "cpu", 45.0),
        ]);
        let h = assess(&d, Status::Online, 0, 0, &Thresholds::default(), None);
        assert_eq!(h.level, Level::Ok);
        assert!(h.reasons.is_empty());
    }

    #[test]
    fn reasons_name_the_part_and_the_level_is_the_worst() {
        let d = device(&[
            ("battery_charge_ratio", "battery", "BAT0", 0.15),
            ("battery_discharging", "", "", 1.0),
            ("temperature_celsius", "sensor", "cpu", 50.0),
            ("temperature_celsius", "sensor", "soc", 83.2),
            ("filesystem_used_ratio", "mountpoint", "/data", 0.92),
        ]);
        let h = assess(&d, Status::Online, 0, 2, &Thresholds::default(), None);
        assert_eq!(h.level, Level::Critical);
        let messages: Vec<&str> = h.reasons.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "battery BAT0 at 15 %, discharging",
                "temperature soc at 83.2 °C",
                "filesystem /data at 92 %",
                "2 batches missing"
            ]
        );
        assert_eq!(h.reasons[1].level, Level::Critical);
        assert_eq!(h.reasons[0].check, "battery_low");
    }

    #[test]
    fn a_link_near_its_capacity_is_saturated() {
        let mut d = Device::default();
        let wwan = BTreeMap::from([("interface".to_owned(), "wwan0".to_owned())]);
        let tx = "network_transmit_bytes_total".to_owned();
        let rx = "network_receive_bytes_total".to_owned();
        // 10 s apart: 230 kB up (184 kbit/s), 100 kB down (80 kbit/s).
        d.record_values([(&tx, &wwan, 0, 0.0), (&rx, &wwan, 0, 0.0)]);
        d.record_values([
            (&tx, &wwan, 10_000, 230_000.0),
            (&rx, &wwan, 10_000, 100_000.0),
        ]);
        let mut t = Thresholds::default();
        let h = assess(&d, Status::Online, 0, 0, &t, None);
        assert!(h.reasons.is_empty(), "no capacity configured, no check");

        t.limits = toml::from_str(
            "[[link]]\nmodel = \"*\"\ncapacity_bits_per_second = 1e6\ntransmit_bits_per_second = 2e5\n",
        )
        .unwrap();
        let h = assess(&d, Status::Online, 0, 0, &t, None);
        assert_eq!(h.level, Level::Warning);
        assert_eq!(h.reasons[0].check, "link_saturated");
        assert_eq!(
            h.reasons[0].message,
            "link wwan0 transmit (200 kbit/s capacity) at 92 %"
        );
        let used: Vec<_> = link_utilization(&d, &t.limits)
            .map(|(i, dir, _, u)| (i, dir.as_str(), (u * 1000.0).round() / 1000.0))
            .collect();
        assert_eq!(
            used,
            [("wwan0", "receive", 0.08), ("wwan0", "transmit", 0.92)]
        );

        d.tags.insert(
            super::super::limits::LINK_CAPACITY_TAG.into(),
            "190000".into(),
        );
        let h = assess(&d, Status::Online, 0, 0, &t, None);
        assert_eq!(h.level, Level::Critical);
    }

    #[test]
    fn offline_is_critical() {
        let h = assess(
            &Device::default(),
            Status::Offline,
            0,
            0,
            &Thresholds::default(),
            None,
        );
        assert_eq!(h.level, Level::Critical);
        assert_eq!(h.reasons[0].check, "offline");
    }
}
