//! Alerting end to end, on a `fleetmon server` child process and a real local webhook receiver:
//! a rule fires after its `for`, the notification is signed, retried while the receiver fails,
//! survives kill -9 of the server, is delivered exactly once and not repeated after a restart;
//! a silence added with `fleetmon silence add` mutes a matching alert; resolution is notified;
//! a gateway going offline gives one notification with its children listed, not one each.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RawClient, free_addr, get, post, start_server, wait_for};
use fleetmon_protocol::{Batch, Sample, Topic, encode_json};
use serde_json::{Value, json};

const SECRET: &str = "webhook-test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Value,
    raw: Vec<u8>,
    answered: u16,
}

/// An HTTP receiver on loopback: records every POST, answers 500 while `failing`, else 200.
struct Receiver {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let failing = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (f, l) = (Arc::clone(&failing), Arc::clone(&log));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (f, l) = (Arc::clone(&f), Arc::clone(&l));
                std::thread::spawn(move || serve(stream, &f, &l));
            }
        });
        Self { addr, failing, log }
    }

    fn delivered(&self) -> Vec<Delivery> {
        self.log
            .lock()
            .expect("receiver log")
            .iter()
            .filter(|d| d.answered == 200)
            .cloned()
            .collect()
    }
}

fn serve(stream: std::net::TcpStream, failing: &AtomicBool, log: &Mutex<Vec<Delivery>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut raw = vec![0; len];
    if reader.read_exact(&mut raw).is_err() {
        return;
    }
    let answered = if failing.load(Ordering::SeqCst) {
        500
    } else {
        200
    };
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    log.lock().expect("receiver log").push(Delivery {
        headers,
        body,
        raw,
        answered,
    });
    let mut stream = stream;
    let reason = if answered == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {answered} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("time fits")
}

fn sample(metric: &str, value: f64, ts_ms: i64) -> Sample {
    Sample {
        metric: metric.into(),
        labels: BTreeMap::new(),
        ts_ms,
        value,
    }
}

fn send(http: SocketAddr, device: &str, seq: u64, samples: Vec<Sample>) {
    let body = encode_json(&Batch {
        device: device.into(),
        boot_id: "b".into(),
        seq,
        sent_at_ms: now_ms(),
        dropped_before: 0,
        samples,
    });
    let (status, answer) = post(&format!("http://{http}/api/v1/ingest"), &body);
    assert_eq!(status, 200, "{answer}");
}

fn alerts(http: SocketAddr) -> Vec<Value> {
    get(&format!("http://{http}/api/v1/alerts")).1["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alert_state(http: SocketAddr, name: &str, device: &str) -> Option<Value> {
    alerts(http)
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"]["device"] == device)
}

/// Deliveries of notifications whose alerts include `name` for `device` with `status`.
fn notified(r: &Receiver, name: &str, device: &str, status: &str) -> Vec<Delivery> {
    r.delivered()
        .into_iter()
        .filter(|d| {
            d.body["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == name
                        && x["labels"]["device"] == device
                        && x["status"] == status
                })
            })
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a config file");
    path.display().to_string()
}

