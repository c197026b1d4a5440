//! Gorilla compression of one series' samples, bit by bit: delta-of-delta timestamps and XOR'd
//! float values (Pelkonen et al., "Gorilla", VLDB 2015), as Prometheus uses in its head.
//!
//! Stream layout (`docs/tsdb.md`): the first timestamp as a zig-zag varint in 8-bit groups,
//! the first value as 64 raw bits; then for every later sample a delta-of-delta code
//! (`0` | `10`+14 bits | `110`+17 | `1110`+20 | `1111`+64) — the first delta is coded against a
//! previous delta of 0 — and a value code (`0` same value | `10` XOR within the previous
//! leading/trailing window | `11` + 5 bits leading zeros + 6 bits length−1 + the bits).
//! The sample count is kept outside the stream, so readers know where it ends.

use crate::record::{unzigzag, zigzag};

/// Bytes an open stream grows by.
const GROW_BYTES: usize = 32;

/// Appends bits to a byte buffer, most significant bit first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Free bits in the last byte (0..8; 0 means a new byte is needed).
    free: u8,
    /// Bytes the stream is expected to reach (0: unknown).
    expect: u16,
}

impl BitWriter {
    /// Grows the buffer for one more byte: to half the expected size, then to all of it, then
    /// in small steps. Thousands of open chunks would waste up to half their memory with the
    /// default doubling, and growing 32 bytes at a time from empty reallocated a chunk dozens
    /// of times (a tenth of a bulk import's time).
    fn grow(&mut self) {
        let cap = self.bytes.capacity();
        let expect = usize::from(self.expect);
        let target = if cap < expect / 2 {
            expect / 2
        } else if cap < expect {
            expect
        } else {
            cap + GROW_BYTES
        };
        self.bytes.reserve_exact(target - self.bytes.len());
    }

    /// Appends the low `n` bits of `value` (`n` ≤ 64): the free bits of the last byte first,
    /// then whole bytes at once.
    fn write(&mut self, value: u64, n: u8) {
        let mut n = n.min(64);
        if n == 0 {
            return;
        }
        if self.free > 0 {
            let take = n.min(self.free);
            // `n - take` ≤ 63 because `take` ≥ 1.
            let bits = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= bits << (self.free - take);
            }
            self.free -= take;
            n -= take;
            if n == 0 {
                return;
            }
        }
        // The remaining `n` (1..=64) low bits, moved to the top of a word.
        let aligned = value << (64 - u32::from(n));
        let whole = usize::from(n.div_ceil(8));
        while self.bytes.capacity() - self.bytes.len() < whole {
            self.grow();
        }
        self.bytes
            .extend_from_slice(&aligned.to_be_bytes()[..whole]);
        self.free = (whole * 8) as u8 - n;
    }

    fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }
}

/// Reads bits written by [`BitWriter`].
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Reads `n` bits (`n` ≤ 64), or `None` past the end.
    fn read(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        let n = usize::from(n.min(64));
        let end = self.pos + n;
        if end > self.bytes.len() * 8 {
            return None;
        }
        let first = self.pos / 8;
        let skip = self.pos % 8;
        self.pos = end;
        if skip + n <= 64
            && let Some(word) = self.bytes.get(first..first + 8)
        {
            // Fast path: one 8-byte load holds all the bits.
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let word = u64::from_be_bytes(w) << skip;
            return Some(word >> (64 - n));
        }
        // Near the end of the stream, or bits spread over nine bytes.
        let mut acc = 0u128;
        let last = (end - 1) / 8;
        for &b in &self.bytes[first..=last] {
            acc = (acc << 8) | u128::from(b);
        }
        let bits = (last - first + 1) * 8;
        let out = (acc >> (bits - skip - n)) & ((1u128 << n) - 1);
        Some(out as u64)
    }

    fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }
}

