//! Limits per device model, from a TOML file (`--device-limits FILE`), and per device from
//! its tags (`temperature_max_celsius`, `link_capacity_bits_per_second`):
//!
//! ```toml
//! [[temperature]]
//! model = "rpi4"           # "*" for every model
//! max_celsius = 80         # critical at or above
//! warning_celsius = 70     # warning at or above (default: 10 below the maximum)
//!
//! [[link]]
//! model = "gateway"        # "*" for every model
//! interface = "wwan0"      # "*" (the default) for every interface
//! capacity_bits_per_second = 10_000_000
//! transmit_bits_per_second = 2_000_000   # optional: the uplink's own capacity
//! receive_bits_per_second = 10_000_000   # optional: the downlink's
//! ```
//!
//! A device's tag wins over its model's entry, a model's entry over `*`, and that over the
//! built-in thresholds. The temperature limit that applies is also written as the derived
//! series `temperature_limit_celsius`, which the built-in `TemperatureOutOfLimits` rule
//! compares with; a link with a capacity gets `network_utilization_ratio`. For links, an entry
//! naming the interface wins over one with `*`, and the model over `*`.

use std::path::Path;

use serde::Deserialize;

use super::Device;
use super::link::Direction;

/// The tag that sets one device's upper temperature limit.
pub const TEMPERATURE_TAG: &str = "temperature_max_celsius";
/// The tag that sets the capacity of every link of one device (both directions).
pub const LINK_CAPACITY_TAG: &str = "link_capacity_bits_per_second";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub temperature: Vec<TemperatureLimit>,
    #[serde(default)]
    pub link: Vec<LinkLimit>,
}

/// The capacity of a model's network link, in bits per second.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLimit {
    pub model: String,
    #[serde(default = "any")]
    pub interface: String,
    pub capacity_bits_per_second: Option<f64>,
    pub receive_bits_per_second: Option<f64>,
    pub transmit_bits_per_second: Option<f64>,
}

fn any() -> String {
    "*".to_owned()
}

impl LinkLimit {
    fn capacity(&self, direction: Direction) -> Option<f64> {
        match direction {
            Direction::Receive => self.receive_bits_per_second,
            Direction::Transmit => self.transmit_bits_per_second,
        }
        .or(self.capacity_bits_per_second)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureLimit {
    pub model: String,
    pub max_celsius: f64,
    pub warning_celsius: Option<f64>,
}

/// The limits that apply to one device: (warning, critical) in °C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temperature {
    pub warning_c: f64,
    pub critical_c: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("device limits {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("device limits {path}: {message}")]
    Parse { path: String, message: String },
}

impl Limits {
    pub fn load(path: &Path) -> Result<Self, LimitsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LimitsError::Read {
            path: shown.clone(),
            source,
        })?;
        let limits: Limits = toml::from_str(&text).map_err(|e| LimitsError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        for t in &limits.temperature {
            let warning = t.warning_celsius.unwrap_or(t.max_celsius - 10.0);
            if !t.max_celsius.is_finite() || !warning.is_finite() || warning > t.max_celsius {
                return Err(LimitsError::Parse {
                    path: shown,
                    message: format!(
                        "temperature limit of model {:?}: warning_celsius ({warning}) must be a number at most max_celsius ({})",
                        t.model, t.max_celsius
                    ),
                });
            }
        }
        for l in &limits.link {
            let given = [
                l.capacity_bits_per_second,
                l.receive_bits_per_second,
                l.transmit_bits_per_second,
            ];
            let both = [Direction::Receive, Direction::Transmit];
            if given.iter().flatten().any(|c| !c.is_finite() || *c <= 0.0)
                || both.iter().any(|d| l.capacity(*d).is_none())
            {
                return Err(LimitsError::Parse {
                    path: shown,
                    message: format!(
                        "link of model {:?} interface {:?}: capacity_bits_per_second (or both receive_ and transmit_bits_per_second) must be given as positive numbers",
                        l.model, l.interface
                    ),
                });
            }
        }
        Ok(limits)
    }

    /// The capacity of `d`'s link `interface` in `direction`, in bits per second: its tag,
    /// else the most specific entry (model and interface over `*`).
    pub fn link_capacity(&self, d: &Device, interface: &str, direction: Direction) -> Option<f64> {
        if let Some(c) = d
            .tags
            .get(LINK_CAPACITY_TAG)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c > 0.0)
        {
            return Some(c);
        }
        let model = d.tag_or_info("model");
        let score = |l: &LinkLimit| -> Option<u8> {
            let m = if Some(l.model.as_str()) == model {
                2
            } else if l.model == "*" {
                0
            } else {
                return None;
            };
            let i = if l.interface == interface {
                1
            } else if l.interface == "*" {
                0
            } else {
                return None;
            };
            Some(m + i)
        };
        self.link
            .iter()
            .filter_map(|l| score(l).map(|s| (s, l)))
            .max_by_key(|(s, _)| *s)
            .and_then(|(_, l)| l.capacity(direction))
    }

