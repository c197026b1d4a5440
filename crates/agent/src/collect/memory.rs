//! Memory and swap from `/proc/meminfo`, with psutil's and `free`'s meaning: used memory is
//! what is not available (`1 − MemAvailable / MemTotal`), used swap is `SwapTotal − SwapFree`.
//! Kernels before 3.14 have no `MemAvailable`; then it is `MemFree + Buffers + Cached`.

use std::collections::HashMap;

use super::{CollectError, Out, Roots, read_opt};

/// `/proc/meminfo` in bytes, keyed by field name.
pub fn parse_meminfo(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (k, rest) = line.split_once(':')?;
            let mut f = rest.split_ascii_whitespace();
            let n: u64 = f.next()?.parse().ok()?;
            let mult = if f.next() == Some("kB") { 1024 } else { 1 };
            Some((k.trim(), n * mult))
        })
        .collect()
}

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let path = roots.proc_root.join("meminfo");
    let Some(text) = read_opt(&path)? else {
        return Ok(());
    };
    let m = parse_meminfo(&text);
    let total = *m
        .get("MemTotal")
        .ok_or_else(|| CollectError::parse(&path, "MemTotal"))?;
    let available = m.get("MemAvailable").copied().unwrap_or_else(|| {
        ["MemFree", "Buffers", "Cached"]
            .iter()
            .filter_map(|k| m.get(k))
            .sum()
    });
    out.push("memory_total_bytes", &[], total as f64);
    out.push("memory_available_bytes", &[], available as f64);
    if total > 0 {
        out.push(
            "memory_used_ratio",
            &[],
            1.0 - available as f64 / total as f64,
        );
    }
    if let (Some(&st), Some(&sf)) = (m.get("SwapTotal"), m.get("SwapFree")) {
        let used = st.saturating_sub(sf);
        out.push("swap_total_bytes", &[], st as f64);
        out.push("swap_used_bytes", &[], used as f64);
        let ratio = if st > 0 { used as f64 / st as f64 } else { 0.0 };
        out.push("swap_used_ratio", &[], ratio);
    }
    Ok(())
}
