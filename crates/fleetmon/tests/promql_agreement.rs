//! Agreement with Prometheus: the same dataset loaded into Prometheus 2.42 (Debian's
//! `prometheus` package; blocks built by `promtool tsdb create-blocks-from openmetrics`) and into
//! fleetmon (HTTP ingest), then a corpus of queries covering every supported function, operator
//! and modifier, each as instant queries at two times and as a range query, compared: same
//! series and labels, values within 1e-6 relative, NaN equal to NaN.
//!
//! Prints `passed / total / unsupported` and fails on any disagreement. Needs `prometheus`
//! installed (`scripts/install-test-deps`); without it the test fails, it does not skip.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, get, post, wait_for};
use fleetmon_protocol::{Batch, Sample, encode_json};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use serde_json::Value;

const STEP_MS: i64 = 15_000;
const SPAN_MS: i64 = 3_600_000;

/// One generated series.
struct Gen {
    metric: &'static str,
    device: String,
    labels: Vec<(&'static str, String)>,
    points: Vec<(i64, f64)>,
}

/// A deterministic pseudo-random source (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Three devices × (a counter by mode, a gauge, a gauge with a gap) over one hour at 15 s;
/// device d2's user counter resets halfway.
fn dataset(t0: i64) -> Vec<Gen> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = SPAN_MS / STEP_MS;
    let mut out = Vec::new();
    for d in 1..=3 {
        let device = format!("d{d}");
        for mode in ["user", "system"] {
            let mut v = d as f64 * 100.0;
            let mut points = Vec::new();
            for i in 0..=n {
                v += (rng.next() * 10.0 * d as f64 * 1000.0).round() / 1000.0;
                if d == 2 && mode == "user" && i == n / 2 {
                    v = 1.5;
                }
                points.push((t0 + i * STEP_MS, v));
            }
            out.push(Gen {
                metric: "cpu_seconds_total",
                device: device.clone(),
                labels: vec![("mode", mode.to_owned())],
                points,
            });
        }
        let points = (0..=n)
            .map(|i| {
                let x = i as f64 / 20.0 + d as f64;
                let v = (x.sin() * 10.0 + d as f64 * 3.0 - 12.0 + rng.next()) * 1000.0;
                (t0 + i * STEP_MS, v.round() / 1000.0)
            })
            .collect();
        out.push(Gen {
            metric: "temperature_celsius",
            device: device.clone(),
            labels: vec![("room", if d == 3 { "b" } else { "a" }.to_owned())],
            points,
        });
        // latency_hist: a classic histogram's cumulative bucket counters (label `le`).
        let mut counts = [0.0f64; 4];
        let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        for i in 0..=n {
            let mut cum = 0.0;
            for (b, c) in counts.iter_mut().enumerate() {
                cum += (rng.next() * 5.0 * (4 - b) as f64).floor();
                *c += cum;
                per_bucket[b].push((t0 + i * STEP_MS, *c));
            }
        }
        for (b, points) in per_bucket.into_iter().enumerate() {
            out.push(Gen {
                metric: "latency_hist",
                device: device.clone(),
                labels: vec![("le", ["0.1", "0.5", "1", "+Inf"][b].to_owned())],
                points,
            });
        }
        // mem_bytes: d3 stops reporting for 10 minutes after 20 minutes.
        let points = (0..=n)
            .filter(|i| d != 3 || !(80..120).contains(i))
            .map(|i| {
                let v = 1_000_000.0 * d as f64 + (rng.next() * 50_000.0).round();
                (t0 + i * STEP_MS, v)
            })
            .collect();
        out.push(Gen {
            metric: "mem_bytes",
            device,
            labels: vec![],
            points,
        });
    }
    out
}

fn openmetrics(data: &[Gen]) -> String {
    let mut s = String::new();
    let mut families: BTreeMap<&str, Vec<&Gen>> = BTreeMap::new();
    for g in data {
        families.entry(g.metric).or_default().push(g);
    }
    for (metric, gens) in families {
        let _ = writeln!(s, "# TYPE {metric} gauge");
        for g in gens {
            let mut labels = format!("device=\"{}\"", g.device);
            for (k, v) in &g.labels {
                let _ = write!(labels, ",{k}=\"{v}\"");
            }
            for &(t, v) in &g.points {
                let _ = writeln!(s, "{metric}{{{labels}}} {v} {}.{:03}", t / 1000, t % 1000);
            }
        }
    }
    s.push_str("# EOF\n");
    s
}

