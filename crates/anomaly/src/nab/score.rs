//! NAB's scoring, re-implemented from the rules the benchmark describes.
//!
//! Per file: the first 15 % of rows (at most 750) are probation and count for nothing. Inside
//! an anomaly window the first alert earns a reward that falls along a scaled sigmoid from 1
//! at the left edge to about 0 at the right edge; a window without an alert costs the miss
//! weight. An alert outside every window costs the false-positive weight times the sigmoid of
//! its distance past the previous window (in window widths), which reaches −1 three widths out
//! and is −1 before the first window. One threshold per profile is chosen to maximise the sum
//! over all files, and the sum is normalised so that never alerting scores 0 and alerting on
//! the first row of every window scores 100.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::NabError;
use super::run::{read_input, split_row};
use super::timestamp::parse_timestamp_us;

/// The weights of one application profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp_weight: f64,
    pub fp_weight: f64,
    pub fn_weight: f64,
}

/// NAB's three profiles: standard, reward low false-positive rate, reward low false-negative
/// rate.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp_weight: 1.0,
        fp_weight: 0.22,
        fn_weight: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 2.0,
    },
];

/// Share of a file's rows that is probation, and its cap in rows.
const PROBATION_FRACTION: f64 = 0.15;
const PROBATION_CAP_ROWS: f64 = 750.0;

/// One scored file: its timestamps (µs), the detector's scores, and its anomaly windows as
/// inclusive `(start, end)` timestamps that occur in `timestamps`.
#[derive(Debug, Clone, Default)]
pub struct SeriesResult {
    pub name: String,
    pub timestamps: Vec<i64>,
    pub scores: Vec<f64>,
    pub windows: Vec<(i64, i64)>,
}

/// The outcome for one profile at its best threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileScore {
    pub profile: &'static str,
    /// 0 = never alerts, 100 = first row of every window and no false alert.
    pub normalized: f64,
    /// The weighted sum before normalisation.
    pub raw: f64,
    /// Rows scoring at or above this are alerts (above 1 means: never alert).
    pub threshold: f64,
    /// Windows with at least one alert.
    pub detected: usize,
    /// Windows without one.
    pub missed: usize,
    /// Alerts outside every window, probation excluded.
    pub false_positives: usize,
}

/// Normalised scores for NAB's three profiles, with the details behind each.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub standard: f64,
    pub reward_low_fp: f64,
    pub reward_low_fn: f64,
    /// In the order of [`PROFILES`].
    pub profiles: Vec<ProfileScore>,
}

/// How a row counts if it is an alert.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Inside window `window` (global index): reward, 1 at the left edge.
    Hit { window: usize, reward: f64 },
    /// Outside every window: unweighted cost in [-1, 0).
    False { cost: f64 },
}

