//! Command-line flags, parsed raw by clap and then validated into the libraries' configs.
//! Every flag can also come from a `FLEETMON_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetmon_protocol::{Format, Limits};
use fleetmon_server::ServerConfig;
use fleetmon_server::wal::WalOptions;
use fleetmon_sim::{Faults, SimOptions};

use crate::config::{self, ConfigFile};

#[derive(Debug, Parser)]
#[command(
    name = "fleetmon",
    version,
    about = "Monitor and control fleets of IoT and embedded-Linux devices"
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `fleetmon_server=debug` (default: RUST_LOG, else info).
    #[arg(long, global = true, env = "FLEETMON_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: MQTT endpoint, HTTP API and page, durable store.
    Server(Box<ServerArgs>),
    /// Run simulated devices against an MQTT endpoint; prints a JSON summary at the end.
    Sim(SimArgs),
    /// Run a server and a simulated fleet together, and print the dashboard URL.
    Demo(DemoArgs),
    /// List pending and firing alerts of a running server.
    Alerts(crate::alerts::AlertsArgs),
    /// Add, list or expire silences on a running server.
    #[command(subcommand)]
    Silence(crate::alerts::SilenceCommand),
    /// Anomaly detection tools: run the streaming detector over benchmark data.
    #[command(subcommand)]
    Anomaly(crate::anomaly::AnomalyCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The built-in certificate authority: CA, server and device certificates, revocation,
    /// enrolment tokens.
    Ca(crate::ca::CaArgs),
    /// Operator accounts: add, list, remove, passwords, two-factor login.
    #[command(subcommand)]
    User(crate::operators::UserCommand),
    /// API tokens for automation: create, list, revoke.
    #[command(subcommand)]
    Token(crate::operators::TokenCommand),
    /// The audit log of operator actions.
    #[command(subcommand)]
    Audit(crate::operators::AuditCommand),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration such as 500ms, 2s, 5m"))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not a socket address; expected IP:PORT such as 127.0.0.1:1883")
    })
}

