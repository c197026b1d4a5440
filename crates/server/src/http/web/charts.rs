//! Which charts a device page shows: one per metric family the device reports, each a few
//! PromQL queries with a unit. The page writes them as `data-` attributes; the script runs
//! them through `/prometheus/api/v1/query_range` for the picked time range and draws them.
//!
//! In a query, `$SEL` becomes the device's label matcher and `$RATE` a rate window the script
//! fits to the step (`rate()` needs two samples in it).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::escape;

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ratio,
    Bytes,
    BytesPerSecond,
    PerSecond,
    Seconds,
    Celsius,
    Volts,
    Amperes,
    Watts,
    Plain,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Bytes => "bytes",
            Unit::BytesPerSecond => "bytes/s",
            Unit::PerSecond => "/s",
            Unit::Seconds => "seconds",
            Unit::Celsius => "celsius",
            Unit::Volts => "volts",
            Unit::Amperes => "amperes",
            Unit::Watts => "watts",
            Unit::Plain => "",
        }
    }
}

/// One chart: a title, the panel it belongs to, a unit, and (legend, query) pairs.
#[derive(Debug)]
pub struct Chart {
    pub title: &'static str,
    pub panel: Panel,
    pub unit: Unit,
    pub queries: &'static [(&'static str, &'static str)],
}

/// Where on the device page a chart goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    System,
    Network,
    Energy,
    Agent,
}

macro_rules! chart {
    ($title:expr, $panel:ident, $unit:ident, [$(($label:expr, $q:expr)),+ $(,)?]) => {
        Chart { title: $title, panel: Panel::$panel, unit: Unit::$unit, queries: &[$(($label, $q)),+] }
    };
}

/// The known metric families, in page order.
pub const FAMILIES: &[Chart] = &[
    chart!("CPU", System, Ratio, [("cpu", "cpu_usage_ratio{$SEL}")]),
    chart!(
        "CPU per core",
        System,
        Ratio,
        [("core", "cpu_core_usage_ratio{$SEL}")]
    ),
    chart!(
        "Load",
        System,
        Plain,
        [
            ("1 min", "load1{$SEL}"),
            ("5 min", "load5{$SEL}"),
            ("15 min", "load15{$SEL}")
        ]
    ),
    chart!(
        "Memory and swap",
        System,
        Ratio,
        [
            ("memory", "memory_used_ratio{$SEL}"),
            ("swap", "swap_used_ratio{$SEL}")
        ]
    ),
    chart!(
        "Filesystems",
        System,
        Ratio,
        [("used", "filesystem_used_ratio{$SEL}")]
    ),
    chart!(
        "Disk I/O",
        System,
        BytesPerSecond,
        [
            ("read", "rate(disk_read_bytes_total{$SEL}[$RATE])"),
            ("written", "rate(disk_written_bytes_total{$SEL}[$RATE])"),
        ]
    ),
    chart!(
        "Temperature",
        System,
        Celsius,
        [("", "temperature_celsius{$SEL}")]
    ),
    chart!("Humidity", System, Ratio, [("", "humidity_ratio{$SEL}")]),
    chart!(
        "Processes and listening ports",
        System,
        Plain,
        [
            ("processes", "processes{$SEL}"),
            ("ports", "listening_ports{$SEL}")
        ]
    ),
    chart!(
        "Uptime",
        System,
        Seconds,
        [("uptime", "uptime_seconds{$SEL}")]
    ),
    chart!(
        "Round-trip time and jitter",
        Network,
        Seconds,
        [
            ("rtt", "probe_rtt_seconds{$SEL}"),
            ("jitter", "probe_jitter_seconds{$SEL}")
        ]
    ),
    chart!(
        "Probe loss",
        Network,
        Ratio,
        [("loss", "probe_loss_ratio{$SEL}")]
    ),
    chart!(
        "Throughput",
        Network,
        BytesPerSecond,
        [
            ("rx", "rate(network_receive_bytes_total{$SEL}[$RATE])"),
            ("tx", "rate(network_transmit_bytes_total{$SEL}[$RATE])"),
        ]
    ),
    chart!(
        "Packets",
        Network,
        PerSecond,
        [
            ("rx", "rate(network_receive_packets_total{$SEL}[$RATE])"),
            ("tx", "rate(network_transmit_packets_total{$SEL}[$RATE])"),
        ]
    ),
    chart!(
        "Errors and drops",
        Network,
        PerSecond,
        [
            (
                "rx errors",
                "rate(network_receive_errors_total{$SEL}[$RATE])"
            ),
            (
                "tx errors",
                "rate(network_transmit_errors_total{$SEL}[$RATE])"
            ),
            ("rx drops", "rate(network_receive_drops_total{$SEL}[$RATE])"),
            (
                "tx drops",
                "rate(network_transmit_drops_total{$SEL}[$RATE])"
            ),
        ]
    ),
    chart!(
        "Battery charge",
        Energy,
        Ratio,
        [("charge", "battery_charge_ratio{$SEL}")]
    ),
    chart!(
        "Battery voltage",
        Energy,
        Volts,
        [("", "battery_voltage_volts{$SEL}")]
    ),
    chart!(
        "Battery current",
        Energy,
        Amperes,
        [("", "battery_current_amperes{$SEL}")]
    ),
    chart!(
        "Battery power",
        Energy,
        Watts,
        [("", "battery_power_watts{$SEL}")]
    ),
    chart!(
        "Power source",
        Energy,
        Plain,
        [
            ("mains", "power_source_mains{$SEL}"),
            ("discharging", "battery_discharging{$SEL}")
        ]
    ),
    chart!(
        "Agent CPU",
        Agent,
        Ratio,
        [("cpu", "rate(agent_cpu_seconds_total{$SEL}[$RATE])")]
    ),
    chart!(
        "Agent memory",
        Agent,
        Bytes,
        [("resident", "agent_resident_bytes{$SEL}")]
    ),
    chart!(
        "Agent uplink",
        Agent,
        BytesPerSecond,
        [("sent", "rate(agent_uplink_bytes_total{$SEL}[$RATE])")]
    ),
    chart!(
        "Agent spool",
        Agent,
        Bytes,
        [("spool", "agent_spool_bytes{$SEL}")]
    ),
    chart!(
        "Agent drops",
        Agent,
        Plain,
        [("dropped batches", "agent_spool_dropped_batches_total{$SEL}")]
    ),
];

