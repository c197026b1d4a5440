//! Model check: random enqueues, deliveries, failures and reopenings of the outbox, compared
//! with a plain in-memory model after every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::notification;
use fleetmon_notify::{Enqueued, Outbox, OutboxLimits};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { id: u8, targets: u8 },
    Deliver { id: u8, target: u8 },
    Fail { id: u8, target: u8 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 1u8..=2).prop_map(|(id, targets)| Op::Enqueue { id, targets }),
        3 => (0u8..6, 0u8..2).prop_map(|(id, target)| Op::Deliver { id, target }),
        1 => (0u8..6, 0u8..2).prop_map(|(id, target)| Op::Fail { id, target }),
        1 => Just(Op::Reopen),
    ]
}

fn target_names(n: u8) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn outbox_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ob = Outbox::open(dir.path(), OutboxLimits::default()).expect("open");
        // id -> pending target names, in enqueue order
        let mut order: Vec<String> = Vec::new();
        let mut pending: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut finished: BTreeSet<String> = BTreeSet::new();
        let mut dead = 0usize;
        for op in ops {
            match op {
                Op::Enqueue { id, targets } => {
                    let id = format!("n{id}");
                    let known = pending.contains_key(&id) || finished.contains(&id);
                    let r = ob.enqueue(notification(&id, "ops"), target_names(targets)).expect("enqueue");
                    prop_assert_eq!(r == Enqueued::Duplicate, known);
                    if !known {
                        order.push(id.clone());
                        pending.insert(id, target_names(targets).into_iter().collect());
                    }
                }
                Op::Deliver { id, target } | Op::Fail { id, target } => {
                    let fail = matches!(op, Op::Fail { .. });
                    let id = format!("n{id}");
                    let t = format!("t{target}");
                    let r = if fail {
                        ob.mark_failed(&id, &t, "model says no")
                    } else {
                        ob.mark_delivered(&id, &t)
                    };
                    let was_pending = pending.get_mut(&id).is_some_and(|s| s.remove(&t));
                    prop_assert_eq!(r.is_ok(), was_pending, "{:?}", r);
                    if was_pending && fail {
                        dead += 1;
                    }
                    if pending.get(&id).is_some_and(BTreeSet::is_empty) {
                        pending.remove(&id);
                        order.retain(|o| o != &id);
                        finished.insert(id);
                    }
                }
                Op::Reopen => {
                    drop(ob);
                    ob = Outbox::open(dir.path(), OutboxLimits::default()).expect("reopen");
                }
            }
            let want: Vec<(String, String)> = order
                .iter()
                .flat_map(|id| pending[id].iter().map(move |t| (id.clone(), t.clone())))
                .collect();
            let got: Vec<(String, String)> =
                ob.pending().into_iter().map(|(id, _, t)| (id, t)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ob.len(), pending.len());
            for id in &finished {
                prop_assert!(ob.contains(id));
            }
        }
        let lines = std::fs::read_to_string(dir.path().join("dead-letter.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        prop_assert_eq!(lines, dead);
        prop_assert_eq!(
            std::fs::read_dir(dir.path().join("done")).expect("done dir").count(),
            finished.len()
        );
    }
}
