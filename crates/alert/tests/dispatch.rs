//! The dispatcher with an injected clock: grouping and its timers, resolution, inhibition,
//! silences, topology suppression, flap damping, and the notification's JSON shape.

mod common;

use common::{MIN, T0, firing, ls};
use fleetmon_alert::silence::NewSilence;
use fleetmon_alert::{Alert, Dispatcher, DispatcherConfig, Matcher, Notification, Status};

fn dispatcher(yaml: &str) -> Dispatcher {
    Dispatcher::new(DispatcherConfig::from_yaml(yaml).expect("config")).expect("dispatcher")
}

const GROUPING: &str = "
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
";

fn names(n: &Notification) -> Vec<(String, Status)> {
    n.alerts
        .iter()
        .map(|a| (a.labels["device"].clone(), a.status))
        .collect()
}

/// Observes `alerts` and ticks at `now`.
fn step(d: &mut Dispatcher, alerts: &[Alert], now: i64) -> Vec<Notification> {
    d.observe(alerts, now);
    d.tick(now)
}

#[test]
fn group_wait_batches_then_group_interval_then_repeat() {
    let mut d = dispatcher(GROUPING);
    let a1 = firing(&[("alertname", "Offline"), ("device", "d1")], T0);
    let a2 = firing(&[("alertname", "Offline"), ("device", "d2")], T0 + 10_000);
    let a3 = firing(&[("alertname", "Offline"), ("device", "d3")], T0 + MIN);
    assert!(
        step(&mut d, std::slice::from_ref(&a1), T0).is_empty(),
        "waits group_wait"
    );
    assert!(step(&mut d, &[a1.clone(), a2.clone()], T0 + 10_000).is_empty());
    let first = step(&mut d, &[a1.clone(), a2.clone()], T0 + 30_000);
    assert_eq!(first.len(), 1, "one notification for both");
    assert_eq!(
        names(&first[0]),
        [("d1".into(), Status::Firing), ("d2".into(), Status::Firing)]
    );
    assert_eq!(first[0].group_labels, ls(&[("alertname", "Offline")]));
    let all = [a1.clone(), a2.clone(), a3.clone()];
    // d3 arrives after the first flush: it waits for the next group_interval tick.
    assert!(step(&mut d, &all, T0 + MIN).is_empty());
    assert!(step(&mut d, &all, T0 + 5 * MIN).is_empty());
    let second = step(&mut d, &all, T0 + 30_000 + 5 * MIN);
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].alerts.len(),
        3,
        "the whole group, with the new alert"
    );
    // Nothing changes: nothing sent until repeat_interval has passed since the last send.
    for i in 2..=12 {
        let now = T0 + 30_000 + 5 * MIN * i;
        let got = step(&mut d, &all, now);
        if now - (T0 + 30_000 + 5 * MIN) >= 60 * MIN {
            assert_eq!(got.len(), 1, "repeat at {i}");
        } else {
            assert!(got.is_empty(), "tick {i}: {got:#?}");
        }
    }
}

#[test]
fn resolution_is_notified_once() {
    let mut d = dispatcher(GROUPING);
    let a1 = firing(&[("alertname", "Offline"), ("device", "d1")], T0);
    let a2 = firing(&[("alertname", "Offline"), ("device", "d2")], T0);
    step(&mut d, &[a1.clone(), a2.clone()], T0);
    assert_eq!(
        step(&mut d, &[a1.clone(), a2.clone()], T0 + 30_000).len(),
        1
    );
    // d2 resolves (the manager hands it over as inactive with resolved_at).
    let mut r2 = a2.clone();
    r2.state = fleetmon_alert::AlertState::Inactive;
    r2.resolved_at = Some(T0 + 2 * MIN);
    assert!(step(&mut d, &[a1.clone(), r2.clone()], T0 + 2 * MIN).is_empty());
    let n = step(&mut d, &[a1.clone(), r2.clone()], T0 + 30_000 + 5 * MIN);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Firing, "d1 still fires");
    assert_eq!(
        names(&n[0]),
        [
            ("d1".into(), Status::Firing),
            ("d2".into(), Status::Resolved)
        ]
    );
    let resolved = &n[0].alerts[1];
    assert_eq!(resolved.ends_at, Some(T0 + 2 * MIN));
    // Not again.
    assert!(step(&mut d, &[a1.clone(), r2.clone()], T0 + 30_000 + 10 * MIN).is_empty());
    // d1 disappears entirely: resolved at observation time, status resolved.
    step(&mut d, &[], T0 + 11 * MIN);
    let n = step(&mut d, &[], T0 + 30_000 + 15 * MIN);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Resolved);
    assert_eq!(n[0].alerts[0].ends_at, Some(T0 + 11 * MIN));
    assert!(step(&mut d, &[], T0 + 30_000 + 20 * MIN).is_empty());
}

