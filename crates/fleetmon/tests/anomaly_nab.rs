//! `fleetmon anomaly nab DATA OUT` over the NAB files beside the repository: every output file
//! has one row per input row with the input's timestamp and value, scores in [0, 1], and the
//! scores are printed for the three profiles.

use std::path::Path;
use std::process::Command;

const NAB: &str = "../../../shared/data/nab";

#[test]
fn the_detector_runs_over_nab_data_and_is_scored() {
    let nab = Path::new(env!("CARGO_MANIFEST_DIR")).join(NAB);
    if !nab.join("data").is_dir() {
        eprintln!("SKIPPED: no NAB data at {}", nab.display());
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(fleetmon_testkit::fleetmon_bin())
        .args(["anomaly", "nab"])
        .arg(nab.join("data"))
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("26 files"), "{stdout}");
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(stdout.contains(profile), "{profile} missing in {stdout}");
    }
    let input = std::fs::read_to_string(nab.join("data/realKnownCause/nyc_taxi.csv")).unwrap();
    let output = std::fs::read_to_string(
        out.path()
            .join("fleetmon/realKnownCause/fleetmon_nyc_taxi.csv"),
    )
    .unwrap();
    let (inp, outp): (Vec<&str>, Vec<&str>) = (input.lines().collect(), output.lines().collect());
    assert_eq!(inp.len(), outp.len());
    assert_eq!(outp[0], "timestamp,value,anomaly_score");
    for (i, o) in inp.iter().zip(&outp).skip(1) {
        let (ts_val, score) = o.rsplit_once(',').unwrap();
        assert_eq!(*i, ts_val);
        let score: f64 = score.parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{score}");
    }

    // A bad detector name is refused with a message naming it.
    let bad = Command::new(fleetmon_testkit::fleetmon_bin())
        .args(["anomaly", "nab", "--detector", "null"])
        .arg(nab.join("data"))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("null"));
}
