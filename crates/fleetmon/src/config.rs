//! The server's configuration file (`fleetmon server --config FILE`): TOML, every key
//! optional. A key set by a flag or its `FLEETMON_*` variable wins over the file, the file over
//! the built-in default. Unknown keys are errors that name the key; `fleetmon config default`
//! prints the commented default below, which parses back to the built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde::Deserialize;

/// The commented default configuration.
pub const DEFAULT: &str = r#"# fleetmon server configuration. Every key is optional; a flag or FLEETMON_* variable
# overrides it (e.g. --http-listen / FLEETMON_HTTP_LISTEN for server.http_listen).

[server]
# Where the write-ahead log, the time-series store and the device tags live.
data_dir = "fleetmon-data"
# HTTP API, ingest and dashboard. Loopback only unless you say otherwise.
http_listen = "127.0.0.1:8427"
# MQTT endpoint for devices (MQTT 3.1.1 and 5), plaintext.
mqtt_listen = "127.0.0.1:1883"
# MQTT over mutual TLS: devices prove themselves with a certificate of the built-in CA
# (see docs/security.md). Off unless set.
# mqtt_tls_listen = "0.0.0.0:8883"
# HTTPS: the API, ingest, enrolment and dashboard over TLS with the same server certificate.
# Off unless set.
# https_listen = "0.0.0.0:8443"
# Plaintext MQTT or HTTP on an address other than loopback is refused unless this is true.
allow_plaintext = false
# A device that only uses HTTP is offline once its last batch is older than this.
offline_after = "2m"
# A gap in a device's batch numbers counts as missing once it is older than this.
missing_grace = "2m"
# Largest batch payload accepted, in bytes (1 KiB to 64 MiB).
max_payload_bytes = 1048576

[storage]
# Delete samples older than this, e.g. "90d" (unset: keep everything).
# retention = "90d"
# Delete the oldest samples while the store is larger than this many bytes (unset: no limit).
# retention_bytes = 50000000000
# Size at which a new ingest WAL segment starts, in bytes.
wal_segment_bytes = 67108864

[query]
# PromQL: how far back an instant selector looks for a sample.
lookback = "5m"
# Most samples one query may load or produce; more is an error (HTTP 422), never an OOM.
max_samples = 10000000
# Longest a query may run (HTTP 503 after it).
timeout = "2m"

[security]
# The built-in CA (`fleetmon ca init`): the TLS listener's client CA, revocations, enrolment.
ca_dir = "fleetmon-ca"
# The server's TLS certificate and key (default: server.pem and server.key in ca_dir).
# tls_cert = "/etc/fleetmon/server.pem"
# tls_key = "/etc/fleetmon/server.key"
# A device certificate expiring sooner than this is a security event.
cert_expiry_warning = "30d"
# Operators must log in even before any account exists (`fleetmon user add`). Always so when
# the HTTP listener is not on loopback.
require_login = false
# Session cookies get the Secure attribute (set it behind a TLS-terminating proxy).
secure_cookies = false
# Login throttling, per source address and per account: after this many failures each
# attempt must wait (1s, doubling), and after login_lockout_after the address or account is
# locked for login_lockout.
login_backoff_after = 5
login_lockout_after = 10
login_lockout = "15m"

[limits]
# Abuse limits (docs/security.md, "Abuse limits"). Each is counted on /metrics and reported
# as a security event at most once a minute per device or address.
# Messages per second one device may send, MQTT and HTTP together, and how many at once
# above that. Over it MQTT 5 gets PUBACK "quota exceeded" ("message rate too high"), MQTT
# 3.1.1 is read no faster (never acknowledged and dropped), HTTP gets 429 with Retry-After.
# 0 turns the limit off.
device_message_rate = 200
device_message_burst = 5000
# Most distinct series (metric + labels) one device may have.
max_series_per_device = 10000
# Most MQTT connections open at once, in all and from one address (an IPv6 /64); 0: no limit.
mqtt_max_connections = 100000
mqtt_max_connections_per_address = 1000
# New MQTT connections per second from one address, and how many at once above that. Faster
# ones wait their turn (up to 5s); the rest are refused. 0 turns it off.
mqtt_connection_rate = 50
mqtt_connection_burst = 500
# Loopback is exempt from the per-address limits (the simulator and `fleetmon demo` open
# thousands of connections from 127.0.0.1) unless this is true.
limit_loopback = false
# A connection that sends no CONNECT within this is closed.
mqtt_connect_timeout = "10s"

