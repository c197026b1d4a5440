//! # fleetmon server
//!
//! One process that devices send to and operators look at: an MQTT endpoint and HTTP ingest
//! feeding a durable ingest pipeline, a device registry, a sample store, and the HTTP API and
//! page on top.
//!
//! ## Layout
//! - [`listener`]: where connections come from: plain TCP, or mutual TLS for devices.
//! - [`security`]: the built-in CA, device certificates, topic ACLs, revocation, enrolment
//!   and security events.
//! - [`mqtt`]: the MQTT 3.1.1 endpoint — sessions, broker (retained, wills, subscriptions).
//! - [`operators`]: operator accounts, roles, TOTP, sessions, API tokens, login throttling,
//!   the audit log.
//! - [`ratelimit`]: abuse limits — message rate per device, connections per address and in
//!   all.
//! - [`http`]: REST API, ingest, `/metrics`, `/healthz`, the page at `/`.
//! - [`alerting`]: rules, dispatcher, notification outbox.
//! - [`ingest`]: dedupe by `(device, seq)`, WAL group commit, then visibility, then the ack.
//! - [`wal`]: the write-ahead log's segments and records.
//! - [`store`]: the sample store trait over the time-series engine (`fleetmon-tsdb`).
//! - [`fleet`]: the device registry and online/offline.
//! - [`telemetry`]: the server's own metrics.
//! - [`state`], [`clock`]: what tasks share; injected time.
//!
//! [`Server::start`] binds, replays the WAL and spawns everything; [`Server::shutdown`] stops
//! it. Tests drive a real server over real sockets on ephemeral ports.

pub mod alerting;
pub mod background;
pub mod clock;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod listener;
pub mod mqtt;
pub mod operators;
pub mod ratelimit;
pub mod security;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod wal;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fleetmon_protocol::Limits;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::ingest::Ingest;
use crate::listener::Listener;
use crate::security::ca::CaDir;
use crate::security::tls::{DeviceTls, TlsError};
use crate::state::State;
use crate::store::{StoreError, TsdbStore};
use crate::wal::{WalError, WalOptions};

/// Everything the server needs to start. Validated by whoever builds it (the CLI).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub mqtt_listen: SocketAddr,
    /// An HTTP-only device is offline once its last batch is older than this.
    pub offline_after: Duration,
    /// A gap in a device's batch numbers counts as missing once it is older than this.
    pub missing_grace: Duration,
    pub limits: Limits,
    pub wal: WalOptions,
    /// The time-series engine's settings (retention, late-data limit, block windows...).
    pub tsdb: fleetmon_tsdb::Options,
    /// Minimum firmware versions and vulnerable ranges (a TOML file), if any.
    pub firmware_policy: Option<PathBuf>,
    /// Temperature and link-capacity limits per model (a TOML file), if any.
    pub device_limits: Option<PathBuf>,
    /// Tags by device id or id pattern (a TOML file), if any; reloaded on SIGHUP.
    pub device_tags: Option<PathBuf>,
    /// Most distinct series one device may have.
    pub max_series_per_device: usize,
    /// Messages per second (and burst) one device may send, over MQTT and HTTP together;
    /// `None`: no limit.
    pub device_rate: Option<ratelimit::Rate>,
    /// MQTT connections in all and per source address, new connections per address.
    pub connections: ratelimit::ConnectionLimits,
    /// An MQTT connection that sends no CONNECT within this is closed.
    pub connect_timeout: Duration,
    /// PromQL: lookback, most samples per query, timeout.
    pub query: fleetmon_promql::Options,
    /// How often the derived series (`device_up`, integrity counters, ...) are written.
    pub derive_interval: Duration,
    /// How often the forecasts (battery empty, disk full) are recomputed and written.
    pub forecast_interval: Duration,
    /// Alert rules, dispatcher settings and receivers.
    pub alerting: alerting::AlertingConfig,
    /// Where devices connect with MQTT over mutual TLS (off when unset).
    pub mqtt_tls_listen: Option<SocketAddr>,
    /// Where the HTTP API, ingest, enrolment and dashboard are served over TLS (off when
    /// unset), with the same server certificate.
    pub https_listen: Option<SocketAddr>,
    /// The built-in CA's directory: client CA of the TLS listener, revocation list,
    /// enrolment. Used when it holds a CA.
    pub ca_dir: Option<PathBuf>,
    /// The server's certificate and key (PEM); default `server.pem` and `server.key` in
    /// `ca_dir`. Reloaded when the files change.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plaintext MQTT or HTTP on an address other than loopback is refused unless set.
    pub allow_plaintext: bool,
    /// A device certificate expiring sooner than this is a security event.
    pub cert_expiry_warning: Duration,
    /// Operator login: required or open, cookies, throttling.
    pub auth: operators::AuthConfig,
}

