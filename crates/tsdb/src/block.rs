//! Sealed blocks: immutable files holding every series' samples of one time window, written
//! once (temp file, fsync, rename, directory fsync) and never changed; compaction replaces
//! several with one, retention deletes them.
//!
//! A block is columnar per series: its samples as one Gorilla stream (timestamps and values),
//! plus — in compacted blocks — rollup rows. A block's series table carries the labels, so the
//! index can be rebuilt from blocks alone. Blocks are ranked by `seq`: on equal timestamps a
//! higher `seq` wins, as the head wins over all blocks. Layout in `docs/tsdb.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use tracing::warn;

use crate::backend::{Backend, RandomRead};
use crate::codec::{self, decode_samples, encode_samples};
use crate::index::SeriesId;
use crate::record::{Reader, RecordError, put_varint, unzigzag, zigzag};
use crate::rollup::{self, Row};
use crate::series::Labels;

/// First bytes of a block file: the current format, labels and entry fields packed.
pub const BLOCK_MAGIC: &[u8; 8] = b"FMTSBLK2";
/// First bytes of a block in the first format (full labels and fixed-width fields in every
/// series entry); still read.
pub const BLOCK_MAGIC_V1: &[u8; 8] = b"FMTSBLK1";

/// Errors reading a block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {name}: bad magic")]
    Magic { name: String },
    #[error("block {name}: checksum mismatch")]
    Checksum { name: String },
    #[error("block {name}: {source}")]
    Decode { name: String, source: RecordError },
    #[error("block {name}: unknown sample encoding {encoding}")]
    Encoding { name: String, encoding: u8 },
    #[error("block {name}: {source}")]
    Codec {
        name: String,
        source: codec::CodecError,
    },
    #[error("block {name}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// One series' samples to write.
#[derive(Debug, Clone)]
pub struct SeriesInput {
    pub id: SeriesId,
    pub labels: Labels,
    /// Sorted by time, one sample per timestamp.
    pub samples: Vec<(i64, f64)>,
}

/// Where a series' bytes are in the file; kept in memory per block (~70 bytes a series),
/// while the samples stay on disk.
#[derive(Debug, Clone)]
struct SeriesEntry {
    id: SeriesId,
    count: u32,
    min_t: i64,
    max_t: i64,
    encoding: u8,
    data: Range<usize>,
    rollups: Vec<(i64, Range<usize>)>,
}

/// Where a block's bytes come from.
#[derive(Debug)]
enum Source {
    /// The whole file in memory (tests, tools).
    Memory(Vec<u8>),
    /// Read range by range from an open file when a query needs a series.
    File(Arc<dyn RandomRead>),
}

/// An open block: its series table in memory, its samples on disk.
#[derive(Debug)]
pub struct Block {
    pub name: String,
    pub seq: u64,
    pub level: u8,
    pub min_t: i64,
    pub max_t: i64,
    /// File size in bytes.
    pub bytes: u64,
    samples: u64,
    series: Vec<SeriesEntry>,
    source: Source,
}

/// A block's series and their labels, as read from its series table (for the index).
pub type SeriesTable = Vec<(SeriesId, Labels)>;

/// File name of a block.
pub fn block_name(seq: u64, min_t: i64, max_t: i64) -> String {
    format!("block-{seq:016}-{min_t}-{max_t}.blk")
}

/// Whether a file name is a block's.
pub fn is_block_name(name: &str) -> bool {
    name.starts_with("block-") && name.ends_with(".blk")
}

/// Bytes of a format-2 block's header (magic, level) and footer (seq, min_ts, max_ts, series
/// count; the checksum follows).
const HEADER_BYTES: usize = 9;
const FOOTER_BYTES: usize = 28;

/// Encoded bytes a writer with a file holds before appending them to it.
const SPILL_BYTES: usize = 1 << 20;

/// Where a writer's bytes go besides memory: a temporary file they are appended to as they
/// grow, so a block of any size costs [`SPILL_BYTES`] of memory.
#[derive(Debug)]
struct Spill {
    backend: Arc<dyn Backend>,
    file: String,
    /// Bytes appended to the file so far.
    written: usize,
    /// CRC-32C of those bytes.
    crc: u32,
}

