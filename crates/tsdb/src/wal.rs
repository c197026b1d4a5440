//! The write-ahead log: the point at which an append becomes durable. Segments
//! `wal-{number:016}.seg` start with an 8-byte magic and hold framed records:
//!
//! ```text
//! len: u32 LE | crc32c(kind ‖ payload): u32 LE | kind: u8 | payload: len bytes
//! ```
//!
//! A group of records is written with one append and made durable with one fsync. A failed
//! write or fsync cuts the segment back to where the group began, so a group is wholly durable
//! or wholly absent; if even that cut fails, the log refuses appends until a later cut works.
//!
//! On open every segment newer than the checkpoint (`wal.checkpoint`, written after a flush
//! put the older segments' data into blocks) is replayed. The first damaged record of the last
//! segment ends the log: the segment is truncated there (a torn tail was never acknowledged).
//! Damage in an older segment ends that segment's replay. Either way the damage is counted.
//! A segment with a bad magic is renamed `*.corrupt` and counted. Bytes: `docs/tsdb.md`.

use std::sync::Arc;

use tracing::warn;

use crate::backend::{Backend, write_atomic};
use crate::record::{self, Record};

/// First bytes of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FMTSWAL1";
/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 9;
/// Largest payload; a longer length is corruption.
pub const MAX_RECORD_LEN: u32 = 64 << 20;
/// Name of the checkpoint file.
pub const CHECKPOINT: &str = "wal.checkpoint";
const CHECKPOINT_MAGIC: &[u8; 4] = b"FMCK";

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {name}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("WAL append failed, nothing of this group was kept: {0}")]
    Append(std::io::Error),
    #[error(
        "WAL is refusing appends: a failed group could not be cut off yet ({0}); retry when the disk recovers"
    )]
    Poisoned(String),
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Intact records applied.
    pub records: u64,
    /// Damaged records or segments found (each ends a segment's replay).
    pub corruptions: u64,
    /// Bytes cut off the last segment's tail.
    pub truncated_bytes: u64,
    /// Segments skipped because a checkpoint covers them.
    pub skipped_segments: u64,
}

/// Sizes and policy.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A new segment starts once the current one is larger than this.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
        }
    }
}

/// The open log, appending to its last segment.
#[derive(Debug)]
pub struct Wal {
    backend: Arc<dyn Backend>,
    options: WalOptions,
    number: u64,
    /// Length of the durable prefix of the current segment.
    len: u64,
    /// Bytes in older segments.
    older_bytes: u64,
    /// Set when a failed group could not be cut off; the cut is retried before any write.
    poisoned: bool,
}

/// Name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("wal-{n:016}.seg")
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Parses the framed record at the start of `bytes`: kind, payload, encoded length.
pub fn parse_frame(bytes: &[u8]) -> Result<(u8, &[u8], usize), String> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(format!("torn record header: {} bytes", bytes.len()));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let kind = bytes[8];
    if len > MAX_RECORD_LEN {
        return Err(format!("record length {len} exceeds {MAX_RECORD_LEN}"));
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < end {
        return Err(format!("torn record: {len} payload bytes promised"));
    }
    let payload = &bytes[RECORD_HEADER_LEN..end];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    if !record::known_kind(kind) {
        return Err(format!("unknown record kind {kind}"));
    }
    Ok((kind, payload, end))
}

fn io_err(name: &str) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        name: name.to_owned(),
        source,
    }
}

/// Reads the checkpoint: segments up to this number are covered by blocks.
fn read_checkpoint(backend: &dyn Backend) -> u64 {
    let Ok(bytes) = backend.read(CHECKPOINT) else {
        return 0;
    };
    if bytes.len() != 16 || &bytes[..4] != CHECKPOINT_MAGIC {
        warn!("ignoring a malformed WAL checkpoint file");
        return 0;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[4..12]);
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if crc32c::crc32c(&bytes[..12]) != crc {
        warn!("ignoring a WAL checkpoint with a bad checksum");
        return 0;
    }
    u64::from_le_bytes(n)
}

