//! The agent's configuration: a TOML file, then `FLEETMON_AGENT_*` environment variables and
//! flags on top (the binary applies those through [`Overrides`]).
//!
//! Parsed, then validated (ripgrep's habit): [`Config::from_toml`] refuses unknown keys by
//! name (`deny_unknown_fields`), then [`Config::validate`] checks values and says which key
//! to fix. [`DEFAULT_TOML`] is the commented default `fleetmon-agent config default` prints;
//! a test holds it to parse back into [`Config::default`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::collect::Roots;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, or an unknown key (the message names it).
    #[error("config: {0}")]
    Toml(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: {e}; expected e.g. \"10s\" or \"1m\""
        ))
    })
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Device id; empty means the host name.
    pub device_id: String,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub low_power_interval: Duration,
    /// Switch to `low_power_interval` when discharging below this charge (0..1).
    pub low_power_below_charge: f64,
    pub server: ServerConfig,
    pub spool: SpoolConfig,
    pub collect: CollectConfig,
    pub probe: ProbeConfig,
}

/// Where the server is and how to trust it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// MQTT endpoint, `HOST:PORT`.
    pub mqtt: String,
    /// HTTP base URL for the fallback (`http://host:8080`); empty disables it.
    pub http_url: String,
    /// PEM CA that signs the server certificate; set it to use TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// MQTT keepalive; the keepalive ping also times the round trip to the server.
    #[serde(deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// Longest wait between reconnect attempts (the backoff starts at 500 ms and doubles).
    #[serde(deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// Batches drained per second after a reconnect (the bounded drain rate).
    pub max_batches_per_second: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectConfig {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
    pub host_root: PathBuf,
    pub firmware_file: Option<PathBuf>,
    pub firmware_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// `HOST:PORT` targets timed by TCP connect; the MQTT server is always probed.
    pub targets: Vec<String>,
    /// Connects per target per collection.
    pub count: u32,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: String::new(),
            interval: Duration::from_secs(10),
            low_power_interval: Duration::from_secs(60),
            low_power_below_charge: 0.2,
            server: ServerConfig::default(),
            spool: SpoolConfig::default(),
            collect: CollectConfig::default(),
            probe: ProbeConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mqtt: "127.0.0.1:1883".into(),
            http_url: String::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            keep_alive: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(60),
            max_batches_per_second: 50,
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: "/var/lib/fleetmon-agent/spool".into(),
            max_bytes: 16 << 20,
        }
    }
}