/// Prometheus as a child process; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &Path, data: &[Gen], probe_time: f64) -> Prometheus {
    assert!(
        Path::new("/usr/bin/prometheus").exists() && Path::new("/usr/bin/promtool").exists(),
        "Prometheus is not installed; run `apt-get update && apt-get install -y prometheus` \
         (or scripts/install-test-deps)"
    );
    let om = dir.join("data.om");
    std::fs::write(&om, openmetrics(data)).expect("write the OpenMetrics file");
    let tsdb = dir.join("prom");
    let out = Command::new("/usr/bin/promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  evaluation_interval: 1m\n").expect("write the config");
    let addr = free_addr();
    let child = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--storage.tsdb.retention.time=10y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let p = Prometheus {
        child,
        base: format!("http://{addr}"),
    };
    let probe = format!(
        "{}/api/v1/query?query=count(cpu_seconds_total)&time={probe_time}",
        p.base
    );
    let loaded = wait_for(Duration::from_secs(60), || {
        let mut r = ureq::get(&probe).call().ok()?;
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        (v["data"]["result"][0]["value"][1] == "6").then_some(())
    });
    assert!(loaded.is_some(), "Prometheus did not load the blocks");
    p
}

fn ingest(base: &str, data: &[Gen]) {
    let mut seq: BTreeMap<String, u64> = BTreeMap::new();
    for g in data {
        for chunk in g.points.chunks(1000) {
            let s = seq.entry(g.device.clone()).or_default();
            *s += 1;
            let body = encode_json(&Batch {
                device: g.device.clone(),
                boot_id: "b".into(),
                seq: *s,
                sent_at_ms: chunk[chunk.len() - 1].0,
                dropped_before: 0,
                samples: chunk
                    .iter()
                    .map(|&(t, v)| Sample {
                        metric: g.metric.into(),
                        labels: g
                            .labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), v.clone()))
                            .collect(),
                        ts_ms: t,
                        value: v,
                    })
                    .collect(),
            });
            let (status, r) = post(&format!("{base}/api/v1/ingest"), &body);
            assert_eq!(status, 200, "ingest: {r}");
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query templates; `X` is replaced by each metric where a template has it.
fn corpus(at: f64) -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    let metrics = ["cpu_seconds_total", "temperature_celsius", "mem_bytes"];
    // Selectors and modifiers.
    for s in [
        "cpu_seconds_total",
        "cpu_seconds_total{mode=\"user\"}",
        "cpu_seconds_total{mode!=\"user\"}",
        "cpu_seconds_total{device=~\"d[12]\"}",
        "cpu_seconds_total{device!~\"d1|d3\"}",
        "{__name__=~\"cpu.*|mem.*\", device=\"d2\"}",
        "mem_bytes",
        "temperature_celsius offset 5m",
        "temperature_celsius offset 90s",
        "mem_bytes offset 1m",
        "nonexistent_metric",
    ] {
        q.push(s.to_owned());
    }
    q.push(format!("temperature_celsius @ {at}"));
    q.push("temperature_celsius @ start()".to_owned());
    q.push("temperature_celsius @ end() offset 2m".to_owned());
    q.push(format!("rate(cpu_seconds_total[5m] @ {at})"));
    // Range-vector functions.
    for f in [
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "resets",
        "changes",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "present_over_time",
    ] {
        for m in metrics {
            for r in ["1m", "5m"] {
                q.push(format!("{f}({m}[{r}])"));
            }
        }
    }
    for m in metrics {
        q.push(format!("predict_linear({m}[5m], 600)"));
        q.push(format!("quantile_over_time(0.3, {m}[5m])"));
        q.push(format!("absent_over_time({m}[1m])"));
        q.push(format!("rate({m}[2m] offset 3m)"));
    }
    q.push("absent_over_time(nonexistent_metric{job=\"x\"}[5m])".to_owned());
    // Element-wise functions.
    for f in [
        "abs", "ceil", "floor", "round", "exp", "ln", "log2", "log10", "sqrt", "sgn", "sin", "cos",
        "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "deg", "rad",
    ] {
        q.push(format!("{f}(temperature_celsius)"));
    }
    for s in [
        "round(temperature_celsius, 0.5)",
        "round(temperature_celsius, 3)",
        "clamp(temperature_celsius, -2, 5)",
        "clamp(temperature_celsius, 5, -2)",
        "clamp_min(temperature_celsius, 0)",
        "clamp_max(temperature_celsius, 0)",
        "exp(mem_bytes)",
        "time()",
        "timestamp(mem_bytes)",
        "timestamp(abs(temperature_celsius))",
        "vector(1)",
        "vector(time())",
        "scalar(sum(mem_bytes))",
        "scalar(mem_bytes)",
        "sort(temperature_celsius)",
        "sort_desc(mem_bytes)",
        "absent(nonexistent_metric{job=\"x\", a=~\"b\"})",
        "absent(mem_bytes)",
        "label_replace(mem_bytes, \"dev\", \"x-$1\", \"device\", \"d(.*)\")",
        "label_replace(mem_bytes, \"device\", \"\", \"device\", \"d1\")",
        "label_join(cpu_seconds_total, \"id\", \"/\", \"device\", \"mode\")",
        "hour()",
        "minute(timestamp(mem_bytes))",
        "day_of_week()",
        "day_of_month()",
        "day_of_year()",
        "days_in_month()",
        "month()",
        "year(vector(1700000000))",
    ] {
        q.push(s.to_owned());
    }
    // Aggregations.
    for a in [
        "sum", "avg", "min", "max", "count", "stddev", "stdvar", "group",
    ] {
        for g in ["", " by (device)", " without (mode)", " by (mode, device)"] {
            q.push(format!("{a}{g}(rate(cpu_seconds_total[5m]))"));
        }
        q.push(format!("{a}(temperature_celsius)"));
    }
    for s in [
        "topk(2, temperature_celsius)",
        "bottomk(1, temperature_celsius)",
        "topk by (mode) (1, rate(cpu_seconds_total[5m]))",
        "bottomk without (device) (2, rate(cpu_seconds_total[5m]))",
        "quantile(0.5, temperature_celsius)",
        "quantile by (mode) (0.9, rate(cpu_seconds_total[5m]))",
        "quantile(0, mem_bytes)",
        "count_values(\"v\", floor(temperature_celsius))",
        "count_values by (mode) (\"v\", ceil(rate(cpu_seconds_total[1m])))",
        "sum by (__name__) ({__name__=~\"mem_bytes|temperature_celsius\"})",
        "max without (device) (mem_bytes)",
    ] {
        q.push(s.to_owned());
    }
    // Binary operators.
    for op in ["+", "-", "*", "/", "%", "^"] {
        q.push(format!("temperature_celsius {op} 2"));
        q.push(format!("3 {op} temperature_celsius"));
        q.push(format!("mem_bytes {op} on(device) temperature_celsius"));
    }
    for op in ["==", "!=", ">", "<", ">=", "<="] {
        q.push(format!("temperature_celsius {op} 1"));
        q.push(format!("temperature_celsius {op} bool 1"));
        q.push(format!("1 {op} bool 2"));
        q.push(format!("mem_bytes {op} ignoring(room) temperature_celsius"));
    }
    for s in [
        "rate(cpu_seconds_total[5m]) / ignoring(mode) group_left sum without (mode) (rate(cpu_seconds_total[5m]))",
        "sum without (mode) (cpu_seconds_total) / on(device) group_right cpu_seconds_total",
        "cpu_seconds_total * on(device) group_left(room) temperature_celsius",
        "mem_bytes > bool on(device) mem_bytes offset 1m",
        "mem_bytes and temperature_celsius",
        "mem_bytes and on(device) temperature_celsius",
        "mem_bytes or temperature_celsius",
        "mem_bytes unless on(device) temperature_celsius{room=\"b\"}",
        "cpu_seconds_total unless ignoring(mode) mem_bytes",
        "-temperature_celsius",
        "-(1 + 2) * 3 ^ 2 ^ 0.5",
        "2 * temperature_celsius + 3 * mem_bytes / 1000",
        "(temperature_celsius > 0) * 2",
        "temperature_celsius > 0 < 5",
        "sum(mem_bytes) / count(mem_bytes)",
    ] {
        q.push(s.to_owned());
    }
    // Edge cases: limits of parameters, NaN/Inf, name dropping, matching corner cases.
    for s in [
        "temperature_celsius atan2 2",
        "mem_bytes atan2 on(device) temperature_celsius",
        "scalar(sum(mem_bytes)) * temperature_celsius",
        "time() - timestamp(mem_bytes)",
        "absent(sum(nonexistent_metric))",
        "sum(cpu_seconds_total) by (device)",
        "avg(temperature_celsius) + on() group_left vector(1)",
        "quantile(1.5, temperature_celsius)",
        "quantile(-1, temperature_celsius)",
        "topk(0, temperature_celsius)",
        "topk(10, temperature_celsius)",
        "stddev by (device) (temperature_celsius)",
        "ln(temperature_celsius) > 0",
        "sqrt(temperature_celsius) * 0",
        "temperature_celsius / 0",
        "0 / (temperature_celsius * 0)",
        "max(ln(temperature_celsius))",
        "min(sqrt(temperature_celsius))",
        "sum(sqrt(temperature_celsius))",
        "count_values(\"v\", sqrt(temperature_celsius) > 0)",
        "label_replace(mem_bytes, \"x\", \"$1\", \"device\", \"nomatch(.*)\")",
        "label_replace(mem_bytes, \"x\", \"${1}-$2\", \"device\", \"(d)(.)\")",
        "rate(cpu_seconds_total[30m])",
        "increase(cpu_seconds_total{device=\"d2\"}[10m])",
        "changes(mem_bytes[30m])",
        "count_over_time(mem_bytes[10m])",
        "mem_bytes offset -1m",
        "rate(cpu_seconds_total[5m] offset -2m)",
        "temperature_celsius - temperature_celsius offset 15s",
        "holt_winters(temperature_celsius[10m], 0.5, 0.5)",
        "histogram_quantile(0.9, temperature_celsius)",
        "histogram_quantile(0.9, rate(latency_hist[5m]))",
        "histogram_quantile(0.5, sum by (le) (rate(latency_hist[5m])))",
        "histogram_quantile(0.99, latency_hist)",
        "histogram_quantile(0, latency_hist{le!=\"0.1\"})",
        "histogram_quantile(1.5, latency_hist)",
        "histogram_quantile(0.5, latency_hist{le!=\"+Inf\"})",
    ] {
        q.push(s.to_owned());
    }
    // Errors both must report.
    for s in [
        "cpu_seconds_total + on(device) mem_bytes",
        "mem_bytes + on(device) cpu_seconds_total",
        "label_replace(cpu_seconds_total, \"mode\", \"\", \"mode\", \".*\")",
        "cpu_seconds_total * on(device) group_left mem_bytes",
    ] {
        q.push(s.to_owned());
    }
    q.push(format!("max_over_time(temperature_celsius[10m:1m] @ {at})"));
    q.push(format!("sum_over_time(mem_bytes @ {at} [5m:1m])"));
    q.push("avg_over_time(rate(cpu_seconds_total[1m] @ end())[5m:30s])".to_owned());
    // Subqueries.
    for s in [
        "max_over_time(rate(cpu_seconds_total[1m])[10m:1m])",
        "avg_over_time(temperature_celsius[15m:30s])",
        "min_over_time(mem_bytes[20m:])",
        "rate(cpu_seconds_total[5m:15s])",
        "sum_over_time(sum(rate(cpu_seconds_total[2m]))[10m:2m] offset 5m)",
        "deriv(temperature_celsius[10m:1m])",
        "max_over_time(deriv(temperature_celsius[5m])[15m:1m])",
        "count_over_time(vector(1)[5m:1m])",
    ] {
        q.push(s.to_owned());
    }
    q
}

