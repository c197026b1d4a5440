//! The head: recent samples of every series in memory, compressed as they arrive. Each series
//! has closed Gorilla chunks (at most [`CHUNK_SAMPLES`] samples or [`CHUNK_SPAN_MS`] each), one
//! open chunk that grows, a buffer for late samples ([`crate::ooo`]) and its last value, which
//! answers "last value" queries without decoding anything.
//!
//! Everything here is rebuilt from the WAL on open; a flush copies the head into blocks and
//! empties it (the last values stay).

use std::collections::BTreeMap;

use crate::block::last_write_wins;
use crate::chunk::{Decoder, Encoder};
use crate::index::SeriesId;
use crate::ooo::OooBuffer;

/// Samples per chunk before it is closed: more than a background flush cycle usually collects
/// per series (`Options::flush_head_samples_per_series`, 120), so that a flush finds most
/// series as one chunk and copies it into its block as it is.
pub const CHUNK_SAMPLES: u32 = 240;
/// Time span of a chunk before it is closed: 2 hours.
pub const CHUNK_SPAN_MS: i64 = 2 * 3_600_000;

/// A closed, immutable chunk.
#[derive(Debug, Clone)]
struct Chunk {
    min_t: i64,
    max_t: i64,
    count: u32,
    data: Box<[u8]>,
}

/// One series' head. Kept small: there is one per active series.
#[derive(Debug, Default)]
struct SeriesHead {
    closed: Vec<Chunk>,
    open: Encoder,
    open_min_t: i64,
    /// Late samples, allocated only when a series gets some.
    ooo: Option<Box<OooBuffer>>,
    last: Option<(i64, f64)>,
}

impl SeriesHead {
    /// Newest timestamp in the chunks (closed or open).
    fn max_t(&self) -> Option<i64> {
        if self.open.count() > 0 {
            Some(self.open.last_t())
        } else {
            self.closed.last().map(|c| c.max_t)
        }
    }

    fn append(&mut self, t: i64, v: f64) -> bool {
        if self.last.is_none_or(|(lt, _)| t >= lt) {
            self.last = Some((t, v));
        }
        if self.max_t().is_some_and(|m| t <= m) {
            self.ooo.get_or_insert_with(Box::default).push(t, v);
            return false;
        }
        if self.open.count() > 0
            && (self.open.count() >= CHUNK_SAMPLES || t - self.open_min_t >= CHUNK_SPAN_MS)
        {
            let open = std::mem::take(&mut self.open);
            self.open = Encoder::expecting(open.bytes().len());
            let count = open.count();
            let max_t = open.last_t();
            self.closed.push(Chunk {
                min_t: self.open_min_t,
                max_t,
                count,
                data: open.finish().into_boxed_slice(),
            });
        }
        if self.open.count() == 0 {
            self.open_min_t = t;
        }
        self.open.push(t, v);
        true
    }

    /// Adds samples in `[start, end]` to `out`, later writes replacing earlier ones.
    fn range_into(&self, start: i64, end: i64, out: &mut BTreeMap<i64, f64>) {
        let mut take = |it: &mut dyn Iterator<Item = (i64, f64)>| {
            for (t, v) in it {
                if t >= start && t <= end {
                    out.insert(t, v);
                }
            }
        };
        for c in &self.closed {
            if c.max_t >= start && c.min_t <= end {
                take(&mut Decoder::new(&c.data, c.count));
            }
        }
        if self.open.count() > 0 && self.open.last_t() >= start && self.open_min_t <= end {
            take(&mut Decoder::new(self.open.bytes(), self.open.count()));
        }
        if let Some(ooo) = &self.ooo {
            take(&mut ooo.range(start, end));
        }
    }

    /// All samples, sorted and deduplicated (later writes win), decoded from the chunks.
    fn samples(&self) -> Vec<(i64, f64)> {
        let ooo = self.ooo.as_ref().map_or(0, |o| o.len());
        let count = self.closed.iter().map(|c| c.count as usize).sum::<usize>()
            + self.open.count() as usize
            + ooo;
        let mut out = Vec::with_capacity(count);
        for c in &self.closed {
            out.extend(Decoder::new(&c.data, c.count));
        }
        if self.open.count() > 0 {
            out.extend(Decoder::new(self.open.bytes(), self.open.count()));
        }
        if let Some(ooo) = &self.ooo {
            // Arrival order: appended after the chunks, a rewrite ends up last and wins.
            out.extend(ooo.range(i64::MIN, i64::MAX));
        }
        last_write_wins(&mut out);
        out
    }