/// `2·sigmoid(-5x) − 1`, −1 from three widths past a window.
fn scaled_sigmoid(x: f64) -> f64 {
    if x >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

fn probation_rows(rows: usize) -> usize {
    let p = (PROBATION_FRACTION * rows as f64)
        .floor()
        .min(PROBATION_CAP_ROWS);
    p as usize
}

/// Scores detector output held in memory. Each window's timestamps must occur in its series.
pub fn score_series(series: &[SeriesResult]) -> Result<Scores, NabError> {
    let max_reward = scaled_sigmoid(-1.0);
    let mut points: Vec<(f64, Outcome)> = Vec::new();
    let mut total_windows = 0usize;
    let mut scorable = Vec::new(); // per global window: has a row after probation
    for s in series {
        let first_index = |ts: i64| {
            s.timestamps
                .iter()
                .position(|&t| t == ts)
                .ok_or_else(|| NabError::WindowNotInData {
                    series: s.name.clone(),
                    timestamp: format_us(ts),
                })
        };
        // (global id, first index of start, first index of end) as NAB locates them.
        let mut windows = Vec::with_capacity(s.windows.len());
        for &(start, end) in &s.windows {
            windows.push((total_windows, first_index(start)?, first_index(end)?));
            scorable.push(false);
            total_windows += 1;
        }
        let probation = probation_rows(s.timestamps.len());
        let mut next = 0usize;
        // (local index, global id, right index, width) of the window we are in.
        let mut current: Option<(usize, usize, usize, f64)> = None;
        let mut previous: Option<(usize, f64)> = None; // (right index, width)
        for (i, (&ts, &score)) in s.timestamps.iter().zip(&s.scores).enumerate() {
            if let Some(&(id, left, right)) = windows.get(next)
                && ts == s.windows[next].0
            {
                let width = (right as f64 - left as f64 + 1.0).max(1.0);
                current = Some((next, id, right, width));
                next += 1;
            }
            let outcome = match current {
                Some((_, window, right, width)) => {
                    let position = -((right as f64) - (i as f64) + 1.0) / width;
                    Outcome::Hit {
                        window,
                        reward: scaled_sigmoid(position) / max_reward,
                    }
                }
                None => {
                    let position = match previous {
                        Some((right, width)) if width > 1.0 => {
                            (i as f64 - right as f64).abs() / (width - 1.0)
                        }
                        _ => 3.0,
                    };
                    Outcome::False {
                        cost: scaled_sigmoid(position),
                    }
                }
            };
            if i >= probation {
                if let Outcome::Hit { window, .. } = outcome {
                    scorable[window] = true;
                }
                points.push((score, outcome));
            }
            if let Some((k, _, _, width)) = current
                && ts == s.windows[k].1
            {
                previous = Some((i, width));
                current = None;
            }
        }
    }
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    let counted = scorable.iter().filter(|&&s| s).count();
    let profiles: Vec<ProfileScore> = PROFILES
        .iter()
        .map(|p| sweep(&points, total_windows, counted, p))
        .collect();
    Ok(Scores {
        standard: profiles[0].normalized,
        reward_low_fp: profiles[1].normalized,
        reward_low_fn: profiles[2].normalized,
        profiles,
    })
}

/// Lowers the threshold through every distinct score and keeps the best total.
fn sweep(
    points: &[(f64, Outcome)],
    total_windows: usize,
    counted_windows: usize,
    p: &Profile,
) -> ProfileScore {
    let mut best_reward: Vec<Option<f64>> = vec![None; total_windows];
    let mut total = -(counted_windows as f64) * p.fn_weight;
    let null = total;
    let (mut detected, mut false_positives) = (0usize, 0usize);
    let mut best = (total, 2.0_f64, 0usize, 0usize);
    let mut i = 0;
    while i < points.len() {
        let threshold = points[i].0;
        while i < points.len() && points[i].0 == threshold {
            match points[i].1 {
                Outcome::Hit { window, reward } => {
                    let r = reward * p.tp_weight;
                    match best_reward[window] {
                        None => {
                            total += p.fn_weight + r;
                            best_reward[window] = Some(r);
                            detected += 1;
                        }
                        Some(old) if r > old => {
                            total += r - old;
                            best_reward[window] = Some(r);
                        }
                        Some(_) => {}
                    }
                }
                Outcome::False { cost } => {
                    total += cost * p.fp_weight;
                    false_positives += 1;
                }
            }
            i += 1;
        }
        if total > best.0 {
            best = (total, threshold, detected, false_positives);
        }
    }
    let perfect = total_windows as f64 * p.tp_weight;
    let normalized = if perfect - null > 0.0 {
        100.0 * (best.0 - null) / (perfect - null)
    } else {
        0.0
    };
    ProfileScore {
        profile: p.name,
        normalized,
        raw: best.0,
        threshold: best.1,
        detected: best.2,
        missed: counted_windows - best.2,
        false_positives: best.3,
    }
}

fn format_us(us: i64) -> String {
    format!("{us} µs since 1970")
}

/// Reads `labels/combined_windows.json`: `"<category>/<file>.csv"` → list of `[start, end]`.
pub fn load_windows(path: &Path) -> Result<BTreeMap<String, Vec<(i64, i64)>>, NabError> {
    let text = fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| NabError::Windows {
        path: path.to_owned(),
        message,
    };
    let raw: BTreeMap<String, Vec<Vec<String>>> = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "expected {{\"cat/file.csv\": [[start, end], ...]}}: {e}"
        ))
    })?;
    let mut out = BTreeMap::new();
    for (key, list) in raw {
        let mut windows = Vec::with_capacity(list.len());
        for pair in list {
            let [start, end] = pair.as_slice() else {
                return Err(bad(format!("`{key}`: a window must be [start, end]")));
            };
            let parse = |s: &str| {
                parse_timestamp_us(s).ok_or_else(|| bad(format!("`{key}`: bad timestamp `{s}`")))
            };
            let (s, e) = (parse(start)?, parse(end)?);
            if e < s {
                return Err(bad(format!("`{key}`: window ends before it starts")));
            }
            windows.push((s, e));
        }
        out.insert(key, windows);
    }
    Ok(out)
}

