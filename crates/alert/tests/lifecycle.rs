//! The alert lifecycle with an injected clock over an in-memory store: `for`,
//! `keep_firing_for`, resolution, restarts (mid-`for` and while firing), reloads, failures
//! isolated per rule, the per-rule cap, templates, recording rules.

mod common;

use common::{MIN, T0, put, put_range, store};
use fleetmon_alert::{
    AlertState, Dispatcher, DispatcherConfig, Health, Manager, ManagerOptions, RuleSet, Status,
};
use fleetmon_promql::Engine;

const RULES: &str = "
groups:
  - name: node
    interval: 1m
    rules:
      - alert: CpuHigh
        expr: cpu_usage_ratio > 0.9
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: 'CPU {{ $value | humanizePercentage }} on {{ $labels.device }}'
";

fn manager(rules: &str) -> Manager {
    Manager::new(
        RuleSet::from_str("t.yml", rules).expect("rules load"),
        ManagerOptions::default(),
    )
}

fn state_of(m: &Manager, device: &str) -> Option<AlertState> {
    m.all_alerts()
        .into_iter()
        .find(|a| a.labels.get("device").map(String::as_str) == Some(device))
        .map(|a| a.state)
}

#[test]
fn pending_for_the_for_duration_then_firing() {
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.95,
    );
    let mut m = manager(RULES);
    let e = Engine::default();
    let out = m.evaluate(&e, &db, T0);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].to, AlertState::Pending);
    for i in 1..5 {
        m.evaluate(&e, &db, T0 + i * MIN);
        assert_eq!(state_of(&m, "d1"), Some(AlertState::Pending), "minute {i}");
    }
    let out = m.evaluate(&e, &db, T0 + 5 * MIN);
    assert_eq!(state_of(&m, "d1"), Some(AlertState::Firing));
    assert_eq!(out.changes[0].from, AlertState::Pending);
    let a = &m.alerts()[0];
    assert_eq!(a.active_at, T0);
    assert_eq!(a.fired_at, Some(T0 + 5 * MIN));
    assert_eq!(a.labels["alertname"], "CpuHigh");
    assert_eq!(a.labels["severity"], "warning");
    assert!(!a.labels.contains_key("__name__"));
    assert_eq!(a.annotations["summary"], "CPU 95% on d1");
}

#[test]
fn pending_alert_that_clears_is_dropped_without_firing() {
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 2 * MIN,
        0.95,
    );
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0 + 3 * MIN,
        T0 + 10 * MIN,
        0.2,
    );
    let mut m = manager(RULES);
    let e = Engine::default();
    for i in 0..=10 {
        let out = m.evaluate(&e, &db, T0 + i * MIN);
        assert!(
            out.changes.iter().all(|c| c.to != AlertState::Firing),
            "minute {i}"
        );
    }
    assert!(m.all_alerts().is_empty());
}

#[test]
fn evaluation_follows_the_group_interval() {
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.95,
    );
    let mut m = manager(RULES);
    let e = Engine::default();
    assert_eq!(m.evaluate(&e, &db, T0).evaluated_groups, ["node"]);
    assert!(m.evaluate(&e, &db, T0 + 30_000).evaluated_groups.is_empty());
    assert_eq!(m.evaluate(&e, &db, T0 + MIN).evaluated_groups, ["node"]);
}

const KEEP: &str = "
groups:
  - name: net
    interval: 1m
    rules:
      - alert: LossHigh
        expr: probe_loss_ratio > 0.1
        keep_firing_for: 3m
";

