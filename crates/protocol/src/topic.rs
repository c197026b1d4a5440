//! The MQTT topic tree of protocol v1:
//!
//! | topic | direction | QoS | payload |
//! |---|---|---|---|
//! | `fleetmon/v1/{device}/telemetry` | device → server | 1 | a [`crate::Batch`] |
//! | `fleetmon/v1/{device}/status` | device → server, retained | 1 | `online` (birth) / `offline` (Last Will, graceful) |
//! | `fleetmon/v1/{device}/control` | server → device | 1 | a command (JSON) |
//! | `fleetmon/v1/{device}/control/reply` | device → server | 1 | the command's result (JSON) |

use crate::validate::is_valid_device_id;

/// The first two levels of every fleetmon topic.
pub const PREFIX: &str = "fleetmon/v1/";

/// A parsed fleetmon topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    Telemetry { device: &'a str },
    Status { device: &'a str },
    Control { device: &'a str },
    ControlReply { device: &'a str },
}

/// Why a topic is not part of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is outside the fleetmon tree; expected fleetmon/v1/{{device}}/telemetry")]
    Foreign(String),
    #[error(
        "topic {topic:?}: device id {device:?} is invalid: use 1 to 128 of A-Z a-z 0-9 . _ : -"
    )]
    DeviceId { topic: String, device: String },
    #[error("topic {0:?}: unknown channel; expected telemetry, status, control or control/reply")]
    UnknownChannel(String),
}

impl<'a> Topic<'a> {
    /// Parses `topic`, checking the device id.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(PREFIX)
            .ok_or_else(|| TopicError::Foreign(topic.to_owned()))?;
        let (device, channel) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::UnknownChannel(topic.to_owned()))?;
        if !is_valid_device_id(device) {
            return Err(TopicError::DeviceId {
                topic: topic.to_owned(),
                device: device.to_owned(),
            });
        }
        match channel {
            "telemetry" => Ok(Topic::Telemetry { device }),
            "status" => Ok(Topic::Status { device }),
            "control" => Ok(Topic::Control { device }),
            "control/reply" => Ok(Topic::ControlReply { device }),
            _ => Err(TopicError::UnknownChannel(topic.to_owned())),
        }
    }

    /// The device the topic belongs to.
    pub fn device(&self) -> &'a str {
        match *self {
            Topic::Telemetry { device }
            | Topic::Status { device }
            | Topic::Control { device }
            | Topic::ControlReply { device } => device,
        }
    }

    /// `fleetmon/v1/{device}/telemetry`.
    pub fn telemetry(device: &str) -> String {
        format!("{PREFIX}{device}/telemetry")
    }

    /// `fleetmon/v1/{device}/status`.
    pub fn status(device: &str) -> String {
        format!("{PREFIX}{device}/status")
    }

    /// `fleetmon/v1/{device}/control`.
    pub fn control(device: &str) -> String {
        format!("{PREFIX}{device}/control")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_channel() {
        assert_eq!(
            Topic::parse("fleetmon/v1/pi-1/telemetry"),
            Ok(Topic::Telemetry { device: "pi-1" })
        );
        assert_eq!(
            Topic::parse("fleetmon/v1/pi-1/control/reply"),
            Ok(Topic::ControlReply { device: "pi-1" })
        );
        assert_eq!(Topic::parse(&Topic::status("x")).unwrap().device(), "x");
    }

    #[test]
    fn rejects_what_is_not_ours() {
        assert!(matches!(
            Topic::parse("home/kitchen"),
            Err(TopicError::Foreign(_))
        ));
        assert!(matches!(
            Topic::parse("fleetmon/v1/pi-1/telemetryx"),
            Err(TopicError::UnknownChannel(_))
        ));
        assert!(matches!(
            Topic::parse("fleetmon/v1/+/telemetry"),
            Err(TopicError::DeviceId { .. })
        ));
        assert!(matches!(
            Topic::parse("fleetmon/v1/pi-1"),
            Err(TopicError::UnknownChannel(_))
        ));
    }
}