#[derive(Debug, Default, Args)]
pub struct ServerArgs {
    /// Configuration file (TOML; `fleetmon config default` prints one). Flags win over it.
    #[arg(long, env = "FLEETMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the WAL, the store and the device tags live [default: fleetmon-data].
    #[arg(long, env = "FLEETMON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API, ingest and page [default: 127.0.0.1:8427].
    #[arg(long, env = "FLEETMON_HTTP_LISTEN", value_parser = parse_addr)]
    pub http_listen: Option<SocketAddr>,
    /// MQTT endpoint for devices, plaintext [default: 127.0.0.1:1883].
    #[arg(long, env = "FLEETMON_MQTT_LISTEN", value_parser = parse_addr)]
    pub mqtt_listen: Option<SocketAddr>,
    /// MQTT over mutual TLS: devices prove themselves with a certificate of the built-in CA
    /// (conventionally port 8883; off unless set).
    #[arg(long, env = "FLEETMON_MQTT_TLS_LISTEN", value_parser = parse_addr)]
    pub mqtt_tls_listen: Option<SocketAddr>,
    /// HTTPS: the API, ingest, enrolment and dashboard over TLS with the server certificate
    /// (conventionally port 8443; off unless set).
    #[arg(long, env = "FLEETMON_HTTPS_LISTEN", value_parser = parse_addr)]
    pub https_listen: Option<SocketAddr>,
    /// Allow plaintext MQTT or HTTP on an address other than loopback.
    #[arg(long, env = "FLEETMON_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// The built-in CA's directory (`fleetmon ca init`) [default: fleetmon-ca].
    #[arg(long, env = "FLEETMON_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The server's TLS certificate (PEM) [default: CA_DIR/server.pem]; reloaded on change.
    #[arg(long, env = "FLEETMON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The server's TLS key (PEM) [default: CA_DIR/server.key].
    #[arg(long, env = "FLEETMON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A device certificate expiring sooner than this is a security event [default: 30d].
    #[arg(long, env = "FLEETMON_CERT_EXPIRY_WARNING", value_parser = parse_duration)]
    pub cert_expiry_warning: Option<Duration>,
    /// A device that only uses HTTP is offline once its last batch is older than this
    /// [default: 2m].
    #[arg(long, env = "FLEETMON_OFFLINE_AFTER", value_parser = parse_duration)]
    pub offline_after: Option<Duration>,
    /// A gap in a device's batch numbers counts as missing once it is older than this
    /// [default: 2m].
    #[arg(long, env = "FLEETMON_MISSING_GRACE", value_parser = parse_duration)]
    pub missing_grace: Option<Duration>,
    /// Largest batch payload accepted, in bytes [default: 1048576].
    #[arg(long, env = "FLEETMON_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Delete stored samples older than this (default: keep everything).
    #[arg(long, env = "FLEETMON_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Delete the oldest stored samples while the store is larger than this many bytes.
    #[arg(long, env = "FLEETMON_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Size at which a new WAL segment starts, in bytes [default: 67108864].
    #[arg(long, env = "FLEETMON_WAL_SEGMENT_BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// Firmware policy file: minimum versions per model, vulnerable ranges (TOML).
    #[arg(long, env = "FLEETMON_FIRMWARE_POLICY")]
    pub firmware_policy: Option<PathBuf>,
    /// Most distinct series (metric + labels) one device may have; batches that would add
    /// more are refused [default: 10000].
    #[arg(long, env = "FLEETMON_MAX_SERIES_PER_DEVICE")]
    pub max_series_per_device: Option<usize>,
    /// Messages per second one device may send, MQTT and HTTP together (0: no limit). Over
    /// it MQTT 5 gets PUBACK "quota exceeded", MQTT 3.1.1 is read no faster, HTTP gets 429
    /// [default: 200].
    #[arg(long, env = "FLEETMON_DEVICE_MESSAGE_RATE")]
    pub device_message_rate: Option<f64>,
    /// Messages one device may send at once above its rate [default: 5000].
    #[arg(long, env = "FLEETMON_DEVICE_MESSAGE_BURST")]
    pub device_message_burst: Option<f64>,
    /// Most MQTT connections open at once, in all (0: no limit) [default: 100000].
    #[arg(long, env = "FLEETMON_MQTT_MAX_CONNECTIONS")]
    pub mqtt_max_connections: Option<usize>,
    /// Most MQTT connections open at once from one address (an IPv6 /64) (0: no limit);
    /// loopback is exempt unless --limit-loopback [default: 1000].
    #[arg(long, env = "FLEETMON_MQTT_MAX_CONNECTIONS_PER_ADDRESS")]
    pub mqtt_max_connections_per_address: Option<usize>,
    /// New MQTT connections per second from one address; faster ones wait their turn (up to
    /// 5s), the rest are refused (0: no limit) [default: 50].
    #[arg(long, env = "FLEETMON_MQTT_CONNECTION_RATE")]
    pub mqtt_connection_rate: Option<f64>,
    /// New MQTT connections one address may open at once above its rate [default: 500].
    #[arg(long, env = "FLEETMON_MQTT_CONNECTION_BURST")]
    pub mqtt_connection_burst: Option<f64>,
    /// An MQTT connection that sends no CONNECT within this is closed [default: 10s].
    #[arg(long, env = "FLEETMON_MQTT_CONNECT_TIMEOUT", value_parser = parse_duration)]
    pub mqtt_connect_timeout: Option<Duration>,
    /// Apply the per-address connection limits to loopback too (off: the simulator and the
    /// demo open thousands of connections from 127.0.0.1).
    #[arg(long, env = "FLEETMON_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Temperature and link-capacity limits per device model (TOML; see docs/health.md).
    #[arg(long, env = "FLEETMON_DEVICE_LIMITS")]
    pub device_limits: Option<PathBuf>,
    /// Tags (site, group, model, ...) by device id or id pattern (TOML; see docs/health.md);
    /// tags set through the API win. Reloaded on SIGHUP.
    #[arg(long, env = "FLEETMON_DEVICE_TAGS")]
    pub device_tags: Option<PathBuf>,
    /// PromQL: how far back an instant selector looks for a sample [default: 5m].
    #[arg(long, env = "FLEETMON_QUERY_LOOKBACK", value_parser = parse_duration)]
    pub query_lookback: Option<Duration>,
    /// PromQL: most samples one query may load or produce [default: 10000000].
    #[arg(long, env = "FLEETMON_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// PromQL: longest a query may run [default: 2m].
    #[arg(long, env = "FLEETMON_QUERY_TIMEOUT", value_parser = parse_duration)]
    pub query_timeout: Option<Duration>,
    /// An alert rule file (Prometheus's YAML); repeat for more. Added to the config file's.
    #[arg(long = "rules", env = "FLEETMON_RULES", value_delimiter = ',')]
    pub rule_files: Vec<PathBuf>,
    /// Leave out the built-in rule pack.
    #[arg(long)]
    pub no_builtin_rules: bool,
    /// Evaluation interval of rule groups that set none [default: 15s].
    #[arg(long, env = "FLEETMON_EVALUATION_INTERVAL", value_parser = parse_duration)]
    pub evaluation_interval: Option<Duration>,
    /// Alert routes, grouping, inhibition, topology, flap damping (YAML).
    #[arg(long, env = "FLEETMON_ALERTING_CONFIG")]
    pub alerting_config: Option<PathBuf>,
    /// Notification receivers: webhook, Slack, email (TOML).
    #[arg(long, env = "FLEETMON_RECEIVERS")]
    pub receivers: Option<PathBuf>,
    /// How often the derived series (device_up, integrity counters...) are written
    /// [default: 10s].
    #[arg(long, env = "FLEETMON_DERIVE_INTERVAL", value_parser = parse_duration)]
    pub derive_interval: Option<Duration>,
    /// Operators must log in even before any account exists (always so when HTTP is not on
    /// loopback).
    #[arg(long, env = "FLEETMON_REQUIRE_LOGIN")]
    pub require_login: bool,
    /// Session cookies get the Secure attribute (behind a TLS-terminating proxy).
    #[arg(long, env = "FLEETMON_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Failed logins (per address and per account) after which each attempt must wait,
    /// doubling from 1s [default: 5].
    #[arg(long, env = "FLEETMON_LOGIN_BACKOFF_AFTER")]
    pub login_backoff_after: Option<u32>,
    /// Failed logins after which the address or account is locked out [default: 10].
    #[arg(long, env = "FLEETMON_LOGIN_LOCKOUT_AFTER")]
    pub login_lockout_after: Option<u32>,
    /// How long a lockout lasts [default: 15m].
    #[arg(long, env = "FLEETMON_LOGIN_LOCKOUT", value_parser = parse_duration)]
    pub login_lockout: Option<Duration>,
}

