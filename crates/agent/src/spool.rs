//! The spool: a disk-backed FIFO of encoded batches that survives crashes and power loss,
//! bounded in bytes. A batch is written here (and `fsync`ed) before it is sent, and removed
//! only when the server acknowledged it ([`Spool::ack`]) or when the spool is full and it is
//! the oldest ([`Spool::append_with`] drops and counts it).
//!
//! # On-disk format
//! A directory holding segment files and one state file.
//!
//! **Segments** `{id:016x}.seg` (ids only grow) are sequences of records, each
//!
//! ```text
//! offset  size  content
//! 0       4     len      u32 LE, payload length in bytes
//! 4       4     crc      u32 LE, CRC-32C of bytes 8..24+len (seq, dropped, payload)
//! 8       8     seq      u64 LE, the batch's sequence number
//! 16      8     dropped  u64 LE, the batch's `dropped_before`
//! 24      len   payload  the encoded batch, a protocol frame as sent (version 2 since the
//!                        columnar frame; a spool from an older agent holds version 1)
//! ```
//!
//! `dropped` is kept beside the payload because a batch that reports drops may be dropped in
//! turn: its count then moves to the next batch, so the sum of `dropped_before` the server
//! receives always equals the drops.
//!
//! Records are appended to the newest segment and `fsync`ed; a segment is closed when it
//! reaches a quarter of the spool's bound, so dropping whole old segments frees space in
//! steps that keep the bound. On open, every segment is scanned; the first record that is
//! short or fails its CRC ends the segment, and the file is truncated there (a torn tail from
//! a crash mid-append). Every complete record before it is kept.
//!
//! **State** `state.json`, replaced atomically (write `state.json.tmp`, `fsync`, rename,
//! `fsync` the directory):
//!
//! ```json
//! {"next_seq": 42, "pending_dropped": 3, "dropped_total": 7, "removed": [[30, 33]]}
//! ```
//!
//! - `next_seq`: the seq of the next batch; the batch with this seq reports `pending_dropped`.
//!   On open, the next seq is the larger of this and the highest seq on disk + 1, so seqs never
//!   repeat across restarts (a segment is only deleted after the state is written). If a record
//!   with seq ≥ `next_seq` is on disk, the pending drops were written in it: pending becomes 0.
//! - `pending_dropped`: batches dropped (spool full) not yet reported in a batch's
//!   `dropped_before`; `dropped_total`: all drops since the spool was created.
//! - `removed`: ranges of seqs still in segment files but acknowledged or dropped. Drops are
//!   written here before anything is deleted, so a dropped batch never comes back. Acks are
//!   written lazily (with the next drop, segment deletion or [`Spool::flush`]): after a crash
//!   an acknowledged batch may be sent again, which the server counts as a duplicate and
//!   stores once. The exception is the ack of a batch with `dropped` > 0, which is written
//!   before [`Spool::ack`] returns: the server has summed that count, and were the batch to
//!   come back and then be dropped, its count would move on to a new seq and be reported twice.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Record header size: len, crc, seq, dropped.
pub const HEADER: u64 = 24;
/// A length above this in a record header means a corrupt header, not a record (a batch is at
/// most a few MiB; the limit does not depend on `max_bytes`, so lowering the bound in the
/// configuration never makes existing records look corrupt).
const MAX_RECORD: u64 = 256 << 20;
const STATE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";

/// What went wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool state file {path} is unreadable: {problem}; move it away to start fresh")]
    State { path: PathBuf, problem: String },
    #[error("a batch of {size} bytes cannot fit a spool bounded at {max} bytes")]
    TooLarge { size: u64, max: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    next_seq: u64,
    pending_dropped: u64,
    dropped_total: u64,
    removed: Vec<[u64; 2]>,
}

/// One live record: where it is.
#[derive(Debug, Clone, Copy)]
struct Rec {
    seq: u64,
    /// The batch's `dropped_before`.
    dropped: u64,
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes in the file.
    size: u64,
    /// Records in the file not yet removed.
    live: usize,
    /// Seqs of the first and last record written to the file (records are in seq order).
    first_seq: u64,
    last_seq: u64,
}

/// The disk spool. Not shared: one owner calls it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Live records, oldest first (ascending seq).
    live: VecDeque<Rec>,
    /// Seqs in segment files that are acknowledged or dropped.
    removed: BTreeSet<u64>,
    tail: Option<File>,
    next_seq: u64,
    pending_dropped: u64,
    dropped_total: u64,
    /// Acks not yet in the state file.
    dirty: bool,
}

