//! The NAB scorer on hand-made cases whose scores can be worked out on paper, and its refusal
//! of malformed detector output.

use std::fs;
use std::path::Path;

use fleetmon_anomaly::nab::{self, NabError, SeriesResult};

const ROWS: usize = 1000;
const STEP_US: i64 = 300_000_000;

/// A 1000-row series (probation: rows 0..150) with one window on rows 500..=599 and the
/// given rows scored 1 (all others 0).
fn series(name: &str, alerts: &[usize]) -> SeriesResult {
    let timestamps: Vec<i64> = (0..ROWS as i64).map(|i| i * STEP_US).collect();
    let mut scores = vec![0.0; ROWS];
    for &i in alerts {
        scores[i] = 1.0;
    }
    SeriesResult {
        name: name.to_owned(),
        windows: vec![(timestamps[500], timestamps[599])],
        timestamps,
        scores,
    }
}

/// NAB's reward curve, for expected values.
fn scaled_sigmoid(x: f64) -> f64 {
    2.0 / (1.0 + (5.0 * x).exp()) - 1.0
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn perfect_output_scores_100_and_null_0() {
    let s = nab::score_series(&[series("a", &[500]), series("b", &[500])]).expect("scores");
    assert!(close(s.standard, 100.0), "{s:?}");
    assert!(close(s.reward_low_fp, 100.0) && close(s.reward_low_fn, 100.0));
    let s = nab::score_series(&[series("a", &[]), series("b", &[])]).expect("scores");
    assert!(close(s.standard, 0.0) && close(s.reward_low_fp, 0.0) && close(s.reward_low_fn, 0.0));
    assert!(s.profiles[0].threshold > 1.0, "null means: never alert");
    // Constant output can only alert everywhere or nowhere; nowhere is better.
    let mut flat = series("a", &[]);
    flat.scores = vec![0.5; ROWS];
    let s = nab::score_series(&[flat]).expect("scores");
    assert!(close(s.standard, 0.0), "{s:?}");
}

#[test]
fn a_miss_costs_the_miss_weight() {
    // One window found at its left edge (+1), one missed (−1): raw 0 between null −2 and
    // perfect +2 in the standard profile; with misses weighing 2, null −4 and raw −1.
    let s = nab::score_series(&[series("a", &[500]), series("b", &[])]).expect("scores");
    assert!(close(s.standard, 50.0), "{s:?}");
    assert!(close(s.reward_low_fn, 50.0), "{s:?}");
    assert_eq!((s.profiles[0].detected, s.profiles[0].missed), (1, 1));
}

#[test]
fn early_detection_earns_more_than_late() {
    let reward = |i: usize| scaled_sigmoid(-((599 - i + 1) as f64) / 100.0) / scaled_sigmoid(-1.0);
    let early = nab::score_series(&[series("a", &[510])]).expect("scores");
    let late = nab::score_series(&[series("a", &[590])]).expect("scores");
    assert!(
        close(early.standard, 100.0 * (1.0 + reward(510)) / 2.0),
        "{early:?}"
    );
    assert!(
        close(late.standard, 100.0 * (1.0 + reward(590)) / 2.0),
        "{late:?}"
    );
    assert!(early.standard > 99.0 && late.standard < 65.0);
    // Only the first alert in a window counts: later ones neither add nor cost.
    let both = nab::score_series(&[series("a", &[510, 590])]).expect("scores");
    assert!(close(both.standard, early.standard));
}

#[test]
fn a_false_alarm_just_after_a_window_costs_less_than_one_far_away() {
    // Just after: 6 rows past the right edge, 6/99 widths. Far: more than 3 widths out.
    let near = nab::score_series(&[series("a", &[500, 605])]).expect("scores");
    let far = nab::score_series(&[series("a", &[500, 950])]).expect("scores");
    let near_cost = scaled_sigmoid(6.0 / 99.0);
    assert!(
        close(near.standard, 100.0 * (2.0 + 0.11 * near_cost) / 2.0),
        "{near:?}"
    );
    assert!(close(far.standard, 100.0 * (2.0 - 0.11) / 2.0), "{far:?}");
    assert!(
        close(far.reward_low_fp, 100.0 * (2.0 - 0.22) / 2.0),
        "{far:?}"
    );
    assert_eq!(far.profiles[0].false_positives, 1);
    // Before any window, a false alarm costs the full weight too.
    let before = nab::score_series(&[series("a", &[300, 500])]).expect("scores");
    assert!(close(before.standard, far.standard));
}

#[test]
fn probation_is_free_and_the_threshold_is_optimised() {
    let s = nab::score_series(&[series("a", &[10, 500])]).expect("scores");
    assert!(close(s.standard, 100.0), "{s:?}");
    // Lower scores on false alarms: the best threshold keeps the detection and drops them.
    let mut x = series("a", &[500]);
    x.scores[500] = 0.9;
    for i in [200, 300, 800] {
        x.scores[i] = 0.5;
    }
    let s = nab::score_series(&[x]).expect("scores");
    assert!(close(s.standard, 100.0), "{s:?}");
    assert!(close(s.profiles[0].threshold, 0.9));
}

#[test]
fn a_window_must_occur_in_the_data() {
    let mut x = series("a", &[500]);
    x.windows[0].0 += 1;
    assert!(matches!(
        nab::score_series(&[x]),
        Err(NabError::WindowNotInData { .. })
    ));
}

/// A one-file data set, the detector's output for it, and the windows file.
fn fixture(dir: &Path) {
    let data = dir.join("data/cat");
    fs::create_dir_all(&data).expect("mkdir");
    let mut csv = String::from("timestamp,value\n");
    for i in 0..400 {
        csv.push_str(&format!(
            "2020-01-02 {:02}:{:02}:00,{}\n",
            i / 60,
            i % 60,
            i % 7
        ));
    }
    fs::write(data.join("f.csv"), csv).expect("write data");
    fs::write(
        dir.join("windows.json"),
        r#"{"cat/f.csv": [["2020-01-02 04:00:00.000000", "2020-01-02 04:30:00.000000"]]}"#,
    )
    .expect("write windows");
    nab::run(&dir.join("data"), &dir.join("out"), "det", |_| {}).expect("run");
}

fn rescore(dir: &Path) -> Result<nab::Scores, NabError> {
    nab::score_against_data(
        &dir.join("data"),
        &dir.join("out"),
        &dir.join("windows.json"),
        "det",
    )
}

fn tamper(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join("out/det/cat/det_f.csv");
    let text = fs::read_to_string(&path).expect("read output");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    edit(&mut lines);
    fs::write(&path, lines.join("\n") + "\n").expect("write output");
}

#[test]
fn run_output_copies_the_input_and_scores() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let out = fs::read_to_string(dir.path().join("out/det/cat/det_f.csv")).expect("output");
    let input = fs::read_to_string(dir.path().join("data/cat/f.csv")).expect("input");
    assert!(out.starts_with("timestamp,value,anomaly_score\n"));
    for (o, i) in out.lines().skip(1).zip(input.lines().skip(1)) {
        assert!(o.starts_with(&format!("{i},")), "{o} vs {i}");
    }
    assert_eq!(out.lines().count(), input.lines().count());
    rescore(dir.path()).expect("valid output scores");
}

