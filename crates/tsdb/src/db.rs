//! The public database: ties the WAL, group commit, index, head, blocks, compaction and
//! retention together behind [`Db`].
//!
//! Locks, always taken in this order: `maintenance` (one flush/compaction/retention at a time),
//! `wal`, `state`. An appender resolves series ids under `state`, frames its records, and hands
//! them to group commit; the group's leader writes and syncs them under `wal` and applies them
//! to the head under `state` before any member returns, so the head only ever holds durable
//! samples, applied in WAL order (which is what replay reproduces).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::backend::{Backend, FsBackend};
use crate::block::{self, Block, BlockWriter};
use crate::chunk::Decoder;
use crate::commit::GroupCommit;
use crate::compact;
use crate::hash::FastSet;
use crate::head::{Head, Placed, SeriesSamples};
use crate::index::{Index, SeriesId};
use crate::ooo;
use crate::query::{Agg, Buckets, LastValue, QueryError, SeriesPoints, SeriesRollups};
use crate::record::{self, KIND_META, KIND_PACKED_SAMPLES, KIND_SERIES, Record};
use crate::retention::{self, Retention};
use crate::rollup::{self, floor};
use crate::series::{Labels, Matcher};
use crate::wal::{Wal, WalError, WalOptions, frame};

/// Errors of the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "append not durable, nothing of it was stored (disk full or failing?); retry later: {0}"
    )]
    NotDurable(String),
    #[error("flush failed, the head keeps its samples: {0}")]
    Flush(String),
    #[error("unknown series id {0}: resolve labels with Db::resolve first")]
    UnknownSeries(SeriesId),
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a group-commit leader waits for more appenders before its fsync; zero syncs
    /// each group as soon as it forms.
    pub flush_interval: Duration,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// Late samples older than this (relative to the newest sample seen) are refused.
    pub ooo_max_age_ms: i64,
    /// Samples more than this ahead of `clock` are stored but do not count as "newest" for
    /// the late-data limit, so one device with a clock in 2099 cannot make the fleet's data
    /// too old.
    pub max_future_ms: i64,
    /// Wall clock, ms since the epoch (injectable for tests).
    pub clock: fn() -> i64,
    /// Window of the blocks a flush writes.
    pub block_window_ms: i64,
    /// Window compaction merges into (a multiple of `block_window_ms`).
    pub compact_window_ms: i64,
    /// Retention limits applied by [`Db::maintain`].
    pub retention: Retention,
    /// [`Db::maintain`] flushes once the WAL is larger than this (and the head holds
    /// [`WAL_FLUSH_MIN_SAMPLES_PER_SERIES`] samples per series).
    pub flush_wal_bytes: u64,
    /// Rollup resolutions written at compaction (ms). Each costs disk: on 10-second data the
    /// 1-minute rollup adds roughly half the raw size, the 1-hour one about 1%.
    pub rollup_resolutions_ms: Vec<i64>,
    /// Bounds the head: a background thread flushes it once it holds more than this many
    /// samples per known series (on average), or [`Options::flush_head_min_samples`] if that
    /// is more. Appends do not wait for the flush unless they outrun it by another full head.
    /// Zero: no background flushing (only [`Db::flush`] and [`Db::maintain`]).
    pub flush_head_samples_per_series: u64,
    /// Floor of the background flush threshold, so small databases do not flush tiny heads.
    pub flush_head_min_samples: u64,
    /// The background thread also flushes a head whose oldest sample arrived this long ago,
    /// so slow series do not stay in memory indefinitely. Zero: no age limit.
    pub flush_head_age: Duration,
}

/// The WAL-size trigger of [`Db::maintain`] waits until the head holds this many samples per
/// known series on average. With millions of series a WAL of `flush_wal_bytes` covers only a
/// few samples of each, and flushing it would write blocks of mostly per-series overhead (and a
/// new segment defining every series) every minute; the background flush's own thresholds
/// (samples per series, head age) still apply.
pub const WAL_FLUSH_MIN_SAMPLES_PER_SERIES: u64 = 30;

impl Default for Options {
    fn default() -> Self {
        Self {
            flush_interval: Duration::ZERO,
            wal_segment_bytes: 64 << 20,
            ooo_max_age_ms: ooo::DEFAULT_MAX_AGE_MS,
            max_future_ms: 24 * 3_600_000,
            clock: system_clock,
            block_window_ms: 2 * 3_600_000,
            compact_window_ms: 24 * 3_600_000,
            retention: Retention::default(),
            flush_wal_bytes: 256 << 20,
            rollup_resolutions_ms: rollup::RESOLUTIONS_MS.to_vec(),
            flush_head_samples_per_series: 120,
            flush_head_min_samples: 1 << 20,
            flush_head_age: Duration::from_secs(2 * 3600),
        }
    }
}

/// One sample to append.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub labels: &'a Labels,
    pub ts_ms: i64,
    pub value: f64,
}

/// Opaque metadata stored with an append and handed back on replay, e.g. `(device, seq)`.
/// The latest value per key survives WAL checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Samples stored (durable).
    pub accepted: usize,
    /// Samples refused as older than the late-data limit.
    pub too_old: usize,
    /// Accepted samples that arrived out of order.
    pub out_of_order: usize,
}

/// Counters and sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub series: u64,
    pub head_samples: u64,
    pub blocks: u64,
    pub block_bytes: u64,
    pub block_samples: u64,
    pub wal_bytes: u64,
    /// WAL records replayed at open.
    pub wal_replayed_records: u64,
    /// Damaged WAL records or segments found at open.
    pub wal_corruptions: u64,
    /// Bytes cut off the WAL's torn tail at open.
    pub wal_truncated_bytes: u64,
    /// Block files found damaged at open (set aside as `.corrupt`).
    pub block_corruptions: u64,
    pub samples_appended_total: u64,
    pub samples_too_old_total: u64,
    pub samples_out_of_order_total: u64,
    pub appends_failed_total: u64,
    pub wal_syncs_total: u64,
    pub flushes_total: u64,
    pub compactions_total: u64,
    pub blocks_deleted_total: u64,
    /// Rollup rows read instead of raw samples, by bucketed queries ([`Db::aggregate`]) and
    /// rollup reads ([`Db::select_rollups`]).
    pub rollup_rows_read_total: u64,
    /// Approximate heap bytes of the head and the index.
    pub head_heap_bytes: u64,
    /// Of `head_heap_bytes`, the compressed samples themselves.
    pub head_chunk_bytes: u64,
    pub index_heap_bytes: u64,
}

/// Series whose definition is durable in the live WAL, as a bit per id.
#[derive(Default)]
struct Defined(Vec<u64>);

