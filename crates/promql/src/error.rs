//! Why a query failed. The HTTP layer maps each kind to Prometheus's `errorType` and status in
//! one place: [`Error::Parse`] and [`Error::BadData`] are `bad_data` (400), limits are
//! `execution` (422) or `timeout` (503), evaluation errors `execution` (422).

/// A failed query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query text does not parse; the message carries the position.
    #[error("{0}")]
    Parse(String),
    /// The query parses but cannot be run as asked (e.g. a range vector in a range query).
    #[error("{0}")]
    BadData(String),
    /// More samples than `max_samples` would be held at once.
    #[error(
        "query processing would load too many samples into memory in query execution (limit: {limit} samples)"
    )]
    TooManySamples { limit: usize },
    /// The query ran longer than its timeout.
    #[error("query timed out in query execution")]
    Timeout,
    /// Evaluation failed the way Prometheus's does (duplicate series, bad arguments).
    #[error("{0}")]
    Execution(String),
    /// A valid query using something this engine does not implement yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