    /// The series' samples as one in-order Gorilla stream, when that is all it has (no late
    /// samples, one chunk): `(count, (first, last), stream)`.
    fn single_chunk(&self) -> Option<(u32, (i64, i64), &[u8])> {
        if self.ooo.is_some() {
            return None;
        }
        match (self.closed.as_slice(), self.open.count()) {
            ([c], 0) => Some((c.count, (c.min_t, c.max_t), &c.data)),
            ([], n) if n > 0 => Some((n, (self.open_min_t, self.open.last_t()), self.open.bytes())),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.count() == 0 && self.ooo.is_none()
    }

    fn heap_bytes(&self) -> usize {
        self.closed.capacity() * std::mem::size_of::<Chunk>()
            + self.closed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.open.heap_bytes()
            + self.ooo.as_ref().map_or(0, |o| 24 + o.heap_bytes())
    }
}

/// One series' head samples, as [`Head::series_samples`] hands them out.
#[derive(Debug)]
pub enum SeriesSamples<'a> {
    /// One in-order Gorilla stream ([`crate::chunk`]) of `count` samples from `span.0` to
    /// `span.1`.
    Chunk {
        count: u32,
        span: (i64, i64),
        stream: &'a [u8],
    },
    /// Sorted, deduplicated samples.
    Decoded(Vec<(i64, f64)>),
}

/// What [`Head::append`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Appended to the series' open chunk.
    InOrder,
    /// Kept in the out-of-order buffer.
    OutOfOrder,
}

/// Head samples of all series.
#[derive(Debug, Default)]
pub struct Head {
    series: Vec<Option<Box<SeriesHead>>>,
    samples: u64,
    newest: Option<i64>,
    /// Samples after this do not advance `newest` (a device clock years ahead must not make
    /// everyone else's data "too old").
    horizon: i64,
}

impl Head {
    /// An empty head.
    pub fn new() -> Self {
        Self {
            horizon: i64::MAX,
            ..Self::default()
        }
    }

    /// Sets the newest timestamp that may advance [`Head::newest`].
    pub fn set_horizon(&mut self, horizon: i64) {
        self.horizon = horizon;
    }