impl Defined {
    fn contains(&self, id: SeriesId) -> bool {
        self.0
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn insert(&mut self, id: SeriesId) {
        let i = id as usize / 64;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] |= 1 << (id % 64);
    }
}

impl Extend<SeriesId> for Defined {
    fn extend<I: IntoIterator<Item = SeriesId>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

struct State {
    index: Index,
    head: Head,
    /// A head being written into blocks by a flush (with the number of the last WAL segment
    /// holding its samples): queries read it between the blocks and the live head. A failed
    /// flush leaves it here for the next one to retry.
    flushing: Option<(Arc<Head>, u64)>,
    /// When the live head received its first sample since the last freeze.
    head_since: Option<Instant>,
    /// Ascending by `seq`.
    blocks: Vec<Arc<Block>>,
    next_seq: u64,
    /// Series whose definition is durable in the WAL since the last freeze.
    defined: Defined,
    /// Counts freezes: a freeze starts a WAL segment in which no series is defined yet.
    generation: u64,
    metas: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A series as a query sees it: id, labels and its head samples in the query range.
struct QuerySeries {
    id: SeriesId,
    labels: Labels,
    head: BTreeMap<i64, f64>,
}

/// Samples and metadata of one append, applied once durable.
struct Pending {
    /// The WAL generation (`State::generation`) the append was prepared in: its `defined`
    /// check holds only for that generation's segment.
    generation: u64,
    defined: FastSet<SeriesId>,
    samples: Vec<(SeriesId, i64, f64)>,
    meta: Option<Meta>,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    too_old: AtomicU64,
    ooo: AtomicU64,
    failed: AtomicU64,
    syncs: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    deleted: AtomicU64,
    rollup_rows: AtomicU64,
}

/// Between appenders and the background flusher.
#[derive(Default)]
struct FlushSignal {
    stop: bool,
    /// The last background flush failed: appenders do not wait for the next one.
    failing: bool,
}

/// The database's shared core; [`Db`] owns it together with the background flusher.
struct Inner {
    backend: Arc<dyn Backend>,
    options: Options,
    maintenance: Mutex<()>,
    wal: Mutex<Wal>,
    state: Mutex<State>,
    commit: GroupCommit<Pending>,
    counters: Counters,
    opened: Stats,
    /// Samples in the live head (mirrors `Head::samples`, read without the state lock).
    head_samples: AtomicU64,
    /// Series known to the index (mirrors `Index::len`).
    series: AtomicU64,
    signal: Mutex<FlushSignal>,
    /// Wakes the flusher (new samples, stop) and appenders waiting for a flush.
    wake: Condvar,
}

/// The time-series database.
pub struct Db {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.inner.backend)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        lock(&self.inner.signal).stop = true;
        self.inner.wake.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One series' sorted runs of samples, in write order (blocks by `seq`, then the head): simply
/// concatenated when they do not overlap in time (the common case: one block per day), else
/// merged with later runs winning on equal timestamps.
fn merge_runs(mut runs: Vec<Vec<(i64, f64)>>) -> Vec<(i64, f64)> {
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let mut order: Vec<usize> = (0..runs.len()).filter(|&i| !runs[i].is_empty()).collect();
    order.sort_by_key(|&i| runs[i][0].0);
    let disjoint = order.windows(2).all(|w| {
        let (a, b) = (&runs[w[0]], &runs[w[1]]);
        a.last().map_or(i64::MIN, |p| p.0) < b.first().map_or(i64::MAX, |p| p.0)
    });
    if disjoint {
        let mut out = Vec::with_capacity(runs.iter().map(Vec::len).sum());
        for i in order {
            out.append(&mut runs[i]);
        }
        return out;
    }
    let mut m = BTreeMap::new();
    for r in runs {
        m.extend(r);
    }
    m.into_iter().collect()
}

/// Keeps the samples of `points` (ascending) that no row of `rows` (ascending, of
/// `resolution`) covers, and those in `raw_ranges` (closed, ascending, disjoint) even inside
/// rows: one pass, with an index into each list moving forward with the samples.
fn retain_raw(
    points: &mut Vec<(i64, f64)>,
    rows: &[rollup::Row],
    resolution: i64,
    raw_ranges: &[(i64, i64)],
) {
    let (mut r, mut q) = (0, 0);
    points.retain(|&(t, _)| {
        let row_t = floor(t, resolution);
        while r < rows.len() && rows[r].t < row_t {
            r += 1;
        }
        if !(r < rows.len() && rows[r].t == row_t) {
            return true;
        }
        while q < raw_ranges.len() && raw_ranges[q].1 < t {
            q += 1;
        }
        q < raw_ranges.len() && raw_ranges[q].0 <= t
    });
}

/// The writer of a flush's block for window `w`, created (with its temporary file) on first
/// use.
fn writer_for_window<'a>(
    writers: &'a mut BTreeMap<i64, BlockWriter>,
    w: i64,
    gorilla: bool,
    backend: &Arc<dyn Backend>,
) -> std::io::Result<&'a mut BlockWriter> {
    match writers.entry(w) {
        std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::btree_map::Entry::Vacant(e) => {
            let writer = BlockWriter::new(0, &[]);
            let writer = if gorilla {
                writer.gorilla_only()
            } else {
                writer
            };
            Ok(e.insert(writer.spill_to(backend.clone(), &format!("flush-{w}.tmp"))?))
        }
    }
}