impl Wal {
    /// Opens the log, calling `visit` with every intact record in order.
    pub fn open(
        backend: Arc<dyn Backend>,
        options: WalOptions,
        mut visit: impl FnMut(Record),
    ) -> Result<(Wal, ReplayStats), WalError> {
        let mut numbers: Vec<u64> = backend
            .list()
            .map_err(io_err("directory"))?
            .iter()
            .filter_map(|n| segment_number(n))
            .collect();
        numbers.sort_unstable();
        let checkpoint = read_checkpoint(&*backend);
        let mut stats = ReplayStats::default();
        let last = numbers.last().copied();
        let mut reuse_last = last.is_some();
        for &n in &numbers {
            if n <= checkpoint {
                stats.skipped_segments += 1;
                continue;
            }
            let name = segment_name(n);
            let is_last = Some(n) == last;
            let bytes = backend.read(&name).map_err(io_err(&name))?;
            if bytes.len() < SEGMENT_MAGIC.len() && is_last && SEGMENT_MAGIC.starts_with(&bytes) {
                // Created but not yet headed: a crash right after rotation.
                backend.truncate(&name, 0).map_err(io_err(&name))?;
                continue;
            }
            if bytes.get(..SEGMENT_MAGIC.len()) != Some(&SEGMENT_MAGIC[..]) {
                warn!(segment = %name, "WAL segment has a bad header; set aside as .corrupt");
                stats.corruptions += 1;
                backend
                    .rename(&name, &format!("{name}.corrupt"))
                    .map_err(io_err(&name))?;
                if is_last {
                    reuse_last = false;
                }
                continue;
            }
            let mut offset = SEGMENT_MAGIC.len();
            while offset < bytes.len() {
                let parsed = parse_frame(&bytes[offset..]).and_then(|(kind, payload, used)| {
                    record::decode(kind, payload)
                        .map(|r| (r, used))
                        .map_err(|e| e.to_string())
                });
                match parsed {
                    Ok((rec, used)) => {
                        visit(rec);
                        stats.records += 1;
                        offset += used;
                    }
                    Err(reason) => {
                        stats.corruptions += 1;
                        warn!(segment = %name, offset, %reason, truncated = is_last, "damaged WAL record");
                        if is_last {
                            stats.truncated_bytes += (bytes.len() - offset) as u64;
                            backend
                                .truncate(&name, offset as u64)
                                .map_err(io_err(&name))?;
                        }
                        break;
                    }
                }
            }
        }
        let number = match (last, reuse_last) {
            (Some(n), true) if n > checkpoint => n,
            (Some(n), _) => n.max(checkpoint) + 1,
            (None, _) => checkpoint + 1,
        };
        let name = segment_name(number);
        let exists = numbers.contains(&number) && backend.len(&name).is_ok();
        let mut len = if exists {
            backend.len(&name).map_err(io_err(&name))?
        } else {
            0
        };
        if !exists {
            backend.create(&name).map_err(io_err(&name))?;
            backend.sync_dir().map_err(io_err(&name))?;
        }
        if len == 0 {
            backend
                .append(&name, SEGMENT_MAGIC)
                .map_err(io_err(&name))?;
            backend.fsync(&name).map_err(io_err(&name))?;
            len = SEGMENT_MAGIC.len() as u64;
        }
        let older_bytes = numbers
            .iter()
            .filter(|&&n| n != number)
            .filter_map(|&n| backend.len(&segment_name(n)).ok())
            .sum();
        Ok((
            Wal {
                backend,
                options,
                number,
                len,
                older_bytes,
                poisoned: false,
            },
            stats,
        ))
    }

    /// Writes framed records as one group and syncs once. On error nothing of it remains
    /// (or the log is poisoned until the cut succeeds).
    pub fn write_group(&mut self, framed: &[u8]) -> Result<(), WalError> {
        let name = segment_name(self.number);
        if self.poisoned {
            self.backend
                .truncate(&name, self.len)
                .map_err(|e| WalError::Poisoned(e.to_string()))?;
            self.poisoned = false;
        }
        if framed.is_empty() {
            return Ok(());
        }
        if self.len > SEGMENT_MAGIC.len() as u64 && self.len >= self.options.segment_bytes {
            self.rotate(&[]).map_err(WalError::Append)?;
        }
        let name = segment_name(self.number);
        let result = self
            .backend
            .append(&name, framed)
            .and_then(|()| self.backend.fsync(&name));
        match result {
            Ok(()) => {
                self.len += framed.len() as u64;
                Ok(())
            }
            Err(e) => {
                if self.backend.truncate(&name, self.len).is_err() {
                    self.poisoned = true;
                }
                Err(WalError::Append(e))
            }
        }
    }

