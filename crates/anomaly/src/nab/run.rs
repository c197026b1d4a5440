//! Running a detector over a NAB-style data directory and writing its output files.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::NabError;
use super::score::output_path;
use super::timestamp::parse_timestamp_us;
use crate::Detector;

/// What [`run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Data files processed.
    pub files: usize,
    /// Rows scored, over all files.
    pub rows: usize,
}

/// Reported to the progress callback after each file.
#[derive(Debug, Clone)]
pub struct FileDone {
    /// `<category>/<file>.csv`, relative to the data directory.
    pub key: String,
    /// The output file written.
    pub output: PathBuf,
    pub rows: usize,
    /// 1-based position of this file, and how many there are.
    pub index: usize,
    pub total: usize,
}

/// Runs the default [`Detector`] over every `<category>/<file>.csv` under `data_dir` (a fresh
/// detector per file) and writes `<out_dir>/<detector>/<category>/<detector>_<file>.csv`.
pub fn run(
    data_dir: &Path,
    out_dir: &Path,
    detector: &str,
    progress: impl FnMut(&FileDone),
) -> Result<RunSummary, NabError> {
    run_with(data_dir, out_dir, detector, Detector::default, progress)
}

/// Like [`run`], with a detector made by `make` for each file; any `FnMut(i64, f64) -> f64`
/// state machine fits through [`Observe`].
pub fn run_with<D: Observe>(
    data_dir: &Path,
    out_dir: &Path,
    detector: &str,
    mut make: impl FnMut() -> D,
    mut progress: impl FnMut(&FileDone),
) -> Result<RunSummary, NabError> {
    super::validate_detector_name(detector)?;
    let keys = data_files(data_dir)?;
    let mut summary = RunSummary::default();
    for (n, key) in keys.iter().enumerate() {
        let input = data_dir.join(key);
        let rows = read_input(&input)?;
        let output = output_path(out_dir, detector, key);
        if let Some(parent) = output.parent() {
            fs::create_dir_all(parent).map_err(|source| NabError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let io = |source| NabError::Io {
            path: output.clone(),
            source,
        };
        let file = fs::File::create(&output).map_err(io)?;
        let mut w = BufWriter::new(file);
        writeln!(w, "timestamp,value,anomaly_score").map_err(io)?;
        let mut d = make();
        for (i, row) in rows.iter().enumerate() {
            let (ts, value) = split_row(row);
            let format = |message: String| NabError::Format {
                path: input.clone(),
                line: i + 2,
                message,
            };
            let ts_us =
                parse_timestamp_us(ts).ok_or_else(|| format(format!("bad timestamp `{ts}`")))?;
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| format(format!("bad value `{value}`")))?;
            let s = d.observe(ts_us.div_euclid(1000), v);
            let s = if s.is_finite() {
                s.clamp(0.0, 1.0)
            } else {
                0.0
            };
            writeln!(w, "{ts},{value},{s}").map_err(io)?;
        }
        w.flush().map_err(io)?;
        summary.files += 1;
        summary.rows += rows.len();
        progress(&FileDone {
            key: key.clone(),
            output,
            rows: rows.len(),
            index: n + 1,
            total: keys.len(),
        });
    }
    Ok(summary)
}

/// A streaming scorer of one series.
pub trait Observe {
    /// Scores the sample at `ts_ms` (milliseconds since the epoch), in [0, 1].
    fn observe(&mut self, ts_ms: i64, value: f64) -> f64;
}

impl Observe for Detector {
    fn observe(&mut self, ts_ms: i64, value: f64) -> f64 {
        Detector::observe(self, ts_ms, value)
    }
}

/// `<category>/<file>.csv` for every CSV one level below `data_dir`, sorted.
fn data_files(data_dir: &Path) -> Result<Vec<String>, NabError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NabError::Io { path, source }
    };
    let mut keys = Vec::new();
    for category in fs::read_dir(data_dir).map_err(io(data_dir))? {
        let category = category.map_err(io(data_dir))?.path();
        if !category.is_dir() {
            continue;
        }
        let Some(cat_name) = category.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        for file in fs::read_dir(&category).map_err(io(&category))? {
            let file = file.map_err(io(&category))?.path();
            let is_csv = file.extension().is_some_and(|e| e == "csv");
            if let (true, Some(name)) = (is_csv, file.file_name().and_then(|n| n.to_str())) {
                keys.push(format!("{cat_name}/{name}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(NabError::NoData {
            path: data_dir.to_owned(),
        });
    }
    keys.sort();
    Ok(keys)
}

/// The data rows of an input file (header checked and dropped, line ends stripped).
pub(super) fn read_input(path: &Path) -> Result<Vec<String>, NabError> {
    let text = fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let header = lines.next().unwrap_or_default();
    if !header.starts_with("timestamp,value") {
        return Err(NabError::Format {
            path: path.to_owned(),
            line: 1,
            message: format!("header `{header}`; expected `timestamp,value`"),
        });
    }
    Ok(lines.filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Splits an input row into its timestamp and value text, unchanged.
pub(super) fn split_row(row: &str) -> (&str, &str) {
    let mut fields = row.splitn(3, ',');
    let ts = fields.next().unwrap_or_default();
    (ts, fields.next().unwrap_or_default())
}