impl Spill {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.backend.append(&self.file, bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.written += bytes.len();
        Ok(())
    }
}

/// Writes a block one series at a time, so only the encoded bytes and the series being added
/// are held, never every series' raw samples at once — and with [`BlockWriter::spill_to`],
/// not even the encoded bytes: they go to a file as they grow. The fields that depend on the
/// whole block (`seq`, `min_ts`, `max_ts`, the series count) are written last, in the footer.
#[derive(Debug)]
pub struct BlockWriter {
    out: Vec<u8>,
    min_t: Option<i64>,
    max_t: Option<i64>,
    rollups: Vec<i64>,
    /// Gorilla for every series, skipping the codec choice (pco costs ~8× Gorilla's CPU).
    gorilla_only: bool,
    /// Label names and values written so far, by number: later entries refer to them.
    strings: HashMap<String, u64>,
    /// The previous entry's first timestamp (entries store theirs as a difference).
    prev_min_t: i64,
    /// Where each series' bytes are, for opening the block without reading it back.
    entries: Vec<SeriesEntry>,
    samples: u64,
    level: u8,
    spill: Option<Spill>,
}

impl BlockWriter {
    /// An empty block of `level`; each series also gets rollup rows at each of `rollups` (ms).
    pub fn new(level: u8, rollups: &[i64]) -> Self {
        let mut out = Vec::with_capacity(HEADER_BYTES);
        out.extend_from_slice(BLOCK_MAGIC);
        out.push(level);
        Self {
            out,
            min_t: None,
            max_t: None,
            rollups: rollups.iter().take(usize::from(u8::MAX)).copied().collect(),
            gorilla_only: false,
            strings: HashMap::new(),
            prev_min_t: 0,
            entries: Vec::new(),
            samples: 0,
            level,
            spill: None,
        }
    }

    /// Appends the block's bytes to `file` (created empty now) as they grow, instead of
    /// holding them all; [`BlockWriter::finish_file`] completes it.
    pub fn spill_to(mut self, backend: Arc<dyn Backend>, file: &str) -> std::io::Result<Self> {
        backend.create(file)?;
        self.spill = Some(Spill {
            backend,
            file: file.to_owned(),
            written: 0,
            crc: 0,
        });
        Ok(self)
    }

