//! Device security end to end, over real TLS against a `fleetmon server` child process: the
//! built-in CA made by `fleetmon ca`, MQTT over mutual TLS (a rustls client here, and
//! Debian's `mosquitto_pub` as a real third-party peer), refused handshakes, revocation of a
//! live connection, topic ACLs, one certificate used twice, enrolment, the plaintext policy
//! and the server certificate's reload. Every refusal must show in `/api/v1/events`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{ServerProcess, free_addr, get, start_server, wait_for};
use fleetmon_server::security::ca::CaDir;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Connect, ConnectReturnCode, Packet, Publish, QoS, Subscribe, SubscribeReasonCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;

fn fleetmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fleetmon")
}

/// `fleetmon ca --ca-dir DIR ARGS...`, which must succeed; its stdout.
fn ca(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["ca", "--ca-dir", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = fleetmon(&all);
    assert!(
        out.status.success(),
        "fleetmon {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).expect("time fits"))
        .expect("clock after 1970")
}

/// A CA with a server certificate and device `pi-1`, and a server with a TLS listener.
struct Setup {
    dir: tempfile::TempDir,
    ca_dir: PathBuf,
    server: ServerProcess,
    tls: SocketAddr,
    https: SocketAddr,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_dir = dir.path().join("ca");
        ca(&ca_dir, &["init"]);
        ca(&ca_dir, &["server-cert"]);
        ca(&ca_dir, &["issue", "pi-1"]);
        let tls = free_addr();
        let https = free_addr();
        let args = Self::args(&ca_dir, tls, https);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = start_server(&dir.path().join("data"), free_addr(), free_addr(), &args);
        Setup {
            dir,
            ca_dir,
            server,
            tls,
            https,
        }
    }

    fn args(ca_dir: &Path, tls: SocketAddr, https: SocketAddr) -> Vec<String> {
        vec![
            "--ca-dir".to_owned(),
            ca_dir.to_str().expect("utf-8 path").to_owned(),
            "--mqtt-tls-listen".to_owned(),
            tls.to_string(),
            "--https-listen".to_owned(),
            https.to_string(),
        ]
    }

    /// `kill -9`, then the server again on the same data directory and addresses.
    fn restart_after_kill9(&mut self) {
        self.server.kill9();
        let args = Self::args(&self.ca_dir, self.tls, self.https);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (http, mqtt) = (self.server.http, self.server.mqtt);
        self.server = start_server(&self.dir.path().join("data"), http, mqtt, &args);
    }

    fn ca_pem(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    /// The certificate and key `ca issue DEVICE` wrote.
    fn device(&self, device: &str) -> (PathBuf, PathBuf) {
        let d = self.ca_dir.join("devices");
        (
            d.join(format!("{device}.pem")),
            d.join(format!("{device}.key")),
        )
    }

    fn connect(&self, device: &str) -> Result<Mqtts, String> {
        let (cert, key) = self.device(device);
        Mqtts::connect(self.tls, &self.ca_pem(), Some((&cert, &key)), device)
    }

    /// Security events, newest first, for `query` (`kind=...&device=...`).
    fn events(&self, query: &str) -> Vec<Value> {
        let (status, body) = get(&self.server.url(&format!("/api/v1/events?{query}")));
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("an events array").clone()
    }

    /// Waits for an event of `kind` (for `device`, when given) and returns the newest.
    fn event(&self, kind: &str, device: Option<&str>) -> Value {
        let query = match device {
            Some(d) => format!("kind={kind}&device={d}"),
            None => format!("kind={kind}"),
        };
        wait_for(Duration::from_secs(5), || {
            self.events(&query).into_iter().next()
        })
        .unwrap_or_else(|| panic!("no {kind} event for {device:?}: {:?}", self.events("")))
    }
}

/// An MQTT client over TLS (rustls, ring provider).
struct Mqtts {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
}

fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA certificate")).expect("a usable CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    Arc::new(match client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .expect("certificate file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = PrivateKeyDer::from_pem_file(key).expect("key file");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    })
}

impl Mqtts {
    fn open(addr: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>) -> Self {
        let tcp = TcpStream::connect(addr).expect("connect to the TLS listener");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let name = ServerName::try_from("localhost").expect("server name");
        let conn =
            rustls::ClientConnection::new(client_config(ca, client), name).expect("TLS client");
        Mqtts {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: BytesMut::new(),
        }
    }

    /// A v3.1.1 session as `client_id`; Err when the handshake or CONNECT is refused.
    fn connect(
        addr: SocketAddr,
        ca: &Path,
        client: Option<(&Path, &Path)>,
        client_id: &str,
    ) -> Result<Self, String> {
        let mut c = Self::open(addr, ca, client);
        c.send(Packet::Connect(Connect::new(client_id)))?;
        match c.recv() {
            Some(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => Ok(c),
            other => Err(format!("refused: {other:?}")),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tls
            .write_all(bytes)
            .and_then(|()| self.tls.flush())
            .map_err(|e| e.to_string())
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.tls.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn send(&mut self, p: Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        p.write(&mut out, 1 << 20).expect("encode a packet");
        self.write(&out)
    }

    /// The next packet; None once the server closed the connection (or TLS failed).
    fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed packet from the server: {e}"),
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn send5(&mut self, p: p5::Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        p.write(&mut out, None).expect("encode a packet");
        self.write(&out)
    }

    fn recv5(&mut self) -> Option<p5::Packet> {
        loop {
            match p5::Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed packet from the server: {e}"),
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Publishes a batch at QoS 1; true when it was acknowledged.
    fn publish_batch(&mut self, topic_device: &str, device: &str, seq: u64) -> bool {
        let mut p = Publish::new(
            format!("fleetmon/v1/{topic_device}/telemetry"),
            QoS::AtLeastOnce,
            batch(device, seq),
        );
        p.pkid = u16::try_from(seq % 60_000 + 1).expect("pkid");
        if self.send(Packet::Publish(p)).is_err() {
            return false;
        }
        matches!(self.recv(), Some(Packet::PubAck(_)))
    }

    /// The certificate the server presented.
    fn server_cert(&mut self) -> Vec<u8> {
        while self.tls.conn.is_handshaking() {
            self.tls
                .conn
                .complete_io(&mut self.tls.sock)
                .expect("TLS handshake");
        }
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a server certificate")
            .to_vec()
    }
}

fn batch(device: &str, seq: u64) -> Vec<u8> {
    serde_json::json!({
        "device": device,
        "seq": seq,
        "samples": [{"metric": "temperature_celsius", "labels": {"sensor": "cpu"},
                     "ts_ms": now_ms(), "value": 40.0 + seq as f64}]
    })
    .to_string()
    .into_bytes()
}

fn mosquitto_pub(setup: &Setup, cert: Option<(&Path, &Path)>, device: &str) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-p", &setup.tls.port().to_string()])
        .arg("--cafile")
        .arg(setup.ca_pem())
        .args(["-q", "1", "-i", device])
        .args(["-t", &format!("fleetmon/v1/{device}/telemetry")])
        .arg("-m")
        .arg(String::from_utf8(batch(device, 1)).expect("utf-8"));
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.output()
        .expect("run mosquitto_pub (Debian's mosquitto-clients)")
}

fn batches_received(server: &ServerProcess, device: &str) -> u64 {
    server
        .device(device)
        .and_then(|d| d["batches_received"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_device_certificate_sends_batches_that_are_stored() {
    let s = Setup::new();
    // A real third-party peer: mosquitto_pub with the device's certificate.
    let (cert, key) = s.device("pi-1");
    let out = mosquitto_pub(&s, Some((&cert, &key)), "pi-1");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(batches_received(&s.server, "pi-1"), 1);
    // And the rustls client, batch after batch, each acknowledged once durable.
    let mut c = s.connect("pi-1").expect("a valid certificate connects");
    for seq in 2..=4 {
        assert!(c.publish_batch("pi-1", "pi-1", seq), "batch {seq}");
    }
    assert_eq!(batches_received(&s.server, "pi-1"), 4);
    let dev = s.server.device("pi-1").expect("device known");
    assert_eq!(dev["transport"], "mqtt");
    assert!(s.events("device=pi-1").is_empty(), "{:?}", s.events(""));
    // `ca list` shows the certificate as valid.
    let list = ca(&s.ca_dir, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("pi-1") && l.ends_with("valid")),
        "{list}"
    );
}

#[test]
fn handshakes_without_a_good_certificate_are_refused_and_recorded() {
    let mut s = Setup::new();
    // No client certificate at all.
    let refused = Mqtts::connect(s.tls, &s.ca_pem(), None, "pi-1");
    assert!(refused.is_err());
    let e = s.event("no_client_certificate", None);
    assert!(
        e["source"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{e}"
    );

    // A certificate of another CA, for the same device id (mosquitto_pub, a real peer).
    let other = s.dir.path().join("other-ca");
    ca(&other, &["init"]);
    ca(&other, &["issue", "pi-1"]);
    let d = other.join("devices");
    let out = mosquitto_pub(&s, Some((&d.join("pi-1.pem"), &d.join("pi-1.key"))), "pi-1");
    assert!(
        !out.status.success(),
        "another CA's certificate was accepted"
    );
    let e = s.event("unknown_ca", Some("pi-1"));
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not signed by this CA")),
        "{e}"
    );

    // An expired certificate of this CA.
    let dir = CaDir::new(&s.ca_dir);
    let now = now_ms();
    let made = dir
        .issue("pi-old", now - 3 * DAY_MS, now - DAY_MS, now)
        .expect("issue an expired certificate");
    let cert = s.dir.path().join("old.pem");
    let key = s.dir.path().join("old.key");
    std::fs::write(&cert, &made.cert_pem).expect("write certificate");
    std::fs::write(&key, made.key_pem.expect("a key")).expect("write key");
    assert!(Mqtts::connect(s.tls, &s.ca_pem(), Some((&cert, &key)), "pi-old").is_err());
    s.event("certificate_expired", Some("pi-old"));

    assert_eq!(batches_received(&s.server, "pi-1"), 0);
    // Counted among the self-metrics too.
    let (_, metrics) = get(&s.server.url("/metrics"));
    let metrics = metrics.as_str().expect("metrics text").to_owned();
    for kind in ["no_client_certificate", "unknown_ca", "certificate_expired"] {
        assert!(
            metrics.contains(&format!(
                "fleetmon_security_events_total{{kind=\"{kind}\"}} 1"
            )),
            "{kind}: {metrics}"
        );
    }
    let (status, _) = get(&s.server.url("/api/v1/events?kind=nonsense"));
    assert_eq!(status, 400);

    // The events are journalled (about once a second) and listed again after a kill -9.
    let before = s.events("");
    std::thread::sleep(Duration::from_millis(1500));
    s.restart_after_kill9();
    let after = s.events("");
    let kinds = |events: &[Value]| -> Vec<(Value, Value)> {
        events
            .iter()
            .map(|e| (e["id"].clone(), e["kind"].clone()))
            .collect()
    };
    assert_eq!(kinds(&after), kinds(&before));
}

#[test]
fn revocation_closes_the_live_connection_and_refuses_new_ones() {
    let s = Setup::new();
    let mut c = s.connect("pi-1").expect("connects before revocation");
    assert!(c.publish_batch("pi-1", "pi-1", 1));
    let out = ca(&s.ca_dir, &["revoke", "pi-1"]);
    assert!(out.contains("revoked certificate"), "{out}");
    let revoked_at = Instant::now();
    assert!(c.recv().is_none(), "the live connection stays open");
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    let e = s.event("certificate_revoked", Some("pi-1"));
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("while connected")),
        "{e}"
    );

    assert!(
        s.connect("pi-1").is_err(),
        "a revoked certificate connected"
    );
    let again = wait_for(Duration::from_secs(5), || {
        let e = s.events("kind=certificate_revoked&device=pi-1");
        (e.len() >= 2).then_some(e)
    })
    .expect("the refused handshake is recorded");
    assert!(
        again[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at the handshake"))
    );
    let list = ca(&s.ca_dir, &["list"]);
    assert!(list.contains("revoked"), "{list}");
    let dev = s.server.device("pi-1").expect("device known");
    assert_eq!(dev["last_disconnect"]["reason"], "revoked", "{dev}");
}

#[test]
fn a_device_may_not_publish_or_subscribe_for_another() {
    let s = Setup::new();
    // MQTT 5: a negative PUBACK "not authorized", and the connection stays up.
    let (cert, key) = s.device("pi-1");
    let mut c = Mqtts::open(s.tls, &s.ca_pem(), Some((&cert, &key)));
    let connect = p5::Connect {
        keep_alive: 30,
        client_id: "pi-1".into(),
        clean_start: true,
        properties: None,
    };
    c.send5(p5::Packet::Connect(connect, None, None))
        .expect("CONNECT");
    assert!(
        matches!(c.recv5(), Some(p5::Packet::ConnAck(a)) if a.code == p5::ConnectReturnCode::Success)
    );
    let mut p = p5::Publish::new(
        "fleetmon/v1/pi-2/telemetry",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        batch("pi-2", 1),
        None,
    );
    p.pkid = 1;
    c.send5(p5::Packet::Publish(p)).expect("PUBLISH");
    match c.recv5() {
        Some(p5::Packet::PubAck(a)) => assert_eq!(a.reason, p5::PubAckReason::NotAuthorized),
        other => panic!("expected a negative PUBACK, got {other:?}"),
    }
    let mut own = p5::Publish::new(
        "fleetmon/v1/pi-1/telemetry",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        batch("pi-1", 1),
        None,
    );
    own.pkid = 2;
    c.send5(p5::Packet::Publish(own)).expect("PUBLISH");
    match c.recv5() {
        Some(p5::Packet::PubAck(a)) => assert_eq!(a.reason, p5::PubAckReason::Success),
        other => panic!("expected a PUBACK, got {other:?}"),
    }
    let e = s.event("acl_violation", Some("pi-1"));
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("fleetmon/v1/pi-2/telemetry")),
        "{e}"
    );
    drop(c);

    // MQTT 3.1.1: another device's control topic is refused in the SUBACK, its own granted;
    // a publish for another device closes the connection.
    let mut c = s.connect("pi-1").expect("connects");
    c.send(Packet::Subscribe(Subscribe::new_many([
        rumqttc::SubscribeFilter::new("fleetmon/v1/pi-2/control".into(), QoS::AtLeastOnce),
        rumqttc::SubscribeFilter::new("fleetmon/v1/pi-1/control".into(), QoS::AtLeastOnce),
    ])))
    .expect("SUBSCRIBE");
    match c.recv() {
        Some(Packet::SubAck(a)) => {
            assert_eq!(a.return_codes[0], SubscribeReasonCode::Failure);
            assert!(matches!(a.return_codes[1], SubscribeReasonCode::Success(_)));
        }
        other => panic!("expected a SUBACK, got {other:?}"),
    }
    assert!(
        !c.publish_batch("pi-2", "pi-2", 1),
        "publish for pi-2 acknowledged"
    );
    assert!(c.recv().is_none(), "MQTT 3.1.1 closes on a refused publish");
    assert!(s.server.device("pi-2").is_none(), "pi-2 was spoken for");
    assert!(s.events("kind=acl_violation&device=pi-1").len() >= 3);

    // Another device's client id would take its session over: refused.
    match Mqtts::connect(s.tls, &s.ca_pem(), Some((&cert, &key)), "pi-2") {
        Err(e) => assert!(e.contains("NotAuthorized"), "{e}"),
        Ok(_) => panic!("connected with another device's client id"),
    }
}

#[test]
fn one_certificate_on_two_connections_is_flagged_and_the_newest_wins() {
    let s = Setup::new();
    let mut first = s.connect("pi-1").expect("first connection");
    let mut second = s.connect("pi-1").expect("second connection");
    assert!(first.recv().is_none(), "the older connection stays open");
    assert!(second.publish_batch("pi-1", "pi-1", 1));
    let e = s.event("certificate_shared", Some("pi-1"));
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("while in use from")),
        "{e}"
    );
}

fn csr_for(device: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device);
    let csr = params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM");
    (csr, key.serialize_pem())
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    common::post(url, body.to_string().as_bytes())
}

#[test]
fn an_enrolment_token_works_once_expires_and_its_certificate_authenticates() {
    let s = Setup::new();
    let token = ca(&s.ca_dir, &["enrol-token", "pi-7", "--ttl", "10m"]);
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    let tokens = std::fs::read_to_string(s.ca_dir.join("tokens.json")).expect("tokens file");
    assert!(!tokens.contains(token), "the token is stored in the clear");

    let (csr, key) = csr_for("whoever");
    let url = s.server.url("/api/v1/enrol");
    let (status, body) = post_json(&url, &serde_json::json!({"token": token, "csr": csr}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device"], "pi-7");
    let cert = s.dir.path().join("pi-7.pem");
    let key_path = s.dir.path().join("pi-7.key");
    std::fs::write(&cert, body["certificate"].as_str().expect("certificate")).expect("write");
    std::fs::write(&key_path, key).expect("write");
    s.event("enrolled", Some("pi-7"));

    // Once only.
    let (status, _) = post_json(&url, &serde_json::json!({"token": token, "csr": csr}));
    assert_eq!(status, 403);
    let e = s.event("enrolment_refused", Some("pi-7"));
    assert!(!e.to_string().contains(token), "the token is in an event");

    // The certificate authenticates as pi-7, whatever the request's subject said.
    let mut c = Mqtts::connect(s.tls, &s.ca_pem(), Some((&cert, &key_path)), "pi-7")
        .expect("the enrolled certificate connects");
    assert!(c.publish_batch("pi-7", "pi-7", 1));
    assert_eq!(batches_received(&s.server, "pi-7"), 1);

    // An expired token is refused.
    let short = ca(&s.ca_dir, &["enrol-token", "pi-8", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, _) = post_json(
        &url,
        &serde_json::json!({"token": short.trim(), "csr": csr}),
    );
    assert_eq!(status, 403);
    s.event("enrolment_refused", Some("pi-8"));
    let (status, _) = post_json(
        &url,
        &serde_json::json!({"token": "0".repeat(64), "csr": csr}),
    );
    assert_eq!(status, 403);
    let list = ca(&s.ca_dir, &["list", "--json"]);
    assert!(list.contains("\"enrolled\""), "{list}");
}

#[test]
fn plaintext_beyond_loopback_is_refused_without_allow_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = fleetmon(&[
        "server",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--http-listen",
        &free_addr().to_string(),
        "--mqtt-listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow-plaintext") && err.contains("0.0.0.0:0"),
        "{err}"
    );
}

/// One HTTP/1.1 request over TLS (verified against `ca`); the status and body.
fn https_request(addr: SocketAddr, ca: &Path, request: &str) -> Result<(u16, String), String> {
    https_request_as(addr, ca, None, request)
}

/// The same with a client certificate.
fn https_request_as(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    request: &str,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(client_config(ca, client), name)
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // The server closes without close_notify after `Connection: close`: what was read counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

#[test]
fn the_api_and_ingest_are_served_over_https() {
    let s = Setup::new();
    let get_req =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (status, body) =
        https_request(s.https, &s.ca_pem(), &get_req("/healthz")).expect("HTTPS request");
    assert_eq!(status, 200, "{body}");

    // Ingest over HTTPS takes a batch only from the device whose certificate opened the
    // connection: without a certificate 401, another device's 403 (an ACL violation), its own
    // 200 and stored.
    let post = |device: &str| {
        let payload = String::from_utf8(batch(device, 1)).expect("utf-8");
        format!(
            "POST /api/v1/ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        )
    };
    let (cert, key) = s.device("pi-1");
    let pi1 = Some((cert.as_path(), key.as_path()));
    let (status, body) = https_request(s.https, &s.ca_pem(), &post("pi-1")).expect("HTTPS ingest");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let (status, body) =
        https_request_as(s.https, &s.ca_pem(), pi1, &post("pi-2")).expect("HTTPS ingest");
    assert_eq!(status, 403, "{body}");
    s.event("acl_violation", Some("pi-1"));
    let (status, body) =
        https_request_as(s.https, &s.ca_pem(), pi1, &post("pi-1")).expect("HTTPS ingest");
    assert_eq!(status, 200, "{body}");
    assert_eq!(batches_received(&s.server, "pi-1"), 1);
    assert_eq!(batches_received(&s.server, "pi-2"), 0);
    let (status, body) =
        https_request(s.https, &s.ca_pem(), &get_req("/api/v1/devices/pi-1")).expect("HTTPS API");
    assert_eq!(status, 200);
    assert!(body.contains("\"batches_received\":1"), "{body}");
    // A revoked certificate is no identity at all.
    ca(&s.ca_dir, &["revoke", "pi-1"]);
    let refused = wait_for(Duration::from_secs(5), || {
        let (status, _) =
            https_request_as(s.https, &s.ca_pem(), pi1, &post("pi-1")).expect("HTTPS ingest");
        (status == 401).then_some(())
    });
    assert!(
        refused.is_some(),
        "a revoked certificate still ingests over HTTPS"
    );

    // A client that does not trust our CA refuses the server; plain HTTP on the HTTPS port
    // gets no HTTP answer; the listener keeps serving afterwards.
    let other = tempfile::tempdir().expect("temp dir");
    ca(&other.path().join("ca"), &["init"]);
    let e = https_request(
        s.https,
        &other.path().join("ca/ca.pem"),
        &get_req("/healthz"),
    )
    .expect_err("an unknown server certificate is refused");
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    let mut plain = TcpStream::connect(s.https).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    plain
        .write_all(get_req("/healthz").as_bytes())
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plain HTTP was served on the HTTPS port"
    );
    // A client that connects and says nothing does not block the next.
    let _silent = TcpStream::connect(s.https).expect("connect");
    let (status, _) =
        https_request(s.https, &s.ca_pem(), &get_req("/healthz")).expect("HTTPS request");
    assert_eq!(status, 200);
}

#[test]
fn the_server_certificate_is_reloaded_when_its_files_change() {
    let s = Setup::new();
    let (cert, key) = s.device("pi-1");
    let before = Mqtts::open(s.tls, &s.ca_pem(), Some((&cert, &key))).server_cert();
    ca(&s.ca_dir, &["server-cert", "--san", "localhost"]);
    let after = wait_for(Duration::from_secs(5), || {
        let now = Mqtts::open(s.tls, &s.ca_pem(), Some((&cert, &key))).server_cert();
        (now != before).then_some(now)
    });
    assert!(
        after.is_some(),
        "the server still presents the old certificate"
    );
    let mut c = s
        .connect("pi-1")
        .expect("connects with the new server certificate");
    assert!(c.publish_batch("pi-1", "pi-1", 1));
}

#[test]
fn a_certificate_close_to_expiry_is_reported() {
    let s = Setup::new();
    ca(&s.ca_dir, &["issue", "pi-9", "--days", "10"]);
    let mut c = s.connect("pi-9").expect("connects");
    assert!(c.publish_batch("pi-9", "pi-9", 1));
    let e = s.event("certificate_expiring", Some("pi-9"));
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expires in")),
        "{e}"
    );
}