#[test]
fn an_alert_resolved_before_group_wait_is_never_notified() {
    let mut d = dispatcher(GROUPING);
    let a = firing(&[("alertname", "Offline"), ("device", "d1")], T0);
    step(&mut d, &[a], T0);
    assert!(step(&mut d, &[], T0 + 10_000).is_empty());
    assert!(step(&mut d, &[], T0 + 30_000).is_empty());
    assert!(step(&mut d, &[], T0 + 10 * MIN).is_empty());
}

#[test]
fn routes_pick_receivers_and_continue() {
    let mut d = dispatcher(
        "
route:
  receiver: ops
  group_wait: 0s
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: pager
      continue: true
    - matchers: ['site=\"lab\"']
      receiver: lab
",
    );
    let crit = firing(
        &[
            ("alertname", "A"),
            ("device", "d1"),
            ("severity", "critical"),
            ("site", "lab"),
        ],
        T0,
    );
    let warn = firing(
        &[
            ("alertname", "B"),
            ("device", "d2"),
            ("severity", "warning"),
        ],
        T0,
    );
    let mut got: Vec<(String, String)> = step(&mut d, &[crit, warn], T0)
        .into_iter()
        .flat_map(|n| {
            let r = n.receiver.clone();
            n.alerts
                .into_iter()
                .map(move |a| (r.clone(), a.labels["device"].clone()))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("lab".to_owned(), "d1".to_owned()),
            ("ops".to_owned(), "d2".to_owned()),
            ("pager".to_owned(), "d1".to_owned())
        ]
    );
}

const INHIBIT: &str = "
route:
  receiver: ops
  group_by: ['...']
  group_wait: 0s
  group_interval: 1m
inhibit_rules:
  - source_matchers: ['alertname=\"DeviceOffline\"']
    target_matchers: ['alertname=~\"CpuHigh|DataMissing\"']
    equal: [device]
";

#[test]
fn inhibition_mutes_targets_with_equal_labels() {
    let mut d = dispatcher(INHIBIT);
    let off = firing(&[("alertname", "DeviceOffline"), ("device", "d1")], T0);
    let missing1 = firing(&[("alertname", "DataMissing"), ("device", "d1")], T0);
    let missing2 = firing(&[("alertname", "DataMissing"), ("device", "d2")], T0);
    let got = step(
        &mut d,
        &[off.clone(), missing1.clone(), missing2.clone()],
        T0,
    );
    let mut devices: Vec<(String, String)> = got
        .iter()
        .map(|n| {
            (
                n.alerts[0].labels["alertname"].clone(),
                n.alerts[0].labels["device"].clone(),
            )
        })
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        [
            ("DataMissing".to_owned(), "d2".to_owned()),
            ("DeviceOffline".to_owned(), "d1".to_owned())
        ],
        "d1's DataMissing is inhibited"
    );
    let listed = d.alerts(T0);
    let m1 = listed
        .iter()
        .find(|a| a.fingerprint == missing1.fingerprint)
        .expect("listed");
    assert_eq!(m1.muting.inhibited_by, [off.fingerprint]);
    // The source resolves: the target is notified at the next flush.
    let got = step(&mut d, &[missing1.clone(), missing2.clone()], T0 + MIN);
    let firing_now: Vec<String> = got
        .iter()
        .flat_map(|n| n.alerts.iter())
        .filter(|a| a.status == Status::Firing)
        .map(|a| format!("{}/{}", a.labels["alertname"], a.labels["device"]))
        .collect();
    assert_eq!(firing_now, ["DataMissing/d1"]);
}

#[test]
fn silences_mute_until_expired() {
    let mut d = dispatcher(INHIBIT);
    let a = firing(
        &[
            ("alertname", "CpuHigh"),
            ("device", "d1"),
            ("site", "berlin"),
        ],
        T0,
    );
    let id = d
        .silences_mut()
        .add(
            NewSilence {
                matchers: vec![Matcher::parse("site=\"berlin\"").expect("matcher")],
                starts_at: T0,
                ends_at: T0 + 60 * MIN,
                created_by: "ops".into(),
                comment: "site maintenance".into(),
            },
            T0,
        )
        .expect("silence");
    for i in 0..5 {
        assert!(
            step(&mut d, std::slice::from_ref(&a), T0 + i * MIN).is_empty(),
            "minute {i}"
        );
    }
    assert_eq!(
        d.alerts(T0).first().map(|x| x.muting.silenced_by.clone()),
        Some(vec![id.clone()])
    );
    d.silences_mut().expire(&id, T0 + 5 * MIN).expect("expire");
    let got = step(&mut d, std::slice::from_ref(&a), T0 + 5 * MIN);
    assert_eq!(got.len(), 1, "expired silence lets it through");
    assert_eq!(got[0].status, Status::Firing);
}

