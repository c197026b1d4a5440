//! What every accepted batch obeys: sizes, counts and Prometheus naming rules. A batch that
//! breaks one is rejected whole, with an error that names the field and what was wrong.

use crate::batch::Batch;

/// Bounds on a batch. The defaults suit a device sending every few seconds to every minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded payload accepted, in bytes.
    pub max_payload_bytes: usize,
    pub max_samples: usize,
    pub max_labels: usize,
    /// Longest metric or label name, in bytes.
    pub max_name_len: usize,
    /// Longest label value, in bytes.
    pub max_label_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1 << 20,
            max_samples: 10_000,
            max_labels: 32,
            max_name_len: 200,
            max_label_value_len: 1024,
        }
    }
}

/// A rule a batch broke. `sample` is the index in `samples`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("device id {0:?} is invalid: use 1 to 128 of A-Z a-z 0-9 . _ : -")]
    DeviceId(String),
    #[error("boot_id is {0} bytes; at most 128 allowed")]
    BootIdTooLong(usize),
    #[error("batch has no samples")]
    NoSamples,
    #[error("batch has {count} samples; at most {max} allowed")]
    TooManySamples { count: usize, max: usize },
    #[error(
        "sample {sample}: metric name {name:?} is invalid: expected [a-zA-Z_:][a-zA-Z0-9_:]*, at most {max} bytes"
    )]
    MetricName {
        sample: usize,
        name: String,
        max: usize,
    },
    #[error(
        "sample {sample}: label name {name:?} is invalid: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __, at most {max} bytes"
    )]
    LabelName {
        sample: usize,
        name: String,
        max: usize,
    },
    #[error("sample {sample}: label `device` is set by the server from the batch; remove it")]
    DeviceLabel { sample: usize },
    #[error("sample {sample}: value of label `{name}` is {len} bytes; at most {max} allowed")]
    LabelValueTooLong {
        sample: usize,
        name: String,
        len: usize,
        max: usize,
    },
    #[error("sample {sample}: {count} labels; at most {max} allowed")]
    TooManyLabels {
        sample: usize,
        count: usize,
        max: usize,
    },
    #[error("sample {sample}: ts_ms {ts_ms} is negative; expected ms since the Unix epoch")]
    NegativeTimestamp { sample: usize, ts_ms: i64 },
}

/// True when `id` can name a device (and so a topic level and a label value).
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// True when `name` is a valid Prometheus metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// True when `name` is a valid Prometheus label name that is not reserved (`__` prefix).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    !name.starts_with("__")
        && matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Batch {
    /// Checks the batch against `limits` and the naming rules.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        if !is_valid_device_id(&self.device) {
            return Err(ValidationError::DeviceId(self.device.clone()));
        }
        if self.boot_id.len() > 128 {
            return Err(ValidationError::BootIdTooLong(self.boot_id.len()));
        }
        if self.samples.is_empty() {
            return Err(ValidationError::NoSamples);
        }
        if self.samples.len() > limits.max_samples {
            return Err(ValidationError::TooManySamples {
                count: self.samples.len(),
                max: limits.max_samples,
            });
        }
        for (i, s) in self.samples.iter().enumerate() {
            if s.metric.len() > limits.max_name_len || !is_valid_metric_name(&s.metric) {
                return Err(ValidationError::MetricName {
                    sample: i,
                    name: s.metric.clone(),
                    max: limits.max_name_len,
                });
            }
            if s.ts_ms < 0 {
                return Err(ValidationError::NegativeTimestamp {
                    sample: i,
                    ts_ms: s.ts_ms,
                });
            }
            if s.labels.len() > limits.max_labels {
                return Err(ValidationError::TooManyLabels {
                    sample: i,
                    count: s.labels.len(),
                    max: limits.max_labels,
                });
            }
            for (name, value) in &s.labels {
                if name.len() > limits.max_name_len || !is_valid_label_name(name) {
                    return Err(ValidationError::LabelName {
                        sample: i,
                        name: name.clone(),
                        max: limits.max_name_len,
                    });
                }
                if name == "device" {
                    return Err(ValidationError::DeviceLabel { sample: i });
                }
                if value.len() > limits.max_label_value_len {
                    return Err(ValidationError::LabelValueTooLong {
                        sample: i,
                        name: name.clone(),
                        len: value.len(),
                        max: limits.max_label_value_len,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn batch(samples: Vec<Sample>) -> Batch {
        Batch {
            device: "pi-042".into(),
            boot_id: String::new(),
            seq: 0,
            sent_at_ms: 0,
            dropped_before: 0,
            samples,
        }
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(is_valid_metric_name("node:cpu_usage_ratio"));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("core"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
        assert!(is_valid_device_id("site-3.gw_1"));
        assert!(!is_valid_device_id("a/b"));
        assert!(!is_valid_device_id("a+"));
        assert!(!is_valid_device_id(&"x".repeat(129)));
    }

    #[test]
    fn errors_name_the_sample_and_field() {
        let b = batch(vec![
            Sample::new("ok", 1, 1.0),
            Sample::new("ok", 1, 1.0).with_label("bad-name", "v"),
        ]);
        let err = b.validate(&Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sample 1: label name \"bad-name\" is invalid: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __, at most 200 bytes"
        );
        assert_eq!(
            batch(vec![]).validate(&Limits::default()),
            Err(ValidationError::NoSamples)
        );
        let b = batch(vec![Sample::new("m", 1, 1.0).with_label("device", "x")]);
        assert_eq!(
            b.validate(&Limits::default()),
            Err(ValidationError::DeviceLabel { sample: 0 })
        );
    }
}