impl Default for CollectConfig {
    fn default() -> Self {
        let r = Roots::default();
        Self {
            proc_root: r.proc_root,
            sys_root: r.sys_root,
            etc_root: r.etc_root,
            host_root: r.host_root,
            firmware_file: None,
            firmware_command: None,
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            count: 3,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The commented default configuration; parses back into [`Config::default`].
pub const DEFAULT_TOML: &str = r#"# fleetmon-agent configuration. Every key is optional; shown are the defaults.
# Environment variables FLEETMON_AGENT_DEVICE_ID, _MQTT, _HTTP_URL, _INTERVAL, _SPOOL_DIR,
# _SPOOL_MAX_BYTES, _PROC_ROOT, _SYS_ROOT and the matching flags of `fleetmon-agent run`
# override the file.

# Device id (1-128 of A-Z a-z 0-9 . _ : -). Empty: the host name.
device_id = ""
# How often to collect and send a batch.
interval = "10s"
# The interval used in low-power mode: on battery below `low_power_below_charge`, or when the
# server sends {"command":"low_power","enabled":true} on fleetmon/v1/{device}/control.
low_power_interval = "60s"
low_power_below_charge = 0.2

[server]
# MQTT endpoint HOST:PORT.
mqtt = "127.0.0.1:1883"
# HTTP fallback base URL (POST {http_url}/api/v1/ingest) while MQTT is down; empty: none.
http_url = ""
# TLS: set the CA (PEM) that signs the server's certificate to connect with TLS.
# tls_ca_file = "/etc/fleetmon-agent/ca.pem"
# Mutual TLS: the device's certificate and key (PEM). `fleetmon-agent enrol --server URL
# --token TOKEN` makes the key here and writes the certificate (and the CA, if missing).
# tls_cert_file = "/etc/fleetmon-agent/device.pem"
# tls_key_file = "/etc/fleetmon-agent/device.key"
# The server certificate must name the host of `mqtt`.
# MQTT keepalive (its ping also measures the round trip to the server).
keep_alive = "30s"
# Reconnects back off exponentially (jittered) from 500ms up to this.
reconnect_max = "60s"
# Backlog drain rate after a reconnect, batches per second.
max_batches_per_second = 50

[spool]
# Batches wait here until the server acknowledged them.
dir = "/var/lib/fleetmon-agent/spool"
# Bound on the spool; the oldest batches are dropped (and counted) beyond it.
max_bytes = 16777216

[collect]
proc_root = "/proc"
sys_root = "/sys"
etc_root = "/etc"
# Prefix for mount points before statvfs (the host's / when running in a container).
host_root = "/"
# Firmware version for device_info: first line of a file, or of a command's output.
# firmware_file = "/etc/firmware-version"
# firmware_command = "vcgencmd version | tail -1"

[probe]
# Extra TCP-connect probe targets, HOST:PORT. The MQTT server is always probed.
targets = []
# Connects per target per collection, and the timeout of each.
count = 3
timeout = "2s"
"#;

/// Values from the environment and flags that override the file. `None` keeps the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub device_id: Option<String>,
    pub mqtt: Option<String>,
    pub http_url: Option<String>,
    pub interval: Option<Duration>,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: Option<u64>,
    pub proc_root: Option<PathBuf>,
    pub sys_root: Option<PathBuf>,
}

impl Config {
    /// Parses a TOML document; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string().trim().to_owned()))
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Applies environment and flag values on top of the file.
    pub fn apply(&mut self, o: Overrides) {
        let Overrides {
            device_id,
            mqtt,
            http_url,
            interval,
            spool_dir,
            spool_max_bytes,
            proc_root,
            sys_root,
        } = o;
        if let Some(v) = device_id {
            self.device_id = v;
        }
        if let Some(v) = mqtt {
            self.server.mqtt = v;
        }
        if let Some(v) = http_url {
            self.server.http_url = v;
        }
        if let Some(v) = interval {
            self.interval = v;
        }
        if let Some(v) = spool_dir {
            self.spool.dir = v;
        }
        if let Some(v) = spool_max_bytes {
            self.spool.max_bytes = v;
        }
        if let Some(v) = proc_root {
            self.collect.proc_root = v;
        }
        if let Some(v) = sys_root {
            self.collect.sys_root = v;
        }
    }

    /// Fills the device id from the host name when empty, then checks every value.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.device_id.is_empty() {
            let host =
                crate::collect::read_text(&self.collect.proc_root.join("sys/kernel/hostname"))
                    .unwrap_or_default();
            self.device_id = host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
        }
        if !fleetmon_protocol::validate::is_valid_device_id(&self.device_id) {
            return Err(ConfigError::Invalid {
                key: "device_id",
                problem: format!(
                    "{:?} is invalid; use 1 to 128 of A-Z a-z 0-9 . _ : -",
                    self.device_id
                ),
            });
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "interval",
                problem: "must be at least 100ms".into(),
            });
        }
        if self.low_power_interval < self.interval {
            return Err(ConfigError::Invalid {
                key: "low_power_interval",
                problem: "must be at least `interval`".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.low_power_below_charge) {
            return Err(ConfigError::Invalid {
                key: "low_power_below_charge",
                problem: "must be a ratio between 0 and 1".into(),
            });
        }
        if self.mqtt_addr().is_none() {
            return Err(ConfigError::Invalid {
                key: "server.mqtt",
                problem: format!("{:?} is not HOST:PORT", self.server.mqtt),
            });
        }
        if self.spool.max_bytes < 4096 {
            return Err(ConfigError::Invalid {
                key: "spool.max_bytes",
                problem: "must be at least 4096".into(),
            });
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "server.tls_cert_file",
                problem: "set both tls_cert_file and tls_key_file, or neither".into(),
            });
        }
        if self.server.keep_alive < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "server.keep_alive",
                problem: "must be at least 1s".into(),
            });
        }
        if self.server.max_batches_per_second == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_batches_per_second",
                problem: "must be at least 1".into(),
            });
        }
        for t in &self.probe.targets {
            if split_host_port(t).is_none() {
                return Err(ConfigError::Invalid {
                    key: "probe.targets",
                    problem: format!("{t:?} is not HOST:PORT"),
                });
            }
        }
        Ok(self)
    }

    /// `server.mqtt` as (host, port).
    pub fn mqtt_addr(&self) -> Option<(String, u16)> {
        split_host_port(&self.server.mqtt)
    }

    /// The collection roots.
    pub fn roots(&self) -> Roots {
        Roots {
            proc_root: self.collect.proc_root.clone(),
            sys_root: self.collect.sys_root.clone(),
            etc_root: self.collect.etc_root.clone(),
            host_root: self.collect.host_root.clone(),
        }
    }
}

/// `host:port`, `[v6]:port` or an IP socket address.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some((a.ip().to_string(), a.port()));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && !host.contains(':')).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_text_parses_back_to_the_default() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("intervall = \"5s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("intervall"), "{e}");
        let e = Config::from_toml("[spool]\nmax_byte = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_byte"), "{e}");
    }

    #[test]
    fn values_are_validated_with_the_key_named() {
        let c = Config::from_toml("device_id = \"pi 1\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`device_id`"), "{e}");
        let c = Config::from_toml("device_id = \"pi\"\n[server]\nmqtt = \"1883\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`server.mqtt`"), "{e}");
        let e = Config::from_toml("interval = \"ten\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ten"), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut c = Config::from_toml("device_id = \"a\"\ninterval = \"5s\"").unwrap();
        c.apply(Overrides {
            device_id: Some("b".into()),
            spool_max_bytes: Some(8192),
            ..Overrides::default()
        });
        assert_eq!(c.device_id, "b");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.spool.max_bytes, 8192);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.b:1"), Some(("a.b".into(), 1)));
        assert_eq!(split_host_port("[::1]:8"), Some(("::1".into(), 8)));
        assert_eq!(split_host_port("1883"), None);
    }
}
