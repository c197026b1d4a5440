//! `kill -9` under ingest, ten times: a child process (this test binary re-run with
//! `TSDB_KILL_DIR` set) appends from two threads on the real filesystem, flushing blocks now and
//! then, and prints `ACK thread seq` after each acknowledged append. The parent kills it at a
//! random moment, reopens the directory and checks that every acknowledged sample is there and
//! nothing beyond what was attempted appeared.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: a failed unwrap is a failed test; the child reports acks on stdout"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleetmon_tsdb::{Db, Labels, Matcher, Options, Sample};

const T0: i64 = 1_767_225_600_000;
const ENV: &str = "TSDB_KILL_DIR";

fn labels(t: usize) -> Labels {
    Labels::from_metric("kill_test", [("thread", t.to_string())]).unwrap()
}

/// The child's work; a no-op unless the parent started this binary with `TSDB_KILL_DIR`.
#[test]
fn child_writes_until_killed() {
    let Ok(dir) = std::env::var(ENV) else {
        return;
    };
    let db = std::sync::Arc::new(Db::open_dir(dir.as_ref(), Options::default()).unwrap());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let l = labels(t);
                for i in 0.. {
                    let s = [Sample {
                        labels: &l,
                        ts_ms: T0 + i * 1000,
                        value: i as f64,
                    }];
                    db.append(&s, None).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {t} {i}").unwrap();
                    out.flush().unwrap();
                    if t == 0 && i % 300 == 299 {
                        db.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
}

#[test]
fn kill_9_under_ingest_loses_no_acknowledged_sample() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writes_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked: BTreeMap<usize, i64> = BTreeMap::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ACK") {
                    continue;
                }
                let t: usize = parts.next().unwrap().parse().unwrap();
                let i: i64 = parts.next().unwrap().parse().unwrap();
                acked.insert(t, i);
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(rng.u64(150..900)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        let db = Db::open_dir(dir.path(), Options::default()).unwrap();
        for (&t, &last) in &acked {
            let sel = [Matcher::eq("thread", &t.to_string())];
            let got = db.select(&sel, i64::MIN, i64::MAX);
            let points = &got[0].points;
            // Every acknowledged append is there, in order; at most the one in flight beyond.
            let n = points.len() as i64;
            assert!(
                n > last,
                "round {round} thread {t}: acked up to {last}, found {n} samples"
            );
            assert!(
                n <= last + 2,
                "round {round} thread {t}: {n} samples, acked {last}"
            );
            for (i, &(ts, v)) in points.iter().enumerate() {
                assert_eq!(
                    (ts, v),
                    (T0 + i as i64 * 1000, i as f64),
                    "round {round} thread {t}"
                );
            }
        }
        let stats = db.stats();
        println!(
            "round {round}: acked {acked:?}, blocks {}, wal records replayed {}, torn bytes cut {}",
            stats.blocks, stats.wal_replayed_records, stats.wal_truncated_bytes
        );
    }
}