impl ServerConfig {
    /// Loopback on ephemeral ports, defaults elsewhere.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            offline_after: Duration::from_secs(120),
            missing_grace: Duration::from_secs(120),
            limits: Limits::default(),
            wal: WalOptions::default(),
            tsdb: fleetmon_tsdb::Options::default(),
            firmware_policy: None,
            device_limits: None,
            device_tags: None,
            max_series_per_device: state::DEFAULT_MAX_SERIES_PER_DEVICE,
            device_rate: state::DEFAULT_DEVICE_RATE,
            connections: ratelimit::ConnectionLimits::default(),
            connect_timeout: mqtt::DEFAULT_CONNECT_TIMEOUT,
            query: fleetmon_promql::Options::default(),
            derive_interval: Duration::from_secs(10),
            forecast_interval: Duration::from_secs(300),
            alerting: alerting::AlertingConfig::default(),
            mqtt_tls_listen: None,
            https_listen: None,
            ca_dir: None,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            cert_expiry_warning: Duration::from_secs(30 * 86_400),
            auth: operators::AuthConfig::default(),
        }
    }

    /// Plaintext listeners beyond loopback need `allow_plaintext`.
    pub fn check_plaintext(&self) -> Result<(), ServerError> {
        if self.allow_plaintext {
            return Ok(());
        }
        for (what, addr) in [("MQTT", self.mqtt_listen), ("HTTP", self.http_listen)] {
            if !addr.ip().is_loopback() {
                return Err(ServerError::Plaintext { what, addr });
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another fleetmon server")]
    DataDirLocked(PathBuf),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Tags(#[from] fleet::tags::TagError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    FirmwarePolicy(#[from] fleet::firmware::PolicyError),
    #[error(transparent)]
    DeviceLimits(#[from] fleet::limits::LimitsError),
    #[error(transparent)]
    Alerting(#[from] alerting::AlertingError),
    #[error(
        "refusing plaintext {what} on {addr}, which is not loopback: devices and their data would be unauthenticated and unencrypted. Use loopback, put devices on the TLS listener (--mqtt-tls-listen), or pass --allow-plaintext (server.allow_plaintext) to accept the risk"
    )]
    Plaintext {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error("the MQTT TLS listener needs a CA: {0}")]
    Ca(#[from] security::ca::CaError),
    #[error("the MQTT TLS listener needs a server certificate: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "no server certificate at {0}: create one with `fleetmon ca server-cert` (or set --tls-cert and --tls-key)"
    )]
    NoServerCert(PathBuf),
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    mqtt_tls_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    state: Arc<State>,
    alerting: Arc<alerting::Alerting>,
    operators: Arc<operators::Operators>,
    setup_token: Option<String>,
    device_tags: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    wal_writer: Option<JoinHandle<()>>,
    _lock: File,
}

impl Server {
    /// Locks the data directory, replays the WAL, binds both listeners and starts serving.
    pub async fn start(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Server, ServerError> {
        config.check_plaintext()?;
        let dir_err = |source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(dir_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.data_dir.join("LOCK"))
            .map_err(dir_err)?;
        if lock.try_lock().is_err() {
            return Err(ServerError::DataDirLocked(config.data_dir.clone()));
        }

        let mqtt =
            Listener::bind(config.mqtt_listen)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "MQTT",
                    addr: config.mqtt_listen,
                    source,
                })?;
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "HTTP",
                addr: config.http_listen,
                source,
            })?;
        let bound = |l: std::io::Result<SocketAddr>, what, addr| {
            l.map_err(|source| ServerError::Bind { what, addr, source })
        };
        let mqtt_addr = bound(mqtt.local_addr(), "MQTT", config.mqtt_listen)?;
        let http_addr = bound(http.local_addr(), "HTTP", config.http_listen)?;

        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let store = TsdbStore::open(&config.data_dir.join("tsdb"), config.tsdb.clone())?;
        let mut state = State::new(
            Arc::new(store),
            clock,
            config.limits.clone(),
            ms(config.offline_after),
        );
        state.missing_grace_ms = ms(config.missing_grace);
        state.query = config.query.clone();
        state.max_series_per_device = config.max_series_per_device;
        state.device_rate = ratelimit::DeviceRate::new(config.device_rate);
        if let Some(path) = &config.device_limits {
            state.thresholds.limits = fleet::limits::Limits::load(path)?;
        }
        if let Some(path) = &config.firmware_policy {
            state.firmware_policy = Some(fleet::firmware::Policy::load(path)?);
        }
        if let Some(path) = &config.device_tags {
            state
                .registry_mut()
                .set_tag_rules(fleet::tags::TagRules::load(path)?);
        }
        let tags_path = config.data_dir.join("tags.json");
        for (id, tags) in fleet::tags::load(&tags_path)? {
            state.registry_mut().set_api_tags(&id, tags);
        }
        state.tags_path = Some(tags_path);
        let mut security = security::Security::new(
            security::events::Events::open(
                state.telemetry.security_events.clone(),
                &config.data_dir.join("security"),
            )
            .map_err(|source| ServerError::DataDir {
                path: config.data_dir.join("security"),
                source,
            })?,
            Arc::clone(&state.clock),
        );
        security.expiry_warning_ms = ms(config.cert_expiry_warning);
        security.ca = config.ca_dir.as_ref().map(CaDir::new).filter(CaDir::exists);
        let security = Arc::new(security);
        state.security = Arc::clone(&security);
        let ca_dir = || match (&security.ca, &config.ca_dir) {
            (Some(ca), _) => Ok(ca.clone()),
            (None, dir) => {
                let dir = dir.clone().unwrap_or_else(|| PathBuf::from("fleetmon-ca"));
                Err(security::ca::CaError::NotInitialised(dir))
            }
        };
        // The server certificate, shared by MQTT over TLS and HTTPS.
        let server_cert = if config.mqtt_tls_listen.is_some() || config.https_listen.is_some() {
            let (cert, key) = match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => (cert.clone(), key.clone()),
                (cert, key) => {
                    let ca = ca_dir()?;
                    (
                        cert.clone().unwrap_or_else(|| ca.server_cert_path()),
                        key.clone().unwrap_or_else(|| ca.server_key_path()),
                    )
                }
            };
            if !cert.is_file() {
                return Err(ServerError::NoServerCert(cert));
            }
            Some(Arc::new(security::tls::ReloadingCert::load(&cert, &key)?))
        } else {
            None
        };
        let tls = match (config.mqtt_tls_listen, &server_cert) {
            (Some(addr), Some(cert)) => {
                let ca = ca_dir()?;
                let tls = Arc::new(DeviceTls::new(
                    &ca.ca_cert_path(),
                    Arc::clone(cert),
                    Arc::clone(&security),
                )?);
                let listener =
                    Listener::bind_tls(addr, Arc::clone(&tls))
                        .await
                        .map_err(|source| ServerError::Bind {
                            what: "MQTT over TLS",
                            addr,
                            source,
                        })?;
                Some((listener, tls))
            }
            _ => None,
        };
        let https =
            match config.https_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| ServerError::Bind {
                        what: "HTTPS",
                        addr,
                        source,
                    },
                )?),
                None => None,
            };
        let https_addr = match &https {
            Some(l) => Some(bound(
                l.local_addr(),
                "HTTPS",
                config.https_listen.unwrap_or(http_addr),
            )?),
            None => None,
        };
        let mqtt_tls_addr = match &tls {
            Some((l, _)) => Some(bound(
                l.local_addr(),
                "MQTT over TLS",
                config.mqtt_tls_listen.unwrap_or(mqtt_addr),
            )?),
            None => None,
        };
        let state = Arc::new(state);
        let (ingest, replay, wal_writer) = Ingest::start(
            &config.data_dir.join("wal"),
            config.wal.clone(),
            Arc::clone(&state),
        )?;
        for d in &replay.damage {
            tracing::warn!(segment = %d.segment.display(), offset = d.offset, reason = %d.reason, truncated = d.truncated, "WAL damage found on replay");
        }
        tracing::info!(
            records = replay.records,
            devices = state.registry().len(),
            "WAL replayed"
        );

        let alerting = Arc::new(alerting::Alerting::open(
            config.alerting.clone(),
            &config.data_dir.join("alerts"),
        )?);

        let mut auth = config.auth.clone();
        auth.require_login |=
            !http_addr.ip().is_loopback() || https_addr.is_some_and(|a| !a.ip().is_loopback());
        let operators = Arc::new(operators::Operators::new(
            &config.data_dir,
            auth,
            Arc::clone(&state.clock),
        ));
        let accounts = operators.users.accounts();
        let setup_token = if operators.is_open() {
            tracing::warn!(
                "no operator account: the HTTP API and dashboard are open to anyone who can reach {http_addr} (loopback); `fleetmon user add NAME --admin` turns login on"
            );
            None
        } else if accounts.is_empty() {
            tracing::warn!(
                "no operator account yet: login is required and nobody can log in; create the first admin with the setup token (POST /api/v1/setup) or `fleetmon user add NAME --admin`"
            );
            operators.new_setup_token()
        } else {
            None
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let ctx = Arc::new(
            mqtt::Context::new(Arc::clone(&state), ingest.clone())
                .with_limits(config.connections, config.connect_timeout),
        );
        tasks.spawn(mqtt::serve(mqtt, Arc::clone(&ctx), shutdown_rx.clone()));
        if let Some((listener, _)) = tls {
            tasks.spawn(mqtt::serve(listener, ctx, shutdown_rx.clone()));
        }
        tasks.spawn(security::watch(
            Arc::clone(&security),
            server_cert.clone(),
            shutdown_rx.clone(),
        ));
        let app = http::router(http::AppState {
            state: Arc::clone(&state),
            ingest,
            alerting: Arc::clone(&alerting),
            operators: Arc::clone(&operators),
            shutdown: shutdown_rx.clone(),
        });
        if let (Some(tcp), Some(cert)) = (https, server_cert) {
            use http::https::{HttpsListener, HttpsPeer, peer_info};
            let listener =
                HttpsListener::start(tcp, cert, Arc::clone(&security), shutdown_rx.clone())
                    .map_err(|source| ServerError::Bind {
                        what: "HTTPS",
                        addr: https_addr.unwrap_or(http_addr),
                        source,
                    })?;
            let app = app.clone().layer(axum::middleware::map_request(peer_info));
            let mut https_shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                let app = app.into_make_service_with_connect_info::<HttpsPeer>();
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = https_shutdown.changed().await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTPS server failed");
                }
            });
        }
        let mut http_shutdown = shutdown_rx;
        tasks.spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(http, app).with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tasks.spawn(sweep_availability(Arc::clone(&state), shutdown.subscribe()));
        // Two threads: a long compaction does not hold up rule evaluation.
        let passes = Arc::new(background::Workers::start(
            "fleetmon-passes",
            2,
            background::PASSES_NICE,
        ));
        tasks.spawn(maintain_store(
            Arc::clone(&state),
            Arc::clone(&passes),
            shutdown.subscribe(),
        ));
        tasks.spawn(evaluate_rules(
            Arc::clone(&state),
            Arc::clone(&alerting),
            Arc::clone(&passes),
            shutdown.subscribe(),
        ));
        tasks.spawn(derive_series(
            Arc::clone(&state),
            passes,
            config.derive_interval,
            config.forecast_interval,
            shutdown.subscribe(),
        ));
        tracing::info!(%http_addr, ?https_addr, %mqtt_addr, ?mqtt_tls_addr, data_dir = %config.data_dir.display(), "fleetmon server listening");
        Ok(Server {
            http_addr,
            mqtt_addr,
            mqtt_tls_addr,
            https_addr,
            state,
            alerting,
            operators,
            setup_token,
            device_tags: config.device_tags.clone(),
            shutdown,
            tasks,
            wal_writer: Some(wal_writer),
            _lock: lock,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The devices' mutual-TLS MQTT address, when configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.mqtt_tls_addr
    }

    /// Where the HTTP API is served over TLS, if it is.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Re-reads the alert rule files and dispatcher settings (SIGHUP); alert state is kept.
    pub fn reload_rules(&self) -> Result<(), alerting::AlertingError> {
        self.alerting.reload()
    }

    /// Re-reads the device tags file (SIGHUP), if one is configured; every device's tags and
    /// so the labels of its new samples follow. A file that does not parse changes nothing.
    pub fn reload_device_tags(&self) -> Result<bool, fleet::tags::TagError> {
        let Some(path) = &self.device_tags else {
            return Ok(false);
        };
        let rules = fleet::tags::TagRules::load(path)?;
        self.state.registry_mut().set_tag_rules(rules);
        Ok(true)
    }

    pub fn alerting(&self) -> &Arc<alerting::Alerting> {
        &self.alerting
    }

    pub fn operators(&self) -> &Arc<operators::Operators> {
        &self.operators
    }

    /// The one-time token that creates the first admin (`POST /api/v1/setup`), made at start
    /// when login is required and no account exists. For the operator's eyes only: never log it.
    pub fn setup_token(&self) -> Option<&str> {
        self.setup_token.as_deref()
    }

    /// Stops accepting, closes connections, and waits for the WAL writer to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        if let Some(writer) = self.wal_writer.take() {
            // The writer ends when every ingest handle is gone; sessions may hold one briefly.
            // Whatever it has not answered was never acknowledged, so giving up is safe.
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout(Duration::from_secs(5), joined)
                .await
                .is_err()
            {
                tracing::warn!("WAL writer still busy at shutdown; leaving it");
            }
        }
    }
}

