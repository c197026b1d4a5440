//! The ingest write-ahead log: the point at which a batch becomes durable, and so the point
//! after which the server may acknowledge it.
//!
//! Segments are files `wal/{number:020}.wal`, each starting with an 8-byte header
//! (`"FMWAL"`, three bytes version `0 0 1`), then records:
//!
//! ```text
//! len: u32 LE | crc32c(kind ‖ payload): u32 LE | kind: u8 | payload: len bytes
//! ```
//!
//! Appends come in groups (group commit): every record of a group is written, then one
//! `fdatasync`. A failed write or sync truncates the segment back to where the group began, so
//! a group is either wholly durable or wholly absent. On open, every segment is replayed; a torn
//! or corrupt tail of the last segment is cut off (it was never acknowledged), and a corrupt
//! record inside an older segment ends that segment's replay with an error report.
//! `docs/storage.md` describes the bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First bytes of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FMWAL\x00\x00\x01";
/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 9;
/// Largest payload a record may carry; longer lengths are corruption.
pub const MAX_RECORD_LEN: u32 = 64 << 20;

/// What a WAL record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An accepted batch: `received_ms: i64 LE` then the protobuf body of the batch.
    Batch = 1,
    /// An integrity event that stored nothing (a duplicate, a rejected batch), kept so the
    /// device's counters survive restarts.
    Event = 2,
    /// What the registry keeps of a stored batch (its samples are in the sample store).
    Summary = 3,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Batch),
            2 => Some(RecordKind::Event),
            3 => Some(RecordKind::Summary),
            _ => None,
        }
    }
}

/// Errors opening or appending to the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("WAL segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error("WAL segment {path} has a bad header; it is not a fleetmon WAL segment")]
    BadHeader { path: PathBuf },
    #[error("WAL append failed, nothing of this group was kept: {0}")]
    Append(io::Error),
}

/// Damage found while replaying; reported, not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// True when the damaged tail was cut off the segment (the last segment's torn write).
    pub truncated: bool,
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

/// An open WAL, appending to its last segment.
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    file: File,
    number: u64,
    len: u64,
    /// Bytes in the segments before the current one.
    sealed_bytes: u64,
    buf: Vec<u8>,
}

