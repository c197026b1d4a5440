//! Environment limits per device model, from a TOML file (`--device-limits FILE`), and per
//! device from its `temperature_max_celsius` tag:
//!
//! ```toml
//! [[temperature]]
//! model = "rpi4"           # "*" for every model
//! max_celsius = 80         # critical at or above
//! warning_celsius = 70     # warning at or above (default: 10 below the maximum)
//! ```
//!
//! A device's tag wins over its model's entry, a model's entry over `*`, and that over the
//! built-in thresholds. The limit that applies is also written as the derived series
//! `temperature_limit_celsius`, which the built-in `TemperatureOutOfLimits` rule compares with.

use std::path::Path;

use serde::Deserialize;

use super::Device;

/// The tag that sets one device's upper temperature limit.
pub const TEMPERATURE_TAG: &str = "temperature_max_celsius";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub temperature: Vec<TemperatureLimit>,
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
        Ok(limits)
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
}
