//! The typed contents of WAL records: series definitions, samples and opaque metadata. The
//! framing (length, CRC, kind byte) is `wal.rs`'s; this file only turns payloads into values
//! and back. Byte layouts are in `docs/tsdb.md`.

use crate::index::SeriesId;
use crate::series::Labels;

/// Record kind bytes.
pub const KIND_SERIES: u8 = 1;
/// Samples of known series.
pub const KIND_SAMPLES: u8 = 2;
/// Opaque metadata the caller attached to an append.
pub const KIND_META: u8 = 3;

/// Bytes of one sample in a samples record: id u32, ts i64, value f64.
pub const SAMPLE_BYTES: usize = 20;

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `id` names this label set from here on.
    Series { id: SeriesId, labels: Labels },
    /// Samples, in append order.
    Samples(Vec<(SeriesId, i64, f64)>),
    /// Caller metadata: a key (e.g. a device) and a value (e.g. its batch sequence number).
    Meta { key: Vec<u8>, value: Vec<u8> },
}

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("record payload ends early")]
    Short,
    #[error("samples payload length {0} is not a whole number of samples")]
    SampleLength(usize),
    #[error("label is not UTF-8")]
    Utf8,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Appends a series record's payload.
pub fn encode_series(out: &mut Vec<u8>, id: SeriesId, labels: &Labels) {
    out.extend_from_slice(&id.to_le_bytes());
    encode_labels(out, labels);
}

/// Appends one sample to a samples record's payload.
pub fn encode_sample(out: &mut Vec<u8>, id: SeriesId, t: i64, v: f64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// Appends a meta record's payload.
pub fn encode_meta(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&key[..usize::from(len)]);
    out.extend_from_slice(value);
}

/// A cursor over a payload.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError::Short);
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Ok(a)
    }
    pub(crate) fn arr<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| RecordError::Utf8)
    }
    pub(crate) fn labels(&mut self) -> Result<Labels, RecordError> {
        let n = self.u16()?;
        let mut pairs = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            pairs.push((self.string()?, self.string()?));
        }
        Ok(Labels::from_sorted(pairs))
    }
}

/// Appends labels in the series-record layout (shared with block series tables).
pub(crate) fn encode_labels(out: &mut Vec<u8>, labels: &Labels) {
    let n = u16::try_from(labels.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in labels.iter().take(usize::from(n)) {
        put_str(out, k);
        put_str(out, v);
    }
}

/// Decodes a record payload of a given kind.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, RecordError> {
    let mut r = Reader { bytes: payload };
    match kind {
        KIND_SERIES => {
            let id = r.u32()?;
            let labels = r.labels()?;
            Ok(Record::Series { id, labels })
        }
        KIND_SAMPLES => {
            if !payload.len().is_multiple_of(SAMPLE_BYTES) {
                return Err(RecordError::SampleLength(payload.len()));
            }
            let mut out = Vec::with_capacity(payload.len() / SAMPLE_BYTES);
            while !r.bytes.is_empty() {
                let id = r.u32()?;
                let t = r.i64()?;
                let v = f64::from_bits(r.u64()?);
                out.push((id, t, v));
            }
            Ok(Record::Samples(out))
        }
        KIND_META => {
            let n = usize::from(r.u16()?);
            let key = r.take(n)?.to_vec();
            Ok(Record::Meta {
                key,
                value: r.bytes.to_vec(),
            })
        }
        other => Err(RecordError::Kind(other)),
    }
}

/// Whether a kind byte is one this version writes.
pub fn known_kind(kind: u8) -> bool {
    matches!(kind, KIND_SERIES | KIND_SAMPLES | KIND_META)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let labels = Labels::from_metric("cpu", [("device", "d1")]).unwrap();
        let mut p = Vec::new();
        encode_series(&mut p, 7, &labels);
        assert_eq!(
            decode(KIND_SERIES, &p).unwrap(),
            Record::Series { id: 7, labels }
        );
        let mut p = Vec::new();
        encode_sample(&mut p, 1, -5, 2.5);
        encode_sample(&mut p, 2, 9, f64::NAN);
        let Record::Samples(s) = decode(KIND_SAMPLES, &p).unwrap() else {
            panic!()
        };
        assert_eq!(s[0], (1, -5, 2.5));
        assert!(s[1].2.is_nan());
        assert_eq!(
            decode(KIND_SAMPLES, &p[..21]),
            Err(RecordError::SampleLength(21))
        );
        let mut p = Vec::new();
        encode_meta(&mut p, b"dev", b"seq=5");
        assert_eq!(
            decode(KIND_META, &p).unwrap(),
            Record::Meta {
                key: b"dev".to_vec(),
                value: b"seq=5".to_vec()
            }
        );
        assert_eq!(decode(9, &p), Err(RecordError::Kind(9)));
        assert_eq!(decode(KIND_SERIES, &[1, 0]), Err(RecordError::Short));
    }
}
