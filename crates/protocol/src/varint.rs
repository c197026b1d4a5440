//! LEB128 varints, zig-zag signed integers and a bounds-checked reader: the primitives of the
//! columnar (v2) frame body. The reader never panics and never reads past its slice; every
//! failure names the field being read and the byte offset in the body.

/// Why a primitive could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{what} at byte {offset}: body ends there (needs {needed} more bytes)")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{what} at byte {offset}: varint is longer than 10 bytes or overflows 64 bits")]
    BadVarint { what: &'static str, offset: usize },
    #[error("{what} at byte {offset}: {value} does not fit in {bits} bits")]
    TooWide {
        what: &'static str,
        offset: usize,
        value: u64,
        bits: u32,
    },
    #[error("{what} at byte {offset}: not UTF-8")]
    Utf8 { what: &'static str, offset: usize },
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low first, high bit = more).
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zig-zag encoded (0, -1, 1, -2, ... → 0, 1, 2, 3, ...) as a varint.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, zigzag(v));
}

/// Appends a length-prefixed UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over a body that checks every read against its end.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ReadError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(ReadError::Truncated {
                    what,
                    offset: self.pos,
                    needed: 1,
                });
            };
            self.pos += 1;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the 64th bit.
            if i == 9 && bits > 1 {
                return Err(ReadError::BadVarint {
                    what,
                    offset: start,
                });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReadError::BadVarint {
            what,
            offset: start,
        })
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, ReadError> {
        self.u64(what).map(unzigzag)
    }

    /// A varint that must fit in a `u32` (string indices).
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ReadError> {
        let offset = self.pos;
        let v = self.u64(what)?;
        u32::try_from(v).map_err(|_| ReadError::TooWide {
            what,
            offset,
            value: v,
            bits: 32,
        })
    }

    /// A varint count or length, as `usize`. Callers bound it before allocating.
    pub fn len(&mut self, what: &'static str) -> Result<usize, ReadError> {
        let offset = self.pos;
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| ReadError::TooWide {
            what,
            offset,
            value: v,
            bits: usize::BITS,
        })
    }

    pub fn bytes(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated {
                what,
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(what, N)?);
        Ok(out)
    }

    /// A length-prefixed UTF-8 string; the length is checked against what is left before
    /// anything is allocated.
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, ReadError> {
        let n = self.len(what)?;
        let offset = self.pos;
        let raw = self.bytes(what, n)?;
        std::str::from_utf8(raw).map_err(|_| ReadError::Utf8 { what, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.u64("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1_700_000_000_000] {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            assert_eq!(Reader::new(&out).i64("v").unwrap(), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn bad_varints_are_errors_not_panics() {
        assert_eq!(
            Reader::new(&[0x80, 0x80]).u64("seq"),
            Err(ReadError::Truncated {
                what: "seq",
                offset: 2,
                needed: 1
            })
        );
        let eleven = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&eleven).u64("seq"),
            Err(ReadError::BadVarint { offset: 0, .. })
        ));
        // Ten bytes whose last carries more than the 64th bit overflow.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert!(matches!(
            Reader::new(&over).u64("seq"),
            Err(ReadError::BadVarint { .. })
        ));
        let mut big = Vec::new();
        put_u64(&mut big, 1 << 40);
        assert!(matches!(
            Reader::new(&big).u32("index"),
            Err(ReadError::TooWide { bits: 32, .. })
        ));
    }

    #[test]
    fn strings_are_bounded_by_the_body() {
        let mut out = Vec::new();
        put_u64(&mut out, 1 << 40);
        out.extend_from_slice(b"abc");
        let err = Reader::new(&out).str("device").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("device at byte 6: body ends there")
        );
        assert!(matches!(
            Reader::new(&[2, 0xff, 0xfe]).str("device"),
            Err(ReadError::Utf8 { offset: 1, .. })
        ));
    }
}