impl ServerArgs {
    /// Flags (and their variables) over the config file over the built-in defaults, validated.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let (srv, sto) = (&file.server, &file.storage);
        let from_file_duration =
            |key: &str, v: &Option<String>| -> anyhow::Result<Option<Duration>> {
                v.as_deref().map(|v| config::duration(key, v)).transpose()
            };
        let from_file_addr =
            |key: &str, v: &Option<String>| -> anyhow::Result<Option<SocketAddr>> {
                v.as_deref().map(|v| config::address(key, v)).transpose()
            };
        let defaults = ServerConfig::local("fleetmon-data");
        let data_dir = self
            .data_dir
            .or_else(|| srv.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("fleetmon-data"));
        let http_listen = match self.http_listen {
            Some(a) => a,
            None => from_file_addr("server.http_listen", &srv.http_listen)?
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8427))),
        };
        let mqtt_listen = match self.mqtt_listen {
            Some(a) => a,
            None => from_file_addr("server.mqtt_listen", &srv.mqtt_listen)?
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1883))),
        };
        let mqtt_tls_listen = match self.mqtt_tls_listen {
            Some(a) => Some(a),
            None => from_file_addr("server.mqtt_tls_listen", &srv.mqtt_tls_listen)?,
        };
        let https_listen = match self.https_listen {
            Some(a) => Some(a),
            None => from_file_addr("server.https_listen", &srv.https_listen)?,
        };
        let sec = &file.security;
        let cert_expiry_warning = match self.cert_expiry_warning {
            Some(d) => d,
            None => from_file_duration("security.cert_expiry_warning", &sec.cert_expiry_warning)?
                .unwrap_or(defaults.cert_expiry_warning),
        };
        let offline_after = match self.offline_after {
            Some(d) => d,
            None => from_file_duration("server.offline_after", &srv.offline_after)?
                .unwrap_or(defaults.offline_after),
        };
        let missing_grace = match self.missing_grace {
            Some(d) => d,
            None => from_file_duration("server.missing_grace", &srv.missing_grace)?
                .unwrap_or(defaults.missing_grace),
        };
        let retention = match self.retention {
            Some(d) => Some(d),
            None => from_file_duration("storage.retention", &sto.retention)?,
        };
        let retention_bytes = self.retention_bytes.or(sto.retention_bytes);
        let qry = &file.query;
        let query_lookback = match self.query_lookback {
            Some(d) => d,
            None => from_file_duration("query.lookback", &qry.lookback)?.unwrap_or(
                Duration::from_millis(defaults.query.lookback_ms.unsigned_abs()),
            ),
        };
        let query_timeout = match self.query_timeout {
            Some(d) => d,
            None => {
                from_file_duration("query.timeout", &qry.timeout)?.unwrap_or(defaults.query.timeout)
            }
        };
        let query_max_samples = self
            .query_max_samples
            .or(qry.max_samples)
            .unwrap_or(defaults.query.max_samples);
        if self
            .derive_interval
            .is_some_and(|d| d < Duration::from_millis(100))
        {
            bail!("derive interval (--derive-interval) must be at least 100ms");
        }
        let al = &file.alerting;
        let evaluation_interval = match self.evaluation_interval {
            Some(d) => d,
            None => from_file_duration("alerting.evaluation_interval", &al.evaluation_interval)?
                .unwrap_or(defaults.alerting.eval_interval),
        };
        if evaluation_interval < Duration::from_secs(1) {
            bail!(
                "evaluation interval (--evaluation-interval or alerting.evaluation_interval) must be at least 1s"
            );
        }
        let alerting = fleetmon_server::alerting::AlertingConfig {
            builtin_rules: !self.no_builtin_rules && al.builtin_rules.unwrap_or(true),
            rule_files: al
                .rule_files
                .iter()
                .cloned()
                .chain(self.rule_files)
                .collect(),
            eval_interval: evaluation_interval,
            dispatcher_file: self.alerting_config.or_else(|| al.dispatcher.clone()),
            notify_file: self.receivers.or_else(|| al.receivers.clone()),
            ..defaults.alerting.clone()
        };
        if query_lookback.is_zero() || query_timeout.is_zero() || query_max_samples == 0 {
            bail!("query lookback, timeout and max samples must be greater than zero");
        }
        let max_payload_bytes = self
            .max_payload_bytes
            .or(srv.max_payload_bytes)
            .unwrap_or(Limits::default().max_payload_bytes);
        let wal_segment_bytes = self
            .wal_segment_bytes
            .or(sto.wal_segment_bytes)
            .unwrap_or(WalOptions::default().segment_bytes);
        if !(1024..=64 << 20).contains(&max_payload_bytes) {
            bail!(
                "max payload bytes {max_payload_bytes} (--max-payload-bytes or server.max_payload_bytes): expected between 1024 and {} bytes",
                64 << 20
            );
        }
        if offline_after.is_zero() {
            bail!(
                "offline-after (--offline-after or server.offline_after) must be longer than zero"
            );
        }
        if wal_segment_bytes < 4096 {
            bail!(
                "WAL segment bytes {wal_segment_bytes} (--wal-segment-bytes or storage.wal_segment_bytes): expected at least 4096"
            );
        }
        let throttle_default = fleetmon_server::operators::throttle::ThrottleConfig::default();
        let login_lockout = match self.login_lockout {
            Some(d) => d,
            None => from_file_duration("security.login_lockout", &sec.login_lockout)?
                .unwrap_or(throttle_default.lockout),
        };
        let throttle = fleetmon_server::operators::throttle::ThrottleConfig {
            backoff_after: self
                .login_backoff_after
                .or(sec.login_backoff_after)
                .unwrap_or(throttle_default.backoff_after),
            lockout_after: self
                .login_lockout_after
                .or(sec.login_lockout_after)
                .unwrap_or(throttle_default.lockout_after),
            lockout: login_lockout,
        };
        if throttle.backoff_after == 0 || throttle.lockout_after == 0 {
            bail!(
                "login throttling (--login-backoff-after, --login-lockout-after): expected at least 1 failure"
            );
        }
        let lim = &file.limits;
        let device_rate = rate(
            ("--device-message-rate", "limits.device_message_rate"),
            self.device_message_rate.or(lim.device_message_rate),
            ("--device-message-burst", "limits.device_message_burst"),
            self.device_message_burst.or(lim.device_message_burst),
            defaults.device_rate,
        )?;
        let connection_rate = rate(
            ("--mqtt-connection-rate", "limits.mqtt_connection_rate"),
            self.mqtt_connection_rate.or(lim.mqtt_connection_rate),
            ("--mqtt-connection-burst", "limits.mqtt_connection_burst"),
            self.mqtt_connection_burst.or(lim.mqtt_connection_burst),
            defaults.connections.rate,
        )?;
        let connections = fleetmon_server::ratelimit::ConnectionLimits {
            max_total: self
                .mqtt_max_connections
                .or(lim.mqtt_max_connections)
                .unwrap_or(defaults.connections.max_total),
            max_per_address: self
                .mqtt_max_connections_per_address
                .or(lim.mqtt_max_connections_per_address)
                .unwrap_or(defaults.connections.max_per_address),
            rate: connection_rate,
            limit_loopback: self.limit_loopback || lim.limit_loopback.unwrap_or(false),
        };
        let connect_timeout = match self.mqtt_connect_timeout {
            Some(d) => d,
            None => from_file_duration("limits.mqtt_connect_timeout", &lim.mqtt_connect_timeout)?
                .unwrap_or(defaults.connect_timeout),
        };
        if connect_timeout < Duration::from_millis(100) {
            bail!(
                "MQTT connect timeout {connect_timeout:?} (--mqtt-connect-timeout or limits.mqtt_connect_timeout): expected at least 100ms"
            );
        }
        let max_series_per_device = self
            .max_series_per_device
            .or(lim.max_series_per_device)
            .unwrap_or(defaults.max_series_per_device);
        if max_series_per_device == 0 {
            bail!(
                "max series per device (--max-series-per-device or limits.max_series_per_device) must be at least 1"
            );
        }
        let auth = fleetmon_server::operators::AuthConfig {
            require_login: self.require_login || sec.require_login.unwrap_or(false),
            secure_cookies: self.secure_cookies || sec.secure_cookies.unwrap_or(false),
            throttle,
        };
        Ok(ServerConfig {
            auth,
            data_dir,
            http_listen,
            mqtt_listen,
            offline_after,
            missing_grace,
            limits: Limits {
                max_payload_bytes,
                ..Limits::default()
            },
            wal: WalOptions {
                segment_bytes: wal_segment_bytes,
            },
            tsdb: fleetmon_tsdb::Options {
                retention: fleetmon_tsdb::Retention {
                    max_age_ms: retention.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    max_bytes: retention_bytes,
                },
                ..fleetmon_tsdb::Options::default()
            },
            firmware_policy: self
                .firmware_policy
                .or_else(|| file.health.firmware_policy.clone()),
            max_series_per_device,
            device_rate,
            connections,
            connect_timeout,
            device_limits: self
                .device_limits
                .or_else(|| file.health.device_limits.clone()),
            device_tags: self.device_tags.or_else(|| file.health.device_tags.clone()),
            query: fleetmon_promql::Options {
                lookback_ms: i64::try_from(query_lookback.as_millis()).unwrap_or(i64::MAX),
                max_samples: query_max_samples,
                timeout: query_timeout,
                ..defaults.query.clone()
            },
            alerting,
            derive_interval: self.derive_interval.unwrap_or(defaults.derive_interval),
            mqtt_tls_listen,
            https_listen,
            ca_dir: Some(
                self.ca_dir
                    .or_else(|| sec.ca_dir.clone())
                    .unwrap_or_else(|| PathBuf::from("fleetmon-ca")),
            ),
            tls_cert: self.tls_cert.or_else(|| sec.tls_cert.clone()),
            tls_key: self.tls_key.or_else(|| sec.tls_key.clone()),
            allow_plaintext: self.allow_plaintext || srv.allow_plaintext.unwrap_or(false),
            cert_expiry_warning,
            ..defaults
        })
    }
}

