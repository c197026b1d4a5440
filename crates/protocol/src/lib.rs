//! # fleetmon wire protocol
//!
//! What a device sends and how the server reads it. Everything that crosses the wire between
//! an agent (or any MQTT/HTTP client) and the server is defined here, and nothing else is.
//!
//! ## Layout
//! - [`batch`]: the domain types, [`Batch`] and [`Sample`], and their JSON form.
//! - [`pb`]: the protobuf messages (prost derive; schema in `proto/fleetmon.proto`), with a
//!   per-batch string table so metric and label names cross the wire once.
//! - [`columnar`]: the body of frame version 2, what the agent sends: columns of varints with
//!   string indices into [`well_known`] and the batch's own table, timestamps as runs, values
//!   in their shortest exact form. [`varint`] has its primitives.
//! - [`well_known`]: the static, append-only string table of frame version 2.
//! - [`codec`]: framing with a CRC32C over the body, content detection (frame version 1 or
//!   2, or JSON), and the typed [`DecodeError`] that says what was wrong.
//! - [`validate`]: limits and naming rules every accepted batch obeys.
//! - [`seqs`]: sets of batch numbers as ranges, for deduplication and acknowledgement records.
//! - [`topic`]: the MQTT topic tree `fleetmon/v1/{device}/...`.
//!
//! The byte-level specification is `docs/protocol.md`.

pub mod batch;
pub mod codec;
pub mod columnar;
pub mod pb;
pub mod seqs;
pub mod topic;
pub mod validate;
pub mod varint;
pub mod well_known;

pub use batch::{Batch, Sample};
pub use codec::{DecodeError, Format, decode, encode_columnar, encode_json, encode_protobuf};
pub use seqs::SeqSet;
pub use topic::{Topic, TopicError};
pub use validate::{Limits, ValidationError};
