//! `kill -9` against the spool: a child process (this test binary, re-run in writer mode)
//! appends batches as fast as it can into a spool small enough to drop; the parent kills it
//! with SIGKILL at random moments, tears the tail mid-record on top, and reopens. Every
//! complete record must survive intact, seqs must never repeat, every batch is either live or
//! counted as dropped, and reopening must not hang.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fleetmon_agent::spool::Spool;

const MAX_BYTES: u64 = 64 * 1024;
const WRITER_ENV: &str = "FLEETMON_AGENT_SPOOL_WRITER_DIR";

/// The payload of a batch: its seq, then bytes derived from it, so a record that survives
/// can be checked byte for byte.
fn payload(seq: u64) -> Vec<u8> {
    let len = 50 + (seq % 200) as usize;
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    p
}

/// Writer mode: only does something when the parent runs this binary with the env set.
#[test]
fn writer_child() {
    let Some(dir) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let mut spool = Spool::open(Path::new(&dir), MAX_BYTES).expect("writer opens the spool");
    loop {
        spool
            .append_with(|seq, _| payload(seq))
            .expect("writer appends");
    }
}

/// Opens the spool on another thread; a hang fails the test instead of blocking it.
fn open_within(dir: &Path, limit: Duration) -> Spool {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(Spool::open(&dir, MAX_BYTES));
    });
    rx.recv_timeout(limit)
        .expect("reopening the spool hung")
        .expect("the spool reopens")
}

fn last_segment(dir: &Path) -> Option<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        // A kill right after a rotation leaves a new, empty segment: the newest record is in
        // the one before.
        .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    segs.sort();
    segs.pop()
}

fn check(spool: &Spool, phase: &str) -> Vec<u64> {
    let seqs: Vec<u64> = spool.seqs().collect();
    for &seq in &seqs {
        assert_eq!(
            spool.read(seq).expect("spool read").expect("live"),
            payload(seq),
            "record {seq} intact"
        );
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "only the oldest are ever dropped"
    );
    let produced = spool.next_seq() - 1;
    assert_eq!(
        spool.dropped_total() + seqs.len() as u64,
        produced,
        "{phase}: every batch is live or counted as dropped ({} live from {:?}, {} pending)",
        seqs.len(),
        seqs.first(),
        spool.pending_dropped()
    );
    assert!(spool.bytes() <= MAX_BYTES);
    seqs
}

#[test]
fn kill_9_mid_append_then_a_torn_tail_loses_no_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_next = 1;
    let mut torn = 0;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "writer_child", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // What survived the kill, seen through a copy (opening writes the state file, and the
        // tear below must hit the spool as the crash left it).
        let copy = tempfile::tempdir().unwrap();
        for e in fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        let spool = open_within(copy.path(), Duration::from_secs(10));
        let seqs = check(&spool, &format!("round {round} after kill"));
        assert!(
            spool.next_seq() > last_next,
            "round {round}: the writer made progress"
        );
        // The state file as the kill left it: if it already names a next seq past the newest
        // record, the writer had finished that record and was making room for the next.
        let state_next = fs::read(dir.path().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["next_seq"].as_u64())
            .unwrap_or(1);
        let state_moved_on = seqs.last().is_some_and(|&s| state_next > s);
        drop(spool);
        if state_moved_on {
            // Killed while making room for the next batch, after the state file had moved
            // past the newest record: that record was complete, and no crash can tear it any
            // more. Tearing it here would make a spool no crash can leave; next round.
            let spool = open_within(dir.path(), Duration::from_secs(10));
            check(&spool, &format!("round {round} reopened"));
            last_next = spool.next_seq();
            continue;
        }

        // Tear the newest record in the middle, as a crash during its write would.
        let seg = last_segment(dir.path()).expect("a segment");
        let len = fs::metadata(&seg).unwrap().len();
        let last_len = 24 + payload(*seqs.last().unwrap()).len() as u64;
        let cut = 1 + fastrand::u64(0..last_len - 1);
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        let spool = open_within(dir.path(), Duration::from_secs(10));
        let after = check(&spool, &format!("round {round} after tear"));
        assert_eq!(
            after,
            seqs[..seqs.len() - 1],
            "round {round}: all but the torn record survive"
        );
        last_next = spool.next_seq();
        torn += 1;
    }
    assert!(torn > 0, "no round tore a record");
}
