//! The detector on the NAB files beside the repository (`../shared/data/nab`), scored by our
//! NAB scorer: it must stay within 2 points of its recorded standard score (59.0 on these 26
//! files), well above KNN CAD (48.5).

use std::path::Path;

use fleetmon_anomaly::nab;

#[test]
fn detector_holds_its_score_on_the_provided_nab_files() {
    let nab_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nab");
    if !nab_dir.join("data").is_dir() {
        println!(
            "SKIPPED: no NAB data at {} (expected beside the checkout)",
            nab_dir.display()
        );
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let summary = nab::run(&nab_dir.join("data"), out.path(), "fleetmon", |_| {}).expect("run");
    assert_eq!((summary.files, summary.rows), (26, 147_456));
    let scores = nab::score_against_data(
        &nab_dir.join("data"),
        out.path(),
        &nab_dir.join("labels/combined_windows.json"),
        "fleetmon",
    )
    .expect("score");
    println!("{scores:#?}");
    assert!(scores.standard > 56.9, "standard {:.1}", scores.standard);
}