    /// The configured limit of `d` (its tag, else its model's entry, else `*`), if any.
    pub fn temperature(&self, d: &Device) -> Option<Temperature> {
        if let Some(max) = d
            .tags
            .get(TEMPERATURE_TAG)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
        {
            return Some(Temperature {
                warning_c: max - 10.0,
                critical_c: max,
            });
        }
        let model = d.tag_or_info("model");
        let entry = self
            .temperature
            .iter()
            .find(|t| Some(t.model.as_str()) == model)
            .or_else(|| self.temperature.iter().find(|t| t.model == "*"))?;
        Some(Temperature {
            warning_c: entry.warning_celsius.unwrap_or(entry.max_celsius - 10.0),
            critical_c: entry.max_celsius,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_over_model_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[[temperature]]\nmodel = \"rpi4\"\nmax_celsius = 85\n\n[[temperature]]\nmodel = \"*\"\nmax_celsius = 60\nwarning_celsius = 55\n",
        )
        .unwrap();
        let limits = Limits::load(&path).unwrap();
        let mut d = Device::default();
        assert_eq!(
            limits.temperature(&d),
            Some(Temperature {
                warning_c: 55.0,
                critical_c: 60.0
            })
        );
        d.tags.insert("model".into(), "rpi4".into());
        assert_eq!(limits.temperature(&d).unwrap().critical_c, 85.0);
        d.tags.insert(TEMPERATURE_TAG.into(), "95".into());
        assert_eq!(limits.temperature(&d).unwrap().critical_c, 95.0);

        std::fs::write(
            &path,
            "[[temperature]]\nmodel = \"x\"\nmax_celsius = 50\nwarning_celsius = 70\n",
        )
        .unwrap();
        let e = Limits::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("limits.toml") && e.contains("warning_celsius"),
            "{e}"
        );
        std::fs::write(&path, "[[temperature]]\nmodel = \"x\"\nmax = 50\n").unwrap();
        assert!(Limits::load(&path).unwrap_err().to_string().contains("max"));
    }

    #[test]
    fn link_capacity_tag_over_interface_over_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[[link]]\nmodel = \"*\"\ncapacity_bits_per_second = 100_000_000\n\n\
             [[link]]\nmodel = \"gateway\"\ninterface = \"wwan0\"\ncapacity_bits_per_second = 10e6\ntransmit_bits_per_second = 2e6\n\n\
             [[link]]\nmodel = \"gateway\"\ncapacity_bits_per_second = 1e9\n",
        )
        .unwrap();
        let limits = Limits::load(&path).unwrap();
        let mut d = Device::default();
        let cap = |d: &Device, i: &str, dir| limits.link_capacity(d, i, dir);
        assert_eq!(cap(&d, "eth0", Direction::Receive), Some(100e6));
        d.tags.insert("model".into(), "gateway".into());
        assert_eq!(cap(&d, "eth0", Direction::Receive), Some(1e9));
        assert_eq!(cap(&d, "wwan0", Direction::Receive), Some(10e6));
        assert_eq!(cap(&d, "wwan0", Direction::Transmit), Some(2e6));
        d.tags.insert(LINK_CAPACITY_TAG.into(), "5e5".into());
        assert_eq!(cap(&d, "wwan0", Direction::Transmit), Some(5e5));
        assert_eq!(
            Limits::default().link_capacity(&Device::default(), "eth0", Direction::Receive),
            None
        );

        for bad in [
            "[[link]]\nmodel = \"x\"\n",
            "[[link]]\nmodel = \"x\"\ncapacity_bits_per_second = -1\n",
            "[[link]]\nmodel = \"x\"\nreceive_bits_per_second = 5\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Limits::load(&path).unwrap_err().to_string();
            assert!(e.contains("capacity_bits_per_second"), "{bad}: {e}");
        }
    }
}
