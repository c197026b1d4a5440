//! The outbox across `kill -9`: notifications accepted by a worker process that is killed while
//! the receiver fails are all delivered, exactly once each, by the next process; and a process
//! started after everything was delivered sends nothing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{HttpReceiver, Reply, notification, wait_for};

/// The example binary, built beside this test by `cargo test` (or built here when only this
/// test target was asked for).
fn worker_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let p = profile_dir.join("examples").join("outbox_worker");
    if !p.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "-p",
                "fleetmon-notify",
                "--example",
                "outbox_worker",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "building the outbox_worker example failed"
        );
    }
    assert!(p.exists(), "{} is missing", p.display());
    p
}

struct Worker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(dir: &Path, config: &Path) -> Worker {
        let mut child = Command::new(worker_exe())
            .arg(dir)
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .spawn()
            .expect("spawn outbox_worker");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut w = Worker { child, out };
        assert_eq!(w.line(), "ready");
        w
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read worker stdout");
        l.trim_end().to_owned()
    }

    fn enqueue(&mut self, id: &str) {
        let json = serde_json::to_string(&notification(id, "ops")).expect("encode");
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{json}").expect("write notification");
        stdin.flush().expect("flush");
        assert_eq!(self.line(), format!("enqueued {id} Accepted"));
    }

    /// SIGKILL: no destructor, no flush, no goodbye.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

fn write_config(dir: &Path, url: &str) -> PathBuf {
    let p = dir.join("notify.toml");
    let text = format!(
        r#"
[retry]
initial_backoff = "50ms"
max_backoff = "200ms"
max_age = "1h"

[[receivers.ops.webhook]]
url = "{url}"
secret = "kill-test-key"
timeout = "2s"
"#
    );
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn outbox_survives_kill_9_and_delivers_each_once() {
    let rx = HttpReceiver::start();
    rx.set_default(Reply::status(500));
    let tmp = tempfile::tempdir().expect("tempdir");
    let outbox = tmp.path().join("outbox");
    let config = write_config(tmp.path(), &rx.url("/hook"));
    let ids: Vec<String> = (0..6).map(|i| format!("kill-{i}")).collect();

    // 1. Accept six while the receiver fails, then kill -9 mid-retry.
    let mut w = Worker::spawn(&outbox, &config);
    for id in &ids {
        w.enqueue(id);
    }
    let all_tried = wait_for(Duration::from_secs(10), || {
        let seen: std::collections::BTreeSet<String> =
            rx.requests().iter().map(|r| r.delivery()).collect();
        ids.iter().all(|id| seen.contains(id))
    });
    assert!(all_tried, "every notification was attempted at least once");
    w.kill9();
    assert!(
        rx.delivered_by_id().is_empty(),
        "nothing could be delivered yet"
    );

    // 2. Receiver healthy, new process: each delivered exactly once.
    rx.set_default(Reply::status(200));
    let before = rx.requests().len();
    let w = Worker::spawn(&outbox, &config);
    let done = wait_for(Duration::from_secs(15), || {
        rx.delivered_by_id().len() == ids.len()
    });
    assert!(done, "delivered: {:?}", rx.delivered_by_id());
    std::thread::sleep(Duration::from_millis(500));
    let delivered = rx.delivered_by_id();
    for id in &ids {
        assert_eq!(
            delivered.get(id),
            Some(&1),
            "{id} delivered {:?} times",
            delivered.get(id)
        );
    }
    assert_eq!(
        rx.requests().len() - before,
        ids.len(),
        "no extra requests after restart"
    );
    w.kill9();

    // 3. Everything delivered: a restart sends nothing again.
    let total = rx.requests().len();
    let w = Worker::spawn(&outbox, &config);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        rx.requests().len(),
        total,
        "a restart re-sent a delivered notification"
    );
    w.kill9();
    let q: Vec<_> = std::fs::read_dir(outbox.join("q"))
        .expect("q dir")
        .collect();
    assert!(q.is_empty(), "the outbox compacted every finished entry");
}