    /// Absolute offset in the block of the next byte written.
    fn position(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.written) + self.out.len()
    }

    /// With a file, appends the held bytes to it once they pass [`SPILL_BYTES`].
    fn maybe_spill(&mut self) -> std::io::Result<()> {
        if self.out.len() >= SPILL_BYTES {
            self.spill_out()?;
        }
        Ok(())
    }

    fn spill_out(&mut self) -> std::io::Result<()> {
        if let Some(s) = &mut self.spill {
            s.append(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// A label name or value: a reference to an earlier one (its number + 1), or 0, its
    /// length and its bytes, after which it has the next number.
    fn put_string(&mut self, s: &str) {
        if let Some(&n) = self.strings.get(s) {
            put_varint(&mut self.out, n + 1);
            return;
        }
        let n = self.strings.len() as u64;
        self.strings.insert(s.to_owned(), n);
        put_varint(&mut self.out, 0);
        put_varint(&mut self.out, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Encodes every series as Gorilla: for blocks that will soon be merged (and then get the
    /// smaller codec), written by background flushes.
    pub fn gorilla_only(mut self) -> Self {
        self.gorilla_only = true;
        self
    }

    /// Appends one series (samples sorted by time, one per timestamp); empty ones are skipped.
    /// With a file, an error appending to it is returned (and the block is unusable).
    pub fn add(
        &mut self,
        id: SeriesId,
        labels: &Labels,
        samples: &[(i64, f64)],
    ) -> std::io::Result<()> {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Ok(());
        };
        let count = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        let (encoding, data) = if self.gorilla_only {
            (codec::GORILLA, crate::chunk::encode(samples))
        } else {
            encode_samples(samples)
        };
        let data = self.put_entry(id, labels, count, (first.0, last.0), encoding, &data);
        let worth: Vec<(i64, Vec<Row>)> = self
            .rollups
            .iter()
            .map(|&res| (res, rollup::compute(samples, res)))
            .filter(|(_, rows)| rollup::worth_storing(rows.len(), samples.len()))
            .collect();
        self.out.push(worth.len() as u8);
        let mut rollups = Vec::with_capacity(worth.len());
        let mut bytes = Vec::new();
        for (res, rows) in worth {
            bytes.clear();
            rollup::encode_rows(&mut bytes, &rows);
            self.out.extend_from_slice(&res.to_le_bytes());
            self.out
                .extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            let at = self.position();
            self.out.extend_from_slice(&bytes);
            rollups.push((res, at..at + bytes.len()));
        }
        self.push_entry(id, count, (first.0, last.0), encoding, data, rollups);
        self.maybe_spill()
    }

    /// Appends one series already encoded as a Gorilla stream of `count` samples (sorted, one
    /// per timestamp) from `span.0` to `span.1`: a head chunk copied as it is, without decoding
    /// and encoding it again. Only for writers without rollups (a flush's level-0 blocks).
    pub fn add_gorilla(
        &mut self,
        id: SeriesId,
        labels: &Labels,
        count: u32,
        span: (i64, i64),
        stream: &[u8],
    ) -> std::io::Result<()> {
        debug_assert!(self.rollups.is_empty(), "rollups need the samples");
        if count == 0 {
            return Ok(());
        }
        let data = self.put_entry(id, labels, count, span, codec::GORILLA, stream);
        self.out.push(0);
        self.push_entry(id, count, span, codec::GORILLA, data, Vec::new());
        self.maybe_spill()
    }

    /// The series entry up to its column: id, labels, count, time span, encoding, data.
    /// Returns where the data is in the block.
    fn put_entry(
        &mut self,
        id: SeriesId,
        labels: &Labels,
        count: u32,
        (first, last): (i64, i64),
        encoding: u8,
        data: &[u8],
    ) -> Range<usize> {
        self.min_t = Some(self.min_t.map_or(first, |m| m.min(first)));
        self.max_t = Some(self.max_t.map_or(last, |m| m.max(last)));
        put_varint(&mut self.out, u64::from(id));
        put_varint(&mut self.out, labels.len() as u64);
        for (k, v) in labels.iter() {
            self.put_string(k);
            self.put_string(v);
        }
        let out = &mut self.out;
        put_varint(out, u64::from(count));
        put_varint(out, zigzag(first.wrapping_sub(self.prev_min_t)));
        put_varint(out, zigzag(last.wrapping_sub(first)));
        self.prev_min_t = first;
        out.push(encoding);
        put_varint(out, data.len() as u64);
        let at = self.position();
        self.out.extend_from_slice(data);
        at..at + data.len()
    }

    fn push_entry(
        &mut self,
        id: SeriesId,
        count: u32,
        (min_t, max_t): (i64, i64),
        encoding: u8,
        data: Range<usize>,
        rollups: Vec<(i64, Range<usize>)>,
    ) {
        self.samples += u64::from(count);
        self.entries.push(SeriesEntry {
            id,
            count,
            min_t,
            max_t,
            encoding,
            data,
            rollups,
        });
    }

    /// Gives up a block: removes its file, if it has one.
    pub fn abandon(self) {
        if let Some(s) = &self.spill {
            let _ = s.backend.remove(&s.file);
        }
    }

    /// Series written so far.
    pub fn series(&self) -> usize {
        self.entries.len()
    }

    /// Time span of the samples written so far (`(0, 0)` when none).
    pub fn span(&self) -> (i64, i64) {
        (self.min_t.unwrap_or(0), self.max_t.unwrap_or(0))
    }

    /// The footer (`seq`, span, series count) appended to `out`.
    fn put_footer(&mut self, seq: u64) {
        let (min_t, max_t) = self.span();
        let n = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&seq.to_le_bytes());
        self.out.extend_from_slice(&min_t.to_le_bytes());
        self.out.extend_from_slice(&max_t.to_le_bytes());
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    /// Appends the footer and the checksum and returns the block's bytes (a writer without a
    /// file).
    pub fn finish(mut self, seq: u64) -> Vec<u8> {
        debug_assert!(
            self.spill.is_none(),
            "a writer with a file finishes into it"
        );
        self.put_footer(seq);
        let crc = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }

    /// Completes a block written with [`BlockWriter::spill_to`]: appends the rest, the footer
    /// and the checksum, fsyncs the file, renames it to `name` and syncs the directory, then
    /// opens it from what the writer kept (its series table, not re-read from disk). On error
    /// the file is removed.
    pub fn finish_file(mut self, seq: u64, name: &str) -> Result<Block, BlockError> {
        let io = |source| BlockError::Io {
            name: name.to_owned(),
            source,
        };
        let Some(mut spill) = self.spill.take() else {
            return Err(io(std::io::Error::other("the writer has no file")));
        };
        self.put_footer(seq);
        let result = spill
            .append(&self.out)
            .and_then(|()| spill.backend.append(&spill.file, &spill.crc.to_le_bytes()))
            .and_then(|()| spill.backend.fsync(&spill.file))
            .and_then(|()| spill.backend.rename(&spill.file, name))
            .and_then(|()| spill.backend.sync_dir())
            .and_then(|()| spill.backend.open_read(name));
        let reader = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = spill.backend.remove(&spill.file);
                return Err(io(e));
            }
        };
        let (min_t, max_t) = self.span();
        let bytes = spill.written as u64 + 4;
        let mut series = self.entries;
        series.sort_by_key(|s| s.id);
        Ok(Block {
            name: name.to_owned(),
            seq,
            level: self.level,
            min_t,
            max_t,
            bytes,
            samples: self.samples,
            series,
            source: Source::File(reader),
        })
    }
}

/// Encodes a block; each series also gets rollup rows at each of `rollups` (ms).
pub fn encode_block(seq: u64, level: u8, series: &[SeriesInput], rollups: &[i64]) -> Vec<u8> {
    let mut w = BlockWriter::new(level, rollups);
    for s in series {
        // Without a file nothing can fail.
        let _ = w.add(s.id, &s.labels, &s.samples);
    }
    w.finish(seq)
}

/// Sorts samples by time and keeps, per timestamp, the last one in the input order (last write
/// wins), as inserting them one by one into a `BTreeMap` would. Runs already sorted cost a
/// linear merge.
pub fn last_write_wins(samples: &mut Vec<(i64, f64)>) {
    if samples.windows(2).any(|w| w[0].0 >= w[1].0) {
        // Stable: equal timestamps keep their input order, so the last one is the latest write.
        samples.sort_by_key(|s| s.0);
        let mut kept = 0usize;
        for i in 0..samples.len() {
            if kept > 0 && samples[kept - 1].0 == samples[i].0 {
                samples[kept - 1] = samples[i];
            } else {
                samples[kept] = samples[i];
                kept += 1;
            }
        }
        samples.truncate(kept);
    }
}

/// A series entry's fields before its column in the packed format (`docs/tsdb.md`): id,
/// labels, count, first and last timestamp.
fn read_packed_entry(
    r: &mut Reader<'_>,
    strings: &mut Vec<String>,
    prev_min_t: i64,
) -> Result<(SeriesId, Labels, u32, i64, i64), RecordError> {
    let id = r.varint()?;
    let id = SeriesId::try_from(id).map_err(|_| RecordError::OutOfRange("series id"))?;
    let n = r.varint()?;
    // Each label takes at least two bytes: never reserve more than the block can hold.
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= r.bytes.len() / 2)
        .ok_or(RecordError::OutOfRange("label count"))?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let k = read_string(r, strings)?;
        pairs.push((k, read_string(r, strings)?));
    }
    let count = u32::try_from(r.varint()?).map_err(|_| RecordError::OutOfRange("count"))?;
    let min_t = prev_min_t.wrapping_add(unzigzag(r.varint()?));
    let max_t = min_t.wrapping_add(unzigzag(r.varint()?));
    Ok((id, Labels::from_sorted(pairs), count, min_t, max_t))
}

