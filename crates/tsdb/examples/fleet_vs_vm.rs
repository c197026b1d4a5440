//! The fleet dataset of `bench/tsdb-vs-victoriametrics`, and our side of that benchmark.
//!
//! The data comes from the same seeded generator the crate's benches use
//! (`tests/common/fleet.rs`): per device 30 series in the fleet's real metric mix, sampled
//! every `FLEET_STEP_S` seconds with a few milliseconds of jitter, ending at `FLEET_END_MS`.
//! Two commands regenerate exactly the same samples:
//!
//! - `fleet_vs_vm json FILE` writes them as VictoriaMetrics `/api/v1/import` JSON lines (one
//!   line per series per hour of data);
//! - `fleet_vs_vm ours DIR` appends them into a [`Db`] in `DIR` (a bulk import: one append,
//!   one fsync, per `FLEET_APPEND_STEPS` (6) time steps of the whole fleet; the engine's
//!   background thread flushes the head as it fills), flushes, compacts, runs the benchmark's
//!   queries and reports its peak RSS. It runs as its own process so that the peak is the
//!   engine's, not the JSON writer's. `FLEET_APPEND=ids` (the default) resolves each series'
//!   labels once (`Db::resolve`) and appends by id (`Db::append_ids`), as a client that keeps
//!   its series ids does; `FLEET_APPEND=labels` passes labels with every sample (`Db::append`).
//!
//! Two more serve `bench/promql-vs-prometheus`:
//!
//! - `fleet_vs_vm openmetrics FILE` writes the samples as OpenMetrics text (one family after
//!   another, each series' samples in time order) for `promtool tsdb create-blocks-from
//!   openmetrics`;
//! - `fleet_vs_vm load DIR` appends them into a [`Db`] in `DIR` as `ours` does, flushes and
//!   compacts (so compacted days carry rollups), and stops: a server's `DATA_DIR/tsdb`.
//!
//! Figures go to stdout as `key=value` lines for `run.sh`; progress goes to stderr.
//! Environment: `FLEET_DEVICES` (334 → 10 020 series), `FLEET_HOURS` (24), `FLEET_STEP_S`
//! (10, the simulator's interval), `FLEET_END_MS` (default: the last UTC midnight), and
//! `FLEET_QUERY_REPS` (5; latencies are medians), `FLEET_FLUSH_SAMPLES` (the engine's
//! `flush_head_samples_per_series`; its default otherwise).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark program: printing figures is its job"
)]

#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleet::Device;
use fleetmon_tsdb::{Agg, Db, Labels, Matcher, Options, Sample};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Steps written per JSON line (one line per series per chunk).
const JSON_CHUNK_MS: i64 = HOUR_MS;

/// The dataset's shape.
struct Shape {
    devices: usize,
    steps: i64,
    step_ms: i64,
    start_ms: i64,
    end_ms: i64,
}

impl Shape {
    fn from_env() -> anyhow::Result<Self> {
        let devices = env_or("FLEET_DEVICES", 334)?;
        let hours = env_or("FLEET_HOURS", 24)?;
        let step_ms = env_or("FLEET_STEP_S", 10)? * 1000;
        let now = fleetmon_tsdb::db::system_clock();
        let end_ms = env_or("FLEET_END_MS", now - now.rem_euclid(DAY_MS))?;
        if devices <= 0 || hours <= 0 || step_ms <= 0 {
            bail!("FLEET_DEVICES, FLEET_HOURS and FLEET_STEP_S must be positive");
        }
        let span = hours * HOUR_MS;
        Ok(Self {
            devices: usize::try_from(devices)?,
            steps: span / step_ms,
            step_ms,
            start_ms: end_ms - span,
            end_ms,
        })
    }

    fn series(&self) -> usize {
        self.devices * 30
    }

    fn samples(&self) -> u64 {
        self.series() as u64 * self.steps as u64
    }

    /// Regenerates the dataset, calling `each_step` with every time step of the whole fleet:
    /// per device, its timestamp and its 30 values (in `Device::labels` order).
    fn generate(
        &self,
        devices: &mut [Device],
        mut each_step: impl FnMut(i64, &[(i64, Vec<f64>)]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut rows = Vec::with_capacity(devices.len());
        for step in 0..self.steps {
            rows.clear();
            for dev in devices.iter_mut() {
                let ts = self.start_ms + step * self.step_ms + dev.jitter();
                rows.push((ts, dev.step(self.step_ms)));
            }
            each_step(step, &rows)?;
        }
        Ok(())
    }

    fn print(&self) {
        println!("devices={}", self.devices);
        println!("series={}", self.series());
        println!("points_per_series={}", self.steps);
        println!("samples={}", self.samples());
        println!("step_s={}", self.step_ms / 1000);
        println!("start_ms={}", self.start_ms);
        println!("end_ms={}", self.end_ms);
    }
}

fn env_or(name: &str, default: i64) -> anyhow::Result<i64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v}: expected an integer")),
        Err(_) => Ok(default),
    }
}