#[test]
fn keep_firing_for_holds_a_firing_alert() {
    let db = store();
    put_range(
        &db,
        "probe_loss_ratio",
        &[("device", "d1")],
        T0,
        T0 + MIN,
        0.5,
    );
    put_range(
        &db,
        "probe_loss_ratio",
        &[("device", "d1")],
        T0 + 2 * MIN,
        T0 + 10 * MIN,
        0.0,
    );
    let mut m = manager(KEEP);
    let e = Engine::default();
    m.evaluate(&e, &db, T0);
    assert_eq!(
        state_of(&m, "d1"),
        Some(AlertState::Firing),
        "for: 0 fires at once"
    );
    for i in 1..5 {
        m.evaluate(&e, &db, T0 + i * MIN);
        assert_eq!(state_of(&m, "d1"), Some(AlertState::Firing), "minute {i}");
    }
    let a = &m.alerts()[0];
    assert_eq!(a.keep_firing_since, Some(T0 + 2 * MIN));
    let out = m.evaluate(&e, &db, T0 + 5 * MIN);
    assert_eq!(state_of(&m, "d1"), Some(AlertState::Inactive));
    assert_eq!(out.changes[0].to, AlertState::Inactive);
    let resolved = &m.all_alerts()[0];
    assert_eq!(resolved.resolved_at, Some(T0 + 5 * MIN));
    // Resolved alerts are kept for the retention, then dropped.
    m.evaluate(&e, &db, T0 + 20 * MIN);
    assert_eq!(m.all_alerts().len(), 1);
    m.evaluate(&e, &db, T0 + 21 * MIN);
    assert!(m.all_alerts().is_empty());
}

#[test]
fn keep_firing_for_resets_when_the_condition_returns() {
    let db = store();
    put(&db, "probe_loss_ratio", &[("device", "d1")], T0, 0.5);
    put(&db, "probe_loss_ratio", &[("device", "d1")], T0 + MIN, 0.0);
    put(
        &db,
        "probe_loss_ratio",
        &[("device", "d1")],
        T0 + 2 * MIN,
        0.5,
    );
    put_range(
        &db,
        "probe_loss_ratio",
        &[("device", "d1")],
        T0 + 3 * MIN,
        T0 + 9 * MIN,
        0.0,
    );
    let mut m = manager(KEEP);
    let e = Engine::default();
    for i in 0..=5 {
        m.evaluate(&e, &db, T0 + i * MIN);
        assert_eq!(state_of(&m, "d1"), Some(AlertState::Firing), "minute {i}");
    }
    m.evaluate(&e, &db, T0 + 6 * MIN);
    assert_eq!(state_of(&m, "d1"), Some(AlertState::Inactive));
}

#[test]
fn restart_in_the_middle_of_for_fires_at_the_original_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ManagerOptions {
        state_file: Some(dir.path().join("alerts.json")),
        ..ManagerOptions::default()
    };
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.95,
    );
    let e = Engine::default();
    let rules = || RuleSet::from_str("t.yml", RULES).expect("rules");
    {
        let mut m = Manager::open(rules(), options.clone()).expect("open");
        m.evaluate(&e, &db, T0);
        m.evaluate(&e, &db, T0 + 2 * MIN);
    }
    let mut m = Manager::open(rules(), options).expect("reopen");
    assert_eq!(
        m.alerts()[0].active_at,
        T0,
        "active_at survives the restart"
    );
    m.evaluate(&e, &db, T0 + 4 * MIN);
    assert_eq!(state_of(&m, "d1"), Some(AlertState::Pending));
    m.evaluate(&e, &db, T0 + 5 * MIN);
    assert_eq!(
        state_of(&m, "d1"),
        Some(AlertState::Firing),
        "fires at T0+5m, not later"
    );
}

