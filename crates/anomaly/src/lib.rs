//! Anomaly detection for fleet metrics.
//!
//! # Layout
//!
//! - [`detector`]: [`Detector`], an online detector for one series. Each sample costs O(1)
//!   work and the state has a fixed size, so a server can keep one per series.
//! - [`peer`]: [`PeerDetector`], which scores each device of a group (same model and site) by
//!   how far its current value sits from its peers'.
//! - [`stats`]: the small running statistics both are built from.
//! - [`nab`]: running the detector over data laid out like the Numenta Anomaly Benchmark and
//!   scoring the output the way NAB does, so the detector's quality is a number we can track.

pub mod detector;
pub mod nab;
pub mod peer;
pub mod stats;

pub use detector::{Detector, DetectorConfig};
pub use peer::{PeerDetector, PeerScore};