    fn advance(&mut self, t: i64) {
        if t <= self.horizon {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
    }

    /// Appends one sample to a series.
    pub fn append(&mut self, id: SeriesId, t: i64, v: f64) -> Placed {
        let idx = id as usize;
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, || None);
        }
        self.samples += 1;
        self.advance(t);
        let s = self.series[idx].get_or_insert_with(Box::default);
        if s.append(t, v) {
            Placed::InOrder
        } else {
            Placed::OutOfOrder
        }
    }

    /// Sets a series' last value without adding a sample (from blocks on open).
    pub fn seed_last(&mut self, id: SeriesId, t: i64, v: f64) {
        let idx = id as usize;
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, || None);
        }
        let s = self.series[idx].get_or_insert_with(Box::default);
        if s.last.is_none_or(|(lt, _)| t >= lt) {
            s.last = Some((t, v));
        }
        self.advance(t);
    }

    /// Newest timestamp appended or seeded, not counting those beyond the horizon.
    pub fn newest(&self) -> Option<i64> {
        self.newest
    }

    /// Samples currently held (rewrites included).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A series' newest sample.
    pub fn last(&self, id: SeriesId) -> Option<(i64, f64)> {
        self.series.get(id as usize)?.as_ref()?.last
    }

    /// Adds a series' samples in `[start, end]` to `out` (later writes win).
    pub fn range_into(&self, id: SeriesId, start: i64, end: i64, out: &mut BTreeMap<i64, f64>) {
        if let Some(Some(s)) = self.series.get(id as usize) {
            s.range_into(start, end, out);
        }
    }

    /// Every series' samples, sorted and deduplicated, for writing blocks.
    pub fn snapshot(&self) -> Vec<(SeriesId, Vec<(i64, f64)>)> {
        let mut out = Vec::new();
        for (idx, s) in self.series.iter().enumerate() {
            let Some(s) = s else { continue };
            if s.is_empty() {
                continue;
            }
            let mut m = BTreeMap::new();
            s.range_into(i64::MIN, i64::MAX, &mut m);
            out.push((idx as SeriesId, m.into_iter().collect()));
        }
        out
    }

    /// Ids of the series that have samples, ascending.
    pub fn series_ids(&self) -> Vec<SeriesId> {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| !s.is_empty()))
            .map(|(idx, _)| idx as SeriesId)
            .collect()
    }

    /// One series' samples, for writing blocks one series at a time (no uncompressed copy of
    /// the whole head). A series held as one in-order chunk (the common case between two
    /// flushes) comes as its encoded stream; any other as its samples, sorted and
    /// deduplicated (later writes win). `None` when it has no samples.
    pub fn series_samples(&self, id: SeriesId) -> Option<SeriesSamples<'_>> {
        let s = self.series.get(id as usize)?.as_ref()?;
        if s.is_empty() {
            return None;
        }
        Some(match s.single_chunk() {
            Some((count, span, stream)) => SeriesSamples::Chunk {
                count,
                span,
                stream,
            },
            None => SeriesSamples::Decoded(s.samples()),
        })
    }

    /// Moves every sample into a new head (for a flush to write), leaving this one with the
    /// last values, the newest timestamp and the horizon only.
    pub fn take_samples(&mut self) -> Head {
        let series = self
            .series
            .iter_mut()
            .map(|s| {
                let s = s.as_mut().filter(|s| !s.is_empty())?;
                let last = s.last;
                // The next flush cycle will likely write about what this one did.
                let open = Encoder::expecting(s.open.bytes().len());
                Some(Box::new(std::mem::replace(
                    &mut **s,
                    SeriesHead {
                        last,
                        open,
                        ..SeriesHead::default()
                    },
                )))
            })
            .collect();
        Head {
            series,
            samples: std::mem::take(&mut self.samples),
            newest: self.newest,
            horizon: self.horizon,
        }
    }

    /// Drops all samples, keeping last values.
    pub fn clear_samples(&mut self) {
        for s in self.series.iter_mut().flatten() {
            let last = s.last;
            **s = SeriesHead {
                last,
                ..SeriesHead::default()
            };
        }
        self.samples = 0;
    }

    /// Bytes of compressed sample data in chunks (open and closed).
    pub fn chunk_bytes(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .map(|s| s.closed.iter().map(|c| c.data.len()).sum::<usize>() + s.open.bytes().len())
            .sum()
    }

    /// Approximate heap bytes held, the series table included.
    pub fn heap_bytes(&self) -> usize {
        self.series.capacity() * 8
            + self
                .series
                .iter()
                .flatten()
                .map(|s| std::mem::size_of::<SeriesHead>() + s.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(h: &Head, id: SeriesId) -> Vec<(i64, f64)> {
        let mut m = BTreeMap::new();
        h.range_into(id, i64::MIN, i64::MAX, &mut m);
        m.into_iter().collect()
    }

    #[test]
    fn chunks_close_at_the_sample_limit_and_everything_reads_back() {
        let mut h = Head::new();
        for i in 0..1000 {
            assert_eq!(h.append(3, i * 1000, i as f64), Placed::InOrder);
        }
        let back = all(&h, 3);
        assert_eq!(back.len(), 1000);
        assert_eq!(back[999], (999_000, 999.0));
        let Some(Some(s)) = h.series.get(3) else {
            panic!()
        };
        assert_eq!(s.closed.len(), 999 / CHUNK_SAMPLES as usize);
        assert_eq!(h.last(3), Some((999_000, 999.0)));
    }

    #[test]
    fn late_samples_merge_and_rewrites_win() {
        let mut h = Head::new();
        h.append(0, 10, 1.0);
        h.append(0, 30, 3.0);
        assert_eq!(h.append(0, 20, 2.0), Placed::OutOfOrder);
        assert_eq!(h.append(0, 10, 9.0), Placed::OutOfOrder);
        assert_eq!(all(&h, 0), vec![(10, 9.0), (20, 2.0), (30, 3.0)]);
        assert_eq!(h.last(0), Some((30, 3.0)));
        h.append(0, 30, 4.0);
        assert_eq!(h.last(0), Some((30, 4.0)));
        assert_eq!(
            h.snapshot(),
            vec![(0, vec![(10, 9.0), (20, 2.0), (30, 4.0)])]
        );
        for t in 0..5 {
            h.append(1, t, 1.5);
        }
        let mut each = Vec::new();
        for id in h.series_ids() {
            let Some(samples) = h.series_samples(id) else {
                panic!("series {id} has samples")
            };
            each.push(match samples {
                SeriesSamples::Chunk {
                    count,
                    span,
                    stream,
                } => {
                    assert_eq!(
                        (id, count, span),
                        (1, 5, (0, 4)),
                        "in order: the chunk as it is"
                    );
                    (id, Decoder::new(stream, count).collect())
                }
                SeriesSamples::Decoded(samples) => (id, samples),
            });
        }
        assert_eq!(each, h.snapshot());
        h.clear_samples();
        assert!(h.snapshot().is_empty());
        assert_eq!(h.last(0), Some((30, 4.0)));
    }

    #[test]
    fn chunks_close_after_two_hours() {
        let mut h = Head::new();
        h.append(1, 0, 1.0);
        h.append(1, CHUNK_SPAN_MS, 2.0);
        let Some(Some(s)) = h.series.get(1) else {
            panic!()
        };
        assert_eq!(s.closed.len(), 1);
    }
}
