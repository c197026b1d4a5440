//! `fleetmon anomaly nab DATA_DIR OUT_DIR`: the streaming detector over a NAB-style data
//! directory, writing outputs NAB's scorer reads; and, when the labels sit beside the data
//! (`DATA_DIR/../labels/combined_windows.json`, or `--windows`), the NAB scores.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fleetmon_anomaly::nab;
use indicatif::{ProgressBar, ProgressStyle};

use crate::say;

#[derive(Debug, Subcommand)]
pub enum AnomalyCommand {
    /// Run the detector over DATA_DIR/<category>/<file>.csv and write
    /// OUT_DIR/<detector>/<category>/<detector>_<file>.csv; score when labels are found.
    Nab(NabArgs),
}

#[derive(Debug, Args)]
pub struct NabArgs {
    /// A directory laid out like NAB's `data/`: one folder per category of CSV files.
    pub data_dir: PathBuf,
    /// Where the detector's output tree is written.
    pub out_dir: PathBuf,
    /// The detector's name in the output paths.
    #[arg(long, default_value = "fleetmon")]
    pub detector: String,
    /// NAB's `combined_windows.json` [default: DATA_DIR/../labels/combined_windows.json when
    /// it exists].
    #[arg(long)]
    pub windows: Option<PathBuf>,
}

pub fn run(command: AnomalyCommand) -> anyhow::Result<()> {
    let AnomalyCommand::Nab(args) = command;
    nab::validate_detector_name(&args.detector)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = nab::run(&args.data_dir, &args.out_dir, &args.detector, |done| {
        bar.set_length(done.total as u64);
        bar.set_position(done.index as u64);
        bar.set_message(done.key.clone());
    })
    .with_context(|| format!("running the detector over {}", args.data_dir.display()))?;
    bar.finish_and_clear();
    say(&format!(
        "{} files, {} rows scored into {}",
        summary.files,
        summary.rows,
        args.out_dir.join(&args.detector).display()
    ));
    let windows = args.windows.or_else(|| {
        let beside = args.data_dir.join("../labels/combined_windows.json");
        beside.is_file().then_some(beside)
    });
    if let Some(windows) = windows {
        let scores =
            nab::score_against_data(&args.data_dir, &args.out_dir, &windows, &args.detector)
                .with_context(|| format!("scoring against {}", windows.display()))?;
        for p in &scores.profiles {
            say(&format!(
                "{:<20} {:>6.1}  (threshold {:.4}, {} windows detected, {} missed, {} false alerts)",
                p.profile, p.normalized, p.threshold, p.detected, p.missed, p.false_positives
            ));
        }
    }
    Ok(())
}
