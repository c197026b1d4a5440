//! Helpers shared by the end-to-end tests: servers in-process or as child processes on free
//! loopback ports, and a blocking HTTP client.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fleetmon_protocol::SeqSet;
use rumqttc::{Connect, Packet, Publish, QoS};
use serde_json::Value;

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url`; returns status and JSON body (or the text as a JSON string).
pub fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().expect("GET");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("read body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// POST `body` to `url`; returns status and JSON body.
pub fn post(url: &str, body: &[u8]) -> (u16, Value) {
    let mut r = agent().post(url).send(body).expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("read body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Retries `check` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fleetmon server` child process, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, http: SocketAddr, mqtt: SocketAddr, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-listen",
                &http.to_string(),
                "--mqtt-listen",
                &mqtt.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn fleetmon server");
        let server = Self { child, http, mqtt };
        let up = wait_for(Duration::from_secs(20), || {
            let ok = agent()
                .get(&format!("http://{http}/healthz"))
                .call()
                .is_ok_and(|r| r.status() == 200);
            ok.then_some(())
        });
        assert!(up.is_some(), "fleetmon server did not come up on {http}");
        server
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `seqs` ranges of a device detail as a set.
pub fn seqs_of(ranges: &Value) -> SeqSet {
    let mut set = SeqSet::new();
    for r in ranges.as_array().expect("seq ranges are an array") {
        let bound = |i: usize| r[i].as_u64().expect("a seq range holds two numbers");
        for s in bound(0)..=bound(1) {
            set.insert(s);
        }
    }
    set
}

/// A raw MQTT 3.1.1 client: just enough to see exactly what the server answers.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    pub fn connect(addr: SocketAddr, client_id: &str) -> Self {
        Self::connect_with(addr, Connect::new(client_id))
    }

    /// Connects with a CONNECT of the caller's making (keepalive, Last Will...).
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the MQTT endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        let mut c = RawClient {
            stream,
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(connect));
        assert!(matches!(c.recv(), Some(Packet::ConnAck(_))));
        c
    }

    pub fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, 1 << 24).expect("encode a packet");
        self.stream.write_all(&out).expect("send a packet");
    }

    pub fn publish(&mut self, topic: &str, payload: Vec<u8>, pkid: u16) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        self.send(Packet::Publish(p));
    }

    /// The next packet, or None when the server closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 24) {
                Ok(p) => return Some(p),
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("server sent a malformed packet: {e}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no answer from the server: {e}"),
            }
        }
    }
}
