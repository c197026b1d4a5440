//! The body of frame version 2: a batch laid out in columns, built to cost few bytes per
//! sample for what an agent sends (one collection: tens of samples, one timestamp, names from
//! a fixed set, many zero or integral values). `docs/protocol.md` gives the exact bytes.
//!
//! - Strings are indices: into the static [`WELL_KNOWN`] table (one byte for any name the
//!   agent's collectors use), then into the batch's own table for the rest.
//! - Labels: a sample whose label set equals the previous sample's says so in one byte.
//! - Timestamps: runs of equal times, each a length and a zig-zag delta from the previous
//!   run (the first from `sent_at_ms`): a collection sharing one time costs about 3 bytes.
//! - Values: a 4-bit kind per sample (+0.0 takes no bytes; integers and short decimals are
//!   zig-zag varints; f32 when exact; else the raw f64), so every f64 — NaN payloads, -0.0,
//!   ±∞ — comes back bit for bit.
//!
//! Decoding is strict and bounded: counts are capped against the bytes left and [`Limits`]
//! before anything is allocated, every index is checked, and anything left over is an error.

use std::collections::BTreeMap;
use std::collections::HashMap;

use crate::batch::{Batch, Sample};
use crate::validate::Limits;
use crate::varint::{self, ReadError, Reader};
use crate::well_known::{self, WELL_KNOWN};

/// Value kinds (4 bits each). Kinds `DECIMAL_0 + k` for k in 1..=12 are decimals.
const KIND_ZERO: u8 = 0;
const KIND_INT: u8 = 1;
const KIND_F32: u8 = 2;
const KIND_F64: u8 = 3;
const DECIMAL_0: u8 = 3;
const MAX_DECIMALS: u8 = 12;

/// Exact powers of ten (every one up to 10^22 is an f64 exactly), index = exponent.
const POW10: [f64; 13] = [
    1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

/// Integers beyond ±2^53 are not all exact in an f64; such values go as floats.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Decoded names and label text may take at most this many times the payload limit: string
/// indices let a few bytes name a long string, and this keeps a hostile batch from turning
/// 1 MiB into gigabytes.
const TEXT_EXPANSION: usize = 32;

/// Why a v2 body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnarError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{count} {what} declared; at most {max} fit (the limits and the bytes left)")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "batch refers to {known} well-known strings; this side knows {have} (a newer sender: upgrade the server)"
    )]
    NewerTable { known: usize, have: usize },
    #[error("sample {sample}: string index {index} is out of range ({len} strings)")]
    IndexOutOfRange {
        sample: usize,
        index: u32,
        len: usize,
    },
    #[error("sample 0 says its labels repeat the previous sample's; there is none")]
    NoPreviousLabels,
    #[error("sample {sample}: label `{name}` appears twice")]
    DuplicateLabel { sample: usize, name: String },
    #[error("timestamp run {run} is empty; runs hold at least one sample")]
    EmptyRun { run: usize },
    #[error("timestamp runs cover {covered} samples; the batch has {samples}")]
    RunsMismatch { covered: usize, samples: usize },
    #[error("value kinds: the unused half of the last byte is {nibble:#x}; expected 0")]
    KindPadding { nibble: u8 },
    #[error("{count} bytes left over after the last column, from byte {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("decoded names and labels exceed {max} bytes")]
    TooMuchText { max: usize },
}

/// Encodes `batch` as a v2 body (without the frame header).
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + batch.samples.len() * 8);
    varint::put_str(&mut out, &batch.device);
    varint::put_str(&mut out, &batch.boot_id);
    varint::put_u64(&mut out, batch.seq);
    varint::put_i64(&mut out, batch.sent_at_ms);
    varint::put_u64(&mut out, batch.dropped_before);

    // Strings: well-known ones by their fixed index, the rest in this batch's table, which
    // starts right after the highest well-known index the batch uses.
    let mut table = Table::default();
    let samples = &batch.samples;
    let metrics: Vec<Ref> = samples.iter().map(|s| table.intern(&s.metric)).collect();
    let labels: Vec<Vec<(Ref, Ref)>> = samples
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| (table.intern(k), table.intern(v)))
                .collect()
        })
        .collect();
    let known = table.known();
    varint::put_u64(&mut out, u64::from(known));
    varint::put_u64(&mut out, table.local.len() as u64);
    for s in &table.local {
        varint::put_str(&mut out, s);
    }

    varint::put_u64(&mut out, samples.len() as u64);
    for m in &metrics {
        varint::put_u64(&mut out, u64::from(m.index(known)));
    }
    for (i, pairs) in labels.iter().enumerate() {
        if i > 0 && samples[i].labels == samples[i - 1].labels {
            out.push(0);
            continue;
        }
        varint::put_u64(&mut out, pairs.len() as u64 + 1);
        for (k, v) in pairs {
            varint::put_u64(&mut out, u64::from(k.index(known)));
            varint::put_u64(&mut out, u64::from(v.index(known)));
        }
    }

    let mut runs: Vec<(u64, i64)> = Vec::new();
    let mut prev = batch.sent_at_ms;
    for (i, s) in samples.iter().enumerate() {
        match runs.last_mut() {
            Some((len, _)) if i > 0 && samples[i - 1].ts_ms == s.ts_ms => *len += 1,
            _ => {
                runs.push((1, s.ts_ms.wrapping_sub(prev)));
                prev = s.ts_ms;
            }
        }
    }
    varint::put_u64(&mut out, runs.len() as u64);
    for (len, delta) in runs {
        varint::put_u64(&mut out, len);
        varint::put_i64(&mut out, delta);
    }

    let mut kinds = vec![0u8; samples.len().div_ceil(2)];
    let mut values = Vec::with_capacity(samples.len() * 4);
    for (i, s) in samples.iter().enumerate() {
        let kind = put_value(&mut values, s.value);
        kinds[i / 2] |= kind << (4 * (i % 2));
    }
    out.extend_from_slice(&kinds);
    out.extend_from_slice(&values);
    out
}

