//! Every built-in alert rule against the simulator, in simulated time: a fleet where chosen
//! devices get one fault each (a value fault of a sim scenario, or a delivery fault: offline,
//! lossy, duplicating, corrupting, skewed, late, or attacked) must end with exactly those
//! devices' alert of that rule firing, and no alert of any other device or rule pending or
//! firing at any step; and a healthy fleet of 1,000 devices must raise no alert at all for an
//! hour. Authentication failures are recorded in the server's security event log, as its TLS
//! listener does.
//!
//! The server runs in-process on a [`ManualClock`]. Each one-minute step: every device's batch
//! (the sim generator's samples at the clock's time) goes to `POST /api/v1/ingest` as
//! protobuf, corrupted copies over MQTT (only a topic names the device of a payload that does
//! not decode); then one derivation step (`write_derived`, forecasts every five minutes as the
//! server does), one rule evaluation (`alerting().cycle`), and the alerts are checked. The
//! server's own derive and rule tasks are set to tick once an hour of real time, so the test
//! drives every step.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RawClient;
use fleetmon_protocol::{Batch, Topic, encode_protobuf};
use fleetmon_server::clock::ManualClock;
use fleetmon_server::fleet::derived::Derivation;
use fleetmon_server::security::events::Kind;
use fleetmon_server::{Server, ServerConfig, write_derived};
use fleetmon_sim::generator::Generator;
use fleetmon_sim::{Identity, Model, Scenario};
use serde_json::Value;

/// 2026-01-01T09:00:00Z.
const T0: i64 = 1_767_258_000_000;
const STEP_MS: i64 = 60_000;
const SEED: u64 = 11;
/// Concurrent HTTP senders: the server commits what arrives together with one sync.
const SENDERS: usize = 16;

const POLICY: &str = r#"
[[minimum]]
model = "rpi4"
version = "2024.06.0"

[[vulnerable]]
advisory = "FM-2026-001"
versions = ">=2024.07.0, <2024.09.0"
"#;

/// How a device's batches reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Normal,
    /// Nothing from this time on.
    OfflineFrom(i64),
    /// Every n-th batch is lost on the way (its seq is used).
    LoseEvery(u64),
    /// Every batch is sent twice.
    Twice,
    /// Every n-th batch is first sent with a byte of its frame flipped, over MQTT.
    CorruptEvery(u64),
    /// The device clock is off by this many ms.
    Skew(i64),
    /// Batches wait this long in the device's spool before they are sent.
    Delay(i64),
}

struct SimDevice {
    id: Identity,
    generator: Generator,
    next_seq: u64,
    delivery: Delivery,
    /// Samples per one-minute batch (an agent that samples every 15 s sends 4).
    samples_per_step: i64,
    spool: VecDeque<(i64, Batch)>,
}

/// What goes out for one device in one step, in order.
enum Send {
    Http(Vec<u8>),
    MqttCorrupt(Vec<u8>),
}

impl SimDevice {
    fn new(index: usize, delivery: Delivery, scenario: Option<&Scenario>) -> Self {
        let id = Identity::new(SEED, index, format!("sim-{index:05}"));
        let mut generator = Generator::new(&id);
        if let Some(s) = scenario {
            generator.set_faults(s.device_faults(index, id.model, T0));
        }
        Self {
            id,
            generator,
            next_seq: 1,
            delivery,
            samples_per_step: 1,
            spool: VecDeque::new(),
        }
    }

