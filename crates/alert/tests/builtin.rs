//! The built-in rule pack: it loads, every expression parses, and each rule fires on data
//! that should trigger it and stays quiet on healthy data (samples written into an
//! in-memory tsdb, evaluated minute by minute with an injected clock).

mod common;

use std::collections::BTreeSet;

use common::{MIN, T0, put, store};
use fleetmon_alert::{AlertState, Manager, ManagerOptions, RuleKind, RuleSet};
use fleetmon_promql::Engine;

#[test]
fn pack_loads_and_every_expression_parses() {
    let set = RuleSet::from_str(
        fleetmon_alert::rulefile::BUILTIN_NAME,
        fleetmon_alert::rulefile::BUILTIN_RULES,
    )
    .unwrap_or_else(|e| panic!("built-in pack does not load:\n{e}"));
    assert_eq!(set, RuleSet::builtin());
    let mut names = BTreeSet::new();
    for (_, rule) in set.rules() {
        fleetmon_promql::parse(&rule.expr).expect(&rule.name);
        assert!(
            names.insert(rule.name.clone()),
            "one rule per concern: {}",
            rule.name
        );
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{}: severity {severity:?}",
            rule.name
        );
        let RuleKind::Alerting { annotations, .. } = &rule.kind else {
            panic!("{} is not an alerting rule", rule.name);
        };
        assert!(annotations.contains_key("summary"), "{}", rule.name);
        assert!(annotations.contains_key("description"), "{}", rule.name);
    }
    let tested: BTreeSet<String> = cases().iter().map(|c| c.alert.to_owned()).collect();
    assert_eq!(names, tested, "every built-in rule has a case below");
}

type Gen = fn(i64) -> f64;

/// A series written every minute for the bad and the good device.
struct Series {
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    bad: Gen,
    good: Gen,
}

struct Case {
    alert: &'static str,
    series: Vec<Series>,
}

fn s(
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    bad: Gen,
    good: Gen,
) -> Series {
    Series {
        metric,
        labels,
        bad,
        good,
    }
}

fn cases() -> Vec<Case> {
    let case = |alert, series| Case { alert, series };
    vec![
        case(
            "DeviceOffline",
            vec![s("device_up", &[("site", "a")], |_| 0.0, |_| 1.0)],
        ),
        case(
            "BatteryLow",
            vec![
                s(
                    "battery_charge_ratio",
                    &[("battery", "BAT0")],
                    |_| 0.1,
                    |_| 0.8,
                ),
                s("battery_discharging", &[], |_| 1.0, |_| 1.0),
            ],
        ),
        case(
            "BatteryEmptySoon",
            vec![s(
                "battery_time_to_empty_seconds",
                &[],
                |_| 3.0 * 3600.0,
                |_| 72.0 * 3600.0,
            )],
        ),
        case(
            "TemperatureOutOfLimits",
            // No configured limit: the default 80°C applies.
            vec![s(
                "temperature_celsius",
                &[("sensor", "cpu")],
                |_| 85.0,
                |_| 55.0,
            )],
        ),
        case(
            "CpuHigh",
            vec![s("cpu_usage_ratio", &[], |_| 0.97, |_| 0.3)],
        ),
        case(
            "MemoryHigh",
            vec![s("memory_used_ratio", &[], |_| 0.95, |_| 0.5)],
        ),
        case(
            "SwapHigh",
            vec![s("swap_used_ratio", &[], |_| 0.9, |_| 0.1)],
        ),
        case(
            "DiskHigh",
            vec![s(
                "filesystem_used_ratio",
                &[("mountpoint", "/data"), ("fstype", "ext4")],
                |_| 0.95,
                |_| 0.4,
            )],
        ),
        case(
            "DiskFullSoon",
            vec![s(
                "disk_full_eta_seconds",
                &[("mountpoint", "/data")],
                |_| 5.0 * 3600.0,
                |_| 30.0 * 86400.0,
            )],
        ),
        case(
            "FirmwareVulnerable",
            vec![s(
                "firmware_vulnerable",
                &[("advisory", "FM-2024-01")],
                |_| 1.0,
                |_| 0.0,
            )],
        ),
        case(
            "FirmwareBelowPolicy",
            vec![s("firmware_below_policy", &[], |_| 1.0, |_| 0.0)],
        ),
        case(
            "NetworkRttHigh",
            vec![s(
                "probe_rtt_seconds",
                &[("target", "gw")],
                |_| 0.9,
                |_| 0.02,
            )],
        ),
        case(
            "NetworkJitterHigh",
            vec![s(
                "probe_jitter_seconds",
                &[("target", "gw")],
                |_| 0.3,
                |_| 0.005,
            )],
        ),
        case(
            "NetworkLossHigh",
            vec![s("probe_loss_ratio", &[("target", "gw")], |_| 0.3, |_| 0.0)],
        ),
        case(
            "DataMissing",
            vec![
                // 6 batches a minute arrive; the bad device loses 1 a minute (~14%), the
                // good one 1 in 2 hours.
                s(
                    "ingest_batches_received_total",
                    &[],
                    |i| 6.0 * i as f64,
                    |i| 6.0 * i as f64,
                ),
                s(
                    "ingest_batches_missing_total",
                    &[],
                    |i| i as f64,
                    |i| (i / 120) as f64,
                ),
            ],
        ),
        case(
            "DataCorrupt",
            vec![
                s(
                    "ingest_batches_received_total",
                    &[],
                    |i| 6.0 * i as f64,
                    |i| 6.0 * i as f64,
                ),
                s(
                    "ingest_batches_corrupt_total",
                    &[],
                    |i| (i / 2) as f64,
                    |_| 0.0,
                ),
            ],
        ),
        case(
            "DataDuplicated",
            vec![
                s(
                    "ingest_batches_received_total",
                    &[],
                    |i| 6.0 * i as f64,
                    |i| 6.0 * i as f64,
                ),
                s(
                    "ingest_batches_duplicate_total",
                    &[],
                    |i| 3.0 * i as f64,
                    |i| (i / 10) as f64,
                ),
            ],
        ),
        case(
            "DataLatencyHigh",
            vec![s("ingest_data_latency_seconds", &[], |_| 600.0, |_| 2.0)],
        ),
        case(
            "ClockSkew",
            vec![s("device_clock_skew_seconds", &[], |_| -95.0, |_| 0.4)],
        ),
        case(
            "AuthFailureBurst",
            vec![s(
                "security_auth_failures_total",
                &[("source", "203.0.113.7")],
                |i| 5.0 * i as f64,
                |i| (i / 10) as f64,
            )],
        ),
        case(
            "NewListeningPort",
            vec![s("listening_ports_new", &[], |_| 1.0, |_| 0.0)],
        ),
        case(
            "AnomalyScoreHigh",
            vec![s(
                "anomaly_score",
                &[("metric", "cpu_usage_ratio")],
                |_| 0.97,
                |_| 0.2,
            )],
        ),
    ]
}

