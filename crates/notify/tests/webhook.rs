//! Webhook delivery against a real local HTTP receiver: body, headers, signature, retries,
//! `Retry-After`, permanent failures, deduplication by id.

mod common;

use std::time::Duration;

use common::{HttpReceiver, Reply, init_logs, notification, wait_for};
use fleetmon_notify::{
    Enqueued, Notifier, NotifyConfig, NotifyError, ReceiverConfig, RetryConfig, WebhookConfig,
    signature,
};

const SECRET: &str = "test-hook-key";

fn config(url: &str, secret: Option<&str>, retry: RetryConfig) -> NotifyConfig {
    let mut hook = WebhookConfig::new(url);
    hook.secret = secret.map(fleetmon_notify::Secret::new);
    hook.timeout = Duration::from_secs(5);
    let mut c = NotifyConfig {
        retry,
        ..NotifyConfig::default()
    };
    c.receivers.insert(
        "ops".into(),
        ReceiverConfig {
            webhook: vec![hook],
            ..ReceiverConfig::default()
        },
    );
    c
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_age: Duration::from_secs(60),
    }
}

#[test]
fn delivers_signed_alertmanager_shaped_json() {
    init_logs();
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        config(&rx.url("/hook"), Some(SECRET), fast_retry()),
        dir.path(),
    )
    .expect("start");
    assert_eq!(
        n.enqueue(notification("n-1", "ops")).expect("enqueue"),
        Enqueued::Accepted
    );
    assert!(n.wait_idle(Duration::from_secs(10)), "not delivered");
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.delivery(), "n-1");
    let ts: u64 = r
        .header("x-fleetmon-timestamp")
        .expect("timestamp header")
        .parse()
        .expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(ts) < 60, "timestamp {ts} far from now {now}");
    let sig = r.header("x-fleetmon-signature").expect("signature header");
    assert!(signature::verify(SECRET.as_bytes(), ts, &r.body, sig));
    assert!(!signature::verify(b"wrong key", ts, &r.body, sig));
    // The same HMAC computed from its definition, not through the crate.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut msg = format!("{ts}.").into_bytes();
    msg.extend_from_slice(&r.body);
    let want: String = ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={want}"));

    let body = r.json();
    assert_eq!(body["version"], "4");
    assert_eq!(body["id"], "n-1");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["groupLabels"]["alertname"], "DeviceOffline");
    assert_eq!(body["alerts"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["alerts"][0]["labels"]["device"], "gw-01");
    let stats = n.stats();
    assert_eq!(stats.receivers["ops"].delivered, 1);
    assert_eq!(stats.receivers["ops"].queued, 0);
    n.shutdown();
}

#[test]
fn unsigned_without_a_secret() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), None, fast_retry()), dir.path()).expect("start");
    n.enqueue(notification("n-1", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    assert!(rx.requests()[0].header("x-fleetmon-signature").is_none());
}

#[test]
fn retries_after_500_and_delivers_exactly_once() {
    init_logs();
    let rx = HttpReceiver::start();
    rx.script(vec![
        Reply::status(500),
        Reply::status(502),
        Reply::status(200),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), Some(SECRET), fast_retry()), dir.path())
        .expect("start");
    n.enqueue(notification("n-retry", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)), "not delivered");
    std::thread::sleep(Duration::from_millis(300));
    let reqs = rx.requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 502, 200]);
    assert!(reqs.iter().all(|r| r.delivery() == "n-retry"));
    assert_eq!(rx.delivered_by_id()["n-retry"], 1);
    let s = &n.stats().receivers["ops"];
    assert_eq!((s.delivered, s.retried, s.failed), (1, 2, 0));
}

#[test]
fn backoff_doubles_between_attempts() {
    let rx = HttpReceiver::start();
    rx.script(vec![Reply::status(500); 4]);
    let dir = tempfile::tempdir().expect("tempdir");
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
        max_age: Duration::from_secs(60),
    };
    let n = Notifier::start(config(&rx.url("/"), None, retry), dir.path()).expect("start");
    n.enqueue(notification("n-backoff", "ops"))
        .expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 5);
    // Attempt k+1 waits at least half of 100 ms * 2^(k-1) (jitter takes at most half off).
    for (k, pair) in reqs.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let floor = Duration::from_millis(50 << k);
        assert!(
            gap + Duration::from_millis(5) >= floor,
            "gap {k}: {gap:?} < {floor:?}"
        );
    }
}

