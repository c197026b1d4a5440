//! Column codecs for sealed data: a series' samples in a block (and rollup columns) are stored
//! with whichever of two encodings is smaller for that series, judged on a sample of it
//! ([`SAMPLE_LEN`] samples from its start; short series are encoded both ways):
//!
//! - `1` Gorilla ([`crate::chunk`]): one interleaved bit stream; best for tiny series, where
//!   pco's per-chunk header would dominate.
//! - `2` pco (<https://github.com/pcodec/pcodec>): two columns, `len(ts): u32 LE`, the
//!   timestamps as pco `i64`, then the values as pco `f64`. On fleet data (10 020 series × 720
//!   points, `benches/codec.rs`) pco needs about a third fewer bytes than Gorilla: it spends
//!   ~0.6 bytes per jittered timestamp where Gorilla's delta-of-delta spends 2, and it finds
//!   integer-valued and low-precision floats.

use pco::standalone::{simple_compress, simple_decompress};
use pco::{ChunkConfig, DeltaSpec, ModeSpec};

use crate::chunk::{Decoder, encode};

/// Gorilla stream.
pub const GORILLA: u8 = 1;
/// Two pco columns.
pub const PCO: u8 = 2;
/// pco's effort: level 4 compresses within 1% of the default 8 at half the time.
const PCO_LEVEL: usize = 4;

/// Errors decoding a column.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown column encoding {0}")]
    Encoding(u8),
    #[error("pco: {0}")]
    Pco(String),
    #[error("column is shorter than its header says")]
    Short,
    #[error("column holds {got} samples, expected {want}")]
    Count { got: usize, want: usize },
}

/// pco's settings for a column. Both columns take first-order deltas (timestamps, random
/// walks, counters and byte gauges all compress best so on the fleet mix) instead of pco's
/// automatic choice, which also tries lookbacks and higher orders on every chunk: encoding
/// takes less than half the time for 0.05 % more bytes (`benches/codec.rs`).
fn pco_config() -> ChunkConfig {
    ChunkConfig::default()
        .with_compression_level(PCO_LEVEL)
        .with_delta_spec(DeltaSpec::TryConsecutive(1))
}

/// Timestamps on a grid of whole seconds with a little jitter (a device's collection schedule,
/// e.g. every 10 s at ~10–20 ms after the second) are stored as whole seconds (first-order
/// deltas: nearly free on a regular schedule) plus the milliseconds past the second, which
/// pco's own mode detection does not find: 0.09 bytes a sample less on the fleet mix
/// (`benches/codec.rs`). Only for 256 timestamps or more whose milliseconds past the second
/// all fall within 200 ms of each other: on shorter columns the second latent's header costs
/// more than it saves, and with wider spreads the plain deltas are smaller.
fn timestamps_config(ts: &[i64]) -> ChunkConfig {
    const SECOND_MS: i64 = 1000;
    let (lo, hi) = ts.iter().fold((i64::MAX, i64::MIN), |(lo, hi), t| {
        let ms = t.rem_euclid(SECOND_MS);
        (lo.min(ms), hi.max(ms))
    });
    if ts.len() >= 256 && hi - lo < 200 {
        pco_config().with_mode_spec(ModeSpec::TryIntMult(SECOND_MS as u64))
    } else {
        pco_config()
    }
}