/// Every alerting tick, on the passes' threads: due rule groups evaluated, notifications
/// flushed.
async fn evaluate_rules(
    state: Arc<State>,
    alerting: Arc<alerting::Alerting>,
    passes: Arc<background::Workers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(alerting.tick().max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let engine = fleetmon_promql::Engine::new(state.query.clone());
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let (st, al, engine) = (Arc::clone(&state), Arc::clone(&alerting), engine.clone());
                let done = passes
                    .run(move || al.cycle(&engine, &st.store, st.now_ms()))
                    .await;
                if done.is_none() {
                    tracing::error!("alert evaluation panicked");
                }
            }
        }
    }
}

/// Once a second, records HTTP-only devices whose offline timeout passed as offline.
async fn sweep_availability(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let now = state.now_ms();
                state.registry_mut().sweep(now, state.offline_after_ms);
            }
        }
    }
}

/// Every `every`, the derived series of every device into the store; every `forecast_every`,
/// the forecasts too (they read hours of history, so off the runtime and less often).
async fn derive_series(
    state: Arc<State>,
    passes: Arc<background::Workers>,
    every: Duration,
    forecast_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut derivation = fleet::derived::Derivation::default();
    let forecast_ms = i64::try_from(forecast_every.as_millis()).unwrap_or(i64::MAX);
    let mut last_forecast: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let now = state.now_ms();
                let due = last_forecast.is_none_or(|t| now - t >= forecast_ms);
                if due {
                    last_forecast = Some(now);
                }
                let st = Arc::clone(&state);
                let mut taken = std::mem::take(&mut derivation);
                let done = passes
                    .run(move || {
                        let r = write_derived(&st, &mut taken, due, now);
                        (r, taken)
                    })
                    .await;
                match done {
                    Some((r, kept)) => {
                        derivation = kept;
                        if let Err(e) = r {
                            tracing::error!(error = %e, "writing derived series failed");
                        }
                    }
                    None => tracing::error!("deriving series panicked"),
                }
            }
        }
    }
}