/// A rate and burst from their flags or keys (`names` say which, for errors): rate 0 turns
/// the limit off; unset values keep `default`'s.
fn rate(
    (rate_flag, rate_key): (&str, &str),
    per_second: Option<f64>,
    (burst_flag, burst_key): (&str, &str),
    burst: Option<f64>,
    default: Option<fleetmon_server::ratelimit::Rate>,
) -> anyhow::Result<Option<fleetmon_server::ratelimit::Rate>> {
    if let Some(r) = per_second
        && !(r.is_finite() && r >= 0.0)
    {
        bail!(
            "{rate_flag} (or {rate_key}) {r}: expected a rate per second, 0 or more (0 turns the limit off)"
        );
    }
    if let Some(b) = burst
        && !(b.is_finite() && b >= 1.0)
    {
        bail!("{burst_flag} (or {burst_key}) {b}: expected at least 1");
    }
    let per_second = match (per_second, default) {
        (Some(0.0), _) => return Ok(None),
        (Some(r), _) => r,
        (None, Some(d)) => d.per_second,
        (None, None) => return Ok(None),
    };
    let burst = burst
        .or(default.map(|d| d.burst))
        .unwrap_or(per_second.max(1.0));
    Ok(fleetmon_server::ratelimit::Rate::new(per_second, burst))
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the server's commented default configuration.
    Default,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PayloadFormat {
    /// Frame version 1: a protobuf body.
    Protobuf,
    /// Frame version 2: the columnar body the agent sends.
    Columnar,
    Json,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// MQTT endpoint, HOST:PORT.
    #[arg(long, env = "FLEETMON_SIM_MQTT", default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Devices sharing one MQTT connection, as sensor nodes behind a gateway do (1: each its
    /// own). The connection's first device is its client id and Last Will; plaintext only,
    /// since a device certificate's ACL lets a connection publish for its own device alone.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices_per_connection: usize,
    /// Time between two batches of one device.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long (default: run until Ctrl-C or --batches).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many batches per device.
    #[arg(long)]
    pub batches: Option<u64>,
    /// Seed of the simulated values; the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device ids are PREFIX followed by a five-digit number.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// Seq of each device's first batch (default: now in Unix milliseconds, so a rerun
    /// against the same server continues past the last run instead of being deduplicated;
    /// the jump between runs then shows as missing batches — pass the last run's next seq
    /// for exact accounting).
    #[arg(long)]
    pub first_seq: Option<u64>,
    /// Payload encoding of the batches.
    #[arg(long, value_enum, default_value = "protobuf")]
    pub format: PayloadFormat,
    /// How long to wait for outstanding acknowledgements at the end.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Fault: probability that a batch is lost after getting its seq (never sent, not reported
    /// as dropped; a device's first and last seq are never lost).
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub loss: f64,
    /// Fault: probability that an acknowledged batch is published once more (same seq).
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub duplicate: f64,
    /// Fault: probability that a batch is first sent corrupted (one byte of the protobuf body
    /// flipped, so its CRC-32C fails), then correctly after the server closed the connection.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub corrupt: f64,
    /// Fault: each device goes offline once for this long (connection dropped without
    /// DISCONNECT, so the Last Will fires; it keeps producing and resends the backlog after).
    #[arg(long, value_parser = parse_duration)]
    pub outage: Option<Duration>,
    /// Devices are split into N outage groups by index % N; group g's window starts at
    /// --outage-at + g × --outage / N.
    #[arg(long, default_value_t = 1)]
    pub outage_groups: usize,
    /// When the first outage group goes offline, from the start of the run (default: two
    /// intervals).
    #[arg(long, value_parser = parse_duration)]
    pub outage_at: Option<Duration>,
    /// Fault: devices with index % 4 == 0 run this far ahead, index % 4 == 1 this far behind
    /// (shifts sent_at_ms and the samples' timestamps).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub clock_skew: Duration,
    /// Write the ground truth (per device: produced, sent, acked, lost, duplicated, corrupted,
    /// outages, clock skew) as JSON to FILE at the end.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Value faults (overheating, a failing battery, a filling disk, a new listening port,
    /// a firmware change...) on chosen devices for a while: a TOML file of `[[fault]]` tables,
    /// see docs/simulator.md. The ground truth lists each device's fault windows.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{s:?} is not a probability; expected 0 to 1, e.g. 0.05"
        )),
    }
}

