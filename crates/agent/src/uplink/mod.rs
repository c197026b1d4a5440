//! Getting batches from the spool to the server.
//!
//! - [`mqtt`]: the MQTT link (rumqttc, QoS 1): birth and Last Will on the status topic,
//!   batches from the spool at a bounded rate, removal from the spool on PUBACK, reconnect
//!   with jittered exponential backoff, commands on the control topic.
//! - [`http`]: the HTTP fallback (`POST /api/v1/ingest`) used while MQTT is down.
//! - [`outbox`]: packet ids ↔ messages on the current connection.
//! - [`tls`]: the rustls client configuration (ring provider, configured CA, optional mTLS).
//! - [`backoff`]: the reconnect delays.

pub mod backoff;
pub mod http;
pub mod mqtt;
pub mod outbox;
pub mod tls;