#[test]
fn a_silence_ending_by_time_lets_alerts_through() {
    let mut d = dispatcher(INHIBIT);
    let a = firing(&[("alertname", "CpuHigh"), ("device", "d1")], T0);
    d.silences_mut()
        .add(
            NewSilence {
                matchers: vec![Matcher::parse("device=d1").expect("matcher")],
                starts_at: T0,
                ends_at: T0 + 3 * MIN,
                created_by: "ops".into(),
                comment: String::new(),
            },
            T0,
        )
        .expect("silence");
    assert!(step(&mut d, std::slice::from_ref(&a), T0 + 2 * MIN).is_empty());
    assert_eq!(
        step(&mut d, std::slice::from_ref(&a), T0 + 3 * MIN).len(),
        1
    );
}

#[test]
fn a_resolution_is_sent_even_if_a_silence_now_matches() {
    let mut d = dispatcher(INHIBIT);
    let a = firing(&[("alertname", "CpuHigh"), ("device", "d1")], T0);
    assert_eq!(step(&mut d, std::slice::from_ref(&a), T0).len(), 1);
    d.silences_mut()
        .add(
            NewSilence {
                matchers: vec![Matcher::parse("device=d1").expect("matcher")],
                starts_at: T0,
                ends_at: T0 + 60 * MIN,
                created_by: "ops".into(),
                comment: String::new(),
            },
            T0,
        )
        .expect("silence");
    assert!(
        step(&mut d, std::slice::from_ref(&a), T0 + MIN).is_empty(),
        "muted, no resolve for muting"
    );
    let got = step(&mut d, &[], T0 + 2 * MIN);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, Status::Resolved);
}

const TOPOLOGY: &str = "
route:
  receiver: ops
  group_by: [alertname, device]
  group_wait: 0s
  group_interval: 1m
";

fn offline(device: &str, gateway: Option<&str>) -> Alert {
    match gateway {
        Some(g) => firing(
            &[
                ("alertname", "DeviceOffline"),
                ("device", device),
                ("gateway", g),
            ],
            T0,
        ),
        None => firing(&[("alertname", "DeviceOffline"), ("device", device)], T0),
    }
}

#[test]
fn gateway_offline_folds_its_children_into_one_notification() {
    let mut d = dispatcher(TOPOLOGY);
    let gw = offline("gw1", None);
    let c1 = offline("s1", Some("gw1"));
    let c2 = offline("s2", Some("gw1"));
    let other = offline("s9", Some("gw2"));
    let got = step(
        &mut d,
        &[gw.clone(), c1.clone(), c2.clone(), other.clone()],
        T0,
    );
    let mut devices: Vec<String> = got
        .iter()
        .map(|n| n.alerts[0].labels["device"].clone())
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        ["gw1", "s9"],
        "children of gw1 have no notification of their own"
    );
    let gwn = got
        .iter()
        .find(|n| n.alerts[0].labels["device"] == "gw1")
        .expect("gateway notification");
    let mut children: Vec<String> = gwn.alerts[0]
        .suppressed
        .iter()
        .map(|s| s.labels["device"].clone())
        .collect();
    children.sort();
    assert_eq!(children, ["s1", "s2"]);
    let json = serde_json::to_value(gwn).expect("json");
    assert_eq!(
        json["alerts"][0]["suppressed"].as_array().map(Vec::len),
        Some(2)
    );
    // The gateway comes back, a child stays down: now the child is notified on its own.
    let got = step(&mut d, std::slice::from_ref(&c1), T0 + MIN);
    let mut seen: Vec<(String, Status)> = got
        .iter()
        .flat_map(|n| {
            n.alerts
                .iter()
                .map(|a| (a.labels["device"].clone(), a.status))
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("gw1".to_owned(), Status::Resolved),
            ("s1".to_owned(), Status::Firing),
            ("s9".to_owned(), Status::Resolved)
        ]
    );
}

#[test]
fn children_offline_alone_get_their_own_alerts() {
    let mut d = dispatcher(TOPOLOGY);
    let c1 = offline("s1", Some("gw1"));
    let c2 = offline("s2", Some("gw1"));
    let got = step(&mut d, &[c1, c2], T0);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|n| n.alerts[0].suppressed.is_empty()));
}

#[test]
fn topology_only_folds_the_same_alert_family() {
    let mut d = dispatcher(TOPOLOGY);
    let gw = offline("gw1", None);
    let cpu = firing(
        &[
            ("alertname", "CpuHigh"),
            ("device", "s1"),
            ("gateway", "gw1"),
        ],
        T0,
    );
    let got = step(&mut d, &[gw, cpu], T0);
    assert_eq!(got.len(), 2);
}

