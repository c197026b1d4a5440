//! Series the server derives from what it knows about each device, written into the store on
//! a fixed cadence so PromQL, the rules and Grafana see them like any other series:
//! availability, integrity counters, timing, firmware compliance, new listening ports, and the
//! forecasts (battery empty, disk full) with their uncertainty bands, and the peer anomaly
//! scores ([`super::anomaly`]).
//!
//! Every derived series carries the `device` label and the device's `site`, `group`, `model`
//! and `gateway` tags where set (the `gateway` tag is what topology-aware alert suppression
//! follows).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::energy;
use super::firmware::{Finding, Policy};
use super::series_refs::SeriesRefs;
use super::trend;
use super::{Device, Registry, Status};
use crate::store::{Point, SampleStore, SeriesKey, SeriesRef, StoreError};

/// Tags copied onto derived series as labels.
pub const LABEL_TAGS: [&str; 4] = ["site", "group", "model", "gateway"];

/// How long a device's listening ports are learned before a new one counts as new.
pub const PORT_LEARNING_MS: i64 = 10 * 60_000;
/// Battery history the time-to-empty forecast looks at.
pub const BATTERY_WINDOW_MS: i64 = 24 * 3_600_000;
/// Free-space history the disk-full forecast looks at.
pub const DISK_WINDOW_MS: i64 = 6 * 3_600_000;
/// A disk-full forecast further out than this is not written (the disk is not filling).
pub const DISK_HORIZON_HOURS: f64 = 30.0 * 24.0;

/// Whether `metric` is one the server writes itself (derived series, anomaly scores, alert
/// rules' `ALERTS`), not one a device sent.
pub fn is_derived(metric: &str) -> bool {
    const NAMES: [&str; 16] = [
        "device_up",
        "device_last_seen_timestamp_seconds",
        "ingest_data_latency_seconds",
        "device_clock_skew_seconds",
        "firmware_vulnerable",
        "firmware_below_policy",
        "listening_ports_new",
        "temperature_limit_celsius",
        "network_utilization_ratio",
        "battery_drain_ratio_per_hour",
        "anomaly_score",
        "anomaly_peer_score",
        "ALERTS",
        "battery_time_to_empty_seconds",
        "battery_time_to_empty_low_seconds",
        "battery_time_to_empty_high_seconds",
    ];
    NAMES.contains(&metric)
        || metric.starts_with("ingest_batches_")
        || metric.starts_with("disk_full_eta_")
}

/// What the derivation settings are.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub offline_after_ms: i64,
    pub missing_grace_ms: i64,
}

/// The listening ports each device had while it was being learned.
#[derive(Debug, Default)]
pub struct PortBaselines {
    devices: HashMap<String, Baseline>,
}

#[derive(Debug)]
struct Baseline {
    since_ms: i64,
    ports: BTreeSet<BTreeMap<String, String>>,
}

impl PortBaselines {
    /// Ports of `d` not in its baseline; learns while the device is new to this baseline.
    fn new_ports(&mut self, id: &str, d: &Device, now_ms: i64) -> Option<usize> {
        let open: Vec<&BTreeMap<String, String>> = d
            .last_values
            .of("listening_port")
            .filter(|&(_, _, v)| v > 0.5)
            .map(|(labels, _, _)| labels)
            .collect();
        if open.is_empty() && !self.devices.contains_key(id) {
            return None;
        }
        let base = self.devices.entry(id.to_owned()).or_insert(Baseline {
            since_ms: now_ms,
            ports: BTreeSet::new(),
        });
        if now_ms - base.since_ms < PORT_LEARNING_MS {
            base.ports.extend(open.into_iter().cloned());
            return Some(0);
        }
        Some(open.iter().filter(|p| !base.ports.contains(**p)).count())
    }
}

/// The labels every derived series of device `id` carries: `device` and its label tags.
pub(crate) fn device_labels(id: &str, d: &Device) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("device".to_owned(), id.to_owned())]);
    for tag in LABEL_TAGS {
        if let Some(v) = d.tags.get(tag) {
            labels.insert(tag.to_owned(), v.clone());
        }
    }
    labels
}

