//! Topic ACLs for a device authenticated by its certificate: it publishes only under its own
//! id (telemetry, status, control replies — not its own control topic, which is the server's
//! to write), subscribes only to its own control topic, and its MQTT client id and Last Will
//! are its own too (a client id is a session: another device's would take it over).

use fleetmon_protocol::Topic;

/// Why a device may not do something; the message is the event's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("publish to {topic:?}: a device publishes only under its own id {device:?}")]
    Publish { device: String, topic: String },
    #[error("subscribe to {filter:?}: a device subscribes only to {allowed:?}")]
    Subscribe { filter: String, allowed: String },
    #[error("client id {client_id:?}: a device connects with its own id {device:?}")]
    ClientId { device: String, client_id: String },
}

/// May `device` publish to `topic` (already parsed)?
pub fn publish(device: &str, topic: &Topic<'_>, raw: &str) -> Result<(), Denied> {
    let own = topic.device() == device;
    match topic {
        Topic::Telemetry { .. } | Topic::Status { .. } | Topic::ControlReply { .. } if own => {
            Ok(())
        }
        _ => Err(Denied::Publish {
            device: device.to_owned(),
            topic: raw.to_owned(),
        }),
    }
}

/// May `device` subscribe to `filter`?
pub fn subscribe(device: &str, filter: &str) -> Result<(), Denied> {
    let allowed = Topic::control(device);
    if filter == allowed {
        Ok(())
    } else {
        Err(Denied::Subscribe {
            filter: filter.to_owned(),
            allowed,
        })
    }
}

/// The client id a device's session uses: its own id (an empty one becomes it).
pub fn client_id(device: &str, requested: &str) -> Result<String, Denied> {
    if requested.is_empty() || requested == device {
        Ok(device.to_owned())
    } else {
        Err(Denied::ClientId {
            device: device.to_owned(),
            client_id: requested.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubs(device: &str, topic: &str) -> bool {
        publish(device, &Topic::parse(topic).unwrap(), topic).is_ok()
    }

    #[test]
    fn a_device_stays_under_its_own_id() {
        assert!(pubs("pi-1", "fleetmon/v1/pi-1/telemetry"));
        assert!(pubs("pi-1", "fleetmon/v1/pi-1/status"));
        assert!(pubs("pi-1", "fleetmon/v1/pi-1/control/reply"));
        assert!(!pubs("pi-1", "fleetmon/v1/pi-1/control"));
        assert!(!pubs("pi-1", "fleetmon/v1/pi-2/telemetry"));
        assert!(subscribe("pi-1", "fleetmon/v1/pi-1/control").is_ok());
        for f in [
            "fleetmon/v1/pi-2/control",
            "fleetmon/v1/+/control",
            "#",
            "fleetmon/v1/pi-1/#",
        ] {
            assert!(subscribe("pi-1", f).is_err(), "{f}");
        }
        assert_eq!(client_id("pi-1", "").unwrap(), "pi-1");
        assert_eq!(client_id("pi-1", "pi-1").unwrap(), "pi-1");
        assert!(client_id("pi-1", "pi-2").is_err());
    }
}