fn fleet(shape: &Shape) -> Vec<Device> {
    (0..shape.devices).map(Device::new).collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let shape = Shape::from_env()?;
    match args.get(1..) {
        Some([cmd, path]) if cmd == "json" => write_json(&shape, Path::new(path)),
        Some([cmd, dir]) if cmd == "ours" => ours(&shape, Path::new(dir)),
        Some([cmd, path]) if cmd == "openmetrics" => write_openmetrics(&shape, Path::new(path)),
        Some([cmd, dir]) if cmd == "load" => load(&shape, Path::new(dir)),
        _ => bail!("usage: fleet_vs_vm json FILE | ours DIR | openmetrics FILE | load DIR"),
    }
}

/// Appends `s` to `out` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"metric":{...},"values":[...],"timestamps":[...]}` for one series' points.
fn json_line(out: &mut String, labels: &Labels, points: &[(i64, f64)]) {
    use std::fmt::Write as _;
    out.push_str("{\"metric\":{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push_str("},\"values\":[");
    for (i, (_, v)) in points.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v}");
    }
    out.push_str("],\"timestamps\":[");
    for (i, (t, _)) in points.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{t}");
    }
    out.push_str("]}\n");
}

fn write_json(shape: &Shape, path: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut devices = fleet(shape);
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let chunk_steps = (JSON_CHUNK_MS / shape.step_ms).max(1);
    // Per series, the points of the current chunk.
    let mut pending: Vec<Vec<(i64, f64)>> = vec![Vec::new(); shape.series()];
    let mut line = String::new();
    let labels: Vec<Labels> = devices.iter().flat_map(|d| d.labels.clone()).collect();
    let mut flush = |pending: &mut Vec<Vec<(i64, f64)>>| -> anyhow::Result<()> {
        for (labels, points) in labels.iter().zip(pending.iter_mut()) {
            if points.is_empty() {
                continue;
            }
            line.clear();
            json_line(&mut line, labels, points);
            out.write_all(line.as_bytes())?;
            points.clear();
        }
        Ok(())
    };
    shape.generate(&mut devices, |step, rows| {
        for (d, (ts, values)) in rows.iter().enumerate() {
            for (i, &v) in values.iter().enumerate() {
                pending[d * 30 + i].push((*ts, v));
            }
        }
        if (step + 1) % chunk_steps == 0 {
            flush(&mut pending)?;
        }
        Ok(())
    })?;
    flush(&mut pending)?;
    out.flush()?;
    shape.print();
    println!("json_bytes={}", std::fs::metadata(path)?.len());
    println!("generate_json_s={:.2}", start.elapsed().as_secs_f64());
    Ok(())
}

