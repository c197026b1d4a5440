//! What can stop a simulation before it starts or while it collects its results. A broker that
//! is down is not an error: devices keep retrying and the [`crate::Summary`] shows what was
//! acknowledged.

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("simulated device {device} stopped abnormally: {reason}")]
    DeviceTask { device: String, reason: String },
    #[error("writing the ground truth to {path}: {reason}")]
    Truth { path: String, reason: String },
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
}
