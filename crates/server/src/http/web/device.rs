//! `/devices/{id}`: one device's whole story — health with reasons, the facts of its
//! connection, integrity, network, energy, firmware and inventory, the agent's own cost, and
//! a chart for every metric family it reports over a picked time range (1 h, 24 h, 7 d, 30 d).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;

use super::charts::{self, Panel};
use super::{
    Page, Shell, ago, badge, bytes, count, duration, escape, level_name, pct, reasons_list,
    status_name, url_encode,
};
use crate::http::AppState;
use crate::http::api::{DeviceView, battery, view};
use crate::security::events::{Event, Filter};

/// The time ranges of the picker: (value, label).
pub const RANGES: [(&str, &str); 4] = [
    ("1h", "1 h"),
    ("24h", "24 h"),
    ("7d", "7 d"),
    ("30d", "30 d"),
];

pub async fn page(AxumState(app): AxumState<AppState>, Path(id): Path<String>) -> Page {
    let st = &app.state;
    let now = st.now_ms();
    let found = {
        let registry = st.registry();
        registry.get(&id).map(|d| {
            let reported: BTreeSet<String> = d.last_values.metrics().map(str::to_owned).collect();
            (view(&id, d, st, now, true), reported)
        })
    };
    let shell = Shell {
        title: &id,
        nav: "/devices",
        page: "device",
        device: Some(&id),
        charts: true,
    };
    let Some((mut v, reported)) = found else {
        return shell.render_status(
            StatusCode::NOT_FOUND,
            &format!(
                r#"<h1>No device {}</h1><p><a href="/devices">All devices</a></p>"#,
                escape(&id)
            ),
        );
    };
    if reported.contains("battery_charge_ratio") {
        v.battery = battery(st, &id, now);
    }
    let reported: BTreeSet<&str> = reported.iter().map(String::as_str).collect();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="crumbs"><a href="/devices">Devices</a> /</p><h1 class="id">{}</h1>"#,
        escape(&v.id)
    );
    summary(&mut body, &v, now);
    body.push_str(r#"<div class="columns">"#);
    alerts(&mut body, &app, &id, now);
    security_events(&mut body, &app, &id, now);
    body.push_str("</div>");
    picker(&mut body);
    body.push_str(r#"<div class="columns">"#);
    integrity(&mut body, &v);
    network(&mut body, &v, &reported);
    energy(&mut body, &v, &reported);
    inventory(&mut body, &v, now);
    agent(&mut body, &v, &reported);
    body.push_str("</div>");
    body.push_str(r#"<section class="panel wide"><h2>Metrics</h2><div class="charts">"#);
    if charts::panel(&mut body, &v.id, Panel::System, &reported) == 0 {
        body.push_str(r#"<p class="muted">No metrics yet.</p>"#);
    }
    body.push_str("</div></section>");
    latest(&mut body, &v);
    shell.render(&body)
}

fn kv(out: &mut String, pairs: &[(&str, String)]) {
    out.push_str(r#"<dl class="kv">"#);
    for (k, v) in pairs {
        let _ = write!(out, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    }
    out.push_str("</dl>");
}

fn summary(out: &mut String, v: &DeviceView, now: i64) {
    let _ = write!(
        out,
        r#"<section id="dv-summary" class="panel wide" data-live><h2>Health {} {}</h2>"#,
        badge(status_name(v.status), status_name(v.status)),
        badge(level_name(v.health.level), level_name(v.health.level)),
    );
    out.push_str(&reasons_list(&v.health));
    let ms = |v: Option<i64>| v.map_or("–".to_owned(), |ms| format!("{ms} ms"));
    kv(
        out,
        &[
            (
                "in this state for",
                v.in_state_ms
                    .map_or("–".to_owned(), |ms| duration(ms as f64 / 1000.0)),
            ),
            ("last seen", ago(now, v.last_seen_ms)),
            (
                "last went offline",
                v.last_disconnect.map_or("never".to_owned(), |t| {
                    format!("{} ({})", ago(now, t.at_ms), t.reason.as_str())
                }),
            ),
            ("flapping", if v.flapping { "yes" } else { "no" }.to_owned()),
            ("clock skew", ms(v.clock_skew_ms)),
            ("data latency", ms(v.data_latency_ms)),
            ("transport", escape(v.transport.map_or("–", |t| t.as_str()))),
            ("address", escape(v.address.as_deref().unwrap_or("–"))),
        ],
    );
    out.push_str("</section>");
}

/// Device events listed on its page.
const EVENTS_SHOWN: usize = 10;

/// The device's firing and pending alerts, with the silence button.
fn alerts(out: &mut String, app: &AppState, id: &str, now: i64) {
    let mut rows: Vec<_> = app
        .alerting
        .listing(now)
        .into_iter()
        .filter(|r| r.alert.labels.get("device").map(String::as_str) == Some(id))
        .collect();
    super::alerts::sort(&mut rows);
    out.push_str(r#"<section id="dv-alerts" class="panel" data-live><h2>Alerts</h2>"#);
    if rows.is_empty() {
        out.push_str(r#"<p class="muted">No alert is firing or pending.</p>"#);
    } else {
        super::alerts::alert_table(out, &rows, now, false);
    }
    out.push_str(r#"<p><a href="/alerts">All alerts →</a></p></section>"#);
}

/// The device's newest security events.
fn security_events(out: &mut String, app: &AppState, id: &str, now: i64) {
    let events = app.state.security.events.list(&Filter {
        device: Some(id.to_owned()),
        ..Filter::default()
    });
    out.push_str(r#"<section id="dv-events" class="panel" data-live><h2>Security events</h2>"#);
    if events.is_empty() {
        out.push_str(r#"<p class="muted">No security event.</p>"#);
    } else {
        let shown: Vec<&Event> = events.iter().take(EVENTS_SHOWN).collect();
        super::security::event_table(out, &shown, now, false);
    }
    let _ = write!(
        out,
        r#"<p><a href="/security?device={}">All {} of this device →</a></p></section>"#,
        url_encode(id),
        count(events.len() as u64)
    );
}

fn picker(out: &mut String) {
    out.push_str(
        r#"<div class="picker" role="group" aria-label="Time range"><span>Time range</span>"#,
    );
    for (i, (value, label)) in RANGES.iter().enumerate() {
        let _ = write!(
            out,
            r#"<button type="button" data-range="{value}" aria-pressed="{}">{label}</button>"#,
            i == 0
        );
    }
    out.push_str("</div>");
}

fn integrity(out: &mut String, v: &DeviceView) {
    out.push_str(r#"<section id="dv-integrity" class="panel" data-live><h2>Integrity</h2>"#);
    super::overview::integrity_list(out, &v.integrity);
    let ranges = v.seqs.as_ref().map_or(0, Vec::len);
    kv(
        out,
        &[
            ("gaps not yet missing", count(v.batches_missing)),
            ("stored seq ranges", count(ranges as u64)),
            ("samples", count(v.samples_received)),
        ],
    );
    out.push_str("</section>");
}

/// `metric`'s last values, one line per series, labelled by `label`.
fn values(v: &DeviceView, metric: &str, label: &str, fmt: impl Fn(f64) -> String) -> String {
    let lines: Vec<String> = v
        .last_values
        .iter()
        .filter(|x| x.metric == metric)
        .map(|x| match x.labels.get(label) {
            Some(l) => format!("{} {}", fmt(x.value), escape(l)),
            None => fmt(x.value),
        })
        .collect();
    if lines.is_empty() {
        "–".to_owned()
    } else {
        lines.join("<br>")
    }
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

fn network(out: &mut String, v: &DeviceView, reported: &BTreeSet<&str>) {
    out.push_str(r#"<section id="dv-network" class="panel"><h2>Network</h2><div data-live id="dv-network-now">"#);
    kv(
        out,
        &[
            (
                "round-trip time",
                values(v, "probe_rtt_seconds", "target", ms),
            ),
            ("jitter", values(v, "probe_jitter_seconds", "target", ms)),
            (
                "loss",
                values(v, "probe_loss_ratio", "target", |x| pct(Some(x))),
            ),
        ],
    );
    out.push_str(r#"</div><div class="charts">"#);
    if charts::panel(out, &v.id, Panel::Network, reported) == 0 {
        out.push_str(r#"<p class="muted">No network metrics.</p>"#);
    }
    out.push_str("</div></section>");
}

fn energy(out: &mut String, v: &DeviceView, reported: &BTreeSet<&str>) {
    out.push_str(r#"<section id="dv-energy" class="panel"><h2>Energy</h2><div data-live id="dv-energy-now">"#);
    match &v.battery {
        Some(b) => kv(
            out,
            &[
                ("charge", pct(Some(b.charge_ratio))),
                (
                    "drain",
                    if b.charging {
                        "charging".to_owned()
                    } else {
                        format!("{:.2} % per hour", b.drain_ratio_per_hour * 100.0)
                    },
                ),
                (
                    "time to empty",
                    b.time_to_empty_seconds.map_or("–".to_owned(), duration),
                ),
                ("based on", duration(b.observed_seconds)),
            ],
        ),
        None => {
            let mains = values(v, "power_source_mains", "", |x| {
                if x > 0.5 { "yes" } else { "no" }.to_owned()
            });
            kv(
                out,
                &[("battery", "none reported".to_owned()), ("on mains", mains)],
            );
        }
    }
    out.push_str(r#"</div><div class="charts">"#);
    charts::panel(out, &v.id, Panel::Energy, reported);
    out.push_str("</div></section>");
}

fn inventory(out: &mut String, v: &DeviceView, now: i64) {
    out.push_str(
        r#"<section id="dv-inventory" class="panel" data-live><h2>Firmware and inventory</h2>"#,
    );
    let info: BTreeMap<&str, &str> = v
        .last_values
        .iter()
        .filter(|x| x.metric == "device_info")
        .max_by_key(|x| x.ts_ms)
        .map(|x| {
            x.labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let policy: Vec<String> = v
        .health
        .reasons
        .iter()
        .filter(|r| r.check.starts_with("firmware"))
        .map(|r| {
            format!(
                "{} {}",
                badge(level_name(r.level), level_name(r.level)),
                escape(&r.message)
            )
        })
        .collect();
    let mut pairs = vec![
        ("firmware", escape(v.firmware.as_deref().unwrap_or("–"))),
        (
            "firmware policy",
            if policy.is_empty() {
                "in policy".to_owned()
            } else {
                policy.join("<br>")
            },
        ),
        ("model", escape(v.model.as_deref().unwrap_or("–"))),
    ];
    for key in ["os", "kernel", "agent_version"] {
        pairs.push((key, escape(info.get(key).copied().unwrap_or("–"))));
    }
    pairs.push(("boot id", escape(&v.boot_id)));
    pairs.push(("first seen", ago(now, v.first_seen_ms)));
    pairs.push(("uptime", values(v, "uptime_seconds", "", duration)));
    pairs.push(("memory", values(v, "memory_total_bytes", "", bytes)));
    pairs.push((
        "filesystems",
        values(v, "filesystem_size_bytes", "mountpoint", bytes),
    ));
    kv(out, &pairs);
    if !v.tags.is_empty() {
        out.push_str("<h3>Tags</h3>");
        let tags: Vec<(&str, String)> = v
            .tags
            .iter()
            .map(|(k, t)| (k.as_str(), escape(t)))
            .collect();
        out.push_str(r#"<dl class="kv">"#);
        for (k, t) in tags {
            let _ = write!(out, "<div><dt>{}</dt><dd>{t}</dd></div>", escape(k));
        }
        out.push_str("</dl>");
    }
    out.push_str("</section>");
}

fn agent(out: &mut String, v: &DeviceView, reported: &BTreeSet<&str>) {
    out.push_str(r#"<section id="dv-agent" class="panel"><h2>The agent's own cost</h2><div data-live id="dv-agent-now">"#);
    if reported.iter().any(|m| m.starts_with("agent_")) {
        kv(
            out,
            &[
                (
                    "resident memory",
                    values(v, "agent_resident_bytes", "", bytes),
                ),
                ("spool", values(v, "agent_spool_bytes", "", bytes)),
                (
                    "uplink sent",
                    values(v, "agent_uplink_bytes_total", "", bytes),
                ),
                (
                    "cpu used",
                    values(v, "agent_cpu_seconds_total", "", duration),
                ),
                (
                    "dropped batches",
                    values(v, "agent_spool_dropped_batches_total", "", |x| {
                        format!("{x:.0}")
                    }),
                ),
            ],
        );
    } else {
        out.push_str(r#"<p class="muted">This device reports no agent metrics (<code>agent_*</code>): it is not running fleetmon-agent.</p>"#);
    }
    out.push_str(r#"</div><div class="charts">"#);
    charts::panel(out, &v.id, Panel::Agent, reported);
    out.push_str("</div></section>");
}

/// Every series' last value, folded away.
fn latest(out: &mut String, v: &DeviceView) {
    let _ = write!(
        out,
        r#"<details class="panel wide"><summary>All latest values ({})</summary><div id="dv-latest" data-live class="scroll"><table><thead><tr><th scope="col">metric</th><th scope="col">labels</th><th scope="col" class="num">value</th></tr></thead><tbody>"#,
        v.last_values.len()
    );
    for x in &v.last_values {
        let labels: Vec<String> = x.labels.iter().map(|(k, l)| format!("{k}={l}")).collect();
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            escape(&x.metric),
            escape(&labels.join(", ")),
            x.value
        );
    }
    out.push_str("</tbody></table></div></details>");
}