fn write_openmetrics(shape: &Shape, path: &Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let start = Instant::now();
    let mut devices = fleet(shape);
    let labels: Vec<Labels> = devices.iter().flat_map(|d| d.labels.clone()).collect();
    let mut points: Vec<Vec<(i64, f64)>> =
        vec![Vec::with_capacity(usize::try_from(shape.steps)?); shape.series()];
    shape.generate(&mut devices, |_, rows| {
        for (d, (ts, values)) in rows.iter().enumerate() {
            for (i, &v) in values.iter().enumerate() {
                points[d * 30 + i].push((*ts, v));
            }
        }
        Ok(())
    })?;
    // Families one after another, as OpenMetrics wants.
    let mut families: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        families.entry(l.metric()).or_default().push(i);
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut line = String::new();
    for (metric, members) in families {
        writeln!(out, "# TYPE {metric} gauge")?;
        for i in members {
            let mut set = String::new();
            for (k, v) in labels[i]
                .iter()
                .filter(|(k, _)| *k != fleetmon_tsdb::METRIC_NAME)
            {
                if !set.is_empty() {
                    set.push(',');
                }
                set.push_str(k);
                set.push('=');
                json_str(&mut set, v);
            }
            for &(t, v) in &points[i] {
                line.clear();
                let _ = writeln!(
                    line,
                    "{metric}{{{set}}} {v} {}.{:03}",
                    t.div_euclid(1000),
                    t.rem_euclid(1000)
                );
                out.write_all(line.as_bytes())?;
            }
        }
    }
    out.write_all(b"# EOF\n")?;
    out.flush()?;
    shape.print();
    println!("openmetrics_bytes={}", std::fs::metadata(path)?.len());
    println!(
        "generate_openmetrics_s={:.2}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Loads the dataset into a database in `dir`, flushes and compacts it.
fn load(shape: &Shape, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    let mut devices = fleet(shape);
    let db = Db::open_dir(dir, Options::default())?;
    let labels: Vec<Labels> = devices.iter().flat_map(|d| d.labels.clone()).collect();
    let ids: Vec<_> = labels.iter().map(|l| db.resolve(l)).collect();
    let mut batch = Vec::with_capacity(shape.series() * 6);
    shape.generate(&mut devices, |step, rows| {
        for (d, (ts, values)) in rows.iter().enumerate() {
            for (i, &value) in values.iter().enumerate() {
                batch.push((ids[d * 30 + i], *ts, value));
            }
        }
        if (step + 1) % 6 == 0 || step + 1 == shape.steps {
            db.append_ids(&batch, None)?;
            batch.clear();
        }
        Ok(())
    })?;
    db.flush()?;
    let merges = db.compact(fleetmon_tsdb::db::system_clock())?;
    let stats = db.stats();
    shape.print();
    println!("compactions={merges}");
    println!("blocks={}", stats.blocks);
    println!("block_bytes={}", stats.block_bytes);
    println!("load_s={:.2}", start.elapsed().as_secs_f64());
    Ok(())
}

/// A line of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(key))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Total size of the files in `dir` (the engine's directory is flat), and of its blocks.
fn dir_bytes(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut all, mut blocks) = (0, 0);
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let len = e.metadata()?.len();
        all += len;
        if e.file_name().to_string_lossy().ends_with(".blk") {
            blocks += len;
        }
    }
    Ok((all, blocks))
}

/// Median latency of `reps` runs of `f` (ms), and the last run's result.
fn timed<T>(reps: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let out = f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        last = Some(out);
    }
    times.sort_by(f64::total_cmp);
    let out = last.context("no query run")?;
    Ok((times[times.len() / 2], out))
}