impl SimArgs {
    pub fn into_options(self) -> anyhow::Result<SimOptions> {
        if self.devices == 0 || self.devices > 100_000 {
            bail!("--devices {}: expected 1 to 100000", self.devices);
        }
        if self.devices_per_connection == 0 {
            bail!("--devices-per-connection 0: expected at least 1");
        }
        if self.interval < Duration::from_millis(10) {
            bail!("--interval {:?}: expected at least 10ms", self.interval);
        }
        if !self.mqtt.contains(':') {
            bail!(
                "--mqtt {:?}: expected HOST:PORT such as 127.0.0.1:1883",
                self.mqtt
            );
        }
        let scenario = match &self.scenario {
            Some(path) => {
                let s = fleetmon_sim::Scenario::load(path)?;
                s.check_fleet(self.devices)?;
                Some(s)
            }
            None => None,
        };
        Ok(SimOptions {
            mqtt: self.mqtt,
            devices: self.devices,
            devices_per_connection: self.devices_per_connection,
            interval: self.interval,
            duration: self.duration,
            batches: self.batches,
            seed: self.seed,
            prefix: self.prefix,
            first_seq: self.first_seq.unwrap_or_else(seq_from_clock),
            resume: Default::default(),
            format: match self.format {
                PayloadFormat::Protobuf => Format::Protobuf,
                PayloadFormat::Columnar => Format::Columnar,
                PayloadFormat::Json => Format::Json,
            },
            progress: !self.quiet,
            drain_timeout: self.drain_timeout,
            faults: Faults {
                loss: self.loss,
                duplicate: self.duplicate,
                corrupt: self.corrupt,
                outage: self.outage,
                outage_groups: self.outage_groups,
                outage_at: self.outage_at,
                clock_skew: self.clock_skew,
            },
            truth: self.truth,
            scenario,
        })
    }
}