    /// A batch of the samples taken in the minute up to `device_now` (device clock).
    fn batch(&mut self, device_now: i64) -> Batch {
        let n = self.samples_per_step;
        let mut samples = Vec::new();
        for k in 1..=n {
            let ts = device_now - STEP_MS + k * STEP_MS / n;
            samples.extend(self.generator.samples(ts));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Batch {
            device: self.id.device.clone(),
            boot_id: self.id.boot_id.clone(),
            seq,
            sent_at_ms: device_now,
            dropped_before: 0,
            samples,
        }
    }

    /// What the device sends at server time `now`.
    fn step(&mut self, now: i64) -> Vec<Send> {
        match self.delivery {
            Delivery::Normal => vec![Send::Http(encode_protobuf(&self.batch(now)))],
            Delivery::OfflineFrom(t) if now >= t => Vec::new(),
            Delivery::OfflineFrom(_) => vec![Send::Http(encode_protobuf(&self.batch(now)))],
            Delivery::LoseEvery(n) => {
                let b = self.batch(now);
                if b.seq.is_multiple_of(n) {
                    Vec::new()
                } else {
                    vec![Send::Http(encode_protobuf(&b))]
                }
            }
            Delivery::Twice => {
                let frame = encode_protobuf(&self.batch(now));
                vec![Send::Http(frame.clone()), Send::Http(frame)]
            }
            Delivery::CorruptEvery(n) => {
                let b = self.batch(now);
                let frame = encode_protobuf(&b);
                let mut out = Vec::new();
                if b.seq.is_multiple_of(n) {
                    let mut bad = frame.clone();
                    let at = bad.len() / 2;
                    bad[at] = !bad[at];
                    out.push(Send::MqttCorrupt(bad));
                }
                out.push(Send::Http(frame));
                out
            }
            Delivery::Skew(ms) => vec![Send::Http(encode_protobuf(&self.batch(now + ms)))],
            Delivery::Delay(ms) => {
                let b = self.batch(now);
                self.spool.push_back((now, b));
                let mut out = Vec::new();
                while self.spool.front().is_some_and(|(t, _)| *t <= now - ms) {
                    let (_, mut b) = self.spool.pop_front().expect("a spooled batch");
                    // Sent now: the samples are old, the clock is right.
                    b.sent_at_ms = now;
                    out.push(Send::Http(encode_protobuf(&b)));
                }
                out
            }
        }
    }
}

/// The server under test and what drives it.
struct Harness {
    rt: tokio::runtime::Runtime,
    server: Option<Server>,
    clock: ManualClock,
    derivation: Derivation,
    engine: fleetmon_promql::Engine,
    agents: Vec<ureq::Agent>,
    ingest_url: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let policy = dir.path().join("firmware-policy.toml");
        std::fs::write(&policy, POLICY).expect("write the firmware policy");
        let mut config = ServerConfig::local(dir.path().join("data"));
        config.firmware_policy = Some(policy);
        // The test derives and evaluates itself, at simulated times.
        config.derive_interval = Duration::from_secs(3600);
        config.forecast_interval = Duration::from_secs(3600);
        config.alerting.tick = Duration::from_secs(3600);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let clock = ManualClock::new(T0);
        let server = rt
            .block_on(Server::start(config, Arc::new(clock.clone())))
            .expect("the server starts");
        let engine = fleetmon_promql::Engine::new(server.state().query.clone());
        let ingest_url = format!("http://{}/api/v1/ingest", server.http_addr());
        let agents = (0..SENDERS)
            .map(|_| {
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into()
            })
            .collect();
        Self {
            rt,
            server: Some(server),
            clock,
            derivation: Derivation::default(),
            engine,
            agents,
            ingest_url,
            _dir: dir,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    /// Makes and sends every device's step at `now` on `SENDERS` threads, each with its own
    /// connection; a device's sends stay in order.
    fn deliver(&self, fleet: &mut [SimDevice], now: i64) {
        let mqtt = self.server().mqtt_addr();
        let per_thread = fleet.len().div_ceil(SENDERS).max(1);
        std::thread::scope(|scope| {
            for (share, agent) in fleet.chunks_mut(per_thread).zip(&self.agents) {
                let url = &self.ingest_url;
                scope.spawn(move || {
                    for d in share {
                        let device = d.id.device.clone();
                        for send in d.step(now) {
                            match send {
                                Send::Http(frame) => post(agent, url, &device, &frame),
                                Send::MqttCorrupt(frame) => {
                                    let mut c = RawClient::connect(mqtt, &device);
                                    c.publish(&Topic::telemetry(&device), frame, 1);
                                    // The server counts the payload, then closes the session.
                                    while c.recv().is_some() {}
                                }
                            }
                        }
                    }
                });
            }
        });
    }

    /// One derivation and one rule evaluation at the clock's time; the alerts afterwards as
    /// (alertname, device, state).
    fn evaluate(&mut self, forecasts: bool) -> Vec<(String, String, String)> {
        let now = self.clock_now();
        let server = self.server.as_ref().expect("the server is running");
        let state = server.state();
        write_derived(state, &mut self.derivation, forecasts, now).expect("derived series stored");
        let report = server.alerting().cycle(&self.engine, &state.store, now);
        assert_eq!(report.rule_errors, 0, "rule evaluation failed at {now}");
        alerts(&server.alerting().alerts_json(now))
    }

    fn clock_now(&self) -> i64 {
        use fleetmon_server::clock::Clock;
        self.clock.now_ms()
    }

    /// Every alerting rule's name.
    fn rule_names(&self) -> BTreeSet<String> {
        let rules = self.server().alerting().rules_json();
        let mut names = BTreeSet::new();
        for g in rules["groups"].as_array().expect("rule groups") {
            for r in g["rules"].as_array().expect("rules of a group") {
                if let Some(name) = r["name"].as_str() {
                    names.insert(name.to_owned());
                }
            }
        }
        names
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

fn post(agent: &ureq::Agent, url: &str, device: &str, frame: &[u8]) {
    let response = agent
        .post(url)
        .header("content-type", "application/x-protobuf")
        .send(frame)
        .expect("the ingest endpoint answers");
    let status = response.status().as_u16();
    assert_eq!(
        status, 200,
        "ingest of a batch of {device} answered {status}"
    );
}

/// (alertname, device, state) of every alert in an `/api/v1/alerts` answer.
fn alerts(json: &Value) -> Vec<(String, String, String)> {
    json["alerts"]
        .as_array()
        .expect("an alerts array")
        .iter()
        .map(|a| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (
                text(&a["labels"]["alertname"]),
                text(&a["labels"]["device"]),
                text(&a["state"]),
            )
        })
        .collect()
}

/// Picks devices of a model from the fleet, each once.
struct Picker {
    models: Vec<Model>,
    taken: BTreeSet<usize>,
}

impl Picker {
    fn new(n: usize) -> Self {
        let models = (0..n)
            .map(|i| Identity::new(SEED, i, format!("sim-{i:05}")).model)
            .collect();
        Self {
            models,
            taken: BTreeSet::new(),
        }
    }

    fn take(&mut self, model: Model, n: usize) -> Vec<usize> {
        let picked: Vec<usize> = (0..self.models.len())
            .filter(|i| self.models[*i] == model && !self.taken.contains(i))
            .take(n)
            .collect();
        assert_eq!(picked.len(), n, "the fleet has too few {model} devices");
        self.taken.extend(&picked);
        picked
    }
}

fn list(indices: &[usize]) -> String {
    let parts: Vec<String> = indices.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn device_name(i: usize) -> String {
    format!("sim-{i:05}")
}

#[test]
fn each_built_in_rule_fires_for_exactly_the_faulty_devices() {
    let started = Instant::now();
    const DEVICES: usize = 60;
    const STEPS: i64 = 120;
    let mut pick = Picker::new(DEVICES);
    let overheat = pick.take(Model::Rpi4, 2);
    let cpu = pick.take(Model::Gateway, 2);
    let memory = pick.take(Model::Rpi4, 2);
    let disk = pick.take(Model::Rpi4, 2);
    let battery = pick.take(Model::BatterySensor, 2);
    let rtt = pick.take(Model::Rpi4, 1);
    let jitter = pick.take(Model::Gateway, 1);
    let loss = pick.take(Model::BatterySensor, 1);
    let port = pick.take(Model::Rpi4, 2);
    let vulnerable = pick.take(Model::Rpi4, 1);
    let below = pick.take(Model::Rpi4, 1);
    let anomaly = pick.take(Model::Gateway, 2);
    // Sampled as densely as the anomaly devices, without a fault: their detectors are past
    // their warm-up too, and must stay quiet.
    let dense_healthy = pick.take(Model::Gateway, 2);
    let offline = pick.take(Model::Rpi4, 2);
    let lossy = pick.take(Model::Rpi4, 2);
    let twice = pick.take(Model::BatterySensor, 2);
    let corrupt = pick.take(Model::Rpi4, 2);
    let skewed = pick.take(Model::BatterySensor, 2);
    let late = pick.take(Model::Rpi4, 2);
    let attacked = pick.take(Model::BatterySensor, 2);

    let scenario_text = format!(
        r#"
[[fault]]
kind = "overheat"
devices = {overheat}
start = "10m"
celsius = 96

[[fault]]
kind = "cpu"
devices = {cpu}
start = "10m"

[[fault]]
kind = "memory"
devices = {memory}
start = "10m"

[[fault]]
kind = "disk-fill"
devices = {disk}
start = "10m"
full_in = "100m"

[[fault]]
kind = "battery-drain"
devices = {battery}
start = "10m"
empty_in = "90m"

[[fault]]
kind = "network"
devices = {rtt}
start = "10m"
rtt_seconds = 0.8

[[fault]]
kind = "network"
devices = {jitter}
start = "10m"
jitter_seconds = 0.25

[[fault]]
kind = "network"
devices = {loss}
start = "10m"
loss_ratio = 0.3

[[fault]]
kind = "listening-port"
devices = {port}
start = "30m"
port = 4444

[[fault]]
kind = "firmware"
devices = {vulnerable}
start = "5m"
version = "2024.08.1"

[[fault]]
kind = "firmware"
devices = {below}
start = "5m"
version = "2024.03.0"

[[fault]]
kind = "anomaly"
devices = {anomaly}
start = "80m"
duration = "3m"
metric = "temperature_celsius"
shift = 20
"#,
        overheat = list(&overheat),
        cpu = list(&cpu),
        memory = list(&memory),
        disk = list(&disk),
        battery = list(&battery),
        rtt = list(&rtt),
        jitter = list(&jitter),
        loss = list(&loss),
        port = list(&port),
        vulnerable = list(&vulnerable),
        below = list(&below),
        anomaly = list(&anomaly),
    );
    let scenario = Scenario::parse(&scenario_text, "rule-scenarios.toml").expect("the scenario");
    scenario
        .check_fleet(DEVICES)
        .expect("the scenario fits the fleet");

    let delivery = |i: usize| {
        if offline.contains(&i) {
            Delivery::OfflineFrom(T0 + 30 * STEP_MS)
        } else if lossy.contains(&i) {
            Delivery::LoseEvery(3)
        } else if twice.contains(&i) {
            Delivery::Twice
        } else if corrupt.contains(&i) {
            Delivery::CorruptEvery(3)
        } else if skewed.contains(&i) {
            Delivery::Skew(-90_000)
        } else if late.contains(&i) {
            Delivery::Delay(4 * STEP_MS)
        } else {
            Delivery::Normal
        }
    };
    let mut fleet: Vec<SimDevice> = (0..DEVICES)
        .map(|i| {
            let mut d = SimDevice::new(i, delivery(i), Some(&scenario));
            if anomaly.contains(&i) || dense_healthy.contains(&i) {
                d.samples_per_step = 4;
            }
            d
        })
        .collect();

    let expected: BTreeMap<&str, &[usize]> = BTreeMap::from([
        ("DeviceOffline", &offline[..]),
        ("BatteryLow", &battery[..]),
        ("BatteryEmptySoon", &battery[..]),
        ("TemperatureOutOfLimits", &overheat[..]),
        ("CpuHigh", &cpu[..]),
        ("MemoryHigh", &memory[..]),
        ("SwapHigh", &memory[..]),
        ("DiskHigh", &disk[..]),
        ("DiskFullSoon", &disk[..]),
        ("FirmwareVulnerable", &vulnerable[..]),
        ("FirmwareBelowPolicy", &below[..]),
        ("NetworkRttHigh", &rtt[..]),
        ("NetworkJitterHigh", &jitter[..]),
        ("NetworkLossHigh", &loss[..]),
        ("DataMissing", &lossy[..]),
        ("DataCorrupt", &corrupt[..]),
        ("DataDuplicated", &twice[..]),
        ("DataLatencyHigh", &late[..]),
        ("ClockSkew", &skewed[..]),
        ("AuthFailureBurst", &attacked[..]),
        ("NewListeningPort", &port[..]),
        ("AnomalyScoreHigh", &anomaly[..]),
    ]);
    let allowed: BTreeSet<(String, String)> = expected
        .iter()
        .flat_map(|(rule, devices)| {
            devices
                .iter()
                .map(|i| ((*rule).to_owned(), device_name(*i)))
        })
        .collect();

    let mut h = Harness::start();
    assert_eq!(
        h.rule_names(),
        expected
            .keys()
            .map(|k| (*k).to_owned())
            .collect::<BTreeSet<_>>(),
        "every built-in rule has a scenario"
    );
    let mut unexpected: BTreeSet<String> = BTreeSet::new();
    // (rule, device) that were firing at some step: a burst alert (AnomalyScoreHigh) fires
    // and resolves within the run.
    let mut fired: BTreeSet<(String, String)> = BTreeSet::new();
    let mut last = Vec::new();
    for step in 0..=STEPS {
        let now = T0 + step * STEP_MS;
        h.deliver(&mut fleet, now);
        // From minute 30, someone tries six revoked or foreign certificates a minute in the
        // name of each attacked device: failed TLS handshakes, as the listener records them.
        if step >= 30 {
            let events = &h.server().state().security.events;
            let peer: SocketAddr = "198.51.100.23:40000".parse().expect("an address");
            for i in &attacked {
                for _ in 0..6 {
                    events.record(
                        now,
                        Kind::CertificateRevoked,
                        Some(&device_name(*i)),
                        Some(peer),
                        "revoked certificate presented",
                    );
                }
            }
        }
        last = h.evaluate(step % 5 == 0);
        for (rule, device, state) in &last {
            if state == "firing" {
                fired.insert((rule.clone(), device.clone()));
            }
            if !allowed.contains(&(rule.clone(), device.clone())) {
                unexpected.insert(format!("{rule} {state} for {device} (minute {step})"));
            }
        }
        h.clock.advance_ms(STEP_MS);
    }
    assert!(
        unexpected.is_empty(),
        "alerts no fault explains:\n{}",
        unexpected.into_iter().collect::<Vec<_>>().join("\n")
    );
    let mut wrong = Vec::new();
    for (rule, devices) in &expected {
        let want: BTreeSet<String> = devices.iter().map(|i| device_name(*i)).collect();
        let at_end: BTreeSet<String> = last
            .iter()
            .filter(|(r, _, s)| r == rule && s == "firing")
            .map(|(_, d, _)| d.clone())
            .collect();
        let ever: BTreeSet<String> = fired
            .iter()
            .filter(|(r, _)| r == rule)
            .map(|(_, d)| d.clone())
            .collect();
        // Burst alerts must have fired and resolved again; every other fault lasts to the end.
        let ok = if *rule == "AnomalyScoreHigh" {
            ever == want && at_end.is_empty()
        } else {
            at_end == want
        };
        if !ok {
            wrong.push(format!(
                "{rule}: firing at the end for {at_end:?}, at some step for {ever:?}, expected {want:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!(
        "rule scenarios: {DEVICES} devices, {STEPS} one-minute steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_healthy_fleet_raises_no_alert() {
    let started = Instant::now();
    const DEVICES: usize = 1_000;
    // One simulated hour at one-minute steps.
    const STEPS: i64 = 60;
    let mut fleet: Vec<SimDevice> = (0..DEVICES)
        .map(|i| SimDevice::new(i, Delivery::Normal, None))
        .collect();
    let mut h = Harness::start();
    let mut raised = Vec::new();
    for step in 0..=STEPS {
        let now = T0 + step * STEP_MS;
        h.deliver(&mut fleet, now);
        for (rule, device, state) in h.evaluate(step % 5 == 0) {
            raised.push(format!("{rule} {state} for {device} (minute {step})"));
        }
        h.clock.advance_ms(STEP_MS);
    }
    assert!(
        raised.is_empty(),
        "a healthy fleet raised {} alerts:\n{}",
        raised.len(),
        raised.join("\n")
    );
    eprintln!(
        "quiet fleet: {DEVICES} devices, {STEPS} one-minute steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