#[test]
fn retry_after_is_honoured() {
    let rx = HttpReceiver::start();
    rx.script(vec![
        Reply::status(503).header("Retry-After", "1"),
        Reply::status(429).header("Retry-After", "1"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), None, fast_retry()), dir.path()).expect("start");
    n.enqueue(notification("n-ra", "ops")).expect("enqueue");
    // Backoff alone would retry within 100 ms; the receiver asked for 1 s each time.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(rx.requests().len(), 1, "retried before Retry-After");
    assert!(n.wait_idle(Duration::from_secs(10)));
    let reqs = rx.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 429, 200]
    );
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(990));
    assert!(reqs[2].at - reqs[1].at >= Duration::from_millis(990));
}

#[test]
fn client_error_is_permanent_and_dead_lettered() {
    let rx = HttpReceiver::start();
    rx.script(vec![Reply::status(404)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), None, fast_retry()), dir.path()).expect("start");
    n.enqueue(notification("n-404", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.requests().len(), 1, "a 404 must not be retried");
    assert_eq!(n.stats().receivers["ops"].failed, 1);
    n.shutdown();
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).expect("dead letter");
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead-letter line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "n-404");
    assert_eq!(lines[0]["target"], "webhook[0]");
    assert!(lines[0]["reason"].as_str().unwrap_or("").contains("404"));
    assert_eq!(
        lines[0]["notification"]["alerts"][1]["labels"]["device"],
        "gw-02"
    );
}

#[test]
fn gives_up_after_max_age() {
    let rx = HttpReceiver::start();
    rx.set_default(Reply::status(500));
    let dir = tempfile::tempdir().expect("tempdir");
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        max_age: Duration::from_millis(600),
    };
    let n = Notifier::start(config(&rx.url("/"), None, retry), dir.path()).expect("start");
    n.enqueue(notification("n-old", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)), "never gave up");
    let attempts = rx.requests().len();
    assert!(attempts >= 3, "only {attempts} attempts before giving up");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), attempts, "attempted after giving up");
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).expect("dead letter");
    assert!(dead.contains("gave up after"), "{dead}");
    assert_eq!(n.stats().receivers["ops"].failed, 1);
}

#[test]
fn same_id_twice_is_sent_once() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), None, fast_retry()), dir.path()).expect("start");
    assert_eq!(
        n.enqueue(notification("dup", "ops")).expect("first"),
        Enqueued::Accepted
    );
    assert_eq!(
        n.enqueue(notification("dup", "ops")).expect("second"),
        Enqueued::Duplicate
    );
    assert!(n.wait_idle(Duration::from_secs(10)));
    // and again after it was delivered
    assert_eq!(
        n.enqueue(notification("dup", "ops")).expect("third"),
        Enqueued::Duplicate
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), 1);
}

#[test]
fn restart_after_delivery_sends_nothing_again() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&rx.url("/"), None, fast_retry());
    let n = Notifier::start(cfg.clone(), dir.path()).expect("start");
    for i in 0..3 {
        n.enqueue(notification(&format!("r-{i}"), "ops"))
            .expect("enqueue");
    }
    assert!(n.wait_idle(Duration::from_secs(10)));
    n.shutdown();
    let n = Notifier::start(cfg, dir.path()).expect("restart");
    assert_eq!(
        n.enqueue(notification("r-1", "ops")).expect("again"),
        Enqueued::Duplicate
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.requests().len(), 3);
}

#[test]
fn unknown_receiver_is_refused() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(config(&rx.url("/"), None, fast_retry()), dir.path()).expect("start");
    let e = n
        .enqueue(notification("x", "nobody"))
        .expect_err("must refuse");
    assert!(matches!(e, NotifyError::UnknownReceiver { .. }), "{e}");
}

#[test]
fn connection_refused_is_retried_until_the_receiver_appears() {
    // Reserve a port, free it, and point the webhook there: nothing listens at first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        config(&format!("http://127.0.0.1:{port}/"), None, fast_retry()),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("late", "ops")).expect("enqueue");
    assert!(wait_for(
        Duration::from_secs(5),
        || n.stats().receivers["ops"].retried >= 2
    ));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind port");
    let rx = HttpReceiver::on(listener);
    assert!(n.wait_idle(Duration::from_secs(10)));
    assert_eq!(n.stats().receivers["ops"].delivered, 1);
    assert_eq!(rx.delivered_by_id()["late"], 1);
}