/// A first seq past every earlier run's: batches are at least 10 ms apart, so a run's seqs
/// never overtake the clock.
pub fn seq_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 25)]
    pub devices: usize,
    /// Time between two batches of one device.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    #[arg(long, env = "FLEETMON_DATA_DIR", default_value = "fleetmon-data")]
    pub data_dir: PathBuf,
    /// HTTP address; if taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:8427", value_parser = parse_addr)]
    pub http_listen: SocketAddr,
    /// MQTT address; if taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:1883", value_parser = parse_addr)]
    pub mqtt_listen: SocketAddr,
}

#[cfg(test)]
mod sim_args_tests {
    use super::*;

    fn sim(args: &[&str]) -> Result<SimOptions, String> {
        let cli = Cli::try_parse_from(["fleetmon", "sim"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Sim(a) => a.into_options().map_err(|e| e.to_string()),
            _ => Err("not sim".to_owned()),
        }
    }

    #[test]
    fn fault_flags_become_fault_options() {
        let o = sim(&[
            "--loss",
            "0.05",
            "--duplicate",
            "0.02",
            "--corrupt",
            "0.01",
            "--outage",
            "60s",
            "--outage-groups",
            "4",
            "--outage-at",
            "30s",
            "--clock-skew",
            "90s",
            "--truth",
            "t.json",
        ])
        .unwrap();
        assert_eq!(
            o.faults,
            Faults {
                loss: 0.05,
                duplicate: 0.02,
                corrupt: 0.01,
                outage: Some(Duration::from_secs(60)),
                outage_groups: 4,
                outage_at: Some(Duration::from_secs(30)),
                clock_skew: Duration::from_secs(90),
            }
        );
        assert_eq!(o.truth, Some(PathBuf::from("t.json")));
        assert!(sim(&[]).unwrap().faults.is_none());
        let err = sim(&["--loss", "1.5"]).unwrap_err();
        assert!(err.contains("not a probability"), "{err}");
    }

    #[test]
    fn devices_per_connection_defaults_to_one() {
        assert_eq!(sim(&[]).unwrap().devices_per_connection, 1);
        let o = sim(&["--devices", "1000", "--devices-per-connection", "100"]).unwrap();
        assert_eq!((o.devices_per_connection, o.connections()), (100, 10));
        let err = sim(&["--devices-per-connection", "0"]).unwrap_err();
        assert_eq!(err, "--devices-per-connection 0: expected at least 1");
    }
    #[test]
    fn a_scenario_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        let file = path.to_str().unwrap();
        std::fs::write(&path, "[[fault]]\nkind = \"cpu\"\ndevices = \"0..3\"\n").unwrap();
        let o = sim(&["--devices", "5", "--scenario", file]).unwrap();
        assert_eq!(o.scenario.map(|s| s.faults.len()), Some(1));
        let err = sim(&["--devices", "2", "--scenario", file]).unwrap_err();
        assert!(
            err.contains("s.toml:1") && err.contains("`devices`"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[[fault]]\nkind = \"cpu\"\ndevices = \"0..3\"\nratio = 2\n",
        )
        .unwrap();
        let err = sim(&["--scenario", file]).unwrap_err();
        assert!(err.contains("s.toml:4") && err.contains("`ratio`"), "{err}");
    }
}

#[cfg(test)]
mod server_args_tests {
    use super::*;

