//! Network counters per interface from `<proc_root>/net/dev`, except the loopback `lo`.

use super::{CollectError, Out, Roots, read_opt};

/// Column of `/proc/net/dev` (after the interface name) → metric name.
const COLUMNS: &[(usize, &str)] = &[
    (0, "network_receive_bytes_total"),
    (1, "network_receive_packets_total"),
    (2, "network_receive_errors_total"),
    (3, "network_receive_drops_total"),
    (8, "network_transmit_bytes_total"),
    (9, "network_transmit_packets_total"),
    (10, "network_transmit_errors_total"),
    (11, "network_transmit_drops_total"),
];

pub fn collect(roots: &Roots, out: &mut Out) -> Result<(), CollectError> {
    let path = roots.proc_root.join("net/dev");
    let Some(text) = read_opt(&path)? else {
        return Ok(());
    };
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<f64> = rest
            .split_ascii_whitespace()
            .map(|s| s.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| CollectError::parse(&path, format!("counters of {name}")))?;
        if v.len() < 16 {
            return Err(CollectError::parse(&path, format!("counters of {name}")));
        }
        for &(i, metric) in COLUMNS {
            out.push(metric, &[("interface", name)], v[i]);
        }
    }
    Ok(())
}
