//! The optional progress bar on stderr: batches acknowledged of those expected when the run is
//! bounded by a batch count, otherwise time elapsed of the duration (or a spinner), with the
//! number of connected devices in the message. It reads [`FleetStats`] a few times a second,
//! so devices never wait for the terminal.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::options::SimOptions;
use crate::stats::FleetStats;

const REFRESH: Duration = Duration::from_millis(200);

/// What the bar's position counts.
#[derive(Debug, Clone, Copy)]
enum Measure {
    Acked,
    ElapsedSecs,
    Nothing,
}

/// A running progress display; [`Progress::finish`] stops it.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    pub fn start(opts: &SimOptions, stats: Arc<FleetStats>) -> Self {
        let devices = opts.devices as u64;
        let (bar, measure) = match (opts.batches, opts.duration) {
            (Some(batches), _) => (
                ProgressBar::new(devices.saturating_mul(batches)),
                Measure::Acked,
            ),
            (None, Some(duration)) => (
                ProgressBar::new(duration.as_secs().max(1)),
                Measure::ElapsedSecs,
            ),
            (None, None) => (ProgressBar::new_spinner(), Measure::Nothing),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = match measure {
            Measure::Acked => "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} acked · {msg}",
            Measure::ElapsedSecs => {
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} s · {msg}"
            }
            Measure::Nothing => "{spinner} [{elapsed_precise}] {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let shown = bar.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                let s = stats.snapshot();
                match measure {
                    Measure::Acked => shown.set_position(s.acked),
                    Measure::ElapsedSecs => shown.set_position(started.elapsed().as_secs()),
                    Measure::Nothing => shown.tick(),
                }
                let mut msg = format!(
                    "{}/{devices} connected · {} produced · {} acked",
                    s.connected, s.produced, s.acked
                );
                if s.skipped > 0 {
                    msg.push_str(&format!(" · {} held back (backlog full)", s.skipped));
                }
                shown.set_message(msg);
            }
        });
        Self { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish();
    }
}
