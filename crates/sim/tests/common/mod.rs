//! Test fixtures shared by the MQTT tests: a real `mosquitto` broker as a child process on a
//! free loopback port (killed on drop, also when a test panics), and small MQTT subscribers
//! that record what the simulated devices published.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

/// Where `mosquitto` is: on PATH, or in the sbin directories Debian installs it to (which a
/// non-root PATH often lacks). Fails the test, saying how to install it, when it is missing.
fn mosquitto_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the MQTT tests need a real broker, and `mosquitto` is not installed: \
         run `apt-get install -y mosquitto mosquitto-clients` (Debian/Ubuntu)"
    );
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A `mosquitto` child process listening on `127.0.0.1:port`, without persistence.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl Broker {
    pub fn start() -> Self {
        let mut broker = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            starts: 0,
        };
        broker.spawn();
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
            self.port
        );
        if is_root() {
            // Keep root instead of switching to the `mosquitto` user, who cannot read the
            // temp dir.
            text.push_str("user root\n");
        }
        std::fs::write(&config, text).expect("write mosquitto.conf");
        self.starts += 1;
        let log = File::create(self.log_path()).expect("create broker log");
        let log_err = log.try_clone().expect("clone log handle");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        self.wait_listening();
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("mosquitto-{}.log", self.starts))
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "mosquitto exited with {status} on port {}; log:\n{}",
                    self.port,
                    read(&self.log_path())
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto did not listen on port {} within 10 s", self.port);
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is acknowledged.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, like `kill -9`: no goodbye to any client, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh broker on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One message a subscriber received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// An MQTT subscriber recording every message on `filter`.
pub struct Subscriber {
    pub received: Arc<Mutex<Vec<Received>>>,
    _client: AsyncClient,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `filter` (QoS 1) and returns once the broker confirmed the
    /// subscription, so nothing published afterwards is missed.
    pub async fn start(broker: &Broker, client_id: &str, filter: &str) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("SUBACK within 10 s")
            .expect("subscriber task alive");
        Subscriber {
            received,
            _client: client,
            task,
        }
    }

    /// Waits until at least `n` messages arrived (or `timeout` passed); returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self
                .received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The retained status of every device that has one, read by a fresh subscriber.
pub async fn retained_statuses(broker: &Broker, expected: usize) -> BTreeMap<String, String> {
    let sub = Subscriber::start(broker, "test-status-reader", "fleetmon/v1/+/status").await;
    let got = sub.wait_for(expected, Duration::from_secs(5)).await;
    got.into_iter()
        .filter(|m| m.retain)
        .map(|m| {
            let device = m
                .topic
                .strip_prefix("fleetmon/v1/")
                .and_then(|t| t.strip_suffix("/status"))
                .unwrap_or_default()
                .to_owned();
            (device, String::from_utf8_lossy(&m.payload).into_owned())
        })
        .collect()
}