fn fleetmon(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(args)
        .output()
        .expect("run fleetmon");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn rules_fire_notify_once_across_kill9_silence_resolve_and_fold_children_under_a_gateway() {
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let rules = write(
        dir,
        "rules.yml",
        r#"groups:
  - name: test
    interval: 1s
    rules:
      - alert: CpuHot
        expr: cpu_usage_ratio > 0.9
        for: 2s
        labels:
          severity: critical
        annotations:
          summary: 'CPU hot on {{ $labels.device }}: {{ $value | humanizePercentage }}'
      - alert: DeviceOffline
        expr: device_up == 0
        for: 1s
        labels:
          severity: critical
        annotations:
          summary: '{{ $labels.device }} is offline'
"#,
    );
    let alerting = write(
        dir,
        "alerting.yml",
        "route:\n  receiver: ops\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n",
    );
    let receivers = write(
        dir,
        "receivers.toml",
        &format!(
            "[retry]\ninitial_backoff = \"200ms\"\nmax_backoff = \"1s\"\n\n[receivers.ops]\n[[receivers.ops.webhook]]\nurl = \"http://{}/hook\"\nsecret = \"{SECRET}\"\n",
            receiver.addr
        ),
    );
    let data = dir.join("data");
    let (http, mqtt) = (free_addr(), free_addr());
    let flags = [
        "--no-builtin-rules",
        "--rules",
        &rules,
        "--alerting-config",
        &alerting,
        "--receivers",
        &receivers,
        "--derive-interval",
        "500ms",
    ];
    let mut server = start_server(&data, http, mqtt, &flags);
    let base = format!("http://{http}");

    // 1. A hot CPU: pending, then firing after `for`; the receiver fails meanwhile.
    receiver.failing.store(true, Ordering::SeqCst);
    send(
        http,
        "d1",
        0,
        vec![sample("cpu_usage_ratio", 0.97, now_ms())],
    );
    let pending = wait_for(Duration::from_secs(10), || {
        alert_state(http, "CpuHot", "d1").filter(|a| a["state"] == "pending")
    });
    assert!(
        pending.is_some(),
        "CpuHot never pending: {:?}",
        alerts(http)
    );
    let firing = wait_for(Duration::from_secs(15), || {
        alert_state(http, "CpuHot", "d1").filter(|a| a["state"] == "firing")
    });
    assert!(firing.is_some(), "CpuHot never firing: {:?}", alerts(http));
    let attempted = wait_for(Duration::from_secs(15), || {
        let log = receiver.log.lock().expect("log");
        (log.iter().filter(|d| d.answered == 500).count() >= 2).then_some(())
    });
    assert!(
        attempted.is_some(),
        "no retried delivery while the receiver failed"
    );
    assert!(receiver.delivered().is_empty());

    // 2. kill -9 with the notification undelivered; the receiver recovers; a restart delivers it.
    server.kill9();
    receiver.failing.store(false, Ordering::SeqCst);
    let server2 = start_server(&data, http, mqtt, &flags);
    let delivered = wait_for(Duration::from_secs(20), || {
        let n = notified(&receiver, "CpuHot", "d1", "firing");
        (!n.is_empty()).then_some(n)
    })
    .expect("the firing notification was delivered after the restart");
    let d = &delivered[0];
    let ts = d.headers["x-fleetmon-timestamp"]
        .parse::<u64>()
        .expect("timestamp header");
    assert!(
        fleetmon_notify::signature::verify(
            SECRET.as_bytes(),
            ts,
            &d.raw,
            &d.headers["x-fleetmon-signature"]
        ),
        "signature does not verify: {:?}",
        d.headers
    );
    assert!(
        d.body["alerts"][0]["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("CPU hot on d1") && s.contains('%')),
        "{}",
        d.body
    );

    // 3. A silence from the CLI mutes d2's alert; `fleetmon alerts` shows it muted.
    let (ok, out) = fleetmon(&[
        "silence",
        "add",
        "--server",
        &base,
        "alertname=CpuHot",
        "device=d2",
        "--duration",
        "1h",
        "--comment",
        "maintenance",
    ]);
    assert!(ok, "{out}");
    let silence_id = out.trim().to_owned();
    send(
        http,
        "d2",
        0,
        vec![sample("cpu_usage_ratio", 0.99, now_ms())],
    );
    let muted = wait_for(Duration::from_secs(15), || {
        alert_state(http, "CpuHot", "d2").filter(|a| {
            a["state"] == "firing"
                && a["muting"]["silencedBy"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|id| id == silence_id.as_str()))
        })
    });
    assert!(muted.is_some(), "d2 not silenced: {:?}", alerts(http));
    let (ok, out) = fleetmon(&["alerts", "--server", &base]);
    assert!(
        ok && out.contains("CpuHot") && out.contains("(muted)"),
        "{out}"
    );
    let (ok, out) = fleetmon(&["silence", "list", "--server", &base]);
    assert!(
        ok && out.contains(&silence_id) && out.contains("maintenance"),
        "{out}"
    );

    // 4. d1 cools down: resolved, notified once.
    send(
        http,
        "d1",
        1,
        vec![sample("cpu_usage_ratio", 0.10, now_ms())],
    );
    let resolved = wait_for(Duration::from_secs(20), || {
        let n = notified(&receiver, "CpuHot", "d1", "resolved");
        (!n.is_empty()).then_some(n)
    });
    assert!(resolved.is_some(), "no resolved notification");

    // 5. A gateway and its two children connected over MQTT, then all gone at once.
    for (id, gw) in [("gw", None), ("c1", Some("gw")), ("c2", Some("gw"))] {
        let tags = match gw {
            Some(g) => json!({"site": "berlin", "gateway": g}),
            None => json!({"site": "berlin"}),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .put(&format!("{base}/api/v1/devices/{id}/tags"))
            .send_json(&tags)
            .expect("PUT tags");
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut clients: Vec<RawClient> = ["gw", "c1", "c2"]
        .iter()
        .map(|id| {
            let mut c = RawClient::connect(mqtt, id);
            let topic = Topic::telemetry(id);
            let body = encode_json(&Batch {
                device: (*id).into(),
                boot_id: "b".into(),
                seq: 0,
                sent_at_ms: now_ms(),
                dropped_before: 0,
                samples: vec![sample("cpu_usage_ratio", 0.2, now_ms())],
            });
            c.publish(&topic, body, 1);
            assert!(
                matches!(c.recv(), Some(rumqttc::Packet::PubAck(_))),
                "batch of {id} not acknowledged"
            );
            c
        })
        .collect();
    let online = wait_for(Duration::from_secs(10), || {
        ["gw", "c1", "c2"]
            .iter()
            .all(|id| get(&format!("{base}/api/v1/devices/{id}")).1["status"] == "online")
            .then_some(())
    });
    assert!(online.is_some());
    clients.clear();
    let folded = wait_for(Duration::from_secs(20), || {
        let n = notified(&receiver, "DeviceOffline", "gw", "firing");
        n.into_iter().find(|d| {
            let gw = d.body["alerts"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["labels"]["device"] == "gw"))
                .cloned()
                .unwrap_or(Value::Null);
            gw["suppressed"].as_array().is_some_and(|s| s.len() == 2)
        })
    });
    assert!(
        folded.is_some(),
        "no gateway notification listing both children: {:?} / {:?}",
        receiver
            .delivered()
            .iter()
            .map(|d| d.body.clone())
            .collect::<Vec<_>>(),
        alerts(http)
    );
    std::thread::sleep(Duration::from_secs(3));
    for child in ["c1", "c2"] {
        assert!(
            notified(&receiver, "DeviceOffline", child, "firing").is_empty(),
            "{child} was notified on its own"
        );
    }

    // Exactly once: no delivery id twice, and the first firing of d1 was not notified again
    // after the restart.
    let all = receiver.delivered();
    let mut ids: Vec<&str> = all
        .iter()
        .map(|d| d.headers["x-fleetmon-delivery"].as_str())
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a delivery id arrived twice");
    assert_eq!(notified(&receiver, "CpuHot", "d1", "firing").len(), 1);
    assert!(notified(&receiver, "CpuHot", "d2", "firing").is_empty());
    drop(server2);
}