#[test]
fn restart_while_firing_neither_renotifies_nor_loses_the_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ManagerOptions {
        state_file: Some(dir.path().join("alerts.json")),
        ..ManagerOptions::default()
    };
    let config = || {
        DispatcherConfig::from_yaml(
            "route:\n  receiver: ops\n  group_wait: 0s\n  group_interval: 1m\n",
        )
        .expect("config")
    };
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 8 * MIN,
        0.95,
    );
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0 + 9 * MIN,
        T0 + 20 * MIN,
        0.1,
    );
    let e = Engine::default();
    let rules = || RuleSet::from_str("t.yml", RULES).expect("rules");
    let mut sent = Vec::new();
    {
        let mut m = Manager::open(rules(), options.clone()).expect("open");
        let mut d = Dispatcher::open(config(), dir.path()).expect("dispatcher");
        for i in 0..=6 {
            let now = T0 + i * MIN;
            m.evaluate(&e, &db, now);
            d.observe(&m.all_alerts(), now);
            sent.extend(d.tick(now));
        }
    }
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].status, Status::Firing);
    // Restart.
    let mut m = Manager::open(rules(), options).expect("reopen");
    let mut d = Dispatcher::open(config(), dir.path()).expect("reopen dispatcher");
    for i in 7..=12 {
        let now = T0 + i * MIN;
        m.evaluate(&e, &db, now);
        d.observe(&m.all_alerts(), now);
        sent.extend(d.tick(now));
    }
    assert_eq!(
        sent.len(),
        2,
        "no repeat of the firing notification: {sent:#?}"
    );
    assert_eq!(sent[1].status, Status::Resolved);
    assert_eq!(sent[1].alerts[0].ends_at, Some(T0 + 9 * MIN));
    assert!(sent[1].sequence > sent[0].sequence);
    assert_ne!(sent[0].id, sent[1].id);
}

#[test]
fn reload_keeps_state_of_unchanged_rules() {
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.95,
    );
    put_range(
        &db,
        "memory_used_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.99,
    );
    let mut m = manager(RULES);
    let e = Engine::default();
    m.evaluate(&e, &db, T0);
    m.evaluate(&e, &db, T0 + 2 * MIN);
    let more = format!(
        "{RULES}      - alert: MemHigh\n        expr: memory_used_ratio > 0.9\n        for: 1m\n"
    );
    m.reload(RuleSet::from_str("t.yml", &more).expect("reloaded rules"));
    m.evaluate(&e, &db, T0 + 3 * MIN);
    let cpu = m
        .alerts()
        .into_iter()
        .find(|a| a.labels["alertname"] == "CpuHigh")
        .expect("cpu alert kept");
    assert_eq!(cpu.active_at, T0);
    m.evaluate(&e, &db, T0 + 5 * MIN);
    assert_eq!(state_of(&m, "d1"), Some(AlertState::Firing));
    // A rule whose labels change is a different rule: its state starts afresh.
    let changed = RULES.replace("severity: warning", "severity: critical");
    m.reload(RuleSet::from_str("t.yml", &changed).expect("changed rules"));
    m.evaluate(&e, &db, T0 + 6 * MIN);
    let a = &m.alerts()[0];
    assert_eq!((a.state, a.active_at), (AlertState::Pending, T0 + 6 * MIN));
}

#[test]
fn one_failing_rule_does_not_stop_the_others() {
    let rules = "
groups:
  - name: g
    rules:
      - alert: Broken
        expr: cpu_usage_ratio > 0
        labels:
          device: same
      - alert: Works
        expr: cpu_usage_ratio > 0.5
";
    let db = store();
    put(&db, "cpu_usage_ratio", &[("device", "d1")], T0, 0.9);
    put(&db, "cpu_usage_ratio", &[("device", "d2")], T0, 0.9);
    let mut m = manager(rules);
    let out = m.evaluate(&Engine::default(), &db, T0);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(m.alerts().len(), 2, "Works fired for both devices");
    let view = serde_json::to_value(m.rules()).expect("json");
    let r = &view["groups"][0]["rules"];
    assert_eq!(r[0]["health"], "err");
    assert!(
        r[0]["lastError"]
            .as_str()
            .expect("text")
            .contains("same labelset")
    );
    assert_eq!(r[1]["health"], "ok");
    assert_eq!(r[1]["state"], "firing");
    assert_eq!(r[1]["type"], "alerting");
    assert_eq!(r[1]["alerts"].as_array().expect("alerts").len(), 2);
    assert_eq!(view["groups"][0]["interval"], 60.0);
}

