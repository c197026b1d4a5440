//! fleetmon's embedded time-series engine: a synchronous core the server calls from its own
//! threads.
//!
//! # Layout
//! - [`backend`]: every byte on disk goes through the [`Backend`] trait (real filesystem,
//!   in-memory with simulated power cuts, fault injection).
//! - [`wal`] frames and replays records; [`record`] holds their typed payloads; [`commit`]
//!   groups concurrent appends into one fsync.
//! - [`series`] (labels, matchers) and [`index`] (ids, postings) find series.
//! - [`chunk`] is the Gorilla codec, [`codec`] picks Gorilla or pco for sealed columns; [`head`] keeps recent samples compressed in memory;
//!   [`ooo`] holds late samples.
//! - [`block`] writes and reads sealed blocks; [`compact`], [`retention`] and [`rollup`] manage
//!   them over time.
//! - [`query`] aggregates; [`db`] ties it all together as [`Db`].
//!
//! Formats are described in `docs/tsdb.md`.

pub mod backend;
pub mod block;
pub mod chunk;
pub mod codec;
pub mod commit;
pub mod compact;
pub mod db;
pub mod hash;
pub mod head;
pub mod index;
pub mod ooo;
pub mod query;
pub mod record;
pub mod retention;
pub mod rollup;
pub mod series;
pub mod wal;

pub use backend::{Backend, Fault, FaultBackend, FaultOp, FsBackend, MemBackend};
pub use db::{
    AppendReport, Db, DbError, Meta, Options, Sample, Stats, WAL_FLUSH_MIN_SAMPLES_PER_SERIES,
};
pub use index::SeriesId;
pub use query::{Agg, LastValue, QueryError, SeriesPoints, SeriesRollups};
pub use retention::Retention;
pub use rollup::Row;
pub use series::{Labels, METRIC_NAME, MatchOp, Matcher, SeriesError};
