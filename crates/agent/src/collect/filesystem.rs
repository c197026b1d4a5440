//! Filesystem usage per mount point: the mount table from `<proc_root>/self/mounts` (falling
//! back to `<proc_root>/mounts`), sizes from `statvfs` on `<host_root>/<mountpoint>`.
//!
//! Computed like `df` and psutil's `disk_usage`: size = `f_blocks × f_frsize`, available to
//! unprivileged users = `f_bavail × f_frsize`, used = `(f_blocks − f_bfree) × f_frsize`,
//! `filesystem_used_ratio` = used / (used + available), so the root-reserved blocks count
//! neither as used nor as available.
//!
//! Pseudo filesystems (proc, sysfs, tmpfs, cgroup, …) and read-only images (squashfs,
//! iso9660) are skipped: they say nothing about the device's storage. A mount point seen twice
//! (bind mounts, stacked mounts) is reported once, for its last mount.

use std::path::{Path, PathBuf};

use tracing::debug;

use super::{CollectError, Out, Roots, read_opt};

/// Filesystem types that hold no device storage.
pub const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: String,
    pub fstype: String,
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The real filesystems of a mount table, one per mount point, in table order.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_dev), Some(mp), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if PSEUDO.contains(&fstype) {
            continue;
        }
        let mountpoint = unescape(mp);
        mounts.retain(|m| m.mountpoint != mountpoint);
        mounts.push(Mount {
            mountpoint,
            fstype: fstype.to_owned(),
        });
    }
    mounts
}

/// Sizes of one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub size: u64,
    pub avail: u64,
    pub used: u64,
}

impl Usage {
    /// used / (used + avail), like `df`'s Use%.
    pub fn used_ratio(&self) -> f64 {
        let denom = self.used + self.avail;
        if denom == 0 {
            0.0
        } else {
            self.used as f64 / denom as f64
        }
    }
}

/// `statvfs` of `path`.
pub fn usage(path: &Path) -> Result<Usage, CollectError> {
    let s = rustix::fs::statvfs(path).map_err(|e| CollectError::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let frsize = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Ok(Usage {
        size: s.f_blocks * frsize,
        avail: s.f_bavail * frsize,
        used: s.f_blocks.saturating_sub(s.f_bfree) * frsize,
    })
}

/// Where to `statvfs` a mount point: under `host_root`.
pub fn host_path(roots: &Roots, mountpoint: &str) -> PathBuf {
    roots.host_root.join(mountpoint.trim_start_matches('/'))
}

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let text = match read_opt(&roots.proc_root.join("self/mounts"))? {
        Some(t) => t,
        None => match read_opt(&roots.proc_root.join("mounts"))? {
            Some(t) => t,
            None => return Ok(()),
        },
    };
    for m in parse_mounts(&text) {
        // A mount that vanished or hangs (stale NFS gives an error) is skipped, not fatal.
        let u = match usage(&host_path(roots, &m.mountpoint)) {
            Ok(u) => u,
            Err(error) => {
                debug!(mountpoint = %m.mountpoint, %error, "statvfs failed; skipped");
                continue;
            }
        };
        if u.size == 0 {
            continue;
        }
        let labels = [
            ("mountpoint", m.mountpoint.as_str()),
            ("fstype", m.fstype.as_str()),
        ];
        out.push("filesystem_size_bytes", &labels, u.size as f64);
        out.push("filesystem_avail_bytes", &labels, u.avail as f64);
        out.push("filesystem_used_ratio", &labels, u.used_ratio());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_pseudo_and_unescapes() {
        let t = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n\
                 /dev/sdb1 /media/my\\040disk vfat rw 0 0\n/dev/sda1 / ext4 rw 0 0\n";
        let m = parse_mounts(t);
        assert_eq!(
            m.iter().map(|m| m.mountpoint.as_str()).collect::<Vec<_>>(),
            vec!["/media/my disk", "/"]
        );
    }
}