const FLAP: &str = "
route:
  receiver: ops
  group_wait: 0s
  group_interval: 1m
flap:
  max_changes: 4
  window: 1h
  hold: 15m
";

#[test]
fn flapping_alerts_are_held_until_stable() {
    let mut d = dispatcher(FLAP);
    let a = firing(&[("alertname", "LinkDown"), ("device", "d1")], T0);
    let mut sent = Vec::new();
    // Fires and resolves every two minutes: changes at 0, 2, 4, 6 are notified (4 changes
    // are allowed), the 5th change (at 8) marks it flapping.
    for i in 0..=12 {
        let now = T0 + i * MIN;
        let up = (i / 2) % 2 == 0;
        let alerts = if up { vec![a.clone()] } else { Vec::new() };
        sent.extend(
            step(&mut d, &alerts, now)
                .into_iter()
                .map(|n| (i, n.status)),
        );
    }
    assert_eq!(
        sent,
        [
            (0, Status::Firing),
            (2, Status::Resolved),
            (4, Status::Firing),
            (6, Status::Resolved),
        ],
        "held from the 5th change on"
    );
    let listed = d.alerts(T0 + 12 * MIN);
    assert!(listed[0].muting.flapping);
    // Stays firing from minute 12 (up at 12): stable for the 15 min hold → notified once.
    let mut later = Vec::new();
    for i in 13..=40 {
        later.extend(
            step(&mut d, std::slice::from_ref(&a), T0 + i * MIN)
                .into_iter()
                .map(|n| (i, n.status)),
        );
    }
    assert_eq!(
        later,
        [(27, Status::Firing)],
        "sent once the hold time passed"
    );
}

#[test]
fn a_stable_alert_is_not_damped() {
    let mut d = dispatcher(FLAP);
    let a = firing(&[("alertname", "LinkDown"), ("device", "d1")], T0);
    // Four changes in the window is within the allowance.
    let mut sent = 0;
    for (i, up) in [(0, true), (10, false), (20, true), (30, false)] {
        let alerts = if up { vec![a.clone()] } else { Vec::new() };
        sent += step(&mut d, &alerts, T0 + i * MIN).len();
    }
    assert_eq!(sent, 4);
    assert!(!d.alerts(T0 + 30 * MIN)[0].muting.flapping);
}

#[test]
fn notification_json_is_close_to_alertmanager_webhooks() {
    let mut d = dispatcher(GROUPING.replace("30s", "0s").as_str());
    let mut a = firing(
        &[("alertname", "Offline"), ("device", "d1"), ("site", "b")],
        T0,
    );
    a.value = 0.0;
    let n = step(&mut d, &[a], T0).pop().expect("notification");
    let j = serde_json::to_value(&n).expect("json");
    assert_eq!(j["version"], "4");
    assert_eq!(j["receiver"], "ops");
    assert_eq!(j["status"], "firing");
    assert_eq!(j["groupLabels"]["alertname"], "Offline");
    assert_eq!(j["commonLabels"]["site"], "b");
    assert_eq!(j["commonAnnotations"]["summary"], "something");
    assert_eq!(j["groupKey"], "{}:{alertname=\"Offline\"}");
    assert_eq!(
        j["id"],
        format!("{}#1", j["groupKey"].as_str().expect("key"))
    );
    let a0 = &j["alerts"][0];
    assert_eq!(a0["status"], "firing");
    assert_eq!(a0["startsAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(a0["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a0["fingerprint"].as_str().map(str::len), Some(16));
    assert_eq!(a0["value"], "0");
    assert_eq!(a0["suppressed"], serde_json::json!([]));
    let back: Notification = serde_json::from_value(j).expect("round trip");
    assert_eq!(back, n);
}

#[test]
fn ids_are_never_reused_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || DispatcherConfig::from_yaml(INHIBIT).expect("config");
    let a = firing(&[("alertname", "CpuHigh"), ("device", "d1")], T0);
    let first = {
        let mut d = Dispatcher::open(config(), dir.path()).expect("open");
        let n = step(&mut d, std::slice::from_ref(&a), T0);
        step(&mut d, &[], T0 + MIN);
        n
    };
    let mut d = Dispatcher::open(config(), dir.path()).expect("reopen");
    let again = step(&mut d, std::slice::from_ref(&a), T0 + 2 * MIN);
    assert_eq!(again.len(), 1);
    assert_eq!(first[0].group_key, again[0].group_key);
    assert!(again[0].sequence > first[0].sequence + 1);
    assert_ne!(first[0].id, again[0].id);
}
