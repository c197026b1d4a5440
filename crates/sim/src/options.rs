//! How a simulation is asked for ([`SimOptions`]) and how those options are checked before any
//! device starts, so a mistake is reported once, with the option's name, instead of by a
//! thousand failing devices.

use std::path::PathBuf;
use std::time::Duration;

use fleetmon_protocol::Format;
use fleetmon_protocol::validate::is_valid_device_id;

use crate::error::SimError;
use crate::faults::Faults;

/// What to simulate and where to send it.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `HOST:PORT` of the MQTT endpoint (a fleetmon server or any MQTT 3.1.1 broker).
    pub mqtt: String,
    /// Number of simulated devices.
    pub devices: usize,
    /// Devices sharing one MQTT connection, as sensor nodes behind a gateway do (1: each
    /// device has its own). See `connection.rs` for who speaks for whom.
    pub devices_per_connection: usize,
    /// Time between two batches of one device.
    pub interval: Duration,
    /// Stop producing after this long (from the start of the run).
    pub duration: Option<Duration>,
    /// Stop producing after this many batches per device. With `duration` too, whichever comes
    /// first; with neither, the run lasts until the `stop` future of [`crate::run`] resolves.
    /// A batch held back because too many are unacknowledged counts too, so a run against a
    /// server that never answers still ends.
    pub batches: Option<u64>,
    /// Seed of every pseudo-random choice: device models, sites, boot ids and values.
    pub seed: u64,
    /// Device ids are `{prefix}{index:05}`, e.g. `sim-00007`.
    pub prefix: String,
    /// Sequence number of each device's first batch. A real agent persists its seq across
    /// restarts; a second run against the same server must start past the first run's seqs
    /// or dedupe discards it (the CLI starts at the current Unix time in milliseconds).
    pub first_seq: u64,
    /// First seq of particular devices, overriding `first_seq`: where each device left off
    /// in an earlier run (the demo resumes its fleet from what the server stored).
    pub resume: std::collections::BTreeMap<String, u64>,
    /// Payload spelling: protobuf frames (the default) or JSON.
    pub format: Format,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// At the end, how long to wait for outstanding acknowledgements.
    pub drain_timeout: Duration,
    /// Faults to inject; the default injects none.
    pub faults: Faults,
    /// Where to write the ground truth ([`crate::Truth`]) as JSON at the end of the run.
    pub truth: Option<PathBuf>,
    /// Value faults (overheating, a failing battery, a filling disk...) on chosen devices.
    pub scenario: Option<crate::scenario::Scenario>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            mqtt: "127.0.0.1:1883".to_owned(),
            devices: 10,
            devices_per_connection: 1,
            interval: Duration::from_secs(10),
            duration: None,
            batches: None,
            seed: 1,
            prefix: "sim-".to_owned(),
            first_seq: 1,
            resume: std::collections::BTreeMap::new(),
            format: Format::Protobuf,
            progress: false,
            drain_timeout: Duration::from_secs(10),
            faults: Faults::default(),
            truth: None,
            scenario: None,
        }
    }
}

