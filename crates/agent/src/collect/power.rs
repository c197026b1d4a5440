//! Battery and power source from `<sys_root>/class/power_supply/*` (the kernel's
//! power-supply class, which laptop batteries, UPS HATs with a fuel-gauge or INA219 driver,
//! and USB/mains adapters all use).
//!
//! For each supply whose `type` is `Battery` or `UPS` (and whose `present` is not 0),
//! labelled `battery` = the directory name:
//! - `battery_charge_ratio`: `capacity` (percent) / 100, else `energy_now / energy_full`,
//!   else `charge_now / charge_full`;
//! - `battery_voltage_volts`: `voltage_now` (µV);
//! - `battery_current_amperes`: `current_now` (µA), sign as the driver reports it;
//! - `battery_power_watts`: `power_now` (µW), else `voltage × |current|`;
//! - `battery_discharging`: 1 when `status` is `Discharging`, else 0.
//!
//! `power_source_mains` (no labels) is 1 when any `Mains` supply reports `online` = 1, 0 when
//! mains supplies exist and none is online, and absent when the device has none.

use super::{CollectError, Out, Roots, dir_entries, read_num, read_text};

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let mut mains: Option<bool> = None;
    for (name, path) in dir_entries(&roots.sys_root.join("class/power_supply")) {
        let kind = read_text(&path.join("type")).unwrap_or_default();
        match kind.as_str() {
            "Mains" => {
                let online = read_num(&path.join("online")).is_some_and(|v| v > 0.0);
                mains = Some(mains.unwrap_or(false) || online);
            }
            "Battery" | "UPS" => {
                if read_num(&path.join("present")) == Some(0.0) {
                    continue;
                }
                battery(&name, &path, out);
            }
            _ => {}
        }
    }
    if let Some(online) = mains {
        out.push("power_source_mains", &[], f64::from(u8::from(online)));
    }
    Ok(())
}

fn battery(name: &str, path: &std::path::Path, out: &mut Out) {
    let labels = [("battery", name)];
    let num = |f: &str| read_num(&path.join(f));
    let ratio = |now: &str, full: &str| match (num(now), num(full)) {
        (Some(n), Some(f)) if f > 0.0 => Some((n / f).clamp(0.0, 1.0)),
        _ => None,
    };
    let charge = num("capacity")
        .map(|c| c / 100.0)
        .or_else(|| ratio("energy_now", "energy_full"))
        .or_else(|| ratio("charge_now", "charge_full"));
    if let Some(c) = charge {
        out.push("battery_charge_ratio", &labels, c);
    }
    let volts = num("voltage_now").map(|v| v / 1e6);
    let amps = num("current_now").map(|a| a / 1e6);
    if let Some(v) = volts {
        out.push("battery_voltage_volts", &labels, v);
    }
    if let Some(a) = amps {
        out.push("battery_current_amperes", &labels, a);
    }
    let watts = num("power_now")
        .map(|p| p / 1e6)
        .or_else(|| match (volts, amps) {
            (Some(v), Some(a)) => Some(v * a.abs()),
            _ => None,
        });
    if let Some(w) = watts {
        out.push("battery_power_watts", &labels, w);
    }
    if let Some(status) = read_text(&path.join("status")) {
        let discharging = status.eq_ignore_ascii_case("discharging");
        out.push(
            "battery_discharging",
            &labels,
            f64::from(u8::from(discharging)),
        );
    }
}