/// The output file of `detector` for the data file `key` (`<category>/<file>.csv`).
pub(super) fn output_path(results_dir: &Path, detector: &str, key: &str) -> PathBuf {
    let (category, file) = key.rsplit_once('/').unwrap_or(("", key));
    results_dir
        .join(detector)
        .join(category)
        .join(format!("{detector}_{file}"))
}

/// One output file's columns: timestamps as written, timestamps parsed (µs), scores.
type OutputColumns = (Vec<String>, Vec<i64>, Vec<f64>);

/// Reads one output file.
fn read_output(path: &Path) -> Result<OutputColumns, NabError> {
    let text = fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })?;
    let format = |line: usize, message: String| NabError::Format {
        path: path.to_owned(),
        line,
        message,
    };
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format(1, "empty file; expected a header".into()))?;
    let columns: Vec<&str> = header.trim_end_matches('\r').split(',').collect();
    let find = |name: &str| {
        columns
            .iter()
            .position(|c| c.trim() == name)
            .ok_or_else(|| {
                format(
                    1,
                    format!(
                        "header has no `{name}` column; expected timestamp,value,anomaly_score"
                    ),
                )
            })
    };
    let (ts_col, score_col) = (find("timestamp")?, find("anomaly_score")?);
    let (mut raw_ts, mut ts, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (n, line) in lines.enumerate() {
        let line_no = n + 2;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let get = |c: usize| {
            fields
                .get(c)
                .copied()
                .ok_or_else(|| format(line_no, format!("expected {} columns", columns.len())))
        };
        let t = get(ts_col)?;
        let parsed =
            parse_timestamp_us(t).ok_or_else(|| format(line_no, format!("bad timestamp `{t}`")))?;
        let v = get(score_col)?;
        let score: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| (0.0..=1.0).contains(s))
            .ok_or_else(|| NabError::ScoreOutOfRange {
                path: path.to_owned(),
                line: line_no,
                value: v.to_owned(),
            })?;
        raw_ts.push(t.to_owned());
        ts.push(parsed);
        scores.push(score);
    }
    Ok((raw_ts, ts, scores))
}

/// Scores `<results_dir>/<detector>/...` against the windows file, over every file the
/// windows file names (each must be present).
pub fn score(results_dir: &Path, windows_json: &Path, detector: &str) -> Result<Scores, NabError> {
    score_impl(None, results_dir, windows_json, detector)
}

/// Like [`score()`], and also checks each output file against its input in `data_dir`: the
/// same number of rows and the same timestamps in the same order.
pub fn score_against_data(
    data_dir: &Path,
    results_dir: &Path,
    windows_json: &Path,
    detector: &str,
) -> Result<Scores, NabError> {
    score_impl(Some(data_dir), results_dir, windows_json, detector)
}

fn score_impl(
    data_dir: Option<&Path>,
    results_dir: &Path,
    windows_json: &Path,
    detector: &str,
) -> Result<Scores, NabError> {
    super::validate_detector_name(detector)?;
    let windows = load_windows(windows_json)?;
    let mut series = Vec::with_capacity(windows.len());
    for (key, windows) in windows {
        let path = output_path(results_dir, detector, &key);
        let (raw_ts, timestamps, scores) = read_output(&path)?;
        if let Some(data_dir) = data_dir {
            let input = data_dir.join(&key);
            let rows = read_input(&input)?;
            if rows.len() != raw_ts.len() {
                return Err(NabError::RowCount {
                    path,
                    found: raw_ts.len(),
                    expected: rows.len(),
                });
            }
            for (n, (row, got)) in rows.iter().zip(&raw_ts).enumerate() {
                let (expected, _) = split_row(row);
                if expected != got {
                    return Err(NabError::TimestampMismatch {
                        path,
                        line: n + 2,
                        found: got.clone(),
                        expected: expected.to_owned(),
                    });
                }
            }
        }
        series.push(SeriesResult {
            name: key,
            timestamps,
            scores,
            windows,
        });
    }
    score_series(&series)
}
