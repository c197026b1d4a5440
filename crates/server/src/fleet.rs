//! The device registry: what the server knows about each device — when it was seen, how it is
//! connected, what it sent, which batch numbers arrived — and whether it is online.
//!
//! A device is online while it has a live MQTT session that spoke for it (published its
//! telemetry or status), or while its last HTTP ingest is younger than the offline timeout.
//! The registry is rebuilt from the WAL on start; connection state starts empty (offline).

use std::collections::{BTreeMap, HashMap};

use fleetmon_protocol::{Batch, SeqSet};
use serde::{Deserialize, Serialize};

/// How a batch reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Mqtt,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Transport::Mqtt => 1,
            Transport::Http => 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Transport::Mqtt),
            2 => Some(Transport::Http),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
}

/// Why a device's MQTT session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The device sent DISCONNECT.
    Graceful,
    /// Nothing arrived within 1.5 × keepalive.
    KeepaliveExpired,
    /// The connection broke (reset, EOF without DISCONNECT).
    ConnectionLost,
    /// The server closed it for a protocol violation or bad payload.
    Rejected,
    /// Another connection took over the client id.
    TakenOver,
    /// The server is shutting down.
    ServerShutdown,
}

/// The last value of one series of a device.
#[derive(Debug, Clone, Serialize)]
pub struct LastValue {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub ts_ms: i64,
    pub value: f64,
}

/// Everything known about one device.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub boot_id: String,
    pub last_transport: Option<Transport>,
    pub batches_received: u64,
    pub batches_duplicate: u64,
    pub batches_rejected: u64,
    pub samples_received: u64,
    /// Sum of the device's `dropped_before` reports: batches lost on the device (spool full).
    pub device_dropped: u64,
    pub seqs: SeqSet,
    /// Keyed by (metric, labels) without the device label.
    pub last_values: BTreeMap<(String, BTreeMap<String, String>), (i64, f64)>,
    pub mqtt_sessions: u32,
    pub http_last_seen_ms: Option<i64>,
    /// Last payload on the device's status topic (`online`, `offline`).
    pub reported_status: Option<String>,
    pub last_disconnect: Option<(i64, DisconnectReason)>,
    pub address: Option<String>,
}

impl Device {
    pub fn status(&self, now_ms: i64, offline_after_ms: i64) -> Status {
        let http_fresh = self
            .http_last_seen_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= offline_after_ms);
        if self.mqtt_sessions > 0 || http_fresh {
            Status::Online
        } else {
            Status::Offline
        }
    }

    /// Records a stored batch.
    pub fn record_batch(&mut self, batch: &Batch, transport: Transport, received_ms: i64) {
        if self.batches_received == 0 && self.batches_duplicate == 0 {
            self.first_seen_ms = received_ms;
        }
        self.seen(received_ms);
        self.boot_id.clone_from(&batch.boot_id);
        self.last_transport = Some(transport);
        self.batches_received += 1;
        self.samples_received += batch.samples.len() as u64;
        self.device_dropped += batch.dropped_before;
        self.seqs.insert(batch.seq);
        for s in &batch.samples {
            let entry = self
                .last_values
                .entry((s.metric.clone(), s.labels.clone()))
                .or_insert((s.ts_ms, s.value));
            if s.ts_ms >= entry.0 {
                *entry = (s.ts_ms, s.value);
            }
        }
    }

    pub fn seen(&mut self, now_ms: i64) {
        if self.first_seen_ms == 0 {
            self.first_seen_ms = now_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    pub fn last_values(&self) -> Vec<LastValue> {
        self.last_values
            .iter()
            .map(|((metric, labels), &(ts_ms, value))| LastValue {
                metric: metric.clone(),
                labels: labels.clone(),
                ts_ms,
                value,
            })
            .collect()
    }
}

/// All devices by id.
#[derive(Debug, Default)]
pub struct Registry {
    devices: HashMap<String, Device>,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn entry(&mut self, id: &str) -> &mut Device {
        self.devices.entry(id.to_owned()).or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Device)> {
        self.devices.iter()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Is `(device, seq)` already stored?
    pub fn is_stored(&self, device: &str, seq: u64) -> bool {
        self.devices
            .get(device)
            .is_some_and(|d| d.seqs.contains(seq))
    }

    pub fn session_opened(&mut self, id: &str, now_ms: i64, address: &str) {
        let d = self.entry(id);
        d.mqtt_sessions += 1;
        d.seen(now_ms);
        d.address = Some(address.to_owned());
    }

    pub fn session_closed(&mut self, id: &str, now_ms: i64, reason: DisconnectReason) {
        let d = self.entry(id);
        d.mqtt_sessions = d.mqtt_sessions.saturating_sub(1);
        if d.mqtt_sessions == 0 {
            d.last_disconnect = Some((now_ms, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_devices_go_offline_after_the_timeout() {
        let mut d = Device {
            http_last_seen_ms: Some(1_000),
            ..Device::default()
        };
        assert_eq!(d.status(1_500, 1_000), Status::Online);
        assert_eq!(d.status(2_001, 1_000), Status::Offline);
        d.mqtt_sessions = 1;
        assert_eq!(d.status(9_999, 1_000), Status::Online);
    }

    #[test]
    fn sessions_count_down_to_offline() {
        let mut r = Registry::default();
        r.session_opened("d", 1, "127.0.0.1:1");
        r.session_opened("d", 2, "127.0.0.1:2");
        r.session_closed("d", 3, DisconnectReason::TakenOver);
        assert_eq!(r.get("d").unwrap().status(3, 0), Status::Online);
        r.session_closed("d", 4, DisconnectReason::Graceful);
        let d = r.get("d").unwrap();
        assert_eq!(d.status(4, 0), Status::Offline);
        assert_eq!(d.last_disconnect, Some((4, DisconnectReason::Graceful)));
    }
}
