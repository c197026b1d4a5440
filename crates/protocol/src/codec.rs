//! Encoding and decoding of a [`Batch`] payload, the same on MQTT and HTTP.
//!
//! Three forms are accepted and told apart by their first bytes:
//! - **frame**: `"FMB"`, a version byte, CRC32C of the body (u32 little-endian), then the
//!   body. The checksum covers the body only. Version `0x01`: the body is a protobuf
//!   `fleetmon.v1.Batch` ([`crate::pb`]). Version `0x02`: the columnar body
//!   ([`crate::columnar`]), a third of the size; what the agent sends.
//! - **JSON**: a UTF-8 object (leading whitespace allowed) with the fields of [`Batch`]. JSON has
//!   no checksum of its own; it relies on the transport (TCP, TLS) for integrity.
//!
//! Decoding never panics on any input; every failure is a [`DecodeError`] that says what was
//! wrong, and every decoded batch has passed [`Batch::validate`].

use prost::Message;

use crate::batch::Batch;
use crate::columnar::{self, ColumnarError};
use crate::pb::{PbBatch, TableError};
use crate::validate::{Limits, ValidationError};

/// The frame's first three bytes.
pub const MAGIC: &[u8; 3] = b"FMB";
/// Frame version of the protobuf body.
pub const VERSION_PROTOBUF: u8 = 1;
/// Frame version of the columnar body.
pub const VERSION_COLUMNAR: u8 = 2;
/// Magic, version and checksum.
pub const HEADER_LEN: usize = 8;

/// Which spelling a payload used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Frame version 1, protobuf body.
    Protobuf,
    /// Frame version 2, columnar body.
    Columnar,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Protobuf => "protobuf",
            Format::Columnar => "columnar",
            Format::Json => "json",
        }
    }
}

