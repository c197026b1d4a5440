//! Temperatures (and humidity, where a sensor exists) from sysfs:
//!
//! - `<sys_root>/class/thermal/thermal_zone*/temp` (m°C), `sensor` = the zone's `type`
//!   (`cpu-thermal` on a Raspberry Pi, `x86_pkg_temp`, `acpitz`);
//! - `<sys_root>/class/hwmon/hwmon*/temp*_input` (m°C), `sensor` = `{name}_{label}` when the
//!   channel has a `temp*_label`, else `{name}_temp{N}` (`coretemp_Core 0`, `nvme_temp1`);
//! - `<sys_root>/class/hwmon/hwmon*/humidity*_input` (milli-percent) → `humidity_ratio`.
//!
//! A sensor name seen twice gets the zone or hwmon directory appended (`acpitz_thermal_zone1`)
//! so series never collide.

use std::collections::BTreeSet;

use super::{CollectError, Out, Roots, dir_entries, read_num, read_text};

fn unique(seen: &mut BTreeSet<String>, name: String, dir: &str) -> String {
    let name = if seen.contains(&name) {
        format!("{name}_{dir}")
    } else {
        name
    };
    seen.insert(name.clone());
    name
}

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let mut seen = BTreeSet::new();
    for (dir, path) in dir_entries(&roots.sys_root.join("class/thermal")) {
        if !dir.starts_with("thermal_zone") {
            continue;
        }
        let Some(milli) = read_num(&path.join("temp")) else {
            continue;
        };
        let kind = read_text(&path.join("type")).unwrap_or_else(|| dir.clone());
        let sensor = unique(&mut seen, kind, &dir);
        out.push(
            "temperature_celsius",
            &[("sensor", &sensor)],
            milli / 1000.0,
        );
    }
    for (dir, path) in dir_entries(&roots.sys_root.join("class/hwmon")) {
        let chip = read_text(&path.join("name")).unwrap_or_else(|| dir.clone());
        for (file, fpath) in dir_entries(&path) {
            let (prefix, metric, scale) = if let Some(ch) = file
                .strip_prefix("temp")
                .and_then(|s| s.strip_suffix("_input"))
            {
                (format!("temp{ch}"), "temperature_celsius", 1000.0)
            } else if let Some(ch) = file
                .strip_prefix("humidity")
                .and_then(|s| s.strip_suffix("_input"))
            {
                (format!("humidity{ch}"), "humidity_ratio", 100_000.0)
            } else {
                continue;
            };
            let Some(raw) = read_num(&fpath) else {
                continue;
            };
            let label =
                read_text(&path.join(format!("{prefix}_label"))).unwrap_or_else(|| prefix.clone());
            let sensor = unique(&mut seen, format!("{chip}_{label}"), &dir);
            out.push(metric, &[("sensor", &sensor)], raw / scale);
        }
    }
    Ok(())
}