#[test]
fn alerts_per_rule_are_capped_with_a_clear_error() {
    let db = store();
    for d in ["d1", "d2", "d3"] {
        put(&db, "cpu_usage_ratio", &[("device", d)], T0, 0.99);
    }
    let mut m = Manager::new(
        RuleSet::from_str("t.yml", RULES).expect("rules"),
        ManagerOptions {
            max_alerts_per_rule: 2,
            ..ManagerOptions::default()
        },
    );
    let out = m.evaluate(&Engine::default(), &db, T0);
    assert!(
        out.errors[0].2.contains("more than the limit of 2"),
        "{:?}",
        out.errors
    );
    assert!(m.alerts().is_empty());
    let view = m.rules();
    assert_eq!(view.groups[0].rules[0].health, Health::Err);
}

#[test]
fn recording_rules_return_samples_to_write_back() {
    let rules = "
groups:
  - name: rec
    rules:
      - record: site:cpu_usage_ratio:avg
        expr: avg by (site) (cpu_usage_ratio)
        labels:
          source: rule
      - record: fleet:devices:count
        expr: scalar(count(cpu_usage_ratio))
";
    let db = store();
    put(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1"), ("site", "a")],
        T0,
        0.2,
    );
    put(
        &db,
        "cpu_usage_ratio",
        &[("device", "d2"), ("site", "a")],
        T0,
        0.4,
    );
    let mut m = manager(rules);
    let out = m.evaluate(&Engine::default(), &db, T0);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.samples.len(), 2);
    let s = &out.samples[0];
    assert_eq!(s.labels["__name__"], "site:cpu_usage_ratio:avg");
    assert_eq!(s.labels["site"], "a");
    assert_eq!(s.labels["source"], "rule");
    assert!((s.value - 0.3).abs() < 1e-9);
    assert_eq!(s.ts_ms, T0);
    assert_eq!(out.samples[1].labels["__name__"], "fleet:devices:count");
    assert_eq!(out.samples[1].value, 2.0);
}

#[test]
fn alerts_series_are_returned_for_active_alerts() {
    let db = store();
    put(&db, "cpu_usage_ratio", &[("device", "d1")], T0, 0.99);
    let mut m = manager(RULES);
    let out = m.evaluate(&Engine::default(), &db, T0);
    let s = &out.samples[0];
    assert_eq!(s.labels["__name__"], "ALERTS");
    assert_eq!(s.labels["alertstate"], "pending");
    assert_eq!(s.labels["alertname"], "CpuHigh");
}

#[test]
fn evaluate_next_takes_the_shortest_interval_first_then_the_rest() {
    let db = store();
    put_range(
        &db,
        "cpu_usage_ratio",
        &[("device", "d1")],
        T0,
        T0 + 10 * MIN,
        0.95,
    );
    let rules = "
groups:
  - name: slow
    interval: 1m
    rules:
      - alert: SlowCpu
        expr: cpu_usage_ratio > 0.9
  - name: fast
    interval: 10s
    rules:
      - alert: FastCpu
        expr: cpu_usage_ratio > 0.9
";
    let mut m = manager(rules);
    let e = Engine::default();
    let first = m.evaluate_next(&e, &db, T0).expect("both groups are due");
    assert_eq!(first.evaluated_groups, ["fast"]);
    let second = m
        .evaluate_next(&e, &db, T0)
        .expect("the slow group is still due");
    assert_eq!(second.evaluated_groups, ["slow"]);
    assert!(m.evaluate_next(&e, &db, T0).is_none());
    // Ten seconds on only the fast group is due again.
    let third = m
        .evaluate_next(&e, &db, T0 + 10_000)
        .expect("the fast group is due");
    assert_eq!(third.evaluated_groups, ["fast"]);
    assert!(m.evaluate_next(&e, &db, T0 + 10_000).is_none());
}
