//! Scores the detector on the NAB files beside the repository, on the full set and on two
//! halves (alternate files within each category, in name order), so a tuning change can be
//! checked on the half it was not made on. With `DUMP=DIR` set it also writes, per file, each
//! row's score and feature surprises to `DIR`.
//!
//! ```sh
//! cargo run --release -p fleetmon-anomaly --example nab_split -- [NAB_DIR]
//! ```
#![allow(clippy::print_stdout, reason = "an example reports on stdout")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetmon_anomaly::{Detector, nab};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nab_dir = args.first().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nab"),
        PathBuf::from,
    );
    let windows = nab::load_windows(&nab_dir.join("labels/combined_windows.json"))?;
    let mut series = Vec::new();
    for (key, wins) in windows {
        let text = std::fs::read_to_string(nab_dir.join("data").join(&key))?;
        let mut d = Detector::default();
        let mut timestamps = Vec::new();
        let mut scores = Vec::new();
        let mut dump = String::new();
        for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
            let mut f = line.split(',');
            let ts = f
                .next()
                .and_then(nab::parse_timestamp_us)
                .ok_or("bad timestamp")?;
            let v: f64 = f.next().ok_or("no value")?.trim().parse()?;
            timestamps.push(ts);
            scores.push(d.observe(ts.div_euclid(1000), v));
            if std::env::var("DUMP").is_ok() {
                use std::fmt::Write;
                let _ = writeln!(
                    dump,
                    "{},{:?}",
                    scores[scores.len() - 1],
                    d.last_surprises()
                );
            }
        }
        if let Ok(dir) = std::env::var("DUMP") {
            std::fs::write(format!("{dir}/{}", key.replace('/', "__")), &dump)?;
        }
        series.push(nab::SeriesResult {
            name: key,
            timestamps,
            scores,
            windows: wins,
        });
    }
    // Alternate files within each category.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for s in &series {
        let cat = s.name.split('/').next().unwrap_or_default().to_owned();
        let k = seen.entry(cat).or_default();
        if k.is_multiple_of(2) {
            a.push(s.clone());
        } else {
            b.push(s.clone());
        }
        *k += 1;
    }
    println!(
        "state: {} bytes per series",
        std::mem::size_of::<Detector>()
    );
    println!("set      standard  low_FP  low_FN   (det/miss/fp at standard)");
    for (name, set) in [("full", &series), ("half A", &a), ("half B", &b)] {
        let s = nab::score_series(set)?;
        let p = &s.profiles[0];
        println!(
            "{name:<8} {:>8.1} {:>7.1} {:>7.1}   {}/{}/{}",
            s.standard, s.reward_low_fp, s.reward_low_fn, p.detected, p.missed, p.false_positives
        );
    }
    Ok(())
}
