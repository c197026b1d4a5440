//! The outbox on its own: durability across reopen, idempotency, bounds, compaction,
//! corrupt files, the lock, dead letters.

mod common;

use std::path::Path;
use std::time::Duration;

use common::notification;
use fleetmon_notify::{Enqueued, Outbox, OutboxError, OutboxLimits};

fn limits() -> OutboxLimits {
    OutboxLimits::default()
}

fn targets() -> Vec<String> {
    vec!["webhook[0]".into(), "email[0]".into()]
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn accepted_notifications_survive_reopen_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut ob = Outbox::open(dir.path(), limits()).expect("open");
        for i in 0..3 {
            let r = ob.enqueue(notification(&format!("n{i}"), "ops"), targets());
            assert_eq!(r.expect("enqueue"), Enqueued::Accepted);
        }
    }
    let ob = Outbox::open(dir.path(), limits()).expect("reopen");
    assert_eq!(ob.len(), 3);
    let ids: Vec<String> = ob.pending().into_iter().map(|p| p.0).collect();
    assert_eq!(ids, ["n0", "n0", "n1", "n1", "n2", "n2"]);
}

#[test]
fn marks_survive_reopen_and_finished_entries_are_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut ob = Outbox::open(dir.path(), limits()).expect("open");
        ob.enqueue(notification("a", "ops"), targets()).expect("a");
        ob.enqueue(notification("b", "ops"), targets()).expect("b");
        ob.mark_delivered("a", "webhook[0]")
            .expect("mark a webhook");
        ob.mark_delivered("b", "webhook[0]")
            .expect("mark b webhook");
        ob.mark_failed("b", "email[0]", "550 no such user")
            .expect("fail b email");
        assert_eq!(ob.len(), 1, "b is finished");
        // marking the same target twice is an error, not a second delivery
        assert!(matches!(
            ob.mark_delivered("a", "webhook[0]"),
            Err(OutboxError::NoSuchTarget { .. })
        ));
    }
    let mut ob = Outbox::open(dir.path(), limits()).expect("reopen");
    let pending: Vec<(String, String)> = ob.pending().into_iter().map(|p| (p.0, p.2)).collect();
    assert_eq!(pending, [("a".to_string(), "email[0]".to_string())]);
    assert_eq!(
        ob.enqueue(notification("b", "ops"), targets()).expect("b"),
        Enqueued::Duplicate
    );
    ob.mark_delivered("a", "email[0]").expect("mark a email");
    assert!(ob.is_empty());
    assert_eq!(ob.bytes(), 0);
    drop(ob);
    // only tombstones remain
    assert!(
        files(&dir.path().join("q")).is_empty(),
        "{:?}",
        files(&dir.path().join("q"))
    );
    assert_eq!(files(&dir.path().join("done")).len(), 2);
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).expect("dead");
    assert_eq!(dead.lines().count(), 1);
    assert!(dead.contains("550 no such user"));
}

#[test]
fn enqueue_is_idempotent_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ob = Outbox::open(dir.path(), limits()).expect("open");
    assert_eq!(
        ob.enqueue(notification("x", "ops"), targets()).expect("1"),
        Enqueued::Accepted
    );
    assert_eq!(
        ob.enqueue(notification("x", "ops"), targets()).expect("2"),
        Enqueued::Duplicate
    );
    assert_eq!(ob.len(), 1);
    assert_eq!(ob.pending().len(), 2);
}

#[test]
fn full_outbox_refuses_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ob = Outbox::open(
        dir.path(),
        OutboxLimits {
            max_entries: 2,
            ..limits()
        },
    )
    .expect("open");
    ob.enqueue(notification("1", "ops"), targets()).expect("1");
    ob.enqueue(notification("2", "ops"), targets()).expect("2");
    let e = ob
        .enqueue(notification("3", "ops"), targets())
        .expect_err("full");
    assert!(matches!(e, OutboxError::Full { entries: 2, .. }), "{e}");
    assert!(e.to_string().contains("max_entries"), "{e}");
    // delivering frees room
    ob.mark_delivered("1", "webhook[0]").expect("m");
    ob.mark_delivered("1", "email[0]").expect("m");
    ob.enqueue(notification("3", "ops"), targets())
        .expect("room again");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut ob = Outbox::open(
        dir.path(),
        OutboxLimits {
            max_bytes: 3000,
            ..limits()
        },
    )
    .expect("open");
    let mut accepted = 0;
    let err = loop {
        match ob.enqueue(notification(&format!("b{accepted}"), "ops"), targets()) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(
        accepted >= 1 && ob.bytes() <= 3000,
        "{accepted} {}",
        ob.bytes()
    );
    assert!(matches!(err, OutboxError::Full { .. }), "{err}");
}

#[test]
fn corrupt_entry_is_skipped_and_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut ob = Outbox::open(dir.path(), limits()).expect("open");
        ob.enqueue(notification("good", "ops"), targets())
            .expect("good");
        ob.enqueue(notification("bad", "ops"), targets())
            .expect("bad");
    }
    // Tear the second file (as a broken disk might) and drop a stray temp file.
    let q = dir.path().join("q");
    let mut torn = None;
    for name in files(&q) {
        let p = q.join(&name);
        let text = std::fs::read_to_string(&p).expect("read");
        if text.contains("\"id\":\"bad\"") {
            std::fs::write(&p, &text[..text.len() / 2]).expect("tear");
            torn = Some(name);
        }
    }
    let torn = torn.expect("found the bad entry");
    std::fs::write(q.join("leftover.json.tmp"), "partial").expect("tmp");
    let ob = Outbox::open(dir.path(), limits()).expect("open despite corruption");
    assert_eq!(ob.len(), 1);
    assert_eq!(ob.pending()[0].0, "good");
    let names = files(&q);
    assert!(names.contains(&format!("{torn}.corrupt")), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_second_process_cannot_open_the_same_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ob = Outbox::open(dir.path(), limits()).expect("open");
    let e = Outbox::open(dir.path(), limits()).expect_err("locked");
    assert!(matches!(e, OutboxError::Locked(_)), "{e}");
}

#[test]
fn finished_ids_are_forgotten_after_the_keep_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ob = Outbox::open(
        dir.path(),
        OutboxLimits {
            keep_finished_ids: Duration::from_millis(1),
            ..limits()
        },
    )
    .expect("open");
    ob.enqueue(notification("old", "ops"), vec!["webhook[0]".into()])
        .expect("enqueue");
    ob.mark_delivered("old", "webhook[0]").expect("mark");
    assert!(ob.contains("old"));
    std::thread::sleep(Duration::from_millis(5));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    ob.prune_finished(now).expect("prune");
    assert!(!ob.contains("old"));
    assert!(files(&dir.path().join("done")).is_empty());
}