fn ours(shape: &Shape, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut devices = fleet(shape);
    let defaults = Options::default();
    let options = Options {
        flush_head_samples_per_series: u64::try_from(env_or(
            "FLEET_FLUSH_SAMPLES",
            i64::try_from(defaults.flush_head_samples_per_series)?,
        )?)?,
        ..defaults
    };
    let rss_before = proc_status_bytes("VmRSS:");
    let db = Db::open_dir(dir, options)?;
    let by_ids = match std::env::var("FLEET_APPEND").as_deref() {
        Ok("labels") => false,
        Ok("ids") | Err(_) => true,
        Ok(other) => bail!("FLEET_APPEND={other}: expected ids or labels"),
    };
    let mut ingest = Duration::ZERO;
    let mut samples = Vec::with_capacity(shape.series());
    let mut by_id = Vec::with_capacity(shape.series());
    let labels: Vec<Labels> = devices.iter().flat_map(|d| d.labels.clone()).collect();
    let ids = if by_ids {
        // Part of the ingest: a client resolves its series once.
        let start = Instant::now();
        let ids: Vec<_> = labels.iter().map(|l| db.resolve(l)).collect();
        ingest += start.elapsed();
        ids
    } else {
        Vec::new()
    };
    let (mut peak_head, mut sum_head, mut head_reads) = (0u64, 0u64, 0u64);
    let batch_steps = env_or("FLEET_APPEND_STEPS", 6)?.max(1);
    shape.generate(&mut devices, |step, rows| {
        for (d, (ts, values)) in rows.iter().enumerate() {
            for (i, &value) in values.iter().enumerate() {
                if by_ids {
                    by_id.push((ids[d * 30 + i], *ts, value));
                } else {
                    samples.push(Sample {
                        labels: &labels[d * 30 + i],
                        ts_ms: *ts,
                        value,
                    });
                }
            }
        }
        if (step + 1) % batch_steps != 0 && step + 1 != shape.steps {
            return Ok(());
        }
        let start = Instant::now();
        if by_ids {
            db.append_ids(&by_id, None)?;
        } else {
            db.append(&samples, None)?;
        }
        ingest += start.elapsed();
        samples.clear();
        by_id.clear();
        if (step + 1) % (batch_steps * 10) == 0 {
            let stats = db.stats();
            let heap = stats.head_heap_bytes + stats.index_heap_bytes;
            peak_head = peak_head.max(heap);
            sum_head += heap;
            head_reads += 1;
        }
        Ok(())
    })?;
    drop(samples);
    drop(by_id);
    let total = shape.samples();
    let stats = db.stats();
    peak_head = peak_head.max(stats.head_heap_bytes + stats.index_heap_bytes);
    if stats.samples_appended_total != total {
        bail!(
            "appended {} samples, expected {total}",
            stats.samples_appended_total
        );
    }
    eprintln!(
        "ours: ingested {total} samples in {:.1} s",
        ingest.as_secs_f64()
    );
    shape.print();
    println!("ingest_s={:.3}", ingest.as_secs_f64());
    println!("append_by={}", if by_ids { "ids" } else { "labels" });
    println!("ingest_background_flushes={}", stats.flushes_total);
    println!("wal_syncs={}", stats.wal_syncs_total);
    println!("vmhwm_after_ingest_bytes={}", proc_status_bytes("VmHWM:"));
    println!("append_samples={}", shape.series() as i64 * batch_steps);

    let start = Instant::now();
    db.flush()?;
    println!("final_flush_s={:.3}", start.elapsed().as_secs_f64());
    let (all, blocks) = dir_bytes(dir)?;
    println!("disk_after_flush_bytes={all}");
    println!("blocks_after_flush_bytes={blocks}");
    println!("vmhwm_after_flush_bytes={}", proc_status_bytes("VmHWM:"));
    let start = Instant::now();
    let merges = db.compact(fleetmon_tsdb::db::system_clock())?;
    println!("compact_s={:.3}", start.elapsed().as_secs_f64());
    println!("compactions={merges}");
    let (all, blocks) = dir_bytes(dir)?;
    println!("disk_after_compact_bytes={all}");
    println!("blocks_after_compact_bytes={blocks}");
    eprintln!("ours: flushed and compacted; querying");

    let reps = usize::try_from(env_or("FLEET_QUERY_REPS", 5)?)?;
    let (end, day_ago, week_ago) = (
        shape.end_ms,
        shape.end_ms - DAY_MS,
        shape.end_ms - 7 * DAY_MS,
    );
    let one = [
        Matcher::metric("cpu_usage_ratio"),
        Matcher::eq("device", "dev-00007"),
    ];
    let (ms, r) = timed(reps, || Ok(db.select(&one, day_ago, end)))?;
    let points: usize = r.iter().map(|s| s.points.len()).sum();
    println!("q_one_series_ms={ms:.3}");
    println!("q_one_series_result={} series, {points} points", r.len());

    let device = [Matcher::eq("device", "dev-00007")];
    let (ms, r) = timed(reps, || Ok(db.select(&device, day_ago, end)))?;
    let points: usize = r.iter().map(|s| s.points.len()).sum();
    println!("q_device_ms={ms:.3}");
    println!("q_device_result={} series, {points} points", r.len());

    // Per series the hourly average (rollups where compacted), then per site and hour the
    // mean of those: what `avg by (site) (avg_over_time(cpu_usage_ratio[1h]))` computes.
    let fleet_q = [Matcher::metric("cpu_usage_ratio")];
    let (ms, by_site) = timed(reps, || {
        let per_series = db.aggregate(&fleet_q, week_ago, end, HOUR_MS, Agg::Avg)?;
        let mut by_site: BTreeMap<String, BTreeMap<i64, (f64, u32)>> = BTreeMap::new();
        for s in &per_series {
            let site = s.labels.get("site").unwrap_or("").to_owned();
            let buckets = by_site.entry(site).or_default();
            for &(t, v) in &s.points {
                let e = buckets.entry(t).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
        let out: BTreeMap<String, Vec<(i64, f64)>> = by_site
            .into_iter()
            .map(|(site, b)| {
                let points = b.into_iter().map(|(t, (s, n))| (t, s / f64::from(n)));
                (site, points.collect())
            })
            .collect();
        Ok(out)
    })?;
    let points: usize = by_site.values().map(Vec::len).sum();
    println!("q_fleet_avg_ms={ms:.3}");
    println!(
        "q_fleet_avg_result={} sites, {points} points",
        by_site.len()
    );
    println!(
        "q_fleet_avg_rollup_rows_read={}",
        db.stats().rollup_rows_read_total / reps.max(1) as u64
    );

    let (ms, r) = timed(reps, || Ok(db.last_values(&[])))?;
    println!("q_last_ms={ms:.3}");
    println!("q_last_result={} series", r.len());

    let stats = db.stats();
    println!("head_index_heap_peak_bytes={peak_head}");
    println!(
        "head_index_heap_mean_bytes={}",
        sum_head / head_reads.max(1)
    );
    println!("index_heap_bytes={}", stats.index_heap_bytes);
    println!("rss_before_open_bytes={rss_before}");
    println!("rss_end_bytes={}", proc_status_bytes("VmRSS:"));
    println!("vmhwm_bytes={}", proc_status_bytes("VmHWM:"));
    Ok(())
}