fn seg_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

fn ranges(set: &BTreeSet<u64>) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &s in set {
        match out.last_mut() {
            Some(r) if r[1] + 1 == s => r[1] = s,
            _ => out.push([s, s]),
        }
    }
    out
}

/// Encodes one record (header and payload).
pub fn encode_record(seq: u64, dropped: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut body = Vec::with_capacity(16 + payload.len());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&dropped.to_le_bytes());
    body.extend_from_slice(payload);
    let crc = crc32c::crc32c(&body);
    let mut rec = Vec::with_capacity(8 + body.len());
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(&crc.to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A record found by [`scan`]: seq, dropped, offset, payload length.
type Found = (u64, u64, u64, u32);

/// Scans a segment: the complete records, and the length of the valid prefix.
fn scan(data: &[u8], max_len: u64) -> (Vec<Found>, u64) {
    let mut recs = Vec::new();
    let mut pos: usize = 0;
    while let Some(h) = data.get(pos..pos + HEADER as usize) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if u64::from(len) > max_len {
            break;
        }
        let end = pos + HEADER as usize + len as usize;
        let Some(body) = data.get(pos + 8..end) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&body[..8]);
        let mut dropped = [0u8; 8];
        dropped.copy_from_slice(&body[8..16]);
        recs.push((
            u64::from_le_bytes(seq),
            u64::from_le_bytes(dropped),
            pos as u64,
            len,
        ));
        pos = end;
    }
    (recs, pos as u64)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded at `max_bytes` of segment files.
    /// Repairs a torn tail; keeps every complete record.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let state_path = dir.join(STATE);
        let state: State = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpoolError::State {
                path: state_path.clone(),
                problem: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State {
                next_seq: 1,
                ..State::default()
            },
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let removed: BTreeSet<u64> = state.removed.iter().flat_map(|[a, b]| *a..=*b).collect();
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 4).max(HEADER + 1),
            segments: VecDeque::new(),
            live: VecDeque::new(),
            removed: BTreeSet::new(),
            tail: None,
            next_seq: state.next_seq.max(1),
            pending_dropped: state.pending_dropped,
            dropped_total: state.dropped_total,
            dirty: false,
        };
        let mut max_seq: Option<u64> = None;
        for id in ids {
            let path = dir.join(seg_name(id));
            let data = fs::read(&path).map_err(io_err(&path))?;
            let (recs, valid) = scan(&data, MAX_RECORD);
            if valid < data.len() as u64 {
                warn!(
                    segment = %path.display(),
                    kept_records = recs.len(),
                    cut_bytes = data.len() as u64 - valid,
                    "spool segment has a torn or corrupt tail; truncating"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(valid).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            let mut live = 0;
            for &(seq, dropped, offset, len) in &recs {
                max_seq = max_seq.max(Some(seq));
                if removed.contains(&seq) {
                    spool.removed.insert(seq);
                    continue;
                }
                // A seq already live (cannot happen unless files were copied around) is
                // kept once.
                if spool.live.back().is_some_and(|r| r.seq >= seq) {
                    continue;
                }
                live += 1;
                spool.live.push_back(Rec {
                    seq,
                    dropped,
                    segment: id,
                    offset,
                    len,
                });
            }
            spool.segments.push_back(Segment {
                id,
                size: valid,
                live,
                first_seq: recs.first().map_or(0, |r| r.0),
                last_seq: recs.last().map_or(0, |r| r.0),
            });
        }
        if let Some(m) = max_seq
            && m >= spool.next_seq
        {
            // The batch that carried the pending drops is on disk.
            spool.pending_dropped = 0;
            spool.next_seq = m + 1;
            spool.dirty = true;
        }
        if !spool.live.is_empty() || spool.dropped_total > 0 {
            info!(
                dir = %dir.display(),
                batches = spool.live.len(),
                bytes = spool.bytes(),
                next_seq = spool.next_seq,
                "spool opened"
            );
        }
        spool.delete_dead_segments(false)?;
        Ok(spool)
    }

    /// The seq the next appended batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Batches waiting for an acknowledgement.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Batches dropped because the spool was full, since it was created.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Drops not yet reported in a batch.
    pub fn pending_dropped(&self) -> u64 {
        self.pending_dropped
    }

    /// Seqs of the live batches, oldest first.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.iter().map(|r| r.seq)
    }

    /// Appends the next batch: `encode(seq, dropped_before)` builds its payload. Makes room
    /// first by dropping the oldest batches (counted, and reported in this batch's
    /// `dropped_before` together with earlier unreported drops). Returns the seq. The record
    /// is on disk (`fsync`) when this returns.
    pub fn append_with(&mut self, encode: impl Fn(u64, u64) -> Vec<u8>) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        // The payload's size barely depends on dropped_before (a varint): reserve its
        // largest size so the room made is enough.
        let estimate = HEADER + encode(seq, self.pending_dropped).len() as u64 + 10;
        if estimate > self.max_bytes {
            return Err(SpoolError::TooLarge {
                size: estimate,
                max: self.max_bytes,
            });
        }
        self.make_room(estimate)?;
        let payload = encode(seq, self.pending_dropped);
        self.write_record(seq, self.pending_dropped, &payload)?;
        self.pending_dropped = 0;
        self.next_seq = seq + 1;
        Ok(seq)
    }

    /// Drops the oldest live batches until `need` more bytes fit.
    fn make_room(&mut self, need: u64) -> Result<(), SpoolError> {
        // Segments with no live record are deleted below, so they do not count.
        let projected = |segments: &VecDeque<Segment>| -> u64 {
            segments.iter().filter(|s| s.live > 0).map(|s| s.size).sum()
        };
        let mut k = 0u64;
        while projected(&self.segments) + need > self.max_bytes {
            let Some(rec) = self.live.pop_front() else {
                break;
            };
            self.mark_removed(rec);
            k += 1;
            // The drops this batch was to report are reported by the next one instead.
            self.pending_dropped += 1 + rec.dropped;
        }
        if k > 0 {
            self.dropped_total += k;
            self.dirty = true;
            warn!(
                dropped = k,
                dropped_total = self.dropped_total,
                "spool full; dropped the oldest batches"
            );
        }
        if self.segments.iter().any(|s| s.live == 0) && self.bytes() + need > self.max_bytes {
            self.delete_dead_segments(false)?;
        }
        Ok(())
    }

    fn mark_removed(&mut self, rec: Rec) {
        self.removed.insert(rec.seq);
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == rec.segment) {
            s.live -= 1;
        }
    }

    /// Deletes segments with no live record (all, or all but the tail), writing the state
    /// first so that what they held (drops, acks, the next seq) is never forgotten.
    fn delete_dead_segments(&mut self, keep_tail: bool) -> Result<(), SpoolError> {
        let tail_id = self.segments.back().map(|s| s.id);
        let dead: Vec<(u64, u64, u64)> = self
            .segments
            .iter()
            .filter(|s| s.live == 0 && !(keep_tail && Some(s.id) == tail_id))
            .map(|s| (s.id, s.first_seq, s.last_seq))
            .collect();
        if dead.is_empty() {
            if self.dirty {
                self.write_state()?;
            }
            return Ok(());
        }
        self.write_state()?;
        for &(id, first, last) in &dead {
            if Some(id) == tail_id {
                self.tail = None;
            }
            let path = self.dir.join(seg_name(id));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.segments.retain(|s| s.id != id);
            // Seqs no longer in any file need not be remembered.
            let gone: Vec<u64> = self.removed.range(first..=last).copied().collect();
            for s in gone {
                self.removed.remove(&s);
            }
        }
        fsync_dir(&self.dir)?;
        // The smaller removed set is written with the next state write; a larger one on
        // disk is harmless (those seqs are in no file).
        Ok(())
    }

    fn write_record(&mut self, seq: u64, dropped: u64, payload: &[u8]) -> Result<(), SpoolError> {
        let rec = encode_record(seq, dropped, payload);
        let need_new = match self.segments.back() {
            Some(s) => self.tail.is_none() || s.size + rec.len() as u64 > self.segment_bytes,
            None => true,
        };
        if need_new {
            let id = self.segments.back().map_or(1, |s| s.id + 1);
            let path = self.dir.join(seg_name(id));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            fsync_dir(&self.dir)?;
            self.tail = Some(f);
            self.segments.push_back(Segment {
                id,
                size: 0,
                live: 0,
                first_seq: seq,
                last_seq: seq,
            });
        }
        let Some(seg) = self.segments.back_mut() else {
            return Ok(());
        };
        let path = self.dir.join(seg_name(seg.id));
        let Some(f) = self.tail.as_mut() else {
            return Ok(());
        };
        if let Err(e) = f.write_all(&rec).and_then(|()| f.sync_data()) {
            // Leave no half record in the middle of the file: cut back to the last good end.
            let _ = f.set_len(seg.size);
            return Err(io_err(&path)(e));
        }
        self.live.push_back(Rec {
            seq,
            dropped,
            segment: seg.id,
            offset: seg.size,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        });
        seg.size += rec.len() as u64;
        seg.live += 1;
        seg.last_seq = seq;
        Ok(())
    }

    /// Reads the payload of a live batch; `None` when it is not live.
    pub fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let Some(rec) = self.find(seq) else {
            return Ok(None);
        };
        let path = self.dir.join(seg_name(rec.segment));
        let mut f = File::open(&path).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(rec.offset + HEADER))
            .map_err(io_err(&path))?;
        let mut buf = vec![0u8; rec.len as usize];
        f.read_exact(&mut buf).map_err(io_err(&path))?;
        Ok(Some(buf))
    }

    fn find(&self, seq: u64) -> Option<Rec> {
        let i = self.live.binary_search_by_key(&seq, |r| r.seq).ok()?;
        self.live.get(i).copied()
    }

    /// Up to `n` live batches with seq > `after` (all when `None`), oldest first.
    pub fn after(&self, after: Option<u64>, n: usize) -> Vec<u64> {
        let start = after.map_or(0, |a| self.live.partition_point(|r| r.seq <= a));
        self.live.range(start..).map(|r| r.seq).take(n).collect()
    }

    /// The server acknowledged `seq`: it leaves the spool. Unknown seqs are ignored.
    /// Returns whether it was live. The ack reaches the state file lazily, except when the
    /// batch reported drops (see the module docs).
    pub fn ack(&mut self, seq: u64) -> Result<bool, SpoolError> {
        let Ok(i) = self.live.binary_search_by_key(&seq, |r| r.seq) else {
            return Ok(false);
        };
        let Some(rec) = self.live.remove(i) else {
            return Ok(false);
        };
        self.mark_removed(rec);
        self.dirty = true;
        // A closed segment is deleted when it empties (the state is written first); the open
        // tail is kept for appends.
        let tail_id = self.segments.back().map(|s| s.id);
        if self
            .segments
            .iter()
            .any(|s| s.live == 0 && Some(s.id) != tail_id)
        {
            self.delete_dead_segments(true)?;
        } else if rec.dropped > 0 {
            // The server has summed this batch's `dropped_before`. Were the ack lost in a
            // crash, the batch would come back, and if the spool then filled up, dropping it
            // would move its count to the next batch: those drops reported twice. Acks of
            // batches that report drops are rare (one per spool-full episode), so write it now.
            self.write_state()?;
        }
        Ok(true)
    }

    /// Writes the state file (acks included).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            self.write_state()?;
        }
        Ok(())
    }

    fn write_state(&mut self) -> Result<(), SpoolError> {
        let state = State {
            next_seq: self.next_seq,
            pending_dropped: self.pending_dropped,
            dropped_total: self.dropped_total,
            removed: ranges(&self.removed),
        };
        let tmp = self.dir.join(STATE_TMP);
        let bytes = serde_json::to_vec(&state).map_err(|e| SpoolError::State {
            path: tmp.clone(),
            problem: e.to_string(),
        })?;
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        let path = self.dir.join(STATE);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        self.dirty = false;
        Ok(())
    }

    /// Test seam for crash points: writes only the first `keep` bytes of the next record, as a
    /// crash in the middle of an append would, and forgets it (the spool must be reopened).
    #[cfg(test)]
    pub(crate) fn append_torn(&mut self, payload: &[u8], keep: usize) -> Result<(), SpoolError> {
        let rec = encode_record(self.next_seq, self.pending_dropped, payload);
        self.write_record(self.next_seq, self.pending_dropped, payload)?;
        // Cut the just-written record back to `keep` bytes.
        if let (Some(seg), Some(f)) = (self.segments.back(), self.tail.as_ref()) {
            let path = self.dir.join(seg_name(seg.id));
            let len = seg.size - rec.len() as u64 + keep.min(rec.len() - 1) as u64;
            f.set_len(len).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
