//! fleetmon's PromQL engine: queries are parsed by the `promql-parser` crate and evaluated
//! here, over any [`Source`] of samples (the tsdb's [`fleetmon_tsdb::Db`], or the server's
//! store), with Prometheus 2.x semantics.
//!
//! # Layout
//! - [`engine`]: [`Engine`], instant and range queries, and the result checks.
//! - [`source`]: the [`Source`] trait the engine reads through.
//! - `eval`: one expression at one time; selectors, `offset`/`@`, lookback, subqueries.
//! - `steps`: range queries across all their steps at once (sliding windows per series),
//!   falling back to `eval` step by step for the rest.
//! - `rollups`: long `*_over_time` windows from the store's rollup rows where they are exact.
//! - [`functions`]: calls, one file per family; [`aggregate`]: `sum by (...)` and friends;
//!   [`binary`]: operators and vector matching.
//! - [`value`]: scalars, vectors, matrices; [`limits`]: options and the per-query budget;
//!   [`nesting`]: the bound on a query's nesting, checked before parsing;
//!   [`error`]: what can go wrong.
//!
//! Supported language and semantics are listed in `docs/promql.md`.

pub mod aggregate;
pub mod binary;
pub mod engine;
pub mod error;
mod eval;
pub mod functions;
pub mod limits;
pub mod nesting;
pub mod params;
mod rollups;
pub mod source;
mod steps;
pub mod value;

pub use engine::{Engine, parse};
pub use error::Error;
pub use limits::Options;
pub use source::Source;
pub use value::{LabelSet, Sample, Series, Value, format_value};
