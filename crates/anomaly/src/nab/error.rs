//! What can go wrong running or scoring the benchmark. Every message names the file (and row)
//! and says what was expected.

use std::path::PathBuf;

/// An error from [`run`](super::run) or [`score`](super::score()).
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("detector name `{0}`: use letters, digits, `_`, `-` or `.`, and not `null`")]
    DetectorName(String),
    #[error("{path}: no category folders with .csv files found")]
    NoData { path: PathBuf },
    #[error("{path} line {line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {found} rows, expected {expected} (one per input row)")]
    RowCount {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("{path} line {line}: timestamp `{found}` differs from the input's `{expected}`")]
    TimestampMismatch {
        path: PathBuf,
        line: usize,
        found: String,
        expected: String,
    },
    #[error("{path} line {line}: anomaly_score `{value}` is not a number in [0, 1]")]
    ScoreOutOfRange {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("{path}: {message}")]
    Windows { path: PathBuf, message: String },
    #[error("series `{series}`: window timestamp {timestamp} does not occur in the data")]
    WindowNotInData { series: String, timestamp: String },
}