fn write_varint(w: &mut BitWriter, v: i64) {
    let mut z = zigzag(v);
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            w.write(u64::from(byte), 8);
            return;
        }
        w.write(u64::from(byte | 0x80), 8);
    }
}

fn read_varint(r: &mut BitReader<'_>) -> Option<i64> {
    let mut z = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = r.read(8)?;
        z |= (byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(unzigzag(z));
        }
    }
    None
}

/// An appendable Gorilla stream.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    bits: BitWriter,
    count: u32,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Encoder {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty stream expected to grow to about `bytes` (e.g. the size of the series'
    /// previous chunk): its buffer is allocated in two steps instead of many small ones.
    pub fn expecting(bytes: usize) -> Self {
        Self {
            bits: BitWriter {
                // An eighth more than the previous chunk, for values that vary a little more.
                expect: u16::try_from(bytes + bytes / 8).unwrap_or(u16::MAX),
                ..BitWriter::default()
            },
            ..Self::default()
        }
    }

    /// Samples appended.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The last timestamp appended (meaningless when empty).
    pub fn last_t(&self) -> i64 {
        self.last_t
    }

    /// Appends a sample; timestamps should ascend (any order still round-trips).
    pub fn push(&mut self, t: i64, v: f64) {
        let v = v.to_bits();
        if self.count == 0 {
            write_varint(&mut self.bits, t);
            self.bits.write(v, 64);
            self.leading = 0xff;
        } else {
            let delta = t.wrapping_sub(self.last_t);
            let dod = delta.wrapping_sub(self.last_delta);
            self.last_delta = delta;
            self.write_dod(dod);
            self.write_value(v);
        }
        self.last_t = t;
        self.last_v = v;
        self.count += 1;
    }

    fn write_dod(&mut self, dod: i64) {
        let fits = |bits: u32| {
            let lim = 1i64 << (bits - 1);
            (-lim..lim).contains(&dod)
        };
        let w = &mut self.bits;
        let raw = dod as u64;
        if dod == 0 {
            w.bit(false);
        } else if fits(14) {
            w.write(0b10, 2);
            w.write(raw & ((1 << 14) - 1), 14);
        } else if fits(17) {
            w.write(0b110, 3);
            w.write(raw & ((1 << 17) - 1), 17);
        } else if fits(20) {
            w.write(0b1110, 4);
            w.write(raw & ((1 << 20) - 1), 20);
        } else {
            w.write(0b1111, 4);
            w.write(raw, 64);
        }
    }

    fn write_value(&mut self, v: u64) {
        let x = v ^ self.last_v;
        let w = &mut self.bits;
        if x == 0 {
            w.bit(false);
            return;
        }
        let leading = (x.leading_zeros() as u8).min(31);
        let trailing = x.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            w.write(0b10, 2);
            let len = 64 - self.leading - self.trailing;
            w.write(x >> self.trailing, len);
        } else {
            let len = 64 - leading - trailing;
            w.write(0b11, 2);
            w.write(u64::from(leading), 5);
            w.write(u64::from(len - 1), 6);
            w.write(x >> trailing, len);
            self.leading = leading;
            self.trailing = trailing;
        }
    }

    /// The encoded bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bits.bytes
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Gives the buffer back trimmed; the stream can no longer grow.
    pub fn finish(self) -> Vec<u8> {
        let mut b = self.bits.bytes;
        b.shrink_to_fit();
        b
    }
}