/// A label name or value of the packed format: a new string, or a reference to an earlier one.
fn read_string(r: &mut Reader<'_>, strings: &mut Vec<String>) -> Result<String, RecordError> {
    match r.varint()? {
        0 => {
            let len = usize::try_from(r.varint()?).map_err(|_| RecordError::Short)?;
            let s = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| RecordError::Utf8)?;
            strings.push(s.clone());
            Ok(s)
        }
        n => usize::try_from(n - 1)
            .ok()
            .and_then(|i| strings.get(i))
            .cloned()
            .ok_or(RecordError::StringRef(n - 1, strings.len())),
    }
}

impl Block {
    /// Parses and verifies a block held in memory.
    pub fn decode(name: &str, data: Vec<u8>) -> Result<(Block, SeriesTable), BlockError> {
        let (mut block, table) = Self::parse(name, &data, Source::Memory(Vec::new()))?;
        block.source = Source::Memory(data);
        Ok((block, table))
    }

    /// Reads and verifies a block file once, then keeps only its series table in memory.
    pub fn load(backend: Arc<dyn Backend>, name: &str) -> Result<(Block, SeriesTable), BlockError> {
        let io = |source| BlockError::Io {
            name: name.to_owned(),
            source,
        };
        let reader = backend.open_read(name).map_err(io)?;
        let data = backend.read(name).map_err(io)?;
        Self::parse(name, &data, Source::File(reader))
    }

