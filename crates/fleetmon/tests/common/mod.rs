//! Helpers shared by the end-to-end tests: servers in-process or as child processes on free
//! loopback ports, and a blocking HTTP client.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use fleetmon_protocol::{Batch, Sample, SeqSet};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Connect, Packet, Publish, QoS};
use serde_json::Value;

#[allow(unused_imports, reason = "each test file uses a different part")]
pub use fleetmon_testkit::{ServerProcess, free_addr, get, post, wait_for};

/// This package's `fleetmon server` on `data_dir` and the two addresses.
pub fn start_server(
    data_dir: &Path,
    http: SocketAddr,
    mqtt: SocketAddr,
    extra: &[&str],
) -> ServerProcess {
    ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_fleetmon")),
        data_dir,
        http,
        mqtt,
        extra,
    )
}

/// A `fleetmon sim` child process, killed when dropped.
pub struct SimProcess(std::process::Child);

impl From<std::process::Child> for SimProcess {
    fn from(child: std::process::Child) -> Self {
        Self(child)
    }
}

impl SimProcess {
    /// The exit status, once the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `devices` simulated devices (ids `sim-00000`...) against `server`, one batch every
/// `interval`, and waits until all are online and have sent `batches_each` batches on average.
pub fn start_fleet(
    server: &ServerProcess,
    devices: usize,
    interval: &str,
    batches_each: u64,
) -> SimProcess {
    let sim = SimProcess(
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetmon"))
            .args(["sim", "--mqtt", &server.mqtt.to_string()])
            .args(["--devices", &devices.to_string()])
            .args(["--interval", interval, "--duration", "10m", "--quiet"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn fleetmon sim"),
    );
    let ready = wait_for(Duration::from_secs(60), || {
        let (_, list) = get(&server.url("/api/v1/devices"));
        let batches: u64 = list["devices"]
            .as_array()?
            .iter()
            .filter_map(|d| d["batches_received"].as_u64())
            .sum();
        (list["online"] == devices && batches >= batches_each * devices as u64).then_some(())
    });
    assert!(ready.is_some(), "the simulated fleet did not come up");
    sim
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

/// Exactly once, for one simulated device: every acknowledged batch is stored, nothing is
/// stored that was not sent, and at the sample level no timestamp is stored twice in any
/// series and the count of stored samples equals what the device sent.
pub fn assert_stored_exactly_once(base: &str, d: &fleetmon_sim::DeviceSummary) {
    let (status, detail) = get(&format!("{base}/api/v1/devices/{}", d.device));
    assert_eq!(status, 200, "{}: {detail}", d.device);
    let stored = seqs_of(&detail["seqs"]);
    for [a, b] in &d.acked_seqs {
        for s in *a..=*b {
            assert!(
                stored.contains(s),
                "{}: acknowledged seq {s} not stored",
                d.device
            );
        }
    }
    let sent: Vec<u64> = d.sent_seqs.iter().flat_map(|r| r[0]..=r[1]).collect();
    assert_eq!(
        stored.iter().collect::<Vec<_>>(),
        sent,
        "{}: stored seqs differ from sent",
        d.device
    );
    assert_eq!(detail["batches_received"].as_u64(), Some(stored.len()));

    let (_, samples) = get(&format!("{base}/api/v1/samples?device={}", d.device));
    let mut total = 0u64;
    for series in samples["series"].as_array().expect("a series list") {
        // What the server derives (device_up, anomaly scores...) is not what was sent.
        let metric = series["metric"].as_str().expect("a metric name");
        if fleetmon_server::fleet::derived::is_derived(metric) {
            continue;
        }
        let points = series["points"].as_array().expect("points");
        let mut ts: Vec<i64> = points
            .iter()
            .map(|p| p[0].as_i64().expect("a timestamp"))
            .collect();
        ts.dedup();
        assert_eq!(ts.len(), points.len(), "{}: a point stored twice", d.device);
        total += points.len() as u64;
    }
    assert_eq!(total, d.samples_sent, "{}: stored sample count", d.device);
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
        read_packet(&mut self.stream, &mut self.buf, |b| v4_packet(b, 1 << 24))
    }
}

/// Reads from `stream` into `buf` until `parse` finds a whole packet there (`Ok(None)`: not
/// yet); None once the server closed the connection (end of stream or reset). A packet the
/// parser refuses, or a read that fails otherwise, fails the test.
pub fn read_packet<P>(
    stream: &mut impl Read,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<P>, String>,
) -> Option<P> {
    loop {
        match parse(buf) {
            Ok(Some(p)) => return Some(p),
            Ok(None) => {}
            Err(e) => panic!("server sent a malformed packet: {e}"),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no answer from the server: {e}"),
        }
    }
}

/// An MQTT 3.1.1 packet of at most `max` bytes at the front of `buf`, for [`read_packet`].
pub fn v4_packet(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, String> {
    match Packet::read(buf, max) {
        Ok(p) => Ok(Some(p)),
        Err(rumqttc::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// An MQTT 5 packet at the front of `buf`, for [`read_packet`].
pub fn v5_packet(buf: &mut BytesMut) -> Result<Option<p5::Packet>, String> {
    match p5::Packet::read(buf, None) {
        Ok(p) => Ok(Some(p)),
        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("MQTT 5: {e}")),
    }
}

/// A batch of one `cpu_usage_ratio` sample, timed by its seq (Nov 2023, a fixed device clock).
pub fn one_sample_batch(device: &str, seq: u64) -> Batch {
    Batch {
        device: device.into(),
        boot_id: "boot".into(),
        seq,
        sent_at_ms: 1_700_000_000_000,
        dropped_before: 0,
        samples: vec![Sample::new(
            "cpu_usage_ratio",
            1_700_000_000_000 + seq as i64,
            0.5,
        )],
    }
}
