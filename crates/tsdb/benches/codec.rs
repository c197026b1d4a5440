//! Gorilla versus pco on realistic fleet data (`tests/common/fleet.rs`): 10 020 series × 720
//! points at 10 s. Prints bytes per sample per codec, per metric, and what the block writer's
//! per-series choice (`codec::encode_samples`) achieves. This is the measurement behind keeping
//! Gorilla for the appendable head and pco (when smaller) for sealed blocks.
//! Run: `CARGO_TARGET_DIR=/work/target-tsdb cargo bench -p fleetmon-tsdb --bench codec`

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark program: failing loudly and printing figures is its job"
)]

#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::time::Instant;

use fleetmon_tsdb::chunk::encode;
use fleetmon_tsdb::codec::{PCO, decode_samples, encode_samples};

fn main() {
    let devices = 334;
    let steps = 720i64;
    let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); devices * 30];
    let mut names = Vec::new();
    for d in 0..devices {
        let mut dev = fleet::Device::new(d);
        if d == 0 {
            names = dev.labels.iter().map(|l| l.metric().to_owned()).collect();
        }
        for step in 0..steps {
            let ts = 1_767_225_600_000 + step * 10_000 + dev.jitter();
            for (i, v) in dev.step(10_000).into_iter().enumerate() {
                series[d * 30 + i].push((ts, v));
            }
        }
    }
    let n = series.len() as f64 * steps as f64;
    let per_metric_n = devices as f64 * steps as f64;

    let start = Instant::now();
    let mut gorilla = vec![0usize; 30];
    for (i, s) in series.iter().enumerate() {
        gorilla[i % 30] += encode(s).len();
    }
    let g_time = start.elapsed();
    let start = Instant::now();
    let mut chosen = vec![0usize; 30];
    let mut pco_picked = 0;
    let mut encoded = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        let (enc, bytes) = encode_samples(s);
        chosen[i % 30] += bytes.len();
        pco_picked += usize::from(enc == PCO);
        encoded.push((enc, bytes));
    }
    let c_time = start.elapsed();
    let start = Instant::now();
    for (enc, bytes) in &encoded {
        decode_samples(*enc, bytes, steps as u32).unwrap();
    }
    let d_time = start.elapsed();
    let total = |v: &[usize]| v.iter().sum::<usize>() as f64 / n;
    println!("samples: {n}");
    println!(
        "gorilla: {:.3} bytes/sample (encode {:.0} ms)",
        total(&gorilla),
        g_time.as_secs_f64() * 1e3
    );
    println!(
        "block codec (smaller of gorilla/pco per series; pco chosen for {pco_picked} of {} series): {:.3} bytes/sample (encode both {:.0} ms, decode {:.0} ms)",
        series.len(),
        total(&chosen),
        c_time.as_secs_f64() * 1e3,
        d_time.as_secs_f64() * 1e3
    );
    for m in 0..30 {
        println!(
            "  {:32} gorilla {:5.2}  chosen {:5.2} B/sample",
            names[m],
            gorilla[m] as f64 / per_metric_n,
            chosen[m] as f64 / per_metric_n
        );
    }
}