    /// Starts a new segment whose first records are `preamble` (already framed); returns the
    /// number of the previous segment, which [`Wal::checkpoint`] may later cover.
    pub fn rotate(&mut self, preamble: &[u8]) -> std::io::Result<u64> {
        let previous = self.number;
        let number = previous + 1;
        let name = segment_name(number);
        self.backend.create(&name)?;
        let mut head = SEGMENT_MAGIC.to_vec();
        head.extend_from_slice(preamble);
        let written = self
            .backend
            .append(&name, &head)
            .and_then(|()| self.backend.fsync(&name))
            .and_then(|()| self.backend.sync_dir());
        if let Err(e) = written {
            let _ = self.backend.remove(&name);
            return Err(e);
        }
        self.older_bytes += self.len;
        self.number = number;
        self.len = head.len() as u64;
        Ok(previous)
    }

    /// Records that segments up to `through` are covered by blocks, then removes them.
    pub fn checkpoint(&mut self, through: u64) -> std::io::Result<()> {
        let mut bytes = CHECKPOINT_MAGIC.to_vec();
        bytes.extend_from_slice(&through.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        write_atomic(&*self.backend, CHECKPOINT, &bytes)?;
        for name in self.backend.list()? {
            if segment_number(&name).is_some_and(|n| n <= through) {
                self.backend.remove(&name)?;
            }
        }
        self.backend.sync_dir()?;
        self.older_bytes = 0;
        Ok(())
    }

    /// Bytes in all segments.
    pub fn disk_bytes(&self) -> u64 {
        self.older_bytes + self.len
    }

    /// The current segment's number.
    pub fn segment(&self) -> u64 {
        self.number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Fault, FaultBackend, FaultOp, MemBackend};
    use crate::record::{KIND_META, encode_meta};

    fn meta(v: &str) -> Vec<u8> {
        let mut p = Vec::new();
        encode_meta(&mut p, b"k", v.as_bytes());
        let mut f = Vec::new();
        frame(&mut f, KIND_META, &p);
        f
    }

    fn open(b: &Arc<dyn Backend>) -> (Wal, Vec<String>, ReplayStats) {
        let mut seen = Vec::new();
        let (wal, stats) = Wal::open(b.clone(), WalOptions::default(), |r| {
            if let Record::Meta { value, .. } = r {
                seen.push(String::from_utf8(value).unwrap());
            }
        })
        .unwrap();
        (wal, seen, stats)
    }

    #[test]
    fn groups_survive_reopen_and_rotation_and_checkpoint() {
        let b: Arc<dyn Backend> = Arc::new(MemBackend::new());
        let (mut wal, seen, _) = open(&b);
        assert!(seen.is_empty());
        wal.write_group(&[meta("a"), meta("b")].concat()).unwrap();
        let prev = wal.rotate(&meta("carried")).unwrap();
        wal.write_group(&meta("c")).unwrap();
        drop(wal);
        let (mut wal, seen, _) = open(&b);
        assert_eq!(seen, ["a", "b", "carried", "c"]);
        wal.checkpoint(prev).unwrap();
        drop(wal);
        let (_, seen, stats) = open(&b);
        assert_eq!(seen, ["carried", "c"]);
        assert_eq!(stats.corruptions, 0);
    }

    #[test]
    fn a_failed_group_leaves_nothing_and_later_groups_work() {
        let mem = MemBackend::new();
        let fault = Arc::new(FaultBackend::new(mem.clone()));
        let b: Arc<dyn Backend> = fault.clone();
        let (mut wal, _, _) = open(&b);
        wal.write_group(&meta("1")).unwrap();
        fault.set(Fault {
            op: FaultOp::Fsync,
            nth: 1,
            persistent: false,
            short_write: false,
        });
        assert!(wal.write_group(&meta("2")).is_err());
        fault.set(Fault {
            op: FaultOp::Write,
            nth: 1,
            persistent: false,
            short_write: true,
        });
        assert!(wal.write_group(&meta("3")).is_err());
        wal.write_group(&meta("4")).unwrap();
        drop(wal);
        mem.crash();
        let (_, seen, stats) = open(&b);
        assert_eq!(seen, ["1", "4"]);
        assert_eq!(stats.corruptions, 0);
    }

    #[test]
    fn bad_segment_magic_is_set_aside_and_counted() {
        let mem = MemBackend::new();
        let b: Arc<dyn Backend> = Arc::new(mem.clone());
        mem.put(&segment_name(1), b"garbage!garbage".to_vec());
        let (mut wal, _, stats) = open(&b);
        assert_eq!(stats.corruptions, 1);
        wal.write_group(&meta("x")).unwrap();
        drop(wal);
        let (_, seen, _) = open(&b);
        assert_eq!(seen, ["x"]);
        assert!(mem.list().unwrap().iter().any(|n| n.ends_with(".corrupt")));
    }
}