/// Where [`derive_device`] hands each value: (metric, labels beyond the device's own, value).
pub type Put<'p> = dyn FnMut(&'static str, &[(&'static str, &str)], f64) + 'p;

/// The fast-changing derived values of device `id` at `now_ms`, each handed to `put`.
#[allow(clippy::too_many_arguments)]
pub fn derive_device(
    id: &str,
    d: &Device,
    settings: Settings,
    policy: Option<&Policy>,
    limits: &super::limits::Limits,
    ports: &mut PortBaselines,
    now_ms: i64,
    put: &mut Put<'_>,
) {
    let up = d.status(now_ms, settings.offline_after_ms) == Status::Online;
    put("device_up", &[], f64::from(u8::from(up)));
    if d.last_seen_ms > 0 {
        put(
            "device_last_seen_timestamp_seconds",
            &[],
            d.last_seen_ms as f64 / 1000.0,
        );
    }
    let c = d.integrity.counts(now_ms, settings.missing_grace_ms);
    for (name, n) in [
        ("ingest_batches_received_total", c.received),
        ("ingest_batches_duplicate_total", c.duplicate),
        ("ingest_batches_missing_total", c.missing),
        ("ingest_batches_out_of_order_total", c.out_of_order),
        ("ingest_batches_late_total", c.late),
        ("ingest_batches_corrupt_total", c.corrupt),
        ("ingest_batches_device_dropped_total", c.device_dropped),
    ] {
        put(name, &[], n as f64);
    }
    if let Some(ms) = d.timing.latency_ms() {
        put("ingest_data_latency_seconds", &[], ms as f64 / 1000.0);
    }
    if let Some(ms) = d.timing.skew_ms() {
        put("device_clock_skew_seconds", &[], ms as f64 / 1000.0);
    }
    if let (Some(policy), Some(firmware)) = (policy, d.info("firmware")) {
        let findings = policy.check(d.tag_or_info("model"), firmware);
        let mut below = false;
        for f in &findings {
            match f {
                Finding::Vulnerable { advisory, .. } => {
                    put("firmware_vulnerable", &[("advisory", advisory)], 1.0);
                }
                Finding::BelowMinimum { .. } => below = true,
            }
        }
        put("firmware_below_policy", &[], f64::from(u8::from(below)));
    }
    if let Some(t) = limits.temperature(d) {
        put("temperature_limit_celsius", &[], t.critical_c);
    }
    for (interface, direction, _, used) in super::health::link_utilization(d, limits) {
        put(
            "network_utilization_ratio",
            &[("interface", interface), ("direction", direction.as_str())],
            used,
        );
    }
    if let Some(n) = ports.new_ports(id, d, now_ms) {
        put("listening_ports_new", &[], n as f64);
    }
}

/// What the derivation keeps from one pass to the next: the listening ports learnt, and each
/// device's derived series resolved in the store.
#[derive(Debug, Default)]
pub struct Derivation {
    pub ports: PortBaselines,
    series: SeriesRefs,
}

impl Derivation {
    /// Appends to `out` the derived values of device `id` at `now_ms` (see [`derive_device`]).
    #[allow(clippy::too_many_arguments)]
    pub fn device_values(
        &mut self,
        id: &str,
        d: &Device,
        settings: Settings,
        policy: Option<&Policy>,
        limits: &super::limits::Limits,
        store: &dyn SampleStore,
        now_ms: i64,
        out: &mut Vec<(SeriesRef, Point)>,
    ) -> Result<(), StoreError> {
        let refs = self.series.device(id, d);
        let mut failed = None;
        derive_device(
            id,
            d,
            settings,
            policy,
            limits,
            &mut self.ports,
            now_ms,
            &mut |metric, extra, value| match refs.series(store, metric, extra) {
                Ok(series) => out.push((
                    series,
                    Point {
                        ts_ms: now_ms,
                        value,
                    },
                )),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            },
        );
        failed.map_or(Ok(()), Err)
    }

    /// Appends to `out` the peer anomaly scores of every device at `now_ms`.
    pub fn peer_values(
        &mut self,
        registry: &Registry,
        settings: Settings,
        store: &dyn SampleStore,
        now_ms: i64,
        out: &mut Vec<(SeriesRef, Point)>,
    ) -> Result<(), StoreError> {
        let mut failed = None;
        super::anomaly::peer_scores(
            registry,
            now_ms,
            settings.offline_after_ms,
            &mut |id, d, metric, score| match self.series.device(id, d).series(
                store,
                "anomaly_peer_score",
                &[("metric", metric)],
            ) {
                Ok(series) => out.push((
                    series,
                    Point {
                        ts_ms: now_ms,
                        value: score,
                    },
                )),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            },
        );
        failed.map_or(Ok(()), Err)
    }
}

/// A device a forecast is made for, taken from the registry so the store is read without
/// holding the registry's lock.
#[derive(Debug, Clone)]
pub struct ForecastTarget {
    id: String,
    labels: BTreeMap<String, String>,
    battery: bool,
    disk: bool,
}

/// The devices that have a battery or filesystems.
pub fn forecast_targets(registry: &Registry) -> Vec<ForecastTarget> {
    registry
        .iter()
        .filter_map(|(id, d)| {
            let has = |metric: &str| d.last_values.has_metric(metric);
            let (battery, disk) = (has("battery_charge_ratio"), has("filesystem_avail_bytes"));
            (battery || disk).then(|| ForecastTarget {
                id: id.clone(),
                labels: device_labels(id, d),
                battery,
                disk,
            })
        })
        .collect()
}

/// Battery time to empty (with band and drain rate) and disk-full time per mount point (with
/// band) of each target, from the store.
pub fn forecasts(
    targets: &[ForecastTarget],
    store: &dyn SampleStore,
    now_ms: i64,
) -> Vec<(SeriesKey, Point)> {
    let mut out = Vec::new();
    for t in targets {
        let mut put = |metric: &str, extra: &[(&str, &str)], value: f64| {
            let mut labels = t.labels.clone();
            for (k, v) in extra {
                labels.insert((*k).to_owned(), (*v).to_owned());
            }
            let key = SeriesKey {
                metric: metric.to_owned(),
                labels,
            };
            out.push((
                key,
                Point {
                    ts_ms: now_ms,
                    value,
                },
            ));
        };
        if let Some(e) = t
            .battery
            .then(|| battery_estimate(store, &t.id, now_ms))
            .flatten()
        {
            put("battery_drain_ratio_per_hour", &[], e.drain_ratio_per_hour);
            if let Some(s) = e.time_to_empty_seconds {
                put("battery_time_to_empty_seconds", &[], s);
            }
            if let Some(s) = e.time_to_empty_low_seconds {
                put("battery_time_to_empty_low_seconds", &[], s);
            }
            if let Some(s) = e.time_to_empty_high_seconds {
                put("battery_time_to_empty_high_seconds", &[], s);
            }
        }
        if t.disk {
            for f in disk_forecasts(store, &t.id, now_ms) {
                let m = [("mountpoint", f.mountpoint.as_str())];
                put("disk_full_eta_seconds", &m, f.eta_seconds);
                put("disk_full_eta_low_seconds", &m, f.eta_low_seconds);
                if let Some(h) = f.eta_high_seconds {
                    put("disk_full_eta_high_seconds", &m, h);
                }
            }
        }
    }
    out
}

/// Drain rate and time to empty of the battery of `device` that empties first, from
/// [`BATTERY_WINDOW_MS`] of `battery_charge_ratio`.
pub fn battery_estimate(
    store: &dyn SampleStore,
    device: &str,
    now_ms: i64,
) -> Option<energy::Estimate> {
    let selector = crate::store::Selector {
        metric: Some("battery_charge_ratio".to_owned()),
        labels: BTreeMap::from([("device".to_owned(), device.to_owned())]),
    };
    store
        .select(&selector, now_ms - BATTERY_WINDOW_MS, now_ms)
        .iter()
        .filter_map(|s| {
            let points: Vec<(i64, f64)> = s.points.iter().map(|p| (p.ts_ms, p.value)).collect();
            energy::estimate(&points)
        })
        .min_by(|a, b| {
            let key = |e: &energy::Estimate| e.time_to_empty_seconds.unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b))
        })
}

