//! System facts: `uptime_seconds` (`/proc/uptime`), `processes` (numeric directories of
//! `/proc`), and `device_info{os,kernel,firmware,agent_version,model}` = 1.
//!
//! `device_info` is read once at start ([`StaticInfo`]): `os` is `PRETTY_NAME` of
//! `<etc_root>/os-release` (else `<etc_root>/../usr/lib/os-release`), `kernel` is
//! `/proc/sys/kernel/osrelease`, `model` is the device-tree model (`/proc/device-tree/model`,
//! `/sys/firmware/devicetree/base/model`) or the DMI product (`/sys/class/dmi/id/product_name`),
//! `firmware` comes from the configured file or command ([`firmware_version`]). Anything
//! unknown is `unknown`.

use std::path::Path;
use std::process::Command;

use tracing::warn;

use super::{CollectError, Out, Roots, dir_entries, read_opt, read_text};

/// The agent's version, as reported in `device_info`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

const UNKNOWN: &str = "unknown";

/// The `device_info` labels, fixed for the agent's lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticInfo {
    pub os: String,
    pub kernel: String,
    pub firmware: String,
    pub model: String,
}

fn os_release(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

impl StaticInfo {
    pub fn read(roots: &Roots, firmware: String) -> Self {
        let os = [
            roots.etc_root.join("os-release"),
            roots.etc_root.join("../usr/lib/os-release"),
        ]
        .iter()
        .find_map(|p| os_release(&read_opt(p).ok().flatten()?))
        .unwrap_or_else(|| UNKNOWN.to_owned());
        let kernel = read_text(&roots.proc_root.join("sys/kernel/osrelease"))
            .unwrap_or_else(|| UNKNOWN.to_owned());
        let model = [
            roots.proc_root.join("device-tree/model"),
            roots.sys_root.join("firmware/devicetree/base/model"),
            roots.sys_root.join("class/dmi/id/product_name"),
        ]
        .iter()
        .find_map(|p| read_text(p))
        .unwrap_or_else(|| UNKNOWN.to_owned());
        Self {
            os,
            kernel,
            firmware,
            model,
        }
    }
}

/// Longest firmware string kept (label values are limited by the protocol).
const MAX_FIRMWARE: usize = 256;

/// The firmware version: the first line of `file`, else the first line of `command`'s
/// output (run with `sh -c`), else `unknown`; at most 256 characters. Read once at start.
pub fn firmware_version(file: Option<&Path>, command: Option<&str>) -> String {
    let mut v = firmware_line(file, command);
    if let Some((i, _)) = v.char_indices().nth(MAX_FIRMWARE) {
        v.truncate(i);
    }
    v
}

fn firmware_line(file: Option<&Path>, command: Option<&str>) -> String {
    if let Some(f) = file {
        match std::fs::read_to_string(f) {
            Ok(s) => {
                if let Some(line) = s.lines().map(str::trim).find(|l| !l.is_empty()) {
                    return line.to_owned();
                }
            }
            Err(error) => warn!(file = %f.display(), %error, "firmware file unreadable"),
        }
    }
    if let Some(cmd) = command {
        match Command::new("sh").arg("-c").arg(cmd).output() {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout);
                if let Some(line) = s.lines().map(str::trim).find(|l| !l.is_empty()) {
                    return line.to_owned();
                }
            }
            Ok(o) => warn!(command = cmd, status = %o.status, "firmware command failed"),
            Err(error) => warn!(command = cmd, %error, "firmware command could not run"),
        }
    }
    UNKNOWN.to_owned()
}

pub fn collect(roots: &Roots, info: &StaticInfo, out: &mut Out) -> Result<(), CollectError> {
    let path = roots.proc_root.join("uptime");
    if let Some(text) = read_opt(&path)? {
        let up: f64 = text
            .split_ascii_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CollectError::parse(&path, "uptime"))?;
        out.push("uptime_seconds", &[], up);
    }
    let processes = dir_entries(&roots.proc_root)
        .iter()
        .filter(|(name, _)| name.bytes().all(|b| b.is_ascii_digit()))
        .count();
    if processes > 0 {
        out.push("processes", &[], processes as f64);
    }
    out.push(
        "device_info",
        &[
            ("os", &info.os),
            ("kernel", &info.kernel),
            ("firmware", &info.firmware),
            ("agent_version", AGENT_VERSION),
            ("model", &info.model),
        ],
        1.0,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_from_a_file_then_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fw");
        std::fs::write(&f, "\n  v1.2.3 (build 7)\nsecond\n").unwrap();
        assert_eq!(
            firmware_version(Some(&f), Some("echo no")),
            "v1.2.3 (build 7)"
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            firmware_version(Some(&missing), Some("echo fw-9; echo x")),
            "fw-9"
        );
        assert_eq!(firmware_version(None, Some("exit 3")), "unknown");
        assert_eq!(
            firmware_version(None, Some("printf 'x%.0s' $(seq 300)")).len(),
            256
        );
    }
}