/// What replay found.
pub struct Replay {
    pub damage: Vec<Damage>,
    pub records: u64,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, calling `visit` with every intact record
    /// in order, then positions for appending.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        mut visit: impl FnMut(RecordKind, &[u8]),
    ) -> Result<(Wal, Replay), WalError> {
        let dir_err = |source| WalError::Dir {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let mut numbers = segment_numbers(dir).map_err(dir_err)?;
        numbers.sort_unstable();
        let mut replay = Replay {
            damage: Vec::new(),
            records: 0,
        };
        let last = numbers.last().copied();
        for &n in &numbers {
            let path = segment_path(dir, n);
            let is_last = Some(n) == last;
            replay_segment(&path, is_last, &mut replay, &mut visit)?;
        }
        let number = last.unwrap_or(1);
        let sealed_bytes = numbers
            .iter()
            .filter(|&&n| n != number)
            .filter_map(|&n| fs::metadata(segment_path(dir, n)).ok())
            .map(|m| m.len())
            .sum();
        let path = segment_path(dir, number);
        let (file, len) = open_for_append(&path, last.is_none())?;
        if last.is_none() {
            sync_dir(dir).map_err(dir_err)?;
        }
        Ok((
            Wal {
                dir: dir.to_owned(),
                options,
                file,
                number,
                len,
                sealed_bytes,
                buf: Vec::new(),
            },
            replay,
        ))
    }

    /// Appends a group of records and syncs once. On error nothing of the group remains.
    pub fn append_group<'a>(
        &mut self,
        records: impl IntoIterator<Item = (RecordKind, &'a [u8])>,
    ) -> Result<(), WalError> {
        if self.len > SEGMENT_MAGIC.len() as u64 && self.len >= self.options.segment_bytes {
            self.rotate().map_err(WalError::Append)?;
        }
        self.buf.clear();
        for (kind, payload) in records {
            encode_record(&mut self.buf, kind, payload);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let start = self.len;
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut back to the last durable record so a later group does not follow garbage.
                let _ = self.file.set_len(start);
                let _ = self.file.seek(SeekFrom::Start(start));
                let _ = self.file.sync_data();
                Err(WalError::Append(e))
            }
        }
    }

    /// Bytes in all segments.
    pub fn disk_bytes(&self) -> u64 {
        self.sealed_bytes + self.len
    }

    fn rotate(&mut self) -> io::Result<()> {
        let number = self.number + 1;
        let path = segment_path(&self.dir, number);
        let (file, len) = open_for_append(&path, true).map_err(|e| match e {
            WalError::Segment { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        sync_dir(&self.dir)?;
        self.sealed_bytes += self.len;
        self.file = file;
        self.number = number;
        self.len = len;
        Ok(())
    }
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: RecordKind, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32c::crc32c(&[kind as u8]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.wal"))
}

fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    Ok(out)
}

fn open_for_append(path: &Path, create: bool) -> Result<(File, u64), WalError> {
    let err = |source| WalError::Segment {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(path)
        .map_err(err)?;
    let mut len = file.metadata().map_err(err)?.len();
    if len == 0 {
        file.write_all(SEGMENT_MAGIC).map_err(err)?;
        file.sync_data().map_err(err)?;
        len = SEGMENT_MAGIC.len() as u64;
    }
    file.seek(SeekFrom::Start(len)).map_err(err)?;
    Ok((file, len))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn replay_segment(
    path: &Path,
    is_last: bool,
    replay: &mut Replay,
    visit: &mut impl FnMut(RecordKind, &[u8]),
) -> Result<(), WalError> {
    let err = |source| WalError::Segment {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(err)?;
    if bytes.len() < SEGMENT_MAGIC.len() {
        // A segment created but not yet headed: a crash right after creation.
        if is_last {
            truncate(path, 0).map_err(err)?;
            return Ok(());
        }
        return Err(WalError::BadHeader {
            path: path.to_owned(),
        });
    }
    if &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Err(WalError::BadHeader {
            path: path.to_owned(),
        });
    }
    let mut offset = SEGMENT_MAGIC.len();
    while offset < bytes.len() {
        match parse_record(&bytes[offset..]) {
            Ok((kind, payload, used)) => {
                visit(kind, payload);
                replay.records += 1;
                offset += used;
            }
            Err(reason) => {
                if is_last {
                    truncate(path, offset as u64).map_err(err)?;
                }
                replay.damage.push(Damage {
                    segment: path.to_owned(),
                    offset: offset as u64,
                    reason,
                    truncated: is_last,
                });
                break;
            }
        }
    }
    Ok(())
}

/// Parses the record at the start of `bytes`: its kind, payload and encoded length.
pub fn parse_record(bytes: &[u8]) -> Result<(RecordKind, &[u8], usize), String> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "torn record header: {} of {RECORD_HEADER_LEN} bytes",
            bytes.len()
        ));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let kind_byte = bytes[8];
    if len > MAX_RECORD_LEN {
        return Err(format!(
            "record length {len} exceeds the maximum {MAX_RECORD_LEN}"
        ));
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < end {
        return Err(format!(
            "torn record: header promises {len} payload bytes, {} present",
            bytes.len() - RECORD_HEADER_LEN
        ));
    }
    let payload = &bytes[RECORD_HEADER_LEN..end];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind_byte]), payload);
    if actual != crc {
        return Err(format!(
            "record checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    let kind = RecordKind::from_byte(kind_byte)
        .ok_or_else(|| format!("unknown record kind {kind_byte}"))?;
    Ok((kind, payload, end))
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Wal, Vec<Vec<u8>>, Vec<Damage>) {
        let mut seen = Vec::new();
        let (wal, replay) =
            Wal::open(dir, WalOptions::default(), |_, p| seen.push(p.to_vec())).expect("open wal");
        (wal, seen, replay.damage)
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let mut n = segment_numbers(dir).unwrap();
        n.sort_unstable();
        segment_path(dir, *n.last().unwrap())
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, seen, _) = open(dir.path());
        assert!(seen.is_empty());
        wal.append_group([
            (RecordKind::Batch, &b"one"[..]),
            (RecordKind::Batch, b"two"),
        ])
        .unwrap();
        wal.append_group([(RecordKind::Batch, &b"three"[..])])
            .unwrap();
        drop(wal);
        let (_, seen, damage) = open(dir.path());
        assert_eq!(
            seen,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(damage.is_empty());
    }

    #[test]
    fn every_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        wal.append_group([(RecordKind::Batch, &b"kept"[..])])
            .unwrap();
        wal.append_group([(RecordKind::Batch, &b"torn-record"[..])])
            .unwrap();
        drop(wal);
        let path = last_segment(dir.path());
        let full = fs::read(&path).unwrap();
        let second_start = SEGMENT_MAGIC.len() + RECORD_HEADER_LEN + 4;
        for cut in second_start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut wal, seen, damage) = open(dir.path());
            assert_eq!(seen, vec![b"kept".to_vec()], "cut at {cut}");
            if cut > second_start {
                assert_eq!(damage.len(), 1, "cut at {cut}");
                assert!(damage[0].truncated);
            }
            assert_eq!(fs::metadata(&path).unwrap().len() as usize, second_start);
            // The repaired log takes new appends that replay after the kept record.
            wal.append_group([(RecordKind::Batch, &b"after"[..])])
                .unwrap();
            drop(wal);
            let (_, seen, _) = open(dir.path());
            assert_eq!(seen, vec![b"kept".to_vec(), b"after".to_vec()]);
            fs::write(&path, &full).unwrap();
        }
    }

    #[test]
    fn each_kind_of_damage_is_detected() {
        let mut rec = Vec::new();
        encode_record(&mut rec, RecordKind::Batch, b"payload");
        assert!(parse_record(&rec).is_ok());
        let damaged = |i: usize, v: u8| {
            let mut r = rec.clone();
            r[i] = v;
            parse_record(&r).unwrap_err()
        };
        assert!(damaged(3, 0x7f).contains("exceeds the maximum"));
        assert!(damaged(0, 200).contains("torn record"));
        assert!(damaged(5, rec[5] ^ 1).contains("checksum mismatch"));
        assert!(damaged(RECORD_HEADER_LEN + 1, b'X').contains("checksum mismatch"));
        // A bad kind with a matching checksum.
        let mut r = Vec::new();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[9]), b"p");
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&crc.to_le_bytes());
        r.push(9);
        r.push(b'p');
        assert!(
            parse_record(&r)
                .unwrap_err()
                .contains("unknown record kind 9")
        );
    }

    #[test]
    fn damage_in_an_older_segment_keeps_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let options = WalOptions { segment_bytes: 1 };
        let (mut wal, _) =
            Wal::open(dir.path(), options.clone(), |_, p| seen.push(p.to_vec())).unwrap();
        for p in [&b"a"[..], b"b", b"c"] {
            wal.append_group([(RecordKind::Batch, p)]).unwrap();
        }
        drop(wal);
        let mut numbers = segment_numbers(dir.path()).unwrap();
        numbers.sort_unstable();
        assert_eq!(numbers.len(), 3);
        let middle = segment_path(dir.path(), numbers[1]);
        let mut bytes = fs::read(&middle).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&middle, &bytes).unwrap();
        let (_, replay) = Wal::open(dir.path(), options, |_, p| seen.push(p.to_vec())).unwrap();
        assert_eq!(seen, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(replay.damage.len(), 1);
        assert!(!replay.damage[0].truncated);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), b"not a wal at all").unwrap();
        let err = Wal::open(dir.path(), WalOptions::default(), |_, _| {})
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad header"), "{err}");
    }
}
