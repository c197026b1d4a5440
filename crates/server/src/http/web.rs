//! The page at `/`: the fleet's devices with their status and a few live values. Rendered on
//! the server (it works without JavaScript), then kept live by a small script that re-reads
//! `/api/v1/devices` every two seconds. The full dashboard is its own piece of work.

use std::fmt::Write;

use axum::extract::State as AxumState;
use axum::response::Html;

use super::AppState;
use super::api::{DeviceView, device_list};
use crate::fleet::health::Level;

const SCRIPT: &str = include_str!("assets/index.js");

pub async fn index(AxumState(app): AxumState<AppState>) -> Html<String> {
    let list = device_list(
        &app,
        &super::api::ListQuery {
            limit: Some(5_000),
            ..Default::default()
        },
    );
    let now_ms = app.state.now_ms();
    let mut rows = String::new();
    for d in &list.devices {
        row(&mut rows, d, now_ms);
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fleetmon — devices</title>
<style>
:root {{ color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --line: #8884; }}
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; }}
h1 {{ font-size: 1.3rem; margin: 0 0 .3rem; }}
#counts {{ color: GrayText; margin-bottom: 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.status::before {{ content: "●"; margin-right: .4rem; }}
.status.online::before {{ color: var(--ok); }}
.status.offline::before {{ color: var(--bad); }}
.id {{ font-family: ui-monospace, monospace; }}
.health.warning {{ color: #9a6700; }}
.health.critical {{ color: var(--bad); font-weight: 600; }}
@media (prefers-color-scheme: dark) {{ .health.warning {{ color: #d29922; }} }}
</style>
</head>
<body>
<h1>fleetmon</h1>
<div id="counts">{total} devices · {online} online · {offline} offline · {warning} warning · {critical} critical</div>
<table>
<thead><tr><th>status</th><th>health</th><th>device</th><th>site</th><th>last seen</th><th class="num">batches</th><th class="num">cpu</th><th class="num">memory</th><th class="num">temperature</th><th class="num">battery</th></tr></thead>
<tbody id="devices">
{rows}</tbody>
</table>
<script>{SCRIPT}</script>
</body>
</html>
"#,
        total = list.total,
        online = list.online,
        offline = list.offline,
        warning = count(&list.devices, Level::Warning),
        critical = count(&list.devices, Level::Critical),
    ))
}

fn row(out: &mut String, d: &DeviceView, now_ms: i64) {
    let value = |metric: &str| {
        d.last_values
            .iter()
            .filter(|v| v.metric == metric)
            .map(|v| v.value)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })
    };
    let pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.0} %", v * 100.0));
    let status = match d.status {
        crate::fleet::Status::Online => "online",
        crate::fleet::Status::Offline => "offline",
    };
    let _ = writeln!(
        out,
        r#"<tr><td class="status {status}">{status}</td><td class="health {level}" title="{all}">{health}</td><td class="id">{id}</td><td>{site}</td><td>{seen}</td><td class="num">{batches}</td><td class="num">{cpu}</td><td class="num">{mem}</td><td class="num">{temp}</td><td class="num">{bat}</td></tr>"#,
        id = escape(&d.id),
        level = level_name(d.health.level),
        health = escape(&summary(d)),
        all = escape(
            &d.health
                .reasons
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        site = escape(d.tags.get("site").map_or("–", String::as_str)),
        seen = ago(now_ms, d.last_seen_ms),
        batches = d.batches_received,
        cpu = pct(value("cpu_usage_ratio")),
        mem = pct(value("memory_used_ratio")),
        temp = value("temperature_celsius").map_or("–".to_owned(), |v| format!("{v:.1} °C")),
        bat = pct(value("battery_charge_ratio")),
    );
}

fn count(devices: &[DeviceView], level: Level) -> usize {
    devices.iter().filter(|d| d.health.level == level).count()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Critical => "critical",
    }
}

/// The level, with the worst reason and how many more.
fn summary(d: &DeviceView) -> String {
    let mut reasons: Vec<_> = d.health.reasons.iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    match reasons.as_slice() {
        [] => "ok".to_owned(),
        [one] => one.message.clone(),
        [first, rest @ ..] => format!("{} (+{})", first.message, rest.len()),
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms == 0 {
        return "never".to_owned();
    }
    let s = (now_ms - then_ms).max(0) / 1000;
    if s < 90 {
        format!("{s} s ago")
    } else {
        format!("{} min ago", s / 60)
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