#[test]
fn malformed_output_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path());
    let d = dir.path();
    let original = fs::read_to_string(d.join("out/det/cat/det_f.csv")).expect("output");
    let restore = || fs::write(d.join("out/det/cat/det_f.csv"), &original).expect("restore");

    tamper(d, |l| {
        l.pop();
    });
    assert!(matches!(
        rescore(d),
        Err(NabError::RowCount {
            found: 399,
            expected: 400,
            ..
        })
    ));
    restore();

    tamper(d, |l| l[10] = l[10].replacen("2020-01-02", "2020-01-03", 1));
    let err = rescore(d).expect_err("timestamp changed");
    assert!(
        matches!(err, NabError::TimestampMismatch { line: 11, .. }),
        "{err}"
    );
    restore();

    tamper(d, |l| {
        l[20] = format!("{},1.5", l[20].rsplit_once(',').expect("row").0)
    });
    let err = rescore(d).expect_err("score above 1");
    assert!(
        matches!(err, NabError::ScoreOutOfRange { line: 21, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("[0, 1]"), "{err}");
    restore();

    tamper(d, |l| {
        l[30] = format!("{},NaN", l[30].rsplit_once(',').expect("row").0)
    });
    assert!(matches!(rescore(d), Err(NabError::ScoreOutOfRange { .. })));
    restore();

    tamper(d, |l| l[0] = "timestamp,value,score".into());
    assert!(matches!(rescore(d), Err(NabError::Format { line: 1, .. })));
    restore();

    fs::remove_file(d.join("out/det/cat/det_f.csv")).expect("remove");
    assert!(matches!(rescore(d), Err(NabError::Io { .. })));
    assert!(matches!(
        nab::run(&d.join("data"), &d.join("out"), "null", |_| {}),
        Err(NabError::DetectorName(_))
    ));
}