/// A result as comparable rows: (labels, [(t, value)]), sorted unless order matters.
/// Series of a result: labels as JSON text and `[time, value]` points as text.
type Rows = Vec<(String, Vec<(String, String)>)>;

fn rows(v: &Value, ordered: bool) -> (String, Rows) {
    let data = &v["data"];
    let kind = data["resultType"].as_str().unwrap_or("").to_owned();
    let pt = |p: &Value| (p[0].to_string(), p[1].as_str().unwrap_or("").to_owned());
    let mut out: Rows = match kind.as_str() {
        "scalar" | "string" => vec![(String::new(), vec![pt(&data["result"])])],
        _ => data["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let pts = match s.get("values") {
                            Some(vs) => vs.as_array().map(|a| a.iter().map(pt).collect()),
                            None => Some(vec![pt(&s["value"])]),
                        };
                        (s["metric"].to_string(), pts.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    if !ordered {
        out.sort();
    }
    (kind, out)
}

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            (x.is_nan() && y.is_nan())
                || (x - y).abs() <= 1e-6 * x.abs().max(y.abs())
                || (x - y).abs() < 1e-9
        }
        _ => false,
    }
}

/// Compares two responses; `ordered` when the order of an instant vector is part of the answer.
fn same(p: &Value, f: &Value, ordered: bool) -> Result<(), String> {
    let (pk, pr) = rows(p, ordered);
    let (fk, fr) = rows(f, ordered);
    if pk != fk {
        return Err(format!("resultType {pk} vs {fk}"));
    }
    if pr.len() != fr.len() {
        return Err(format!("{} series vs {}", pr.len(), fr.len()));
    }
    for ((pl, pp), (fl, fp)) in pr.iter().zip(&fr) {
        if pl != fl {
            return Err(format!("labels {pl} vs {fl}"));
        }
        if pp.len() != fp.len() {
            return Err(format!("{pl}: {} points vs {}", pp.len(), fp.len()));
        }
        for ((pt, pv), (ft, fv)) in pp.iter().zip(fp) {
            if !close(pt, ft) || !close(pv, fv) {
                return Err(format!("{pl}: [{pt}, {pv}] vs [{ft}, {fv}]"));
            }
        }
    }
    Ok(())
}