    fn server(args: &[&str]) -> anyhow::Result<ServerConfig> {
        let cli = Cli::try_parse_from(["fleetmon", "server"].iter().chain(args))?;
        match cli.command {
            Command::Server(a) => a.into_config(),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn the_printed_default_is_the_built_in_default() {
        let f = file(config::DEFAULT);
        let from_file = server(&["--config", f.path().to_str().unwrap()]).unwrap();
        let built_in = server(&[]).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
        assert_eq!(built_in.http_listen, "127.0.0.1:8427".parse().unwrap());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let f = file(
            "[server]\nhttp_listen = \"127.0.0.1:9000\"\noffline_after = \"30s\"\n[storage]\nretention = \"7d\"\n",
        );
        let path = f.path().to_str().unwrap();
        let c = server(&["--config", path]).unwrap();
        assert_eq!(c.http_listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.offline_after, Duration::from_secs(30));
        assert_eq!(c.tsdb.retention.max_age_ms, Some(7 * 86_400_000));
        assert_eq!(c.mqtt_listen, "127.0.0.1:1883".parse().unwrap());
        let c = server(&["--config", path, "--http-listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(c.http_listen, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn plaintext_beyond_loopback_needs_the_flag() {
        let c = server(&["--mqtt-listen", "0.0.0.0:1883"]).unwrap();
        let e = c.check_plaintext().unwrap_err().to_string();
        assert!(
            e.contains("--allow-plaintext") && e.contains("0.0.0.0:1883"),
            "{e}"
        );
        let c = server(&["--http-listen", "192.0.2.1:8427"]).unwrap();
        assert!(c.check_plaintext().is_err());
        let c = server(&["--mqtt-listen", "0.0.0.0:1883", "--allow-plaintext"]).unwrap();
        assert!(c.check_plaintext().is_ok());
        assert!(server(&[]).unwrap().check_plaintext().is_ok());
        let f = file("[server]\nmqtt_tls_listen = \"0.0.0.0:8883\"\nallow_plaintext = true\n");
        let c = server(&["--config", f.path().to_str().unwrap()]).unwrap();
        assert_eq!(c.mqtt_tls_listen, Some("0.0.0.0:8883".parse().unwrap()));
        assert!(c.allow_plaintext);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let f = file("[server]\nmqtt_listen = \"1883\"\n");
        let e = server(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(format!("{e:#}").contains("`server.mqtt_listen`"), "{e:#}");
        let f = file("[server]\ncolour = \"red\"\n");
        let e = server(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
        let e = server(&["--max-payload-bytes", "10"]).unwrap_err();
        assert!(e.to_string().contains("--max-payload-bytes"), "{e}");
        let e = server(&["--device-message-rate=-1"]).unwrap_err();
        assert!(e.to_string().contains("--device-message-rate"), "{e}");
        let f = file("[limits]\nmqtt_connection_burst = 0.5\n");
        let e = server(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("limits.mqtt_connection_burst"),
            "{e}"
        );
        let f = file("[limits]\nmqtt_connect_timeout = \"soon\"\n");
        let e = server(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("`limits.mqtt_connect_timeout`"),
            "{e}"
        );
    }

    #[test]
    fn abuse_limits_come_from_flags_and_the_file_and_zero_turns_them_off() {
        use fleetmon_server::ratelimit::Rate;
        let c = server(&[]).unwrap();
        assert_eq!(c.device_rate, Rate::new(200.0, 5000.0));
        assert_eq!(c.connections.max_total, 100_000);
        assert_eq!(c.connections.max_per_address, 1_000);
        assert_eq!(c.connections.rate, Rate::new(50.0, 500.0));
        assert!(!c.connections.limit_loopback);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        let f = file(
            "[limits]\ndevice_message_rate = 5\nmqtt_max_connections_per_address = 3\nmqtt_connect_timeout = \"2s\"\nlimit_loopback = true\nmax_series_per_device = 7\n",
        );
        let path = f.path().to_str().unwrap();
        let c = server(&["--config", path, "--device-message-burst", "10"]).unwrap();
        assert_eq!(c.device_rate, Rate::new(5.0, 10.0));
        assert_eq!(c.connections.max_per_address, 3);
        assert!(c.connections.limit_loopback);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.max_series_per_device, 7);
        let c = server(&[
            "--config",
            path,
            "--device-message-rate",
            "0",
            "--mqtt-connection-rate",
            "0",
        ])
        .unwrap();
        assert_eq!((c.device_rate, c.connections.rate), (None, None));
    }
}
