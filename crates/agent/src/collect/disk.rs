//! Disk I/O counters from `/proc/diskstats`, per whole disk. Sectors there are always 512
//! bytes, whatever the device's sector size. Partitions are skipped (their I/O is already in
//! the disk's), as are `loop`, `ram` and `zram` devices: a disk is a name that has a
//! directory in `<sys_root>/block`. When `<sys_root>/block` does not exist, every non-loop,
//! non-ram device is reported.

use super::{CollectError, Out, Roots, read_opt};

/// Bytes per `/proc/diskstats` sector.
const SECTOR: f64 = 512.0;

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let path = roots.proc_root.join("diskstats");
    let Some(text) = read_opt(&path)? else {
        return Ok(());
    };
    let block = roots.sys_root.join("block");
    let have_block = block.is_dir();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if have_block && !block.join(name).exists() {
            continue;
        }
        let read: f64 = f[5]
            .parse()
            .map_err(|_| CollectError::parse(&path, "sectors read"))?;
        let written: f64 = f[9]
            .parse()
            .map_err(|_| CollectError::parse(&path, "sectors written"))?;
        out.push("disk_read_bytes_total", &[("disk", name)], read * SECTOR);
        out.push(
            "disk_written_bytes_total",
            &[("disk", name)],
            written * SECTOR,
        );
    }
    Ok(())
}
