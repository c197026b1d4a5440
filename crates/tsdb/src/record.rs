//! The typed contents of WAL records: series definitions, samples and opaque metadata. The
//! framing (length, CRC, kind byte) is `wal.rs`'s; this file only turns payloads into values
//! and back. Byte layouts are in `docs/tsdb.md`.

use crate::index::SeriesId;
use crate::series::Labels;

/// Record kind bytes.
pub const KIND_SERIES: u8 = 1;
/// Samples of known series, 20 bytes each (written by earlier versions; still read).
pub const KIND_SAMPLES: u8 = 2;
/// Opaque metadata the caller attached to an append.
pub const KIND_META: u8 = 3;
/// Samples of known series, packed: about 7 bytes each on the fleet mix instead of 20.
pub const KIND_PACKED_SAMPLES: u8 = 4;

/// Bytes of one sample in a kind-2 samples record: id u32, ts i64, value f64.
pub const SAMPLE_BYTES: usize = 20;

/// How a packed sample's value is stored (the low two bits of its head varint).
const VALUE_SAME: u64 = 0;
const VALUE_INT: u64 = 1;
const VALUE_F32: u64 = 2;
const VALUE_F64: u64 = 3;

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
    #[error("varint longer than 10 bytes")]
    Varint,
    #[error("series id {0} out of range")]
    SeriesId(i64),
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("string reference {0} beyond the {1} strings defined so far")]
    StringRef(u64, usize),
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

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// The value as an integer, when the integer converts back to exactly the same bits (so not
/// -0.0, NaN, fractions or magnitudes beyond i64).
fn exact_int(v: f64) -> Option<i64> {
    let i = v as i64;
    ((i as f64).to_bits() == v.to_bits()).then_some(i)
}

/// Appends a packed samples record's payload (`docs/tsdb.md`): per sample a varint of the
/// zig-zagged id delta (from the previous sample's id) shifted left by two over a value kind,
/// a zig-zag varint of the timestamp delta (from the previous sample's), then the value — none
/// when it equals the previous sample's bit for bit, a zig-zag varint when it is an integer,
/// four bytes when an f32 holds it exactly, else eight. Every value round-trips bit-exactly.
pub fn encode_packed_samples(out: &mut Vec<u8>, samples: &[(SeriesId, i64, f64)]) {
    let (mut id0, mut t0, mut v0) = (0i64, 0i64, 0u64);
    for &(id, t, v) in samples {
        let bits = v.to_bits();
        let id_delta = i64::from(id) - id0;
        let (kind, int) = if bits == v0 {
            (VALUE_SAME, None)
        } else if let Some(i) = exact_int(v) {
            (VALUE_INT, Some(i))
        } else if f64::from(v as f32).to_bits() == bits {
            (VALUE_F32, None)
        } else {
            (VALUE_F64, None)
        };
        put_varint(out, (zigzag(id_delta) << 2) | kind);
        put_varint(out, zigzag(t.wrapping_sub(t0)));
        match (kind, int) {
            (VALUE_INT, Some(i)) => put_varint(out, zigzag(i)),
            (VALUE_F32, _) => out.extend_from_slice(&(v as f32).to_bits().to_le_bytes()),
            (VALUE_F64, _) => out.extend_from_slice(&bits.to_le_bytes()),
            _ => {}
        }
        (id0, t0, v0) = (i64::from(id), t, bits);
    }
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
    pub(crate) fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Varint)
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
        KIND_PACKED_SAMPLES => decode_packed_samples(&mut r).map(Record::Samples),
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

fn decode_packed_samples(r: &mut Reader<'_>) -> Result<Vec<(SeriesId, i64, f64)>, RecordError> {
    // At least two bytes a sample: never reserve more than the payload can hold.
    let mut out = Vec::with_capacity(r.bytes.len() / 2);
    let (mut id0, mut t0, mut v0) = (0i64, 0i64, 0u64);
    while !r.bytes.is_empty() {
        let head = r.varint()?;
        let id = id0.wrapping_add(unzigzag(head >> 2));
        let id = SeriesId::try_from(id).map_err(|_| RecordError::SeriesId(id))?;
        let t = t0.wrapping_add(unzigzag(r.varint()?));
        let bits = match head & 3 {
            VALUE_SAME => v0,
            VALUE_INT => (unzigzag(r.varint()?) as f64).to_bits(),
            VALUE_F32 => f64::from(f32::from_bits(r.u32()?)).to_bits(),
            _ => r.u64()?,
        };
        out.push((id, t, f64::from_bits(bits)));
        (id0, t0, v0) = (i64::from(id), t, bits);
    }
    Ok(out)
}

/// Whether a kind byte is one this version reads.
pub fn known_kind(kind: u8) -> bool {
    matches!(
        kind,
        KIND_SERIES | KIND_SAMPLES | KIND_META | KIND_PACKED_SAMPLES
    )
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

    #[test]
    fn packed_samples_are_small_on_a_fleet_step() {
        // 100 devices × (a full-precision ratio, a byte gauge, a constant) at one jittered
        // time: the shape of a group commit.
        let mut rng = fastrand::Rng::with_seed(9);
        let mut samples = Vec::new();
        for d in 0..100u32 {
            let t = 1_767_225_600_000 + i64::from(rng.u8(0..20));
            samples.push((d * 3, t, rng.f64()));
            samples.push((d * 3 + 1, t, f64::from(rng.u32(..))));
            samples.push((d * 3 + 2, t, 4.0));
        }
        let mut p = Vec::new();
        encode_packed_samples(&mut p, &samples);
        let Record::Samples(back) = decode(KIND_PACKED_SAMPLES, &p).unwrap() else {
            panic!()
        };
        assert_eq!(back, samples);
        let per_sample = p.len() as f64 / samples.len() as f64;
        assert!(per_sample < 7.0, "{per_sample} bytes a sample (kind 2: 20)");
    }

    proptest::proptest! {
        #[test]
        fn packed_samples_round_trip_bit_exactly(
            samples in proptest::collection::vec(
                (proptest::prelude::any::<u32>(), proptest::prelude::any::<i64>(), proptest::prelude::any::<u64>()),
                0..100,
            ),
            special in proptest::collection::vec(0usize..6, 0..100),
        ) {
            let specials = [0.0, -0.0, f64::NAN, f64::INFINITY, 1e300, -(2f64.powi(63))];
            let samples: Vec<(SeriesId, i64, f64)> = samples
                .iter()
                .enumerate()
                .map(|(i, &(id, t, v))| {
                    let v = special.get(i).map_or(f64::from_bits(v), |&k| specials[k]);
                    (id, t, v)
                })
                .collect();
            let mut p = Vec::new();
            encode_packed_samples(&mut p, &samples);
            let Ok(Record::Samples(back)) = decode(KIND_PACKED_SAMPLES, &p) else {
                return Err(proptest::test_runner::TestCaseError::fail("did not decode"));
            };
            proptest::prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                proptest::prop_assert_eq!((a.0, a.1, a.2.to_bits()), (b.0, b.1, b.2.to_bits()));
            }
            // Any cut of a non-empty payload either fails or decodes fewer samples.
            for cut in 0..p.len() {
                if let Ok(Record::Samples(s)) = decode(KIND_PACKED_SAMPLES, &p[..cut]) {
                    proptest::prop_assert!(s.len() < samples.len());
                }
            }
        }

        #[test]
        fn hostile_packed_payloads_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode(KIND_PACKED_SAMPLES, &bytes);
        }
    }
}
