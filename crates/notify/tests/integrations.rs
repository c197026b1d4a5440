//! Slack and email integrations, and per-receiver rate limits, against real local receivers.

mod common;

use std::time::Duration;

use common::{HttpReceiver, SmtpSink, init_logs, notification, wait_for};
use fleetmon_notify::{
    EmailConfig, Notifier, NotifyConfig, RateLimit, ReceiverConfig, RetryConfig, SlackConfig,
    SmtpTls, WebhookConfig,
};

fn base(receiver: ReceiverConfig) -> NotifyConfig {
    let mut c = NotifyConfig {
        retry: RetryConfig {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_age: Duration::from_secs(60),
        },
        ..NotifyConfig::default()
    };
    c.receivers.insert("ops".into(), receiver);
    c
}

fn email(sink: &SmtpSink) -> EmailConfig {
    EmailConfig {
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(sink.addr.port()),
        tls: SmtpTls::None,
        username: None,
        password: None,
        password_file: None,
        password_env: None,
        from: "fleetmon <alerts@fleet.test>".into(),
        to: vec![
            "oncall@fleet.test".into(),
            "Site Lead <lead@fleet.test>".into(),
        ],
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn slack_gets_a_text_summary() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        base(ReceiverConfig {
            slack: vec![SlackConfig::new(rx.url("/services/T0/B0/xyz"))],
            ..ReceiverConfig::default()
        }),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("s-1", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/services/T0/B0/xyz");
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    let body = reqs[0].json();
    let obj = body.as_object().expect("object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["text"],
        "only `text`: {body}"
    );
    let text = body["text"].as_str().expect("text is a string");
    assert!(
        text.starts_with("[FIRING:2] DeviceOffline site=berlin\n"),
        "{text}"
    );
    assert!(
        text.contains("device=gw-01: gw-01 stopped reporting"),
        "{text}"
    );
    assert!(text.contains("device=gw-02"), "{text}");
}

#[test]
fn email_reaches_the_smtp_sink_with_subject_and_recipients() {
    init_logs();
    let sink = SmtpSink::start(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        base(ReceiverConfig {
            email: vec![email(&sink)],
            ..ReceiverConfig::default()
        }),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("e-1", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)), "{:?}", n.stats());
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.from, "<alerts@fleet.test>");
    assert_eq!(m.rcpts, ["<oncall@fleet.test>", "<lead@fleet.test>"]);
    assert!(
        m.data
            .contains("Subject: [FIRING:2] DeviceOffline site=berlin\r\n"),
        "{}",
        m.data
    );
    assert!(
        m.data
            .contains("To: oncall@fleet.test, \"Site Lead\" <lead@fleet.test>"),
        "{}",
        m.data
    );
    assert!(m.data.contains("gw-01 stopped reporting"), "{}", m.data);
    assert!(m.data.contains("text/plain"), "{}", m.data);
    assert_eq!(n.stats().receivers["ops"].delivered, 1);
}

#[test]
fn smtp_permanent_refusal_is_dead_lettered() {
    let sink = SmtpSink::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        base(ReceiverConfig {
            email: vec![email(&sink)],
            ..ReceiverConfig::default()
        }),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("e-550", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    assert!(sink.mails().is_empty());
    assert_eq!(n.stats().receivers["ops"].failed, 1);
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).expect("dead");
    assert!(
        dead.contains("\"target\":\"email[0]\"") && dead.contains("550"),
        "{dead}"
    );
}

#[test]
fn smtp_down_is_retried_until_it_comes_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = email(&SmtpSink::start(false));
    cfg.smtp_port = Some(port);
    let n = Notifier::start(
        base(ReceiverConfig {
            email: vec![cfg],
            ..ReceiverConfig::default()
        }),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("e-late", "ops")).expect("enqueue");
    assert!(wait_for(
        Duration::from_secs(5),
        || n.stats().receivers["ops"].retried >= 2
    ));
    let sink = SmtpSink::on(std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind"));
    assert!(n.wait_idle(Duration::from_secs(10)));
    assert_eq!(sink.mails().len(), 1);
}

#[test]
fn each_integration_of_a_receiver_gets_it() {
    let hook = HttpReceiver::start();
    let slack = HttpReceiver::start();
    let sink = SmtpSink::start(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        base(ReceiverConfig {
            webhook: vec![WebhookConfig::new(hook.url("/"))],
            slack: vec![SlackConfig::new(slack.url("/"))],
            email: vec![email(&sink)],
            rate_limit: None,
        }),
        dir.path(),
    )
    .expect("start");
    n.enqueue(notification("all", "ops")).expect("enqueue");
    assert!(n.wait_idle(Duration::from_secs(10)));
    assert_eq!(hook.delivered_by_id()["all"], 1);
    assert_eq!(slack.delivered_by_id()["all"], 1);
    assert_eq!(sink.mails().len(), 1);
    assert_eq!(n.stats().receivers["ops"].delivered, 3);
}

#[test]
fn rate_limit_delays_but_delivers_everything() {
    let rx = HttpReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::start(
        base(ReceiverConfig {
            webhook: vec![WebhookConfig::new(rx.url("/"))],
            // one at once, then one every 0.5 s
            rate_limit: Some(RateLimit {
                per_minute: 120,
                burst: Some(1),
            }),
            ..ReceiverConfig::default()
        }),
        dir.path(),
    )
    .expect("start");
    for i in 0..4 {
        n.enqueue(notification(&format!("rl-{i}"), "ops"))
            .expect("enqueue");
    }
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(rx.requests().len(), 1, "the burst is one");
    assert!(
        n.stats().receivers["ops"].queued >= 2,
        "the rest wait in the outbox"
    );
    assert!(n.wait_idle(Duration::from_secs(10)));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 4);
    let span = reqs[3].at - reqs[0].at;
    assert!(
        span >= Duration::from_millis(1400),
        "4 deliveries in {span:?}"
    );
    let ids: Vec<String> = reqs.iter().map(|r| r.delivery()).collect();
    assert_eq!(ids, ["rl-0", "rl-1", "rl-2", "rl-3"]);
}
