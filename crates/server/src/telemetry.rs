//! The server's own metrics, served at `/metrics`. Names are an API: they are defined here and
//! nowhere else, all prefixed `fleetmon_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    pub transport: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub transport: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecurityLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// Every self-metric, registered once.
pub struct Telemetry {
    registry: Registry,
    pub batches: Family<BatchLabels, Counter>,
    pub samples: Counter,
    pub samples_too_old: Counter,
    pub rejected: Family<RejectLabels, Counter>,
    pub delayed: Family<RejectLabels, Counter>,
    pub wal_syncs: Counter,
    pub wal_bytes: Counter,
    pub wal_errors: Counter,
    pub wal_group_batches: Histogram,
    pub mqtt_connections: Gauge,
    pub mqtt_connections_opened: Counter,
    pub mqtt_connections_refused: Family<ReasonLabels, Counter>,
    pub mqtt_connections_delayed: Counter,
    pub mqtt_dropped_deliveries: Counter,
    pub security_events: Family<SecurityLabels, Counter>,
    pub devices: Family<StatusLabels, Gauge>,
    pub store_series: Gauge,
    pub store_samples: Gauge,
    pub store_disk_bytes: Gauge,
    pub wal_disk_bytes: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetmon");
        let t = Telemetry {
            batches: Family::default(),
            samples: Counter::default(),
            samples_too_old: Counter::default(),
            rejected: Family::default(),
            delayed: Family::default(),
            wal_syncs: Counter::default(),
            wal_bytes: Counter::default(),
            wal_errors: Counter::default(),
            wal_group_batches: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            mqtt_connections: Gauge::default(),
            mqtt_connections_opened: Counter::default(),
            mqtt_connections_refused: Family::default(),
            mqtt_connections_delayed: Counter::default(),
            mqtt_dropped_deliveries: Counter::default(),
            security_events: Family::default(),
            devices: Family::default(),
            store_series: Gauge::default(),
            store_samples: Gauge::default(),
            store_disk_bytes: Gauge::default(),
            wal_disk_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "ingest_batches",
            "Batches accepted, by transport and outcome (stored or duplicate)",
            t.batches.clone(),
        );
        r.register("ingest_samples", "Samples stored", t.samples.clone());
        r.register(
            "ingest_samples_too_old",
            "Samples not stored: older than the late-data limit",
            t.samples_too_old.clone(),
        );
        r.register(
            "ingest_rejected",
            "Payloads rejected and never acknowledged, by transport and reason",
            t.rejected.clone(),
        );
        r.register(
            "ingest_delayed",
            "Publishes held back, by transport and reason: over its device's message rate, an MQTT 3.1.1 connection is not read until a token is due",
            t.delayed.clone(),
        );
        r.register(
            "wal_syncs",
            "WAL group commits (one fdatasync each)",
            t.wal_syncs.clone(),
        );
        r.register(
            "wal_written_bytes",
            "Bytes appended to the WAL",
            t.wal_bytes.clone(),
        );
        r.register(
            "wal_errors",
            "WAL group commits that failed (nothing acknowledged)",
            t.wal_errors.clone(),
        );
        r.register(
            "wal_group_batches",
            "Batches per WAL group commit",
            t.wal_group_batches.clone(),
        );
        r.register(
            "wal_disk_bytes",
            "Bytes in WAL segments on disk",
            t.wal_disk_bytes.clone(),
        );
        r.register(
            "mqtt_connections",
            "Open MQTT connections",
            t.mqtt_connections.clone(),
        );
        r.register(
            "mqtt_connections_opened",
            "MQTT connections accepted",
            t.mqtt_connections_opened.clone(),
        );
        r.register(
            "mqtt_connections_refused",
            "MQTT connections refused by the connection limits, by reason (max_connections, max_connections_per_address, connection_rate)",
            t.mqtt_connections_refused.clone(),
        );
        r.register(
            "mqtt_connections_delayed",
            "MQTT connections held back to keep to their address's connection rate",
            t.mqtt_connections_delayed.clone(),
        );
        r.register(
            "mqtt_dropped_deliveries",
            "Messages not delivered to a subscriber whose queue was full",
            t.mqtt_dropped_deliveries.clone(),
        );
        r.register(
            "security_events",
            "Security events by kind (failed handshakes, revoked certificates, ACL violations...; see /api/v1/events)",
            t.security_events.clone(),
        );
        r.register("devices", "Known devices by status", t.devices.clone());
        r.register(
            "store_series",
            "Series in the sample store",
            t.store_series.clone(),
        );
        r.register(
            "store_samples",
            "Samples in the sample store",
            t.store_samples.clone(),
        );
        r.register(
            "store_disk_bytes",
            "Bytes of the sample store on disk (blocks and its WAL)",
            t.store_disk_bytes.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
