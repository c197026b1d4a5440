//! `fleetmon demo`, the README's first command: it prints a dashboard URL that serves the
//! fleet, and a second run on the same data carries on where the first stopped — no
//! duplicates, no gaps.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_addr, get, wait_for};
use serde_json::Value;

struct Demo {
    child: Child,
    url: String,
}

impl Demo {
    fn start(data_dir: &std::path::Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
            .args([
                "demo",
                "--devices",
                "5",
                "--interval",
                "100ms",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--http-listen", &free_addr().to_string()])
            .args(["--mqtt-listen", &free_addr().to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fleetmon demo");
        let stdout = child.stdout.take().expect("demo stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let url = lines
            .by_ref()
            .find_map(|line| {
                line.trim()
                    .strip_prefix("dashboard")
                    .map(|rest| rest.trim().to_owned())
            })
            .expect("the demo prints its dashboard URL");
        // Close our end early, as `fleetmon demo | head` would: the demo must not mind.
        drop(lines);
        Demo { child, url }
    }

    /// Ctrl-C, as a person would stop it.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let exited = wait_for(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        });
        assert!(
            exited.is_some_and(|s| s.success()),
            "the demo did not stop cleanly on Ctrl-C"
        );
    }

    fn devices(&self) -> Value {
        get(&format!("{}api/v1/devices", self.url)).1
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batches(list: &Value) -> u64 {
    list["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d["batches_received"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn demo_serves_its_url_and_resumes_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    assert!(demo.url.starts_with("http://127.0.0.1:"), "{}", demo.url);
    let running = wait_for(Duration::from_secs(20), || {
        let list = demo.devices();
        (list["online"] == 5 && batches(&list) >= 25).then_some(())
    });
    assert!(running.is_some(), "the demo fleet never came online");
    let (status, page) = get(&demo.url);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("Fleet overview"));
    let (status, page) = get(&format!("{}devices", demo.url));
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("demo-00004"));
    let (_, d) = get(&format!("{}api/v1/devices/demo-00000", demo.url));
    assert!(
        d["tags"]["site"]
            .as_str()
            .is_some_and(|s| s.starts_with("site-")),
        "{d}"
    );
    // The demo's firmware policy is in force: every device on a listed release says so.
    assert!(dir.path().join("firmware-policy.toml").exists());
    let list = demo.devices();
    for d in list["devices"].as_array().unwrap() {
        let firmware = d["firmware"].as_str().unwrap_or_default();
        let reasons = d["health"]["reasons"].to_string();
        if firmware == "3.2.0" {
            assert!(reasons.contains("FM-DEMO-0001"), "{d}");
        }
        if firmware == "1.4.2" {
            assert!(reasons.contains("below the minimum 1.5.0"), "{d}");
        }
    }
    demo.stop();

    let demo = Demo::start(dir.path());
    let first = batches(&demo.devices());
    let more = wait_for(Duration::from_secs(20), || {
        let list = demo.devices();
        (list["online"] == 5 && batches(&list) >= first + 25).then_some(list)
    })
    .expect("the second run added nothing");
    for d in more["devices"].as_array().unwrap() {
        assert_eq!(d["batches_duplicate"], 0, "{d}");
        assert_eq!(d["batches_missing"], 0, "{d}");
    }
    demo.stop();
}
