//! Runs the detector over the NAB data beside the repository and prints its scores.
//!
//! ```sh
//! cargo run --release -p fleetmon-anomaly --example nab -- [NAB_DIR] [OUT_DIR] [--detail]
//! ```
//!
//! `NAB_DIR` defaults to `../shared/data/nab` from the repository root (it holds `data/` and
//! `labels/`); `OUT_DIR` defaults to a fresh temporary directory. `--detail` adds, per file,
//! where each window was first alerted on and how many false alerts there were, at the
//! standard profile's threshold.
#![allow(clippy::print_stdout, reason = "an example reports on stdout")]

use std::path::{Path, PathBuf};
use std::time::Instant;

use fleetmon_anomaly::nab;

const DETECTOR: &str = "fleetmon";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let detail = args.iter().any(|a| a == "--detail");
    args.retain(|a| a != "--detail");
    let nab_dir = args.first().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nab"),
        PathBuf::from,
    );
    let temp = tempfile::tempdir()?;
    let out_dir = args
        .get(1)
        .map_or_else(|| temp.path().to_owned(), PathBuf::from);

    let started = Instant::now();
    let summary = nab::run(&nab_dir.join("data"), &out_dir, DETECTOR, |_| {})?;
    let elapsed = started.elapsed();
    let windows = nab_dir.join("labels/combined_windows.json");
    let scores = nab::score_against_data(&nab_dir.join("data"), &out_dir, &windows, DETECTOR)?;
    println!(
        "{} files, {} rows in {:.2?}; output in {}",
        summary.files,
        summary.rows,
        elapsed,
        out_dir.display()
    );
    println!("profile             normalised   raw     threshold  detected missed  false+");
    for p in &scores.profiles {
        println!(
            "{:<20} {:>8.1} {:>8.2} {:>12.6} {:>6} {:>6} {:>6}",
            p.profile, p.normalized, p.raw, p.threshold, p.detected, p.missed, p.false_positives
        );
    }
    if detail {
        print_detail(&out_dir, &windows, scores.profiles[0].threshold)?;
    }
    Ok(())
}

/// Per file: each window's first alert (as a fraction of the window, 0 = left edge) and the
/// number of alerts outside windows after probation.
fn print_detail(
    out_dir: &Path,
    windows: &Path,
    threshold: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    for (key, wins) in nab::load_windows(windows)? {
        let (category, file) = key.rsplit_once('/').unwrap_or(("", &key));
        let path = out_dir
            .join(DETECTOR)
            .join(category)
            .join(format!("{DETECTOR}_{file}"));
        let text = std::fs::read_to_string(&path)?;
        let rows: Vec<(i64, f64)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split(',');
                let ts = nab::parse_timestamp_us(f.next()?)?;
                let score = f.nth(1)?.parse().ok()?;
                Some((ts, score))
            })
            .collect();
        let probation = ((rows.len() as f64 * 0.15).floor() as usize).min(750);
        let spans: Vec<(usize, usize)> = wins
            .iter()
            .filter_map(|&(s, e)| {
                let a = rows.iter().position(|r| r.0 == s)?;
                let b = rows.iter().position(|r| r.0 == e)?;
                Some((a, b))
            })
            .collect();
        let mut found = Vec::new();
        for &(a, b) in &spans {
            let hit = (a..=b).find(|&i| i >= probation && rows[i].1 >= threshold);
            found.push(hit.map_or("miss".to_owned(), |i| {
                format!("{:.2}", (i - a) as f64 / (b - a + 1) as f64)
            }));
        }
        let fps: Vec<usize> = (probation..rows.len())
            .filter(|&i| rows[i].1 >= threshold && !spans.iter().any(|&(a, b)| a <= i && i <= b))
            .collect();
        println!(
            "{key:<58} windows [{}] fp {} {:?}",
            found.join(" "),
            fps.len(),
            &fps[..fps.len().min(6)]
        );
    }
    Ok(())
}