/// Writes a case's series for devices `bad` and `good` for 40 minutes, evaluates the pack
/// every minute, and returns the state of the case's alert per device at the end.
fn run(case: &Case) -> (Option<AlertState>, Option<AlertState>) {
    let db = store();
    for i in 0..=90 {
        let t = T0 + i * MIN;
        for series in &case.series {
            for (device, value) in [("bad", series.bad), ("good", series.good)] {
                let mut labels: Vec<(&str, &str)> = series.labels.to_vec();
                labels.push(("device", device));
                put(&db, series.metric, &labels, t, value(i));
            }
        }
    }
    let mut m = Manager::new(RuleSet::builtin(), ManagerOptions::default());
    let engine = Engine::default();
    // From minute 20, so range functions have 15 minutes of history; `for` is at most 1 h.
    for i in 20..=90 {
        let out = m.evaluate(&engine, &db, T0 + i * MIN);
        assert!(out.errors.is_empty(), "{}: {:?}", case.alert, out.errors);
    }
    let state = |device: &str| {
        m.all_alerts()
            .into_iter()
            .find(|a| {
                a.labels["alertname"] == case.alert
                    && a.labels.get("device").map(String::as_str) == Some(device)
            })
            .map(|a| a.state)
    };
    (state("bad"), state("good"))
}

#[test]
fn every_rule_fires_on_bad_data_and_stays_quiet_on_healthy_data() {
    let mut failures = Vec::new();
    for case in cases() {
        let (bad, good) = run(&case);
        if bad != Some(AlertState::Firing) || good.is_some() {
            failures.push(format!(
                "{}: bad device {bad:?}, good device {good:?}",
                case.alert
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn temperature_respects_a_configured_limit() {
    let db = store();
    for i in 0..=10 {
        let t = T0 + i * MIN;
        // Limit 60: 65 is too hot although below the default 80.
        put(
            &db,
            "temperature_limit_celsius",
            &[("device", "hot")],
            t,
            60.0,
        );
        put(
            &db,
            "temperature_celsius",
            &[("device", "hot"), ("sensor", "cpu")],
            t,
            65.0,
        );
        put(
            &db,
            "temperature_celsius",
            &[("device", "hot"), ("sensor", "board")],
            t,
            40.0,
        );
        // Limit 95: 85 is fine although above the default.
        put(
            &db,
            "temperature_limit_celsius",
            &[("device", "tough")],
            t,
            95.0,
        );
        put(
            &db,
            "temperature_celsius",
            &[("device", "tough"), ("sensor", "cpu")],
            t,
            85.0,
        );
        // Freezing.
        put(
            &db,
            "temperature_celsius",
            &[("device", "cold"), ("sensor", "ambient")],
            t,
            -30.0,
        );
    }
    let mut m = Manager::new(RuleSet::builtin(), ManagerOptions::default());
    for i in 0..=10 {
        m.evaluate(&Engine::default(), &db, T0 + i * MIN);
    }
    let mut firing: Vec<(String, String)> = m
        .alerts()
        .into_iter()
        .filter(|a| {
            a.labels["alertname"] == "TemperatureOutOfLimits" && a.state == AlertState::Firing
        })
        .map(|a| (a.labels["device"].clone(), a.labels["sensor"].clone()))
        .collect();
    firing.sort();
    assert_eq!(
        firing,
        [
            ("cold".to_owned(), "ambient".to_owned()),
            ("hot".to_owned(), "cpu".to_owned())
        ]
    );
}

#[test]
fn offline_alert_carries_the_gateway_label_for_topology() {
    let db = store();
    for i in 0..=5 {
        put(
            &db,
            "device_up",
            &[("device", "s1"), ("gateway", "gw1"), ("site", "a")],
            T0 + i * MIN,
            0.0,
        );
    }
    let mut m = Manager::new(RuleSet::builtin(), ManagerOptions::default());
    for i in 0..=5 {
        m.evaluate(&Engine::default(), &db, T0 + i * MIN);
    }
    let a = m
        .alerts()
        .into_iter()
        .find(|a| a.labels["alertname"] == "DeviceOffline")
        .expect("offline");
    assert_eq!(a.labels["gateway"], "gw1");
    assert_eq!(a.annotations["summary"], "Device s1 is offline");
    assert!(a.annotations["description"].contains("site a"));
}