/// Why a payload was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is {size} bytes; at most {max} accepted")]
    TooLarge { size: usize, max: usize },
    #[error(
        "payload is neither JSON (starts with `{{`) nor a fleetmon protobuf frame (starts with \"FMB\"); first byte is 0x{first:02x}"
    )]
    UnknownFormat { first: u8 },
    #[error("frame version {0} is not supported; this server reads versions 1 and 2")]
    UnsupportedVersion(u8),
    #[error("frame is {0} bytes, shorter than its 8-byte header")]
    Truncated(usize),
    #[error("checksum mismatch: frame says crc32c {expected:#010x}, body has {actual:#010x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("protobuf body does not decode: {0}")]
    Protobuf(String),
    #[error("protobuf body: {0}")]
    Table(#[from] TableError),
    #[error("columnar (v2) body: {0}")]
    Columnar(#[from] ColumnarError),
    #[error("JSON does not decode: {0}")]
    Json(String),
    #[error("batch is invalid: {0}")]
    Invalid(#[from] ValidationError),
}

impl DecodeError {
    /// A short stable name for counting rejects by kind (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::UnknownFormat { .. } => "unknown_format",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Checksum { .. } => "checksum",
            DecodeError::Protobuf(_) | DecodeError::Table(_) => "protobuf",
            DecodeError::Columnar(_) => "columnar",
            DecodeError::Json(_) => "json",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// Encodes `batch` as a checksummed frame of version 1 (protobuf body), as agents before
/// frame version 2 sent.
pub fn encode_protobuf(batch: &Batch) -> Vec<u8> {
    frame(VERSION_PROTOBUF, &PbBatch::from(batch).encode_to_vec())
}

/// Encodes `batch` as a checksummed frame of version 2 (columnar body).
pub fn encode_columnar(batch: &Batch) -> Vec<u8> {
    frame(VERSION_COLUMNAR, &columnar::encode(batch))
}

fn frame(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Encodes `batch` as JSON.
pub fn encode_json(batch: &Batch) -> Vec<u8> {
    // Serializing plain structs of strings, numbers and string maps cannot fail, except for
    // non-finite floats, which JSON cannot spell: those become `null` and fail to decode.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// Detects the form of `payload`, decodes and validates it.
pub fn decode(payload: &[u8], limits: &Limits) -> Result<(Batch, Format), DecodeError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            max: limits.max_payload_bytes,
        });
    }
    let first = payload
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
        .ok_or(DecodeError::Empty)?;
    let (batch, format) = if payload.starts_with(MAGIC) {
        decode_frame(payload, limits)?
    } else if first == b'{' {
        let batch = serde_json::from_slice::<Batch>(payload)
            .map_err(|e| DecodeError::Json(e.to_string()))?;
        (batch, Format::Json)
    } else {
        return Err(DecodeError::UnknownFormat { first });
    };
    batch.validate(limits)?;
    Ok((batch, format))
}

fn decode_frame(payload: &[u8], limits: &Limits) -> Result<(Batch, Format), DecodeError> {
    if payload.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(payload.len()));
    }
    let (header, body) = payload.split_at(HEADER_LEN);
    let version = header[3];
    if version != VERSION_PROTOBUF && version != VERSION_COLUMNAR {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(DecodeError::Checksum { expected, actual });
    }
    if version == VERSION_COLUMNAR {
        return Ok((columnar::decode(body, limits)?, Format::Columnar));
    }
    let pb = PbBatch::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    Ok((Batch::try_from(pb)?, Format::Protobuf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn sample_batch() -> Batch {
        Batch {
            device: "pi-1".into(),
            boot_id: "boot-a".into(),
            seq: 7,
            sent_at_ms: 1_700_000_000_000,
            dropped_before: 2,
            samples: vec![
                Sample::new("cpu_usage_ratio", 1_700_000_000_000, 0.25),
                Sample::new("temperature_celsius", 1_700_000_000_000, 48.5)
                    .with_label("sensor", "cpu"),
            ],
        }
    }

    #[test]
    fn frame_layout_is_magic_version_crc_body() {
        let bytes = encode_protobuf(&sample_batch());
        assert_eq!(&bytes[..4], b"FMB\x01");
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&bytes[8..]));
    }

    #[test]
    fn a_flipped_body_bit_fails_the_checksum() {
        let mut bytes = encode_protobuf(&sample_batch());
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            decode(&bytes, &Limits::default()),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn hand_written_json_decodes() {
        let json = br#" {"device":"mcu-7","seq":1,"samples":[
            {"metric":"temperature_celsius","labels":{"sensor":"probe"},"ts_ms":1700000000000,"value":21.5}]}"#;
        let (batch, format) = decode(json, &Limits::default()).unwrap();
        assert_eq!(format, Format::Json);
        assert_eq!(batch.device, "mcu-7");
        assert_eq!(batch.boot_id, "");
        assert_eq!(batch.samples[0].labels["sensor"], "probe");
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let limits = Limits::default();
        let err = |p: &[u8]| decode(p, &limits).unwrap_err().to_string();
        assert_eq!(err(b""), "payload is empty");
        assert!(err(b"hello").contains("first byte is 0x68"));
        assert!(err(b"FMB\x03abcd").contains("version 3 is not supported"));
        assert!(err(b"FMB\x02ab").contains("shorter than its 8-byte header"));
        assert!(err(b"FMB\x01ab").contains("shorter than its 8-byte header"));
        assert!(err(br#"{"device":"d","seq":1}"#).contains("missing field `samples`"));
        assert!(
            err(br#"{"device":"d","seq":1,"samples":[],"extra":1}"#)
                .contains("unknown field `extra`")
        );
        assert!(
            err(br#"{"device":"a b","seq":1,"samples":[]}"#)
                .contains("device id \"a b\" is invalid")
        );
        let big = vec![b' '; limits.max_payload_bytes + 1];
        assert!(err(&big).contains("at most 1048576 accepted"));
    }
}
