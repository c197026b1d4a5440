//! Link utilisation: how full each network interface of a device runs, from the byte counters
//! the device sends (`network_receive_bytes_total`, `network_transmit_bytes_total`, per
//! `interface`) against the capacity configured for the link ([`super::limits`]).
//!
//! The throughput is the counter's increase between a device's two newest samples over their
//! time apart, in bits per second; a counter that went down (a reboot, a wrapped 32-bit
//! counter) gives no rate until the next sample. The loopback interface is left out.

use std::collections::BTreeMap;

use serde::Serialize;

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Receive,
    Transmit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Receive => "receive",
            Direction::Transmit => "transmit",
        }
    }

    /// The direction a byte counter counts, if it is one.
    fn of_metric(metric: &str) -> Option<Self> {
        match metric {
            "network_receive_bytes_total" => Some(Direction::Receive),
            "network_transmit_bytes_total" => Some(Direction::Transmit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Meter {
    ts_ms: i64,
    bytes: f64,
    bits_per_second: Option<f64>,
}

/// The throughput of each interface and direction of one device.
#[derive(Debug, Clone, Default)]
pub struct LinkMeters {
    meters: BTreeMap<(String, Direction), Meter>,
}

impl LinkMeters {
    /// Takes a sample; anything but a byte counter of a named, non-loopback interface is
    /// ignored, and so is a sample not newer than the last one taken.
    pub fn observe(
        &mut self,
        metric: &str,
        labels: &BTreeMap<String, String>,
        ts_ms: i64,
        value: f64,
    ) {
        let Some(direction) = Direction::of_metric(metric) else {
            return;
        };
        let Some(interface) = labels.get("interface").filter(|i| i.as_str() != "lo") else {
            return;
        };
        if !value.is_finite() {
            return;
        }
        let key = (interface.clone(), direction);
        match self.meters.get_mut(&key) {
            Some(m) if ts_ms > m.ts_ms => {
                let seconds = (ts_ms - m.ts_ms) as f64 / 1000.0;
                m.bits_per_second = (value >= m.bytes).then(|| (value - m.bytes) * 8.0 / seconds);
                m.ts_ms = ts_ms;
                m.bytes = value;
            }
            Some(_) => {}
            None => {
                self.meters.insert(
                    key,
                    Meter {
                        ts_ms,
                        bytes: value,
                        bits_per_second: None,
                    },
                );
            }
        }
    }

    /// Every known throughput: (interface, direction, bits per second).
    pub fn rates(&self) -> impl Iterator<Item = (&str, Direction, f64)> {
        self.meters
            .iter()
            .filter_map(|((i, d), m)| m.bits_per_second.map(|r| (i.as_str(), *d, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("interface".to_owned(), name.to_owned())])
    }

    #[test]
    fn throughput_is_the_counter_increase_over_time() {
        let mut m = LinkMeters::default();
        let rx = "network_receive_bytes_total";
        m.observe(rx, &iface("wwan0"), 10_000, 1_000.0);
        assert_eq!(m.rates().count(), 0, "one sample gives no rate");
        m.observe(rx, &iface("wwan0"), 20_000, 126_000.0);
        assert_eq!(
            m.rates().collect::<Vec<_>>(),
            vec![("wwan0", Direction::Receive, 100_000.0)]
        );
        // An older or repeated sample changes nothing; a reset gives no rate until the next.
        m.observe(rx, &iface("wwan0"), 20_000, 999_999.0);
        m.observe(rx, &iface("wwan0"), 15_000, 0.0);
        assert_eq!(m.rates().next().map(|r| r.2), Some(100_000.0));
        m.observe(rx, &iface("wwan0"), 30_000, 500.0);
        assert_eq!(m.rates().count(), 0);
        m.observe(rx, &iface("wwan0"), 40_000, 1_500.0);
        assert_eq!(m.rates().next().map(|r| r.2), Some(800.0));
    }

    #[test]
    fn other_series_and_loopback_are_ignored() {
        let mut m = LinkMeters::default();
        for t in [1_000, 2_000] {
            m.observe("network_receive_bytes_total", &iface("lo"), t, t as f64);
            m.observe("network_receive_packets_total", &iface("eth0"), t, t as f64);
            m.observe(
                "network_transmit_bytes_total",
                &BTreeMap::new(),
                t,
                t as f64,
            );
            m.observe("network_transmit_bytes_total", &iface("eth0"), t, f64::NAN);
        }
        assert_eq!(m.rates().count(), 0);
    }
}