/// The MQTT endpoint split into the parts `rumqttc` wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl SimOptions {
    /// How many MQTT connections the fleet uses.
    pub fn connections(&self) -> usize {
        self.devices.div_ceil(self.devices_per_connection.max(1))
    }

    /// The device id of device number `index`.
    pub fn device_id(&self, index: usize) -> String {
        format!("{}{index:05}", self.prefix)
    }

    /// Checks every option; returns the parsed endpoint.
    pub(crate) fn validate(&self) -> Result<Endpoint, SimError> {
        let endpoint = parse_endpoint(&self.mqtt)?;
        if self.devices == 0 {
            return Err(invalid("devices", "must be at least 1".to_owned()));
        }
        if self.devices_per_connection == 0 {
            return Err(invalid(
                "devices_per_connection",
                "must be at least 1".to_owned(),
            ));
        }
        if self.devices_per_connection > 1 && self.faults.outage.is_some() {
            return Err(invalid(
                "outage",
                format!(
                    "needs one device per connection (devices_per_connection is {}): an outage drops a device's own connection",
                    self.devices_per_connection
                ),
            ));
        }
        if self.interval.is_zero() {
            return Err(invalid(
                "interval",
                "must be greater than zero, e.g. 10s".to_owned(),
            ));
        }
        if self.first_seq == 0 {
            return Err(invalid("first_seq", "must be at least 1".to_owned()));
        }
        if self.batches == Some(0) {
            return Err(invalid("batches", "must be at least 1 when set".to_owned()));
        }
        self.faults.validate()?;
        if let Some(s) = &self.scenario {
            s.check_fleet(self.devices)?;
        }
        // The longest id decides: if it is valid, every shorter one made the same way is.
        let last = self.device_id(self.devices - 1);
        if !is_valid_device_id(&last) {
            return Err(invalid(
                "prefix",
                format!(
                    "{:?} makes device ids like {last:?}, which are invalid: use 1 to 128 of A-Z a-z 0-9 . _ : -",
                    self.prefix
                ),
            ));
        }
        Ok(endpoint)
    }
}

fn invalid(option: &'static str, reason: String) -> SimError {
    SimError::InvalidOption { option, reason }
}

fn parse_endpoint(mqtt: &str) -> Result<Endpoint, SimError> {
    let bad = || {
        invalid(
            "mqtt",
            format!("invalid endpoint {mqtt:?}; expected HOST:PORT, e.g. 127.0.0.1:1883"),
        )
    };
    let (host, port) = mqtt.rsplit_once(':').ok_or_else(bad)?;
    // `[::1]:1883` is how an IPv6 address is written with a port; rumqttc wants it bare.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_what_is_expected() {
        assert_eq!(
            parse_endpoint("127.0.0.1:1883").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(parse_endpoint("[::1]:8883").unwrap().host, "::1");
        let err = parse_endpoint("1883").unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `mqtt`: invalid endpoint \"1883\"; expected HOST:PORT, e.g. 127.0.0.1:1883"
        );
        assert!(parse_endpoint("host:0").is_err());
        assert!(parse_endpoint(":1883").is_err());
        assert!(parse_endpoint("host:99999").is_err());
    }

    #[test]
    fn options_are_checked() {
        let ok = SimOptions::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.device_id(7), "sim-00007");
        let bad_prefix = SimOptions {
            prefix: "a/b".into(),
            ..SimOptions::default()
        };
        assert!(matches!(
            bad_prefix.validate(),
            Err(SimError::InvalidOption {
                option: "prefix",
                ..
            })
        ));
        let no_devices = SimOptions {
            devices: 0,
            ..SimOptions::default()
        };
        assert!(no_devices.validate().is_err());
        let zero_interval = SimOptions {
            interval: Duration::ZERO,
            ..SimOptions::default()
        };
        assert!(zero_interval.validate().is_err());
    }

    #[test]
    fn shared_connections_are_checked() {
        let shared = SimOptions {
            devices: 250,
            devices_per_connection: 100,
            ..SimOptions::default()
        };
        assert!(shared.validate().is_ok());
        assert_eq!(shared.connections(), 3);
        let none = SimOptions {
            devices_per_connection: 0,
            ..SimOptions::default()
        };
        assert_eq!(
            none.validate().unwrap_err().to_string(),
            "option `devices_per_connection`: must be at least 1"
        );
        let outage = SimOptions {
            faults: Faults {
                outage: Some(Duration::from_secs(10)),
                ..Faults::default()
            },
            ..shared
        };
        assert_eq!(
            outage.validate().unwrap_err().to_string(),
            "option `outage`: needs one device per connection (devices_per_connection is 100): an outage drops a device's own connection"
        );
    }
}
