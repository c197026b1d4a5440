//! # fleetmon-agent
//!
//! The device agent: reads `/proc` and `/sys`, numbers each collection as a batch, keeps it in
//! a disk spool until the server acknowledged it, and sends it over MQTT (or HTTP).
//!
//! ## Layout
//! - [`collect`]: one file per metric source, all under configurable roots.
//! - [`snapshot`]: one collection as JSON, for `fleetmon-agent snapshot --json`.
//! - [`spool`]: the crash-safe, bounded disk queue of batches (its on-disk format is there).
//! - [`uplink`]: the MQTT link (QoS 1, TLS, backoff, bounded drain), its packet-id outbox, and
//!   the HTTP fallback.
//! - [`probe`]: round-trip, jitter and loss to the server and to configured targets.
//! - [`config`]: the TOML configuration, its commented default and validation.
//! - [`agent`]: the main loop tying them together, with power-aware sampling.
//! - [`enrol`]: trading an enrolment token for a certificate; the key stays on the device.

pub mod agent;
pub mod collect;
pub mod config;
pub mod enrol;
pub mod probe;
pub mod snapshot;
pub mod spool;
pub mod uplink;