#[test]
fn promql_agrees_with_prometheus() {
    let now = fleetmon_tsdb::db::system_clock();
    let end = (now / 60_000 - 2) * 60_000;
    let t0 = end - SPAN_MS;
    let data = dataset(t0);
    // On the build's disk, not a RAM-backed /tmp: promtool preallocates 512 MiB chunk files.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let at_a = (t0 + 30 * 60_000) as f64 / 1000.0;
    let at_b = (t0 + 45 * 60_000 + 7_000) as f64 / 1000.0;
    // Inside mem_bytes's gap for d3 (20 to 30 min) by more than the lookback.
    let at_c = (t0 + 27 * 60_000 + 3_000) as f64 / 1000.0;
    let prom = start_prometheus(dir.path(), &data, at_a);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(Server::start(
            ServerConfig::local(dir.path().join("fleetmon")),
            Arc::new(SystemClock),
        ))
        .expect("start fleetmon");
    let fleet = format!("http://{}", server.http_addr());
    ingest(&fleet, &data);

    let range_start = (t0 + 10 * 60_000) as f64 / 1000.0;
    let range_end = end as f64 / 1000.0;
    let mut requests = Vec::new();
    for q in corpus(at_a) {
        let e = encode(&q);
        requests.push((q.clone(), format!("query?query={e}&time={at_a}")));
        requests.push((q.clone(), format!("query?query={e}&time={at_b}")));
        requests.push((q.clone(), format!("query?query={e}&time={at_c}")));
        requests.push((
            q.clone(),
            format!(
                "query_range?query={e}&start={}&end={}&step=37",
                range_start + 11.5,
                range_end - 600.0
            ),
        ));
        requests.push((
            q.clone(),
            format!("query_range?query={e}&start={range_start}&end={range_end}&step=60"),
        ));
    }
    let (mut passed, mut unsupported, mut failures) = (0, 0, Vec::new());
    let (mut both_failed, mut empty) = (0, 0);
    for (q, path) in &requests {
        let p = get(&format!("{}/api/v1/{path}", prom.base));
        let f = get(&format!("{fleet}/prometheus/api/v1/{path}"));
        // Not implemented by the engine, or a Prometheus 2.x function `promql-parser` does not
        // know (`holt_winters`, renamed in Prometheus 3).
        if f.1["error"].as_str().is_some_and(|e| {
            e.starts_with("unsupported") || e.contains("unknown function with name")
        }) {
            unsupported += 1;
            continue;
        }
        let verdict = match (p.0, f.0) {
            (200, 200) => {
                if rows(&p.1, false).1.is_empty() {
                    empty += 1;
                }
                // sort() and sort_desc() promise an order in instant queries.
                let ordered = q.starts_with("sort") && path.starts_with("query?");
                same(&p.1, &f.1, ordered)
            }
            (a, b) if a == b => {
                both_failed += 1;
                Ok(())
            }
            (a, b) => Err(format!(
                "status {a} vs {b}: {} / {}",
                p.1["error"], f.1["error"]
            )),
        };
        match verdict {
            Ok(()) => {
                passed += 1;
                if std::env::var_os("PROMQL_AGREEMENT_VERBOSE").is_some() {
                    eprintln!("AGREE {q} [{path}]\n  {}\n  {}", p.1["data"], f.1["data"]);
                }
            }
            Err(why) => failures.push(format!("{q}  [{path}]\n    {why}")),
        }
    }
    for f in failures.iter().take(60) {
        eprintln!("DISAGREE {f}");
    }
    eprintln!("({both_failed} rejected by both, {empty} empty in both)");
    eprintln!(
        "PromQL agreement with Prometheus 2.42: {passed} passed / {} total / {unsupported} unsupported",
        requests.len()
    );
    rt.block_on(server.shutdown());
    drop(prom);
    assert!(failures.is_empty(), "{} queries disagree", failures.len());
}