    fn parse(name: &str, data: &[u8], source: Source) -> Result<(Block, SeriesTable), BlockError> {
        let dec = |source| BlockError::Decode {
            name: name.to_owned(),
            source,
        };
        let packed = match data.get(..BLOCK_MAGIC.len()) {
            _ if data.len() < BLOCK_MAGIC.len() + 4 => None,
            Some(m) if m == BLOCK_MAGIC => Some(true),
            Some(m) if m == BLOCK_MAGIC_V1 => Some(false),
            _ => None,
        };
        let Some(packed) = packed else {
            return Err(BlockError::Magic {
                name: name.to_owned(),
            });
        };
        let body = data.len() - 4;
        let stored =
            u32::from_le_bytes([data[body], data[body + 1], data[body + 2], data[body + 3]]);
        if crc32c::crc32c(&data[..body]) != stored {
            return Err(BlockError::Checksum {
                name: name.to_owned(),
            });
        }
        let (mut r, seq, level, min_t, max_t, n) = if packed {
            // Header: magic, level; footer (before the checksum): seq, span, series count.
            let short = || dec(RecordError::Short);
            let footer_at = body
                .checked_sub(FOOTER_BYTES)
                .filter(|&f| f >= HEADER_BYTES);
            let footer_at = footer_at.ok_or_else(short)?;
            let mut f = Reader {
                bytes: &data[footer_at..body],
            };
            let (seq, min_t, max_t) = (
                f.u64().map_err(dec)?,
                f.i64().map_err(dec)?,
                f.i64().map_err(dec)?,
            );
            let n = f.u32().map_err(dec)?;
            let r = Reader {
                bytes: &data[HEADER_BYTES..footer_at],
            };
            (r, seq, data[BLOCK_MAGIC.len()], min_t, max_t, n)
        } else {
            let mut r = Reader {
                bytes: &data[BLOCK_MAGIC.len()..body],
            };
            let seq = r.u64().map_err(dec)?;
            let level = r.take(1).map_err(dec)?[0];
            let min_t = r.i64().map_err(dec)?;
            let max_t = r.i64().map_err(dec)?;
            let n = r.u32().map_err(dec)?;
            (r, seq, level, min_t, max_t, n)
        };
        // Offsets in the file of what `r` reads.
        let end = if packed { body - FOOTER_BYTES } else { body };
        let pos = |r: &Reader<'_>| end - r.bytes.len();
        let mut series = Vec::with_capacity(n as usize);
        let mut table = Vec::with_capacity(n as usize);
        let mut samples = 0u64;
        let mut strings = Vec::new();
        let mut prev_min_t = 0i64;
        for _ in 0..n {
            let (id, labels, count, s_min, s_max) = if packed {
                let e = read_packed_entry(&mut r, &mut strings, prev_min_t).map_err(dec)?;
                prev_min_t = e.3;
                e
            } else {
                let id = r.u32().map_err(dec)?;
                let labels = r.labels().map_err(dec)?;
                let count = r.u32().map_err(dec)?;
                (
                    id,
                    labels,
                    count,
                    r.i64().map_err(dec)?,
                    r.i64().map_err(dec)?,
                )
            };
            table.push((id, labels));
            let encoding = r.take(1).map_err(dec)?[0];
            if encoding != codec::GORILLA && encoding != codec::PCO {
                return Err(BlockError::Encoding {
                    name: name.to_owned(),
                    encoding,
                });
            }
            let len = if packed {
                usize::try_from(r.varint().map_err(dec)?)
                    .map_err(|_| dec(RecordError::OutOfRange("column length")))?
            } else {
                r.u32().map_err(dec)? as usize
            };
            let start = pos(&r);
            r.take(len).map_err(dec)?;
            let nroll = r.take(1).map_err(dec)?[0];
            let mut rollups = Vec::new();
            for _ in 0..nroll {
                let res = r.i64().map_err(dec)?;
                let len = r.u32().map_err(dec)? as usize;
                let rs = pos(&r);
                r.take(len).map_err(dec)?;
                rollups.push((res, rs..rs + len));
            }
            samples += u64::from(count);
            series.push(SeriesEntry {
                id,
                count,
                min_t: s_min,
                max_t: s_max,
                encoding,
                data: start..start + len,
                rollups,
            });
        }
        series.sort_by_key(|s| s.id);
        series.shrink_to_fit();
        let block = Block {
            name: name.to_owned(),
            seq,
            level,
            min_t,
            max_t,
            bytes: data.len() as u64,
            samples,
            series,
            source,
        };
        Ok((block, table))
    }