fn pco_encode(samples: &[(i64, f64)]) -> Option<Vec<u8>> {
    let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
    let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let ts = simple_compress(&ts, &timestamps_config(&ts)).ok()?;
    let vs = simple_compress(&vs, &pco_config()).ok()?;
    let mut out = Vec::with_capacity(4 + ts.len() + vs.len());
    out.extend_from_slice(&u32::try_from(ts.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&ts);
    out.extend_from_slice(&vs);
    Some(out)
}

/// Samples the codec choice looks at. Encoding a series both ways cost half of a flush; on the
/// fleet mix a 128-sample prefix picks the same codec as the whole
/// series did for all but a handful of series, which then differ by a few bytes.
pub const SAMPLE_LEN: usize = 128;

/// Encodes sorted samples with the smaller encoding: `(encoding, bytes)`.
pub fn encode_samples(samples: &[(i64, f64)]) -> (u8, Vec<u8>) {
    if samples.len() < 16 {
        return (GORILLA, encode(samples));
    }
    if samples.len() <= 2 * SAMPLE_LEN {
        let gorilla = encode(samples);
        return match pco_encode(samples) {
            Some(p) if p.len() < gorilla.len() => (PCO, p),
            _ => (GORILLA, gorilla),
        };
    }
    let sample = &samples[..SAMPLE_LEN];
    let pco_wins = pco_encode(sample).is_some_and(|p| p.len() < encode(sample).len());
    if pco_wins && let Some(p) = pco_encode(samples) {
        return (PCO, p);
    }
    (GORILLA, encode(samples))
}

/// Decodes `count` samples.
pub fn decode_samples(
    encoding: u8,
    bytes: &[u8],
    count: u32,
) -> Result<Vec<(i64, f64)>, CodecError> {
    let want = count as usize;
    let out: Vec<(i64, f64)> = match encoding {
        GORILLA => Decoder::new(bytes, count).collect(),
        PCO => {
            let head: [u8; 4] = bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(CodecError::Short)?;
            let ts_len = u32::from_le_bytes(head) as usize;
            let ts_bytes = bytes.get(4..4 + ts_len).ok_or(CodecError::Short)?;
            let vs_bytes = bytes.get(4 + ts_len..).ok_or(CodecError::Short)?;
            let ts =
                simple_decompress::<i64>(ts_bytes).map_err(|e| CodecError::Pco(e.to_string()))?;
            let vs =
                simple_decompress::<f64>(vs_bytes).map_err(|e| CodecError::Pco(e.to_string()))?;
            if ts.len() != vs.len() {
                return Err(CodecError::Count {
                    got: vs.len(),
                    want: ts.len(),
                });
            }
            ts.into_iter().zip(vs).collect()
        }
        other => return Err(CodecError::Encoding(other)),
    };
    if out.len() != want {
        return Err(CodecError::Count {
            got: out.len(),
            want,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_smaller_encoding_and_round_trips() {
        let tiny = vec![(1, 1.0), (2, 2.0)];
        let (enc, bytes) = encode_samples(&tiny);
        assert_eq!(enc, GORILLA);
        assert_eq!(decode_samples(enc, &bytes, 2).unwrap(), tiny);
        let mut rng = fastrand::Rng::with_seed(3);
        let jittered: Vec<(i64, f64)> = (0..720)
            .map(|i| {
                (
                    i * 10_000 + rng.i64(0..20),
                    (1e6 + i as f64 * 1234.0).floor(),
                )
            })
            .collect();
        let (enc, bytes) = encode_samples(&jittered);
        assert_eq!(
            enc, PCO,
            "pco wins on jittered timestamps and integer values"
        );
        assert!(bytes.len() < encode(&jittered).len());
        assert_eq!(decode_samples(enc, &bytes, 720).unwrap(), jittered);
        assert!(decode_samples(enc, &bytes, 719).is_err());
        assert!(decode_samples(enc, &bytes[..bytes.len() / 2], 720).is_err());
        assert!(decode_samples(9, &bytes, 720).is_err());
    }

    #[test]
    fn jittered_seconds_cost_less_than_plain_timestamps() {
        let mut rng = fastrand::Rng::with_seed(4);
        let grid: Vec<i64> = (0..720)
            .map(|i| 1_767_225_600_000 + i * 10_000 + rng.i64(0..20))
            .collect();
        let size = |ts: &[i64], config: &ChunkConfig| simple_compress(ts, config).unwrap().len();
        let seconds = size(&grid, &timestamps_config(&grid));
        let plain = size(&grid, &pco_config());
        assert!(seconds * 10 < plain * 9, "{seconds} vs {plain} bytes");
        // Timestamps anywhere in the second keep the plain encoding.
        let drifting: Vec<i64> = (0..720).map(|i| i * 10_037).collect();
        assert_eq!(
            size(&drifting, &timestamps_config(&drifting)),
            size(&drifting, &pco_config())
        );
        let samples: Vec<(i64, f64)> = grid.iter().map(|&t| (t, 1.0)).collect();
        let (enc, bytes) = encode_samples(&samples);
        assert_eq!(decode_samples(enc, &bytes, 720).unwrap(), samples);
    }
}