[health]
# Minimum firmware per model and vulnerable version ranges (see docs/health.md), if any.
# firmware_policy = "/etc/fleetmon/firmware-policy.toml"
# Temperature limits per device model (see docs/health.md), if any; a device's
# `temperature_max_celsius` tag wins over them.
# device_limits = "/etc/fleetmon/device-limits.toml"
# Tags by device id or id pattern (site, group, model, lat/lon, gateway, ...; see
# docs/health.md); tags set through the API win. Reloaded on SIGHUP.
# device_tags = "/etc/fleetmon/device-tags.toml"

[alerting]
# The built-in rule pack (docs/alerting.md): one rule per concern, default thresholds.
builtin_rules = true
# Your own rule files, Prometheus's rule-file YAML; reloaded on SIGHUP.
# rule_files = ["/etc/fleetmon/rules.yml"]
# Evaluation interval of rule groups that set none.
evaluation_interval = "15s"
# Routes, grouping, inhibition, topology suppression, flap damping (YAML; docs/alerting.md).
# dispatcher = "/etc/fleetmon/alerting.yml"
# Receivers: webhook, Slack, email (TOML; docs/notifications.md). Unset: notifications are
# only logged.
# receivers = "/etc/fleetmon/receivers.toml"
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub query: QuerySection,
    #[serde(default)]
    pub alerting: AlertingSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub device_message_rate: Option<f64>,
    pub device_message_burst: Option<f64>,
    pub max_series_per_device: Option<usize>,
    pub mqtt_max_connections: Option<usize>,
    pub mqtt_max_connections_per_address: Option<usize>,
    pub mqtt_connection_rate: Option<f64>,
    pub mqtt_connection_burst: Option<f64>,
    pub mqtt_connect_timeout: Option<String>,
    pub limit_loopback: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSection {
    pub builtin_rules: Option<bool>,
    #[serde(default)]
    pub rule_files: Vec<PathBuf>,
    pub evaluation_interval: Option<String>,
    pub dispatcher: Option<PathBuf>,
    pub receivers: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    pub ca_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub cert_expiry_warning: Option<String>,
    pub require_login: Option<bool>,
    pub secure_cookies: Option<bool>,
    pub login_backoff_after: Option<u32>,
    pub login_lockout_after: Option<u32>,
    pub login_lockout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySection {
    pub lookback: Option<String>,
    pub max_samples: Option<usize>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub firmware_policy: Option<PathBuf>,
    pub device_limits: Option<PathBuf>,
    pub device_tags: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub mqtt_listen: Option<String>,
    pub mqtt_tls_listen: Option<String>,
    pub https_listen: Option<String>,
    pub allow_plaintext: Option<bool>,
    pub offline_after: Option<String>,
    pub missing_grace: Option<String>,
    pub max_payload_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub retention: Option<String>,
    pub retention_bytes: Option<u64>,
    pub wal_segment_bytes: Option<u64>,
}

impl ConfigFile {
    /// Reads and parses `path`; errors name the file, and the key and line where TOML can.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow!("{e}"))
    }
}

/// Parses a duration setting, naming the key when it is wrong.
pub fn duration(key: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value).map_err(|e| {
        anyhow!(
            "config key `{key}`: {value:?} is not a duration ({e}); expected e.g. 500ms, 2s, 5m"
        )
    })
}

/// Parses a socket address setting, naming the key when it is wrong.
pub fn address(key: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value.parse().map_err(|_| {
        anyhow!("config key `{key}`: {value:?} is not a socket address; expected IP:PORT such as 127.0.0.1:1883")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_parses() {
        let c = ConfigFile::parse(DEFAULT).unwrap();
        assert_eq!(c.server.http_listen.as_deref(), Some("127.0.0.1:8427"));
        assert_eq!(c.storage.retention, None);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ConfigFile::parse("[server]\nhttp_lisen = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_lisen"), "{e}");
        let e = ConfigFile::parse("[srv]\n").unwrap_err().to_string();
        assert!(e.contains("srv"), "{e}");
        let e = address("server.mqtt_listen", "1883")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`server.mqtt_listen`") && e.contains("\"1883\""),
            "{e}"
        );
        let e = duration("server.offline_after", "soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`server.offline_after`"), "{e}");
    }
}