/// Whether `[lo, hi]` meets one of `ranges` (closed, ascending, disjoint).
fn in_ranges(ranges: &[(i64, i64)], lo: i64, hi: i64) -> bool {
    let i = ranges.partition_point(|r| r.1 < lo);
    ranges.get(i).is_some_and(|r| r.0 <= hi)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Db {
    /// Opens (or creates) a database in a directory on the real filesystem.
    pub fn open_dir(dir: &Path, options: Options) -> Result<Db, DbError> {
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(dir)?);
        Db::open(backend, options, &mut |_, _| {})
    }

    /// Opens (or creates) a database on `backend`: loads blocks, replays the WAL (calling
    /// `on_meta` with every metadata record in order, latest values of older checkpoints
    /// first), repairs a torn tail, and is ready for appends.
    pub fn open(
        backend: Arc<dyn Backend>,
        options: Options,
        on_meta: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<Db, DbError> {
        let mut head = Head::new();
        head.set_horizon((options.clock)().saturating_add(options.max_future_ms));
        let mut state = State {
            index: Index::new(),
            head,
            flushing: None,
            head_since: None,
            blocks: Vec::new(),
            next_seq: 1,
            defined: Defined::default(),
            generation: 0,
            metas: BTreeMap::new(),
        };
        let mut opened = Stats::default();
        for name in backend.list()? {
            if name.ends_with(".tmp") {
                backend.remove(&name)?;
                continue;
            }
            if !block::is_block_name(&name) {
                continue;
            }
            match Block::load(backend.clone(), &name) {
                Ok((b, table)) => {
                    for (id, labels) in &table {
                        state.index.insert(*id, labels);
                    }
                    state.blocks.push(Arc::new(b));
                }
                Err(e) => {
                    warn!(error = %e, "damaged block set aside");
                    opened.block_corruptions += 1;
                    backend.rename(&name, &format!("{name}.corrupt"))?;
                }
            }
        }
        state.blocks.sort_by_key(|b| b.seq);
        // Last values: per series, only the block holding its newest timestamp (the highest
        // seq among equals) is decoded.
        let mut newest: HashMap<SeriesId, (i64, usize)> = HashMap::new();
        for (i, b) in state.blocks.iter().enumerate() {
            state.next_seq = state.next_seq.max(b.seq + 1);
            for id in b.series_ids() {
                if let Some((_, hi)) = b.series_span(id) {
                    let e = newest.entry(id).or_insert((hi, i));
                    if hi >= e.0 {
                        *e = (hi, i);
                    }
                }
            }
        }
        for (id, (_, i)) in newest {
            if let Some((t, v)) = state.blocks.get(i).and_then(|b| b.last(id)) {
                state.head.seed_last(id, t, v);
            }
        }
        let mut unknown = 0u64;
        let wal_options = WalOptions {
            segment_bytes: options.wal_segment_bytes,
        };
        let (wal, replay) = Wal::open(backend.clone(), wal_options, |rec| match rec {
            Record::Series { id, labels } => {
                state.index.insert(id, &labels);
                state.defined.insert(id);
            }
            Record::Samples(samples) => {
                for (id, t, v) in samples {
                    if state.index.contains(id) {
                        state.head.append(id, t, v);
                    } else {
                        unknown += 1;
                    }
                }
            }
            Record::Meta { key, value } => {
                on_meta(&key, &value);
                state.metas.insert(key, value);
            }
        })?;
        if unknown > 0 {
            warn!(unknown, "WAL samples of undefined series skipped");
        }
        opened.wal_replayed_records = replay.records;
        opened.wal_corruptions = replay.corruptions;
        opened.wal_truncated_bytes = replay.truncated_bytes;
        info!(
            series = state.index.len(),
            blocks = state.blocks.len(),
            records = replay.records,
            corruptions = replay.corruptions,
            "tsdb opened"
        );
        if state.head.samples() > 0 {
            state.head_since = Some(Instant::now());
        }
        let background = options.flush_head_samples_per_series > 0;
        let inner = Arc::new(Inner {
            backend,
            commit: GroupCommit::new(options.flush_interval),
            options,
            maintenance: Mutex::new(()),
            wal: Mutex::new(wal),
            head_samples: AtomicU64::new(state.head.samples()),
            series: AtomicU64::new(state.index.len() as u64),
            state: Mutex::new(state),
            counters: Counters::default(),
            opened,
            signal: Mutex::new(FlushSignal::default()),
            wake: Condvar::new(),
        });
        let flusher = if background {
            let inner = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("tsdb-flush".to_owned())
                    .spawn(move || inner.flush_in_background())?,
            )
        } else {
            None
        };
        Ok(Db { inner, flusher })
    }

    /// The id of a label set, creating the series if it is new. Appending by id
    /// ([`Db::append_ids`]) skips hashing and comparing labels for every sample; ids are
    /// stable for the life of the database (across restarts too).
    pub fn resolve(&self, labels: &Labels) -> SeriesId {
        let mut st = lock(&self.inner.state);
        let (id, created) = st.index.get_or_create(labels);
        if created {
            self.inner
                .series
                .store(st.index.len() as u64, Ordering::Relaxed);
        }
        id
    }

    /// Appends samples (and optional metadata) durably: returns only after the WAL holding
    /// them was fsynced. On error nothing of the append is stored.
    pub fn append(
        &self,
        samples: &[Sample<'_>],
        meta: Option<&Meta>,
    ) -> Result<AppendReport, DbError> {
        self.inner.append(samples, meta)
    }

    /// Appends `(series id, ts_ms, value)` samples, ids from [`Db::resolve`]; otherwise as
    /// [`Db::append`]. An id the database does not know fails the whole append.
    pub fn append_ids(
        &self,
        samples: &[(SeriesId, i64, f64)],
        meta: Option<&Meta>,
    ) -> Result<AppendReport, DbError> {
        self.inner.append_ids(samples, meta)
    }

    /// Samples of every matching series with `start <= ts <= end`, merged across blocks and
    /// head (later writes win on equal timestamps). Series without samples there are left out.
    pub fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<SeriesPoints> {
        self.inner.select(matchers, start, end)
    }

    /// Per series, `agg` over buckets of `step` from `start` (bucket start, value). When `step`
    /// and `start` are multiples of a rollup resolution, compacted blocks wholly inside the
    /// range that nothing else overlaps are read from their rollups.
    pub fn aggregate(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        step: i64,
        agg: Agg,
    ) -> Result<Vec<SeriesPoints>, DbError> {
        self.inner.aggregate(matchers, start, end, step, agg)
    }

    /// The samples of every matching series with `start <= ts <= end`, as rollup rows of
    /// `resolution` where a row is exact and raw samples elsewhere. A row is used when its
    /// whole interval `[t, t + resolution)` lies in `[start, end]`, its min, max and sum are
    /// finite, and no other block nor the head holds samples of the series in its interval
    /// (so it summarizes exactly the samples [`Db::select`] would return there). Everything
    /// else — data not yet compacted, late samples, edges — comes raw, and so do the samples
    /// in `raw_ranges` (closed, ascending, disjoint), even inside rows used: the parts of rows
    /// a caller's windows cut. Series without samples in the range are left out. Rows used
    /// count in `Stats::rollup_rows_read_total`.
    pub fn select_rollups(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<SeriesRollups> {
        self.inner
            .select_rollups(matchers, start, end, resolution, raw_ranges)
    }

    /// The rollup resolutions compaction writes (ms), ascending.
    pub fn rollup_resolutions(&self) -> Vec<i64> {
        let mut r: Vec<i64> = self
            .inner
            .options
            .rollup_resolutions_ms
            .iter()
            .copied()
            .filter(|&r| r > 0)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// The newest sample of every matching series, from memory.
    pub fn last_values(&self, matchers: &[Matcher]) -> Vec<LastValue> {
        self.inner.last_values(matchers)
    }

    /// Label sets of the matching series.
    pub fn series(&self, matchers: &[Matcher]) -> Vec<Labels> {
        self.inner.series(matchers)
    }

    /// About how many samples [`Db::select`] would return: block samples prorated by how much
    /// of each block's span of the series the range covers, plus the head's share of the
    /// matching series. Cheap (no decoding); lets a reader choose between one read and slices.
    pub fn estimate_samples(&self, matchers: &[Matcher], start: i64, end: i64) -> u64 {
        self.inner.estimate_samples(matchers, start, end)
    }

    /// Label sets of the matching series that have samples with `start <= ts <= end` (what
    /// Prometheus's series API lists for a time range).
    pub fn series_in_range(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        self.inner.series_in_range(matchers, start, end)
    }

    /// Label names used by the matching series (all with no matchers).
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        lock(&self.inner.state).index.label_names(matchers)
    }

    /// Values of a label among the matching series.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        lock(&self.inner.state).index.label_values(name, matchers)
    }

    /// Latest metadata value per key (what the WAL would replay after a checkpoint).
    pub fn metas(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        lock(&self.inner.state).metas.clone()
    }

    /// Writes the head into blocks (one per `block_window_ms` window) and drops the WAL
    /// segments it came from. Appends go on meanwhile: the head is frozen and replaced by an
    /// empty one (and a new WAL segment started) at the beginning, and the blocks are encoded
    /// and written without holding the locks appends need. Returns the number of blocks
    /// written.
    pub fn flush(&self) -> Result<usize, DbError> {
        self.inner.flush(false)
    }

    /// Merges blocks per `compact_window_ms` window that ended before `now` into one block
    /// with rollups. Returns the number of merges.
    pub fn compact(&self, now: i64) -> Result<usize, DbError> {
        self.inner.compact(now)
    }

    /// Deletes blocks beyond the retention limits. Returns the number deleted.
    pub fn apply_retention(&self, now: i64) -> Result<usize, DbError> {
        self.inner.apply_retention(now)
    }

    /// Periodic housekeeping: flush when the WAL is large, compact closed windows, apply
    /// retention. `now` is the caller's clock (ms since the epoch).
    pub fn maintain(&self, now: i64) -> Result<(), DbError> {
        self.inner.maintain(now)
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

impl Inner {
    fn append(&self, samples: &[Sample<'_>], meta: Option<&Meta>) -> Result<AppendReport, DbError> {
        self.wait_for_room();
        let mut report = AppendReport::default();
        let mut framed = Vec::new();
        let mut pending = Pending {
            generation: 0,
            defined: FastSet::default(),
            samples: Vec::with_capacity(samples.len()),
            meta: meta.cloned(),
        };
        {
            let mut st = lock(&self.state);
            pending.generation = st.generation;
            let newest = st.head.newest();
            let mut payload = Vec::new();
            let before = st.index.len();
            // Consecutive samples of one series (a caller's batch is often grouped so) resolve
            // once.
            let mut prev: Option<(&Labels, SeriesId)> = None;
            for s in samples {
                if !ooo::accepts(s.ts_ms, newest, self.options.ooo_max_age_ms) {
                    report.too_old += 1;
                    continue;
                }
                let id = match prev {
                    Some((l, id)) if std::ptr::eq(l, s.labels) => id,
                    _ => st.index.get_or_create(s.labels).0,
                };
                prev = Some((s.labels, id));
                if !st.defined.contains(id) && pending.defined.insert(id) {
                    payload.clear();
                    record::encode_series(&mut payload, id, s.labels);
                    frame(&mut framed, KIND_SERIES, &payload);
                }
                pending.samples.push((id, s.ts_ms, s.value));
            }
            if st.index.len() != before {
                self.series.store(st.index.len() as u64, Ordering::Relaxed);
            }
        }
        self.commit_pending(framed, pending, meta, report)
    }

    fn append_ids(
        &self,
        samples: &[(SeriesId, i64, f64)],
        meta: Option<&Meta>,
    ) -> Result<AppendReport, DbError> {
        self.wait_for_room();
        let mut report = AppendReport::default();
        let mut framed = Vec::new();
        let mut pending = Pending {
            generation: 0,
            defined: FastSet::default(),
            samples: Vec::with_capacity(samples.len()),
            meta: meta.cloned(),
        };
        {
            let st = lock(&self.state);
            pending.generation = st.generation;
            let newest = st.head.newest();
            let mut payload = Vec::new();
            for &(id, t, v) in samples {
                if !ooo::accepts(t, newest, self.options.ooo_max_age_ms) {
                    report.too_old += 1;
                    continue;
                }
                if !st.defined.contains(id) && !pending.defined.contains(&id) {
                    let labels = st.index.labels(id).ok_or(DbError::UnknownSeries(id))?;
                    pending.defined.insert(id);
                    payload.clear();
                    record::encode_series(&mut payload, id, &labels);
                    frame(&mut framed, KIND_SERIES, &payload);
                }
                pending.samples.push((id, t, v));
            }
        }
        self.commit_pending(framed, pending, meta, report)
    }

    /// Frames the samples and metadata of an append whose series are resolved (definitions
    /// of new series already in `framed`), hands them to group commit and waits.
    fn commit_pending(
        &self,
        mut framed: Vec<u8>,
        pending: Pending,
        meta: Option<&Meta>,
        mut report: AppendReport,
    ) -> Result<AppendReport, DbError> {
        let mut payload = Vec::new();
        if !pending.samples.is_empty() {
            payload.reserve(pending.samples.len() * 8);
            record::encode_packed_samples(&mut payload, &pending.samples);
            frame(&mut framed, KIND_PACKED_SAMPLES, &payload);
        }
        if let Some(m) = meta {
            payload.clear();
            record::encode_meta(&mut payload, &m.key, &m.value);
            frame(&mut framed, KIND_META, &payload);
        }
        self.counters
            .too_old
            .fetch_add(report.too_old as u64, Ordering::Relaxed);
        if framed.is_empty() {
            return Ok(report);
        }
        let accepted = pending.samples.len();
        let ooo = AtomicU64::new(0);
        let sink = |bytes: &[u8], items: Vec<Pending>| -> Result<(), String> {
            let mut wal = lock(&self.wal);
            // Holding the WAL lock, no freeze can start a new segment until this group is in.
            let (late, late_ids) = self.definitions_for_late(&items);
            if late.is_empty() {
                wal.write_group(bytes)
            } else {
                wal.write_group(&[late.as_slice(), bytes].concat())
            }
            .map_err(|e| e.to_string())?;
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            let mut st = lock(&self.state);
            st.defined.extend(late_ids);
            let horizon = (self.options.clock)().saturating_add(self.options.max_future_ms);
            st.head.set_horizon(horizon);
            if st.head_since.is_none() {
                st.head_since = Some(Instant::now());
            }
            for p in items {
                st.defined.extend(p.defined);
                for (id, t, v) in p.samples {
                    if st.head.append(id, t, v) == Placed::OutOfOrder {
                        ooo.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(m) = p.meta {
                    st.metas.insert(m.key, m.value);
                }
            }
            self.head_samples
                .store(st.head.samples(), Ordering::Relaxed);
            Ok(())
        };
        let result = self.commit.submit(framed, pending, &sink);
        if self.head_over(1) {
            // Under the lock, so the flusher cannot miss it between its check and its wait.
            let _sig = lock(&self.signal);
            self.wake.notify_all();
        }
        match result {
            Ok(()) => {
                report.accepted = accepted;
                self.counters
                    .appended
                    .fetch_add(accepted as u64, Ordering::Relaxed);
                let n = ooo.load(Ordering::Relaxed);
                self.counters.ooo.fetch_add(n, Ordering::Relaxed);
                report.out_of_order = usize::try_from(n).unwrap_or(usize::MAX);
                Ok(report)
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(DbError::NotDurable(e))
            }
        }
    }

    /// Series definitions that appends prepared before the latest freeze still need: their
    /// samples go into the segment the freeze started, in which only what was appended since
    /// is defined, while they skipped the definitions the previous segment held. Framed, and
    /// the ids they define. Empty (no allocation) in the common case. Call with the WAL lock
    /// held.
    fn definitions_for_late(&self, items: &[Pending]) -> (Vec<u8>, Vec<SeriesId>) {
        let st = lock(&self.state);
        let mut framed = Vec::new();
        let mut ids = Vec::new();
        let mut seen = FastSet::default();
        let mut payload = Vec::new();
        for p in items.iter().filter(|p| p.generation != st.generation) {
            for &(id, _, _) in &p.samples {
                if st.defined.contains(id) || p.defined.contains(&id) || !seen.insert(id) {
                    continue;
                }
                // Items of this group defining `id` themselves come after the prefix, but
                // a second definition is harmless.
                if let Some(labels) = st.index.labels(id) {
                    payload.clear();
                    record::encode_series(&mut payload, id, &labels);
                    frame(&mut framed, KIND_SERIES, &payload);
                    ids.push(id);
                }
            }
        }
        (framed, ids)
    }

    /// Background flush threshold in head samples (`None`: no background flushing).
    fn head_limit(&self) -> Option<u64> {
        let per = self.options.flush_head_samples_per_series;
        (per > 0).then(|| {
            per.saturating_mul(self.series.load(Ordering::Relaxed))
                .max(self.options.flush_head_min_samples)
        })
    }

    /// Whether the live head holds more than `times` background flush thresholds.
    fn head_over(&self, times: u64) -> bool {
        self.head_limit().is_some_and(|limit| {
            self.head_samples.load(Ordering::Relaxed) > limit.saturating_mul(times)
        })
    }

    /// Backpressure: while the live head holds two thresholds' worth, appends wait for the
    /// background flush to take it (unless flushing fails), so the head stays bounded.
    fn wait_for_room(&self) {
        let mut sig = lock(&self.signal);
        while !sig.failing && !sig.stop && self.head_over(2) {
            self.wake.notify_all();
            sig = self
                .wake
                .wait_timeout(sig, Duration::from_millis(100))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    /// The background flusher: flushes whenever the live head passes the threshold or its
    /// oldest sample reaches `flush_head_age`, until the database is dropped.
    fn flush_in_background(&self) {
        let mut failures = 0u32;
        loop {
            {
                let sig = lock(&self.signal);
                if sig.stop {
                    return;
                }
                let due = self.head_over(1) || self.head_too_old();
                if !due || failures > 0 {
                    let wait = if failures > 0 {
                        Duration::from_millis(100 << failures.min(6))
                    } else {
                        Duration::from_secs(1)
                    };
                    let (sig, _) = self
                        .wake
                        .wait_timeout(sig, wait)
                        .unwrap_or_else(PoisonError::into_inner);
                    if sig.stop {
                        return;
                    }
                    if !(self.head_over(1) || self.head_too_old()) {
                        continue;
                    }
                }
            }
            let result = self.flush(true);
            {
                let mut sig = lock(&self.signal);
                sig.failing = result.is_err();
                self.wake.notify_all();
            }
            match result {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %e, "background flush failed; the head keeps its samples, retrying");
                }
            }
        }
    }

    fn head_too_old(&self) -> bool {
        let age = self.options.flush_head_age;
        !age.is_zero()
            && lock(&self.state)
                .head_since
                .is_some_and(|since| since.elapsed() >= age)
    }

    /// Under the state lock, copies what a query needs from memory: the matching series, their
    /// head samples in `[start, end]`, and the block list. Blocks are immutable, so they are
    /// decoded afterwards without holding the lock (appends go on meanwhile).
    fn snapshot(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> (Vec<QuerySeries>, Vec<Arc<Block>>) {
        let st = lock(&self.state);
        let series = st
            .index
            .select(matchers)
            .into_iter()
            .filter_map(|id| {
                let labels = st.index.labels(id)?;
                let mut head = BTreeMap::new();
                // The head being flushed is older than the live head: the live head wins.
                if let Some((frozen, _)) = &st.flushing {
                    frozen.range_into(id, start, end, &mut head);
                }
                st.head.range_into(id, start, end, &mut head);
                Some(QuerySeries { id, labels, head })
            })
            .collect();
        (series, st.blocks.clone())
    }

    /// Samples of every matching series with `start <= ts <= end`, merged across blocks and
    /// head (later writes win on equal timestamps). Series without samples there are left out.
    pub fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<SeriesPoints> {
        let (series, blocks) = self.snapshot(matchers, start, end);
        let mut out = Vec::new();
        for q in series {
            let mut runs: Vec<Vec<(i64, f64)>> = blocks
                .iter()
                .map(|b| b.range_vec(q.id, start, end))
                .filter(|r| !r.is_empty())
                .collect();
            if !q.head.is_empty() {
                runs.push(q.head.into_iter().collect());
            }
            let points = merge_runs(runs);
            if !points.is_empty() {
                out.push(SeriesPoints {
                    labels: q.labels,
                    points,
                });
            }
        }
        out
    }

    /// Per series, `agg` over buckets of `step` from `start` (bucket start, value). When `step`
    /// and `start` are multiples of a rollup resolution, compacted blocks wholly inside the
    /// range that nothing else overlaps are read from their rollups.
    pub fn aggregate(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        step: i64,
        agg: Agg,
    ) -> Result<Vec<SeriesPoints>, DbError> {
        Buckets::new(start, end, step)?;
        let mut resolutions = self.options.rollup_resolutions_ms.clone();
        resolutions.sort_unstable();
        // Usable resolutions, coarsest first; a block may lack some (see `rollup::worth_storing`).
        let usable: Vec<i64> = resolutions
            .iter()
            .rev()
            .copied()
            .filter(|&r| r > 0 && step % r == 0 && start.rem_euclid(r) == 0)
            .collect();
        let (series, blocks) = self.snapshot(matchers, start, end);
        let mut out = Vec::new();
        for q in series {
            let id = q.id;
            let mut buckets = Buckets::new(start, end, step)?;
            let mut raw = BTreeMap::new();
            let mut any = false;
            for b in &blocks {
                let Some((lo, hi)) = b.series_span(id) else {
                    continue;
                };
                // Rollups stand in for a block only where nothing else has samples.
                let alone = || {
                    !blocks.iter().any(|o| {
                        o.seq != b.seq && o.series_span(id).is_some_and(|(l, h)| l <= hi && h >= lo)
                    }) && q.head.range(lo..=hi).next().is_none()
                };
                let rows = if !usable.is_empty() && lo >= start && hi <= end && alone() {
                    usable.iter().find_map(|&r| b.rollup(id, r))
                } else {
                    None
                };
                match rows {
                    Some(rows) => {
                        self.counters
                            .rollup_rows
                            .fetch_add(rows.len() as u64, Ordering::Relaxed);
                        for row in &rows {
                            buckets.add_row(row.t.max(lo), row);
                            any = true;
                        }
                    }
                    None => b.range_into(id, start, end, &mut raw),
                }
            }
            raw.extend(q.head);
            for (&t, &v) in &raw {
                buckets.add(t, v);
                any = true;
            }
            if any {
                out.push(SeriesPoints {
                    labels: q.labels,
                    points: buckets.finish(agg),
                });
            }
        }
        Ok(out)
    }

    fn select_rollups(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        resolution: i64,
        raw_ranges: &[(i64, i64)],
    ) -> Vec<SeriesRollups> {
        if resolution <= 0 || end < start {
            return Vec::new();
        }
        let (series, blocks) = self.snapshot(matchers, start, end);
        let mut out = Vec::new();
        let mut rows_read = 0u64;
        for q in series {
            let id = q.id;
            // The blocks holding the series in the range, with its span in each.
            let spans: Vec<(&Arc<Block>, i64, i64)> = blocks
                .iter()
                .filter_map(|b| {
                    let (lo, hi) = b.series_span(id)?;
                    (lo <= end && hi >= start).then_some((b, lo, hi))
                })
                .collect();
            let mut rows: Vec<rollup::Row> = Vec::new();
            let mut decode: Vec<&Arc<Block>> = Vec::new();
            for (i, &(b, lo, hi)) in spans.iter().enumerate() {
                let block_rows = b.rollup(id, resolution).unwrap_or_default();
                let mut all_used = !block_rows.is_empty();
                for row in block_rows {
                    let row_end = row.t.saturating_add(resolution - 1);
                    if row_end < start || row.t > end {
                        continue;
                    }
                    let usable = row.t >= start
                        && row_end <= end
                        && row.min.is_finite()
                        && row.max.is_finite()
                        && row.sum.is_finite()
                        && !spans
                            .iter()
                            .enumerate()
                            .any(|(j, &(_, lo, hi))| j != i && lo <= row_end && hi >= row.t)
                        && q.head.range(row.t..=row_end).next().is_none();
                    if usable {
                        rows.push(row);
                    } else {
                        all_used = false;
                    }
                }
                // A block's rows cover all its samples: if every row in the range is used,
                // the block's samples need not be decoded.
                if !all_used || in_ranges(raw_ranges, lo, hi) {
                    decode.push(b);
                }
            }
            rows.sort_by_key(|r| r.t);
            // Each run keeps only its samples outside the rows used (or asked for raw), so the
            // merge handles a few samples, not the blocks' every sample. Runs in block order,
            // then the head: later ones win on equal timestamps.
            let mut runs: Vec<Vec<(i64, f64)>> = Vec::with_capacity(decode.len() + 1);
            for b in decode {
                let mut run = b.range_vec(id, start, end);
                retain_raw(&mut run, &rows, resolution, raw_ranges);
                runs.push(run);
            }
            let mut head: Vec<(i64, f64)> = q.head.into_iter().collect();
            retain_raw(&mut head, &rows, resolution, raw_ranges);
            runs.push(head);
            runs.retain(|r| !r.is_empty());
            let raw = merge_runs(runs);
            if rows.is_empty() && raw.is_empty() {
                continue;
            }
            rows_read += rows.len() as u64;
            out.push(SeriesRollups {
                labels: q.labels,
                rows,
                raw,
            });
        }
        self.counters
            .rollup_rows
            .fetch_add(rows_read, Ordering::Relaxed);
        out
    }

    /// The newest sample of every matching series, from memory.
    pub fn last_values(&self, matchers: &[Matcher]) -> Vec<LastValue> {
        let st = lock(&self.state);
        st.index
            .select(matchers)
            .into_iter()
            .filter_map(|id| {
                let (ts_ms, value) = st.head.last(id)?;
                Some(LastValue {
                    labels: st.index.labels(id)?,
                    ts_ms,
                    value,
                })
            })
            .collect()
    }

    fn estimate_samples(&self, matchers: &[Matcher], start: i64, end: i64) -> u64 {
        if end < start {
            return 0;
        }
        let (ids, blocks, head, total) = {
            let st = lock(&self.state);
            let head = st.head.samples() + st.flushing.as_ref().map_or(0, |(f, _)| f.samples());
            (
                st.index.select(matchers),
                st.blocks.clone(),
                head,
                st.index.len().max(1) as u64,
            )
        };
        let mut n = head.saturating_mul(ids.len() as u64) / total;
        for b in &blocks {
            for &id in &ids {
                let Some((lo, hi)) = b.series_span(id) else {
                    continue;
                };
                if hi < start || lo > end {
                    continue;
                }
                let count = b.series_samples(id);
                let span = (hi - lo).saturating_add(1) as f64;
                let covered = (hi.min(end) - lo.max(start)).saturating_add(1) as f64;
                n = n.saturating_add((count as f64 * (covered / span)).ceil() as u64);
            }
        }
        n
    }

    fn series_in_range(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        if end < start {
            return Vec::new();
        }
        let (series, blocks) = self.snapshot(matchers, start, end);
        series
            .into_iter()
            .filter(|q| {
                !q.head.is_empty()
                    || blocks.iter().any(|b| match b.series_span(q.id) {
                        None => false,
                        Some((lo, hi)) if hi < start || lo > end => false,
                        // The span's ends are samples: one in the range settles it.
                        Some((lo, hi)) if lo >= start || hi <= end => true,
                        // The range lies inside the span: look at the samples.
                        Some(_) => {
                            let mut m = BTreeMap::new();
                            b.range_into(q.id, start, end, &mut m);
                            !m.is_empty()
                        }
                    })
            })
            .map(|q| q.labels)
            .collect()
    }

    /// Label sets of the matching series.
    pub fn series(&self, matchers: &[Matcher]) -> Vec<Labels> {
        let st = lock(&self.state);
        st.index
            .select(matchers)
            .into_iter()
            .filter_map(|id| st.index.labels(id))
            .collect()
    }

    /// `background`: blocks are written as Gorilla (cheap) and only windows the data has left
    /// are merged (getting the smaller codec then); otherwise every window with more than one
    /// level-0 block is merged, so everything flushed has its final encoding.
    fn flush(&self, background: bool) -> Result<usize, DbError> {
        let _m = lock(&self.maintenance);
        let (frozen, previous) = self.freeze()?;
        let written = self
            .write_blocks(&frozen, background)
            .map_err(DbError::Flush)?;
        let count = written.len();
        {
            let mut st = lock(&self.state);
            st.next_seq += count as u64;
            st.blocks.extend(written);
            st.flushing = None;
        }
        drop(frozen);
        lock(&self.wal).checkpoint(previous)?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        info!(blocks = count, "tsdb flushed head into blocks");
        if let Err(e) = self.merge_level0(background) {
            warn!(error = %e, "merging a window's flushed blocks failed; they stay as they are");
        }
        Ok(count)
    }

    /// The head a flush writes, and the last WAL segment holding its samples: a head a failed
    /// flush left behind, or else the live head, replaced by an empty one (last values kept)
    /// as a new WAL segment starts (carrying the latest metadata; series are defined in it
    /// again as appends use them).
    /// Only this step holds the WAL and state locks.
    fn freeze(&self) -> Result<(Arc<Head>, u64), DbError> {
        let mut wal = lock(&self.wal);
        let mut st = lock(&self.state);
        if let Some((frozen, previous)) = &st.flushing {
            return Ok((frozen.clone(), *previous));
        }
        // The new segment starts with the latest metadata only; series are defined in it as
        // appends first use them (at 5.7 M series, writing every definition at each freeze
        // took hundreds of MB and held both locks meanwhile).
        let mut preamble = Vec::new();
        let mut payload = Vec::new();
        for (k, v) in &st.metas {
            payload.clear();
            record::encode_meta(&mut payload, k, v);
            frame(&mut preamble, KIND_META, &payload);
        }
        let previous = wal.rotate(&preamble)?;
        st.defined = Defined::default();
        st.generation += 1;
        let frozen = Arc::new(st.head.take_samples());
        st.head_since = None;
        self.head_samples.store(0, Ordering::Relaxed);
        st.flushing = Some((frozen.clone(), previous));
        Ok((frozen, previous))
    }

    /// Encodes a frozen head into level-0 blocks (one per `block_window_ms` window) and writes
    /// them, holding the state lock only to read a series' labels. On error the blocks already
    /// written are removed again (the frozen head stays for the next flush).
    fn write_blocks(&self, frozen: &Head, gorilla: bool) -> Result<Vec<Arc<Block>>, String> {
        // One series at a time from the head's chunks into one writer per window, each
        // appending to its temporary file as it grows: neither an uncompressed copy of the
        // head nor the encoded blocks are held.
        let window = self.options.block_window_ms;
        let mut writers: BTreeMap<i64, BlockWriter> = BTreeMap::new();
        let result = self.fill_writers(frozen, gorilla, window, &mut writers);
        if let Err(e) = result {
            for w in writers.into_values() {
                w.abandon();
            }
            return Err(e.to_string());
        }
        // Blocks are numbered after every existing one; only a flush (under the maintenance
        // lock) hands out new numbers.
        let first_seq = lock(&self.state).next_seq;
        let mut written: Vec<Arc<Block>> = Vec::new();
        let mut writers = writers.into_values();
        while let Some(writer) = writers.next() {
            let seq = first_seq + written.len() as u64;
            let (lo, hi) = writer.span();
            let name = block::block_name(seq, lo, hi);
            match writer.finish_file(seq, &name) {
                Ok(b) => written.push(Arc::new(b)),
                Err(e) => {
                    for w in writers {
                        w.abandon();
                    }
                    for b in &written {
                        let _ = self.backend.remove(&b.name);
                    }
                    return Err(e.to_string());
                }
            }
        }
        Ok(written)
    }

    /// Adds every series of a frozen head to the writer of each window it has samples in.
    fn fill_writers(
        &self,
        frozen: &Head,
        gorilla: bool,
        window: i64,
        writers: &mut BTreeMap<i64, BlockWriter>,
    ) -> std::io::Result<()> {
        let backend = &self.backend;
        let ids = frozen.series_ids();
        for slice in ids.chunks(compact::LABELS_SLICE) {
            // Labels for a slice of series under one lock: appends hold the state lock while
            // they fill the head, and taking it per series made the flush wait in line for
            // every one.
            let labels: Vec<Option<Labels>> = {
                let st = lock(&self.state);
                slice.iter().map(|&id| st.index.labels(id)).collect()
            };
            for (&id, labels) in slice.iter().zip(labels) {
                let (Some(labels), Some(samples)) = (labels, frozen.series_samples(id)) else {
                    continue;
                };
                let samples = match samples {
                    // A Gorilla flush copies a chunk within one window as it is.
                    SeriesSamples::Chunk {
                        count,
                        span,
                        stream,
                    } if gorilla && floor(span.0, window) == floor(span.1, window) => {
                        writer_for_window(writers, floor(span.0, window), gorilla, backend)?
                            .add_gorilla(id, &labels, count, span, stream)?;
                        continue;
                    }
                    SeriesSamples::Chunk { count, stream, .. } => {
                        Decoder::new(stream, count).collect::<Vec<_>>()
                    }
                    SeriesSamples::Decoded(samples) => samples,
                };
                let mut i = 0;
                while i < samples.len() {
                    let w = floor(samples[i].0, window);
                    let j = i + samples[i..]
                        .iter()
                        .take_while(|s| floor(s.0, window) == w)
                        .count();
                    writer_for_window(writers, w, gorilla, backend)?.add(
                        id,
                        &labels,
                        &samples[i..j],
                    )?;
                    i = j;
                }
            }
        }
        Ok(())
    }

    fn compact(&self, now: i64) -> Result<usize, DbError> {
        let _m = lock(&self.maintenance);
        let blocks = lock(&self.state).blocks.clone();
        let groups = compact::plan(&blocks, self.options.compact_window_ms, now);
        for group in &groups {
            self.replace_merged(group, 1, &self.options.rollup_resolutions_ms, "c")?;
        }
        Ok(groups.len())
    }

    /// After a flush (maintenance lock held): merges the level-0 blocks of each flush window
    /// the data has moved a whole window past, so a small, often-flushed head leaves one block
    /// per window, as a large one did.
    fn merge_level0(&self, only_past: bool) -> Result<usize, DbError> {
        let (blocks, newest) = {
            let st = lock(&self.state);
            (st.blocks.clone(), st.head.newest())
        };
        let Some(newest) = newest else { return Ok(0) };
        let window = self.options.block_window_ms;
        let closed_before = if only_past {
            newest.saturating_sub(window)
        } else {
            i64::MAX
        };
        let groups = compact::plan_level0(&blocks, window, closed_before);
        for group in &groups {
            self.replace_merged(group, 0, &[], "m")?;
        }
        Ok(groups.len())
    }

    /// Writes the merge of `group` (ascending `seq`) as one block, swaps it in for the group
    /// and deletes the inputs. `tag` marks the file name (`-c3` compacted from three blocks,
    /// `-m3` merged level-0 blocks).
    fn replace_merged(
        &self,
        group: &[Arc<Block>],
        level: u8,
        rollups: &[i64],
        tag: &str,
    ) -> Result<(), DbError> {
        // Streams series by series into a temporary file: neither the window's samples nor
        // the encoded block are ever all in memory.
        let seq = group.iter().map(|b| b.seq).max().unwrap_or(0);
        let writer = BlockWriter::new(level, rollups)
            .spill_to(self.backend.clone(), &format!("merge-{seq:016}.tmp"))?;
        let labels_of = |ids: &[SeriesId]| {
            let st = lock(&self.state);
            ids.iter().map(|&id| st.index.labels(id)).collect()
        };
        let writer = compact::write_merged(group, labels_of, writer)?;
        let (lo, hi) = writer.span();
        let name = format!("block-{seq:016}-{lo}-{hi}-{tag}{}.blk", group.len());
        let b = writer
            .finish_file(seq, &name)
            .map_err(|e| DbError::Flush(e.to_string()))?;
        let merged: HashSet<&str> = group.iter().map(|g| g.name.as_str()).collect();
        {
            let mut st = lock(&self.state);
            st.blocks.retain(|x| !merged.contains(x.name.as_str()));
            st.blocks.push(Arc::new(b));
            st.blocks.sort_by_key(|x| x.seq);
        }
        for old in group.iter().filter(|g| g.name != name) {
            self.backend.remove(&old.name)?;
        }
        self.backend.sync_dir()?;
        if level > 0 {
            self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn apply_retention(&self, now: i64) -> Result<usize, DbError> {
        let _m = lock(&self.maintenance);
        let blocks = lock(&self.state).blocks.clone();
        let doomed = retention::plan(&blocks, self.options.retention, now);
        if doomed.is_empty() {
            return Ok(0);
        }
        let names: HashSet<&str> = doomed.iter().map(|b| b.name.as_str()).collect();
        lock(&self.state)
            .blocks
            .retain(|b| !names.contains(b.name.as_str()));
        for b in &doomed {
            self.backend.remove(&b.name)?;
        }
        self.backend.sync_dir()?;
        self.counters
            .deleted
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        Ok(doomed.len())
    }

    fn maintain(&self, now: i64) -> Result<(), DbError> {
        let head = self.head_samples.load(Ordering::Relaxed);
        let series = self.series.load(Ordering::Relaxed);
        if lock(&self.wal).disk_bytes() > self.options.flush_wal_bytes
            && head >= WAL_FLUSH_MIN_SAMPLES_PER_SERIES.saturating_mul(series)
        {
            self.flush(false)?;
        }
        self.compact(now)?;
        self.apply_retention(now)?;
        Ok(())
    }

    fn stats(&self) -> Stats {
        let wal_bytes = lock(&self.wal).disk_bytes();
        let st = lock(&self.state);
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            series: st.index.len() as u64,
            head_samples: st.head.samples() + st.flushing.as_ref().map_or(0, |(f, _)| f.samples()),
            blocks: st.blocks.len() as u64,
            block_bytes: st.blocks.iter().map(|b| b.bytes).sum(),
            block_samples: st.blocks.iter().map(|b| b.samples()).sum(),
            wal_bytes,
            samples_appended_total: get(&c.appended),
            samples_too_old_total: get(&c.too_old),
            samples_out_of_order_total: get(&c.ooo),
            appends_failed_total: get(&c.failed),
            wal_syncs_total: get(&c.syncs),
            flushes_total: get(&c.flushes),
            compactions_total: get(&c.compactions),
            blocks_deleted_total: get(&c.deleted),
            rollup_rows_read_total: get(&c.rollup_rows),
            head_heap_bytes: (st.head.heap_bytes()
                + st.flushing.as_ref().map_or(0, |(f, _)| f.heap_bytes()))
                as u64,
            head_chunk_bytes: (st.head.chunk_bytes()
                + st.flushing.as_ref().map_or(0, |(f, _)| f.chunk_bytes()))
                as u64,
            index_heap_bytes: st.index.heap_bytes() as u64,
            ..self.opened.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    #[test]
    fn an_append_prepared_before_a_freeze_defines_its_series_in_the_new_segment() {
        let mem = MemBackend::new();
        let open = || {
            let backend: Arc<dyn Backend> = Arc::new(mem.clone());
            Db::open(backend, Options::default(), &mut |_, _| {}).unwrap()
        };
        let db = open();
        let labels = Labels::from_metric("cpu", [("device", "d1")]).unwrap();
        let x = db.resolve(&labels);
        let t0 = 1_767_225_600_000;
        db.append_ids(&[(x, t0, 1.0)], None).unwrap();
        // The race, step by step: an append prepared while `x` is defined in the live
        // segment (so it carries no definition)…
        let (generation, defined_then) = {
            let st = lock(&db.inner.state);
            (st.generation, st.defined.contains(x))
        };
        assert!(defined_then);
        let pending = Pending {
            generation,
            defined: FastSet::default(),
            samples: vec![(x, t0 + 10_000, 2.0)],
            meta: None,
        };
        // …then a freeze starts a new segment, then the append is written into it (no
        // definitions framed ahead of its samples, as prepared).
        db.inner.freeze().unwrap();
        db.inner
            .commit_pending(Vec::new(), pending, None, AppendReport::default())
            .unwrap();
        // The flush completes (the old segment is covered by blocks from here on), and
        // retention deletes the block: only the new segment knows the sample.
        db.flush().unwrap();
        for name in mem.list().unwrap() {
            if block::is_block_name(&name) {
                mem.remove(&name).unwrap();
            }
        }
        drop(db);
        let db = open();
        let got = db.select(&[], i64::MIN, i64::MAX);
        assert_eq!(
            got.len(),
            1,
            "the series is defined again in the new segment"
        );
        assert_eq!(got[0].points, vec![(t0 + 10_000, 2.0)]);
    }
}
