//! Real local receivers for the notification tests: an HTTP server that answers from a script
//! and records every request, and a tiny SMTP sink. Both run on std threads and ephemeral ports.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetmon_notify::{AlertPayload, Notification, Status};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request as the receiver saw it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn delivery(&self) -> String {
        self.header("x-fleetmon-delivery").unwrap_or("").to_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

#[derive(Default)]
struct HttpState {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    seen: Vec<Recorded>,
}

/// An HTTP receiver: answers scripted replies in order, then the default (200 unless set).
#[derive(Clone)]
pub struct HttpReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<HttpState>>,
}

impl HttpReceiver {
    pub fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").expect("bind test receiver"))
    }

    /// Serves on a listener the test bound itself (e.g. on a port chosen earlier).
    pub fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(Mutex::new(HttpState::default()));
        let s = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve_http(conn, &s));
            }
        });
        HttpReceiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, replies: Vec<Reply>) {
        self.state
            .lock()
            .expect("receiver state")
            .script
            .extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().expect("receiver state").default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("receiver state").seen.clone()
    }

    /// Requests answered with a 2xx, by delivery id.
    pub fn delivered_by_id(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            if (200..300).contains(&r.status) {
                *m.entry(r.delivery()).or_insert(0) += 1;
            }
        }
        m
    }
}

fn serve_http(conn: TcpStream, state: &Mutex<HttpState>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
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
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let reply = {
        let mut st = state.lock().expect("receiver state");
        let reply = st
            .script
            .pop_front()
            .or_else(|| st.default.clone())
            .unwrap_or_else(|| Reply::status(200));
        st.seen.push(Recorded {
            method,
            path,
            headers,
            body,
            status: reply.status,
            at: Instant::now(),
        });
        reply
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. `reject_rcpt` makes
/// it answer RCPT with a permanent 550.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub fn start(reject_rcpt: bool) -> Self {
        Self::serve(
            TcpListener::bind("127.0.0.1:0").expect("bind smtp sink"),
            reject_rcpt,
        )
    }

    /// An accepting sink on a listener the test bound itself.
    pub fn on(listener: TcpListener) -> Self {
        Self::serve(listener, false)
    }

    fn serve(listener: TcpListener, reject_rcpt: bool) -> Self {
        let addr = listener.local_addr().expect("sink address");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = Arc::clone(&mails);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let m = Arc::clone(&m);
                std::thread::spawn(move || serve_smtp(conn, &m, reject_rcpt));
            }
        });
        SmtpSink { addr, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("sink state").clone()
    }
}

fn serve_smtp(conn: TcpStream, mails: &Mutex<Vec<Mail>>, reject_rcpt: bool) {
    let mut w = conn.try_clone().expect("clone stream");
    let mut r = BufReader::new(conn);
    let mut say = |s: &str| w.write_all(format!("{s}\r\n").as_bytes()).is_ok();
    if !say("220 sink.test ESMTP ready") {
        return;
    }
    let mut from = String::new();
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            say("250-sink.test") && say("250-8BITMIME") && say("250 SIZE 1000000")
        } else if upper.starts_with("HELO") {
            say("250 sink.test")
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_owned();
            rcpts.clear();
            say("250 ok")
        } else if upper.starts_with("RCPT TO:") {
            if reject_rcpt {
                say("550 no such user")
            } else {
                rcpts.push(cmd[8..].trim().to_owned());
                say("250 ok")
            }
        } else if upper == "DATA" {
            if !say("354 go ahead") {
                return;
            }
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            mails.lock().expect("sink state").push(Mail {
                from: from.clone(),
                rcpts: rcpts.clone(),
                data,
            });
            say("250 queued")
        } else if upper == "QUIT" {
            let _ = say("221 bye");
            return;
        } else if upper == "RSET" || upper == "NOOP" {
            say("250 ok")
        } else {
            say("502 not implemented")
        };
        if !ok {
            return;
        }
    }
}

/// A two-alert firing notification for `receiver`.
pub fn notification(id: &str, receiver: &str) -> Notification {
    let alert = |dev: &str| AlertPayload {
        status: Status::Firing,
        labels: [
            ("alertname", "DeviceOffline"),
            ("site", "berlin"),
            ("device", dev),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        annotations: [("summary".to_owned(), format!("{dev} stopped reporting"))].into(),
        starts_at: "2026-03-01T10:00:00Z".into(),
        ends_at: None,
        generator_url: String::new(),
        fingerprint: format!("fp-{dev}"),
        value: None,
        suppressed: vec![],
    };
    let group: BTreeMap<String, String> = [
        ("alertname".to_owned(), "DeviceOffline".to_owned()),
        ("site".to_owned(), "berlin".to_owned()),
    ]
    .into();
    Notification {
        id: id.into(),
        receiver: receiver.into(),
        status: Status::Firing,
        group_key: "site=berlin".into(),
        group_labels: group.clone(),
        common_labels: group,
        common_annotations: BTreeMap::new(),
        alerts: vec![alert("gw-01"), alert("gw-02")],
        external_url: "http://127.0.0.1:8427/".into(),
        truncated_alerts: 0,
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