/// When a filling filesystem will be full, with its band.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DiskForecast {
    pub mountpoint: String,
    pub eta_seconds: f64,
    pub eta_low_seconds: f64,
    /// None when the slow end of the band does not fill at all.
    pub eta_high_seconds: Option<f64>,
}

/// Disk-full forecasts of `device`'s filesystems that fill within [`DISK_HORIZON_HOURS`],
/// from [`DISK_WINDOW_MS`] of `filesystem_avail_bytes` (at least 10 minutes and 5 points).
pub fn disk_forecasts(store: &dyn SampleStore, device: &str, now_ms: i64) -> Vec<DiskForecast> {
    let selector = crate::store::Selector {
        metric: Some("filesystem_avail_bytes".to_owned()),
        labels: BTreeMap::from([("device".to_owned(), device.to_owned())]),
    };
    let mut out = Vec::new();
    for s in store.select(&selector, now_ms - DISK_WINDOW_MS, now_ms) {
        let Some(mount) = s.labels.get("mountpoint") else {
            continue;
        };
        let points: Vec<(i64, f64)> = s.points.iter().map(|p| (p.ts_ms, p.value)).collect();
        let span = points.last().map_or(0, |l| l.0) - points.first().map_or(0, |f| f.0);
        if points.len() < 5 || span < 10 * 60_000 {
            continue;
        }
        let Some((best, soonest, latest)) = trend::fit(&points).and_then(|t| t.hours_until(0.0))
        else {
            continue;
        };
        if best > DISK_HORIZON_HOURS {
            continue;
        }
        out.push(DiskForecast {
            mountpoint: mount.clone(),
            eta_seconds: best * 3600.0,
            eta_low_seconds: soonest * 3600.0,
            eta_high_seconds: latest.map(|h| h * 3600.0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str, id: &str, d: &Device, extra: &[(&str, &str)]) -> SeriesKey {
        let mut labels = device_labels(id, d);
        for (k, v) in extra {
            labels.insert((*k).to_owned(), (*v).to_owned());
        }
        SeriesKey {
            metric: metric.to_owned(),
            labels,
        }
    }

    /// Every device's derived values and the peer scores, as series keys.
    fn snapshot(
        registry: &Registry,
        settings: Settings,
        policy: Option<&Policy>,
        limits: &super::super::limits::Limits,
        ports: &mut PortBaselines,
        now_ms: i64,
    ) -> Vec<(SeriesKey, Point)> {
        let mut out = Vec::new();
        let point = |value| Point {
            ts_ms: now_ms,
            value,
        };
        for (id, d) in registry.iter() {
            derive_device(
                id,
                d,
                settings,
                policy,
                limits,
                ports,
                now_ms,
                &mut |metric, extra, value| out.push((key(metric, id, d, extra), point(value))),
            );
        }
        super::super::anomaly::peer_scores(
            registry,
            now_ms,
            settings.offline_after_ms,
            &mut |id, d, metric, score| {
                out.push((
                    key("anomaly_peer_score", id, d, &[("metric", metric)]),
                    point(score),
                ));
            },
        );
        out
    }
    use crate::fleet::BatchSummary;
    use crate::fleet::Transport;

    fn value(out: &[(SeriesKey, Point)], metric: &str, device: &str) -> Option<f64> {
        out.iter()
            .find(|(k, _)| k.metric == metric && k.labels["device"] == device)
            .map(|(_, p)| p.value)
    }

    #[test]
    fn availability_integrity_and_tags_become_series() {
        let mut reg = Registry::default();
        reg.session_opened("gw-1", 1_000, "127.0.0.1:1");
        let d = reg.entry("gw-1");
        d.tags.insert("site".into(), "berlin".into());
        d.tags.insert("lat".into(), "52.5".into());
        let child = reg.entry("node-1");
        child.tags.insert("gateway".into(), "gw-1".into());
        for seq in [0, 1, 3] {
            child.record_summary(
                &BatchSummary {
                    device: "node-1".into(),
                    boot_id: "b".into(),
                    seq,
                    sent_at_ms: 1_000,
                    dropped_before: 0,
                    samples: 1,
                    newest_ts_ms: Some(900),
                },
                Transport::Http,
                1_000,
                0,
            );
        }
        let settings = Settings {
            offline_after_ms: 60_000,
            missing_grace_ms: 0,
        };
        let out = snapshot(
            &reg,
            settings,
            None,
            &Default::default(),
            &mut PortBaselines::default(),
            500_000,
        );
        assert_eq!(value(&out, "device_up", "gw-1"), Some(1.0));
        assert_eq!(value(&out, "device_up", "node-1"), Some(0.0));
        assert_eq!(
            value(&out, "ingest_batches_received_total", "node-1"),
            Some(3.0)
        );
        assert_eq!(
            value(&out, "ingest_batches_missing_total", "node-1"),
            Some(1.0)
        );
        let (k, _) = out
            .iter()
            .find(|(k, _)| k.metric == "device_up" && k.labels["device"] == "gw-1")
            .unwrap();
        assert_eq!(k.labels.get("site").map(String::as_str), Some("berlin"));
        assert!(!k.labels.contains_key("lat"), "positions are not labels");
        let (k, _) = out
            .iter()
            .find(|(k, _)| k.metric == "device_up" && k.labels["device"] == "node-1")
            .unwrap();
        assert_eq!(k.labels.get("gateway").map(String::as_str), Some("gw-1"));
    }

    #[test]
    fn a_port_opened_after_learning_is_new() {
        let mut reg = Registry::default();
        let port = |p: &str| {
            BTreeMap::from([
                ("protocol".to_owned(), "tcp".to_owned()),
                ("port".to_owned(), p.to_owned()),
            ])
        };
        reg.entry("d")
            .last_values
            .insert(("listening_port".into(), port("22")), (0, 1.0));
        let settings = Settings {
            offline_after_ms: 60_000,
            missing_grace_ms: 0,
        };
        let mut ports = PortBaselines::default();
        let at = |t| {
            snapshot(
                &reg,
                settings,
                None,
                &Default::default(),
                &mut PortBaselines::default(),
                t,
            )
        };
        assert_eq!(value(&at(0), "listening_ports_new", "d"), Some(0.0));
        snapshot(&reg, settings, None, &Default::default(), &mut ports, 0);
        let later = PORT_LEARNING_MS + 1;
        let out = snapshot(&reg, settings, None, &Default::default(), &mut ports, later);
        assert_eq!(value(&out, "listening_ports_new", "d"), Some(0.0));
        reg.entry("d")
            .last_values
            .insert(("listening_port".into(), port("4444")), (later, 1.0));
        let out = snapshot(
            &reg,
            settings,
            None,
            &Default::default(),
            &mut ports,
            later + 1,
        );
        assert_eq!(value(&out, "listening_ports_new", "d"), Some(1.0));
    }

    #[test]
    fn a_filling_disk_gets_a_full_time_with_a_band() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::TsdbStore::open(dir.path(), fleetmon_tsdb::Options::default()).unwrap();
        let mut reg = Registry::default();
        let labels = BTreeMap::from([("mountpoint".to_owned(), "/data".to_owned())]);
        let t0 = 1_700_000_000_000_i64;
        // 1 GB free, losing 10 MB a minute: empty in 100 minutes from the start.
        let samples: Vec<(SeriesKey, Point)> = (0..60)
            .map(|i| {
                let mut l = labels.clone();
                l.insert("device".into(), "d".into());
                let key = SeriesKey {
                    metric: "filesystem_avail_bytes".into(),
                    labels: l,
                };
                let value = 1e9 - 1e7 * i as f64;
                (
                    key,
                    Point {
                        ts_ms: t0 + i * 60_000,
                        value,
                    },
                )
            })
            .collect();
        store.append(&samples).unwrap();
        reg.entry("d")
            .last_values
            .insert(("filesystem_avail_bytes".into(), labels), (t0, 1e9));
        let now = t0 + 59 * 60_000;
        let out = forecasts(&forecast_targets(&reg), &store, now);
        let eta = value(&out, "disk_full_eta_seconds", "d").unwrap();
        assert!((eta - 41.0 * 60.0).abs() < 60.0, "{eta}");
        let low = value(&out, "disk_full_eta_low_seconds", "d").unwrap();
        let high = value(&out, "disk_full_eta_high_seconds", "d").unwrap();
        assert!(low <= eta && eta <= high);
    }
}