    /// The bytes of a range of the file.
    fn read(&self, range: Range<usize>) -> Result<Cow<'_, [u8]>, BlockError> {
        match &self.source {
            Source::Memory(data) => data
                .get(range)
                .map(Cow::Borrowed)
                .ok_or(BlockError::Decode {
                    name: self.name.clone(),
                    source: RecordError::Short,
                }),
            Source::File(f) => f
                .read_at(range.start as u64, range.len())
                .map(Cow::Owned)
                .map_err(|source| BlockError::Io {
                    name: self.name.clone(),
                    source,
                }),
        }
    }

    fn entry(&self, id: SeriesId) -> Option<&SeriesEntry> {
        self.series
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.series[i])
    }

    /// The ids of the series in this block, ascending.
    pub fn series_ids(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.series.iter().map(|s| s.id)
    }

    /// Samples stored.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A series' number of samples in this block.
    pub fn series_samples(&self, id: SeriesId) -> u64 {
        self.entry(id).map_or(0, |s| u64::from(s.count))
    }

    /// A series' time span in this block.
    pub fn series_span(&self, id: SeriesId) -> Option<(i64, i64)> {
        self.entry(id).map(|s| (s.min_t, s.max_t))
    }

    fn decode_series(&self, s: &SeriesEntry) -> Vec<(i64, f64)> {
        let decoded = self.read(s.data.clone()).and_then(|bytes| {
            decode_samples(s.encoding, &bytes, s.count).map_err(|source| BlockError::Codec {
                name: self.name.clone(),
                source,
            })
        });
        match decoded {
            Ok(samples) => samples,
            Err(e) => {
                // The block was verified when opened: this is a failing disk or a bug.
                warn!(error = %e, series = s.id, "unreadable series in a verified block");
                Vec::new()
            }
        }
    }

    /// A series' samples, all of them.
    pub fn samples_of(&self, id: SeriesId) -> Vec<(i64, f64)> {
        self.entry(id)
            .map(|s| self.decode_series(s))
            .unwrap_or_default()
    }

    /// A series' samples in `[start, end]`, ascending.
    pub fn range_vec(&self, id: SeriesId, start: i64, end: i64) -> Vec<(i64, f64)> {
        let Some(s) = self.entry(id) else {
            return Vec::new();
        };
        if s.max_t < start || s.min_t > end {
            return Vec::new();
        }
        let mut v = self.decode_series(s);
        v.truncate(v.partition_point(|p| p.0 <= end));
        let a = v.partition_point(|p| p.0 < start);
        v.drain(..a);
        v
    }

    /// Adds a series' samples in `[start, end]` to `out` (replacing equal timestamps).
    pub fn range_into(&self, id: SeriesId, start: i64, end: i64, out: &mut BTreeMap<i64, f64>) {
        let Some(s) = self.entry(id) else { return };
        if s.max_t < start || s.min_t > end {
            return;
        }
        for (t, v) in self.decode_series(s) {
            if t > end {
                break;
            }
            if t >= start {
                out.insert(t, v);
            }
        }
    }

    /// A series' newest sample here.
    pub fn last(&self, id: SeriesId) -> Option<(i64, f64)> {
        let s = self.entry(id)?;
        self.decode_series(s).last().copied()
    }

    /// A series' rollup rows at `resolution`, when this block has them.
    pub fn rollup(&self, id: SeriesId, resolution: i64) -> Option<Vec<Row>> {
        let s = self.entry(id)?;
        let (_, range) = s.rollups.iter().find(|(r, _)| *r == resolution)?;
        rollup::decode_rows(&self.read(range.clone()).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Vec<SeriesInput> {
        vec![
            SeriesInput {
                id: 4,
                labels: Labels::from_metric("cpu", [("device", "a")]).unwrap(),
                samples: (0..500).map(|i| (i * 10_000, i as f64 / 7.0)).collect(),
            },
            SeriesInput {
                id: 1,
                labels: Labels::from_metric("mem", [("device", "a")]).unwrap(),
                samples: vec![(5, 1.0), (6, 2.0)],
            },
        ]
    }

    /// The first block format, written whole (what `BlockWriter` wrote before the packed
    /// format): the reference both formats must agree with.
    fn encode_block_v1(seq: u64, level: u8, series: &[SeriesInput], rollups: &[i64]) -> Vec<u8> {
        let min_t = series
            .iter()
            .filter_map(|s| s.samples.first())
            .map(|s| s.0)
            .min()
            .unwrap_or(0);
        let max_t = series
            .iter()
            .filter_map(|s| s.samples.last())
            .map(|s| s.0)
            .max()
            .unwrap_or(0);
        let mut out = BLOCK_MAGIC_V1.to_vec();
        out.extend_from_slice(&seq.to_le_bytes());
        out.push(level);
        out.extend_from_slice(&min_t.to_le_bytes());
        out.extend_from_slice(&max_t.to_le_bytes());
        let n = series.iter().filter(|s| !s.samples.is_empty()).count();
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        for s in series.iter().filter(|s| !s.samples.is_empty()) {
            out.extend_from_slice(&s.id.to_le_bytes());
            crate::record::encode_labels(&mut out, &s.labels);
            let count = u32::try_from(s.samples.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&s.samples[0].0.to_le_bytes());
            out.extend_from_slice(&s.samples[s.samples.len() - 1].0.to_le_bytes());
            let (encoding, data) = encode_samples(&s.samples);
            out.push(encoding);
            out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(&data);
            let worth: Vec<(i64, Vec<Row>)> = rollups
                .iter()
                .take(usize::from(u8::MAX))
                .map(|&res| (res, rollup::compute(&s.samples, res)))
                .filter(|(_, rows)| rollup::worth_storing(rows.len(), s.samples.len()))
                .collect();
            out.push(worth.len() as u8);
            for (res, rows) in worth {
                {
                    let rows = {
                        let mut bytes = Vec::new();
                        rollup::encode_rows(&mut bytes, &rows);
                        bytes
                    };
                    out.extend_from_slice(&res.to_le_bytes());
                    out.extend_from_slice(
                        &u32::try_from(rows.len()).unwrap_or(u32::MAX).to_le_bytes(),
                    );
                    out.extend_from_slice(&rows);
                }
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn both_formats_hold_the_same_series() {
        let mut series = input();
        series.push(SeriesInput {
            id: 9,
            labels: Labels::from_metric("dense", [("device", "b")]).unwrap(),
            samples: (0..5000)
                .map(|i| (-7_000 + i * 2_000, (i % 17) as f64 * 0.5))
                .collect(),
        });
        series.push(SeriesInput {
            id: 2,
            labels: Labels::from_metric("empty", [("device", "c")]).unwrap(),
            samples: Vec::new(),
        });
        for rollups in [&[][..], &rollup::RESOLUTIONS_MS[..], &[1_000, 60_000][..]] {
            for level in [0, 1] {
                let packed = encode_block(77, level, &series, rollups);
                let v1 = encode_block_v1(77, level, &series, rollups);
                assert!(packed.len() < v1.len());
                let (a, ta) = Block::decode("a", packed).unwrap();
                let (b, tb) = Block::decode("b", v1).unwrap();
                assert_eq!(ta, tb);
                assert_eq!(
                    (a.seq, a.level, a.min_t, a.max_t, a.samples),
                    (b.seq, b.level, b.min_t, b.max_t, b.samples)
                );
                for (id, _) in &ta {
                    assert_eq!(a.samples_of(*id), b.samples_of(*id));
                    for &res in rollups {
                        assert_eq!(a.rollup(*id, res), b.rollup(*id, res));
                    }
                }
            }
        }
        let (a, _) = Block::decode("a", encode_block(1, 0, &[], &[])).unwrap();
        let (b, _) = Block::decode("b", encode_block_v1(1, 0, &[], &[])).unwrap();
        assert_eq!((a.series.len(), a.samples), (b.series.len(), b.samples));
    }

    #[test]
    fn last_write_wins_keeps_the_latest_of_equal_timestamps() {
        let mut v = vec![(1, 1.0), (3, 1.0), (2, 2.0), (3, 2.0), (1, 3.0), (0, 4.0)];
        last_write_wins(&mut v);
        assert_eq!(v, vec![(0, 4.0), (1, 3.0), (2, 2.0), (3, 2.0)]);
        let mut sorted = vec![(1, 1.0), (2, 2.0)];
        last_write_wins(&mut sorted);
        assert_eq!(sorted, vec![(1, 1.0), (2, 2.0)]);
    }

    #[test]
    fn blocks_round_trip_with_rollups() {
        let bytes = encode_block(9, 1, &input(), &rollup::RESOLUTIONS_MS);
        let (b, table) = Block::decode("x", bytes).unwrap();
        assert_eq!((b.seq, b.level, b.min_t, b.max_t), (9, 1, 0, 4_990_000));
        assert_eq!(b.samples(), 502);
        let mut m = BTreeMap::new();
        b.range_into(4, 20_000, 40_000, &mut m);
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![
                (20_000, 2.0 / 7.0),
                (30_000, 3.0 / 7.0),
                (40_000, 4.0 / 7.0)
            ]
        );
        assert_eq!(b.last(1), Some((6, 2.0)));
        let rows = b.rollup(4, 3_600_000).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].count, 360);
        assert!(
            b.rollup(4, 60_000).is_none(),
            "6x reduction: not worth storing"
        );
        assert!(
            b.rollup(1, 3_600_000).is_none(),
            "2 samples: not worth storing"
        );
        let names: Vec<_> = table
            .iter()
            .map(|(id, l)| (*id, l.metric().to_owned()))
            .collect();
        assert_eq!(names, vec![(4, "cpu".to_owned()), (1, "mem".to_owned())]);
        assert_eq!(b.series_ids().collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn blocks_on_disk_read_series_on_demand_even_after_removal() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::backend::FsBackend::new(dir.path()).unwrap();
        let bytes = encode_block(3, 0, &input(), &[]);
        crate::backend::write_atomic(&fs, "b.blk", &bytes).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(fs);
        let (b, table) = Block::load(backend.clone(), "b.blk").unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(b.last(4), Some((4_990_000, 499.0 / 7.0)));
        let mut w = BlockWriter::new(0, &[])
            .spill_to(backend.clone(), "c.tmp")
            .unwrap();
        for s in input() {
            w.add(s.id, &s.labels, &s.samples).unwrap();
        }
        let w = w.finish_file(3, "c.blk").unwrap();
        assert_eq!(backend.read("c.blk").unwrap(), bytes);
        // Compaction may remove the file while a query still holds the block.
        backend.remove("b.blk").unwrap();
        backend.remove("c.blk").unwrap();
        assert_eq!(w.samples_of(1), vec![(5, 1.0), (6, 2.0)]);
        assert_eq!(b.samples_of(4).len(), 500);
        assert!(Block::load(backend, "b.blk").is_err());
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = encode_block(1, 0, &input(), &[]);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Block::decode("x", bad).is_err(), "flip at {i}");
        }
    }
}