/// Writes `v` in its shortest exact form (ties go to the earlier form); returns the kind.
fn put_value(out: &mut Vec<u8>, v: f64) -> u8 {
    if v.to_bits() == 0 {
        return KIND_ZERO;
    }
    let varint = as_scaled_integer(v).map(|(kind, m)| (kind, m, varint_len(varint::zigzag(m))));
    // NaN always goes as f64: Rust leaves the payload of a NaN converted between widths
    // unspecified, and a device and a server may differ in it.
    let f32_exact = !v.is_nan() && f64::from(v as f32).to_bits() == v.to_bits();
    match varint {
        Some((kind, m, len)) if len <= 4 || (!f32_exact && len <= 8) => {
            varint::put_i64(out, m);
            kind
        }
        _ if f32_exact => {
            out.extend_from_slice(&(v as f32).to_le_bytes());
            KIND_F32
        }
        _ => {
            out.extend_from_slice(&v.to_le_bytes());
            KIND_F64
        }
    }
}

/// `v` as `m / 10^k` with the fewest decimals k (0 = an integer), when that is exact.
fn as_scaled_integer(v: f64) -> Option<(u8, i64)> {
    if !v.is_finite() {
        return None;
    }
    if v.fract() == 0.0 && v.abs() <= EXACT_INT {
        let m = v as i64;
        // -0.0 is integral too, but comes back as +0.0 from an integer.
        return ((m as f64).to_bits() == v.to_bits()).then_some((KIND_INT, m));
    }
    for k in 1..=MAX_DECIMALS {
        let scale = POW10[usize::from(k)];
        let scaled = v * scale;
        if scaled.abs() > EXACT_INT {
            return None;
        }
        let m = scaled.round();
        if (m / scale).to_bits() == v.to_bits() {
            return Some((DECIMAL_0 + k, m as i64));
        }
    }
    None
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// A string's place: the well-known table or this batch's own.
#[derive(Clone, Copy)]
enum Ref {
    Known(u32),
    Local(u32),
}

impl Ref {
    fn index(self, known: u32) -> u32 {
        match self {
            Ref::Known(i) => i,
            Ref::Local(i) => known.saturating_add(i),
        }
    }
}

#[derive(Default)]
struct Table {
    local: Vec<String>,
    index: HashMap<String, u32>,
    max_known: Option<u32>,
}

impl Table {
    fn intern(&mut self, s: &str) -> Ref {
        if let Some(i) = well_known::index_of(s) {
            self.max_known = Some(self.max_known.map_or(i, |m| m.max(i)));
            return Ref::Known(i);
        }
        if let Some(&i) = self.index.get(s) {
            return Ref::Local(i);
        }
        // A batch holds far fewer than 2^32 distinct strings: payloads are size-limited.
        let i = u32::try_from(self.local.len()).unwrap_or(u32::MAX);
        self.local.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        Ref::Local(i)
    }

    /// How many well-known entries the batch relies on.
    fn known(&self) -> u32 {
        self.max_known.map_or(0, |m| m + 1)
    }
}

/// Decodes a v2 body. The result is not validated yet ([`Batch::validate`] does that).
pub fn decode(body: &[u8], limits: &Limits) -> Result<Batch, ColumnarError> {
    let mut r = Reader::new(body);
    let device = r.str("device")?.to_owned();
    let boot_id = r.str("boot_id")?.to_owned();
    let seq = r.u64("seq")?;
    let sent_at_ms = r.i64("sent_at_ms")?;
    let dropped_before = r.u64("dropped_before")?;

    let known = r.len("well-known count")?;
    if known > WELL_KNOWN.len() {
        return Err(ColumnarError::NewerTable {
            known,
            have: WELL_KNOWN.len(),
        });
    }
    // Every string takes at least its one-byte length.
    let n_strings = bounded(&mut r, "strings", |left| left)?;
    let mut local = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        local.push(r.str("string")?);
    }
    let strings = Strings {
        known,
        local: &local,
    };

    // Every sample takes at least a metric index and a labels byte.
    let n = bounded(&mut r, "samples", |left| limits.max_samples.min(left / 2))?;
    let mut metrics = Vec::with_capacity(n);
    for sample in 0..n {
        metrics.push(strings.get(sample, r.u32("metric index")?)?);
    }
    let text_max = TEXT_EXPANSION.saturating_mul(limits.max_payload_bytes.max(body.len()));
    let mut text = 0usize;
    let mut labels: Vec<BTreeMap<String, String>> = Vec::with_capacity(n);
    for (sample, metric) in metrics.iter().enumerate() {
        let code = r.len("labels")?;
        let set = if code == 0 {
            labels
                .last()
                .cloned()
                .ok_or(ColumnarError::NoPreviousLabels)?
        } else {
            let pairs = code - 1;
            if pairs > limits.max_labels || pairs > r.remaining() / 2 {
                return Err(ColumnarError::TooMany {
                    what: "labels",
                    count: pairs,
                    max: limits.max_labels.min(r.remaining() / 2),
                });
            }
            let mut set = BTreeMap::new();
            for _ in 0..pairs {
                let name = strings.get(sample, r.u32("label name index")?)?;
                let value = strings.get(sample, r.u32("label value index")?)?;
                if set.insert(name.to_owned(), value.to_owned()).is_some() {
                    return Err(ColumnarError::DuplicateLabel {
                        sample,
                        name: name.to_owned(),
                    });
                }
            }
            set
        };
        text = text
            .saturating_add(metric.len())
            .saturating_add(set.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>());
        if text > text_max {
            return Err(ColumnarError::TooMuchText { max: text_max });
        }
        labels.push(set);
    }

    let n_runs = bounded(&mut r, "timestamp runs", |left| n.min(left / 2))?;
    let mut times = Vec::with_capacity(n);
    let mut ts = sent_at_ms;
    for run in 0..n_runs {
        let len = r.len("run length")?;
        let delta = r.i64("run delta")?;
        if len == 0 {
            return Err(ColumnarError::EmptyRun { run });
        }
        if len > n - times.len() {
            return Err(ColumnarError::RunsMismatch {
                covered: times.len().saturating_add(len),
                samples: n,
            });
        }
        // Deltas wrap modulo 2^64 as the encoder's do, so any two i64 times have a delta.
        ts = ts.wrapping_add(delta);
        times.resize(times.len() + len, ts);
    }
    if times.len() != n {
        return Err(ColumnarError::RunsMismatch {
            covered: times.len(),
            samples: n,
        });
    }

    let kinds = r.bytes("value kinds", n.div_ceil(2))?;
    if n % 2 == 1 {
        let nibble = kinds[n / 2] >> 4;
        if nibble != 0 {
            return Err(ColumnarError::KindPadding { nibble });
        }
    }
    let mut samples = Vec::with_capacity(n);
    for (i, ((metric, labels), ts_ms)) in metrics.into_iter().zip(labels).zip(times).enumerate() {
        let kind = (kinds[i / 2] >> (4 * (i % 2))) & 0x0f;
        let value = match kind {
            KIND_ZERO => 0.0,
            KIND_INT => r.i64("integer value")? as f64,
            KIND_F32 => f64::from(f32::from_le_bytes(r.array("f32 value")?)),
            KIND_F64 => f64::from_le_bytes(r.array("f64 value")?),
            k => r.i64("decimal value")? as f64 / POW10[usize::from(k - DECIMAL_0)],
        };
        samples.push(Sample {
            metric: metric.to_owned(),
            labels,
            ts_ms,
            value,
        });
    }
    if r.remaining() > 0 {
        return Err(ColumnarError::TrailingBytes {
            offset: r.offset(),
            count: r.remaining(),
        });
    }
    Ok(Batch {
        device,
        boot_id,
        seq,
        sent_at_ms,
        dropped_before,
        samples,
    })
}

/// Reads a count and refuses it above `max` of the bytes left after it.
fn bounded(
    r: &mut Reader<'_>,
    what: &'static str,
    max: impl FnOnce(usize) -> usize,
) -> Result<usize, ColumnarError> {
    let count = r.len(what)?;
    let max = max(r.remaining());
    if count > max {
        return Err(ColumnarError::TooMany { what, count, max });
    }
    Ok(count)
}

/// The string index space of one batch: well-known entries, then the batch's own.
struct Strings<'a> {
    known: usize,
    local: &'a [&'a str],
}

impl<'a> Strings<'a> {
    fn get(&self, sample: usize, index: u32) -> Result<&'a str, ColumnarError> {
        let i = index as usize;
        let found = if i < self.known {
            WELL_KNOWN.get(i).copied()
        } else {
            self.local.get(i - self.known).copied()
        };
        found.ok_or(ColumnarError::IndexOutOfRange {
            sample,
            index,
            len: self.known + self.local.len(),
        })
    }
}

#[cfg(test)]
mod tests;