/// Devices derived under one hold of the registry's read lock: ingest and sessions, which
/// change the registry, wait at most one slice, not a whole pass over a large fleet.
const DERIVE_SLICE: usize = 1_000;

/// Writes the derived series of every device at `now_ms` into the store (and the forecasts
/// when `forecasts`). What the server's task does every `derive_interval`; tests with their
/// own clock call it directly.
pub fn write_derived(
    state: &State,
    derivation: &mut fleet::derived::Derivation,
    forecasts: bool,
    now_ms: i64,
) -> Result<(), StoreError> {
    let settings = fleet::derived::Settings {
        offline_after_ms: state.offline_after_ms,
        missing_grace_ms: state.missing_grace_ms,
    };
    let store = state.store.as_ref();
    let policy = state.firmware_policy.as_ref();
    let limits = &state.thresholds.limits;
    let ids: Vec<String> = state.registry().iter().map(|(id, _)| id.clone()).collect();
    let mut values = Vec::new();
    for slice in ids.chunks(DERIVE_SLICE) {
        values.clear();
        {
            let registry = state.registry();
            for id in slice {
                if let Some(d) = registry.get(id) {
                    derivation.device_values(
                        id,
                        d,
                        settings,
                        policy,
                        limits,
                        store,
                        now_ms,
                        &mut values,
                    )?;
                }
            }
        }
        store.append_refs(&values)?;
    }
    values.clear();
    let targets = {
        let registry = state.registry();
        derivation.peer_values(&registry, settings, store, now_ms, &mut values)?;
        forecasts.then(|| fleet::derived::forecast_targets(&registry))
    };
    store.append_refs(&values)?;
    store.append(&state.security.events.series(now_ms))?;
    if let Some(targets) = targets {
        let forecasts = fleet::derived::forecasts(&targets, store, now_ms);
        store.append(&forecasts)?;
    }
    Ok(())
}

/// Once a minute, the store's housekeeping (flush, compaction, retention), on the passes'
/// threads.
async fn maintain_store(
    state: Arc<State>,
    passes: Arc<background::Workers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let st = Arc::clone(&state);
                let done = passes
                    .run(move || {
                        let now = st.now_ms();
                        st.store.maintain(now)
                    })
                    .await;
                match done {
                    Some(Ok(())) => {}
                    Some(Err(e)) => tracing::error!(error = %e, "store housekeeping failed"),
                    None => tracing::error!("store housekeeping panicked"),
                }
            }
        }
    }
}