/// The metric names a chart reads.
pub fn metrics_of(chart: &Chart) -> impl Iterator<Item = &'static str> + '_ {
    chart.queries.iter().map(|(_, q)| metric_in(q))
}

/// The metric name in a family query (`rate(name{...}[..])` or `name{...}`).
fn metric_in(q: &'static str) -> &'static str {
    let start = q.rfind('(').map_or(0, |i| i + 1);
    let end = q.find('{').unwrap_or(q.len());
    &q[start..end]
}

/// A PromQL string literal's content: backslashes and quotes escaped.
pub fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// One chart's markup for `device`: the queries as JSON in `data-queries`.
pub fn render(
    out: &mut String,
    device: &str,
    title: &str,
    unit: Unit,
    queries: &[(String, String)],
) {
    let sel = format!("device=\"{}\"", promql_string(device));
    let list: Vec<serde_json::Value> = queries
        .iter()
        .map(|(label, q)| serde_json::json!({"label": label, "query": q.replace("$SEL", &sel)}))
        .collect();
    let _ = write!(
        out,
        r#"<figure class="chart" data-unit="{}" data-queries="{}"><figcaption>{}</figcaption><div class="plot"></div><p class="chart-status muted" role="status">loading…</p></figure>"#,
        unit.name(),
        escape(&serde_json::Value::Array(list).to_string()),
        escape(title)
    );
}

/// The charts of `panel` for a device reporting `reported` metrics; for [`Panel::System`] also
/// a plain chart of every reported metric no family covers.
pub fn panel(out: &mut String, device: &str, panel: Panel, reported: &BTreeSet<&str>) -> usize {
    let mut n = 0;
    for chart in FAMILIES.iter().filter(|c| c.panel == panel) {
        let queries: Vec<(String, String)> = chart
            .queries
            .iter()
            .filter(|(_, q)| reported.contains(metric_in(q)))
            .map(|(l, q)| ((*l).to_owned(), (*q).to_owned()))
            .collect();
        if !queries.is_empty() {
            render(out, device, chart.title, chart.unit, &queries);
            n += 1;
        }
    }
    if panel == Panel::System {
        let known: BTreeSet<&str> = FAMILIES.iter().flat_map(metrics_of).collect();
        for m in reported {
            if known.contains(m) || *m == "device_info" {
                continue;
            }
            let unit = if m.ends_with("_ratio") {
                Unit::Ratio
            } else if m.ends_with("_bytes") {
                Unit::Bytes
            } else if m.ends_with("_seconds") {
                Unit::Seconds
            } else {
                Unit::Plain
            };
            let q = if m.ends_with("_total") {
                format!("rate({m}{{$SEL}}[$RATE])")
            } else {
                format!("{m}{{$SEL}}")
            };
            render(out, device, m, unit, &[(String::new(), q)]);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_queries_name_their_metric() {
        assert_eq!(
            metric_in("rate(disk_read_bytes_total{$SEL}[$RATE])"),
            "disk_read_bytes_total"
        );
        assert_eq!(metric_in("cpu_usage_ratio{$SEL}"), "cpu_usage_ratio");
        for chart in FAMILIES {
            for m in metrics_of(chart) {
                assert!(
                    m.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{m}"
                );
            }
        }
    }

    #[test]
    fn only_reported_families_and_unknown_metrics_are_drawn() {
        let reported = BTreeSet::from(["cpu_usage_ratio", "probe_rtt_seconds", "fan_rpm"]);
        let mut out = String::new();
        assert_eq!(panel(&mut out, "d\"1", Panel::System, &reported), 2);
        assert!(out.contains("CPU") && out.contains("fan_rpm"), "{out}");
        assert!(!out.contains("Memory"));
        // The device id is escaped for PromQL, then the JSON for HTML.
        assert!(out.contains(r#"device=\&quot;d\\\&quot;1\&quot;"#), "{out}");
        let mut net = String::new();
        assert_eq!(panel(&mut net, "d", Panel::Network, &reported), 1);
    }
}