/// Decodes `count` samples from a stream.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    r: BitReader<'a>,
    left: u32,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> Decoder<'a> {
    /// Reads `count` samples from `bytes`.
    pub fn new(bytes: &'a [u8], count: u32) -> Self {
        Self {
            r: BitReader { bytes, pos: 0 },
            left: count,
            first: true,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    fn next_sample(&mut self) -> Option<(i64, f64)> {
        if self.first {
            self.first = false;
            self.t = read_varint(&mut self.r)?;
            self.v = self.r.read(64)?;
            return Some((self.t, f64::from_bits(self.v)));
        }
        let dod = self.read_dod()?;
        self.delta = self.delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.delta);
        if self.r.bit()? {
            if self.r.bit()? {
                self.leading = self.r.read(5)? as u8;
                let len = self.r.read(6)? as u8 + 1;
                self.trailing = 64u8.checked_sub(self.leading + len)?;
            }
            let len = 64u8.checked_sub(self.leading + self.trailing)?;
            let bits = self.r.read(len)?;
            self.v ^= bits << self.trailing;
        }
        Some((self.t, f64::from_bits(self.v)))
    }

    fn read_dod(&mut self) -> Option<i64> {
        let sign_extend = |raw: u64, bits: u32| ((raw << (64 - bits)) as i64) >> (64 - bits);
        if !self.r.bit()? {
            return Some(0);
        }
        if !self.r.bit()? {
            return Some(sign_extend(self.r.read(14)?, 14));
        }
        if !self.r.bit()? {
            return Some(sign_extend(self.r.read(17)?, 17));
        }
        if !self.r.bit()? {
            return Some(sign_extend(self.r.read(20)?, 20));
        }
        Some(self.r.read(64)? as i64)
    }
}

impl Iterator for Decoder<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.next_sample();
        if s.is_none() {
            self.left = 0;
        }
        s
    }
}

/// Encodes samples into a fresh stream.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut e = Encoder::new();
    for &(t, v) in samples {
        e.push(t, v);
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regular_series_compress_well() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 10_000, (i % 7) as f64 * 0.5))
            .collect();
        let bytes = encode(&samples);
        let back: Vec<_> = Decoder::new(&bytes, 120).collect();
        assert_eq!(back, samples);
        assert!(bytes.len() < 120 * 3, "{} bytes", bytes.len());
        let constant: Vec<(i64, f64)> = (0..120).map(|i| (i * 15_000, 42.0)).collect();
        assert!(encode(&constant).len() < 48, "{}", encode(&constant).len());
    }

    #[test]
    fn truncated_stream_ends_early_instead_of_panicking() {
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 1000, i as f64 * 1.37)).collect();
        let bytes = encode(&samples);
        let back: Vec<_> = Decoder::new(&bytes[..bytes.len() / 2], 50).collect();
        assert!(back.len() < 50);
        assert_eq!(back[..], samples[..back.len()]);
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(samples in proptest::collection::vec((any::<i64>(), any::<f64>()), 0..200)) {
            let bytes = encode(&samples);
            let back: Vec<_> = Decoder::new(&bytes, samples.len() as u32).collect();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!(a.0, b.0);
                prop_assert_eq!(a.1.to_bits(), b.1.to_bits());
            }
        }
    }

    /// The stream layout written one bit at a time, most significant bit first: what the
    /// word-at-a-time writer and reader must agree with byte for byte (blocks on disk).
    fn reference_bytes(writes: &[(u64, u8)]) -> Vec<u8> {
        let mut bits = Vec::new();
        for &(v, n) in writes {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        }
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &bit)| b | (u8::from(bit) << (7 - i)))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn bit_writer_and_reader_match_the_bit_by_bit_layout(
            writes in proptest::collection::vec((any::<u64>(), 0u8..=64), 0..100),
            expect in 0usize..600,
        ) {
            let mut w = BitWriter { expect: expect as u16, ..BitWriter::default() };
            for &(v, n) in &writes {
                w.write(v, n);
            }
            prop_assert_eq!(&w.bytes, &reference_bytes(&writes));
            let mut r = BitReader { bytes: &w.bytes, pos: 0 };
            for &(v, n) in &writes {
                let want = if n == 64 { v } else { v & ((1u64 << n) - 1) };
                prop_assert_eq!(r.read(n), Some(want));
            }
            let left = w.bytes.len() * 8 - r.pos;
            prop_assert!(r.read(left as u8 + 1).is_none(), "reads past the end fail");
        }
    }
}
