//! The Numenta Anomaly Benchmark (NAB) harness: run a detector over a NAB-style data
//! directory ([`run`]) and score the output the way NAB's scorer does ([`score()`]).
//!
//! The layout and rules are those of the benchmark data's README (`../shared/data/nab` beside
//! the repository): input `data/<category>/<file>.csv` with a `timestamp,value` header; output
//! `<out>/<detector>/<category>/<detector>_<file>.csv` with `timestamp,value,anomaly_score`,
//! one row per input row, timestamp and value copied byte for byte; windows in
//! `labels/combined_windows.json`.
//!
//! NAB is by Ahmad, Lavin, Purdy & Agha, "Unsupervised real-time anomaly detection for
//! streaming data", Neurocomputing 262 (2017). The scoring here is our own implementation of
//! the rules that paper and the data's README describe.

mod error;
mod run;
mod score;
mod timestamp;

pub use error::NabError;
pub use run::{FileDone, Observe, RunSummary, run, run_with};
pub use score::{
    PROFILES, Profile, ProfileScore, Scores, SeriesResult, load_windows, score, score_against_data,
    score_series,
};
pub use timestamp::parse_timestamp_us;

/// Checks a detector name: letters, digits, `_`, `-` or `.`, not empty, not `null` (the name
/// of NAB's own baseline).
pub fn validate_detector_name(name: &str) -> Result<(), NabError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || !ok_chars || name == "null" || name == "." || name == ".." {
        return Err(NabError::DetectorName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_names() {
        assert!(validate_detector_name("fleetmon").is_ok());
        assert!(validate_detector_name("a.b-c_1").is_ok());
        for bad in ["", "null", "a/b", "a b", "..", "é"] {
            assert!(validate_detector_name(bad).is_err(), "{bad}");
        }
    }
}
