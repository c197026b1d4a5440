//! `/alerts`: the firing and pending alerts of the server's rules — severity, device, summary,
//! since when, and why an alert is muted (silenced, inhibited, suppressed under its gateway's
//! alert, flapping), a gateway alert's suppressed children under it — and the silences.
//!
//! Every alert carries a "Silence…" button that opens a small confirm form (duration, comment,
//! author); the script posts it to `POST /api/v1/silences` with matchers on the alert's
//! `alertname` and `device`. A silence is expired with `DELETE /api/v1/silences/{id}`.
//! [`alert_table`] is shared with the device page.

use std::fmt::Write;

use axum::extract::State as AxumState;
use fleetmon_alert::silence::SilenceView;
use fleetmon_alert::{AlertState, MatchOp, SilenceState};

use super::{Page, Shell, ago, badge, count, device_href, duration, escape};
use crate::alerting::AlertRow;
use crate::http::AppState;

/// Durations offered in the silence form: (value, label).
const DURATIONS: [(&str, &str); 5] = [
    ("1h", "1 hour"),
    ("2h", "2 hours"),
    ("8h", "8 hours"),
    ("24h", "1 day"),
    ("168h", "1 week"),
];

pub async fn page(AxumState(app): AxumState<AppState>) -> Page {
    let now = app.state.now_ms();
    let mut rows = app.alerting.listing(now);
    sort(&mut rows);
    let silences = app.alerting.silences(now);
    let mut body = String::from("<h1>Alerts</h1>\n");
    cards(&mut body, &rows, &silences, now);
    body.push_str(
        r#"<section id="al-alerts" class="panel wide" data-live><h2>Firing and pending</h2>"#,
    );
    if rows.is_empty() {
        body.push_str(r#"<p class="muted">No alert is firing or pending.</p>"#);
    } else {
        alert_table(&mut body, &rows, now, true);
    }
    body.push_str("</section>\n");
    silence_table(&mut body, &silences, now);
    Shell {
        title: "Alerts",
        nav: "/alerts",
        page: "alerts",
        device: None,
        charts: false,
    }
    .render(&body)
}

/// Firing before pending, then critical before warning before the rest, oldest first.
pub fn sort(rows: &mut [AlertRow]) {
    let severity = |r: &AlertRow| match r.alert.labels.get("severity").map(String::as_str) {
        Some("critical") => 0,
        Some("warning") => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| {
        b.alert
            .state
            .cmp(&a.alert.state)
            .then(severity(a).cmp(&severity(b)))
            .then(a.alert.active_at.cmp(&b.alert.active_at))
            .then(a.alert.labels.cmp(&b.alert.labels))
    });
}

fn cards(out: &mut String, rows: &[AlertRow], silences: &[SilenceView], now: i64) {
    let firing = rows
        .iter()
        .filter(|r| r.alert.state == AlertState::Firing)
        .count();
    let muted = rows
        .iter()
        .filter(|r| r.alert.state == AlertState::Firing && r.muting.is_muted())
        .count();
    let pending = rows.len() - firing;
    let active = silences
        .iter()
        .filter(|s| s.silence.state(now) == SilenceState::Active)
        .count();
    out.push_str(r#"<section id="al-counts" class="cards" data-live aria-label="Counts">"#);
    for (label, n, class, href) in [
        ("firing", firing, "critical", "#al-alerts"),
        ("muted", muted, "", "#al-alerts"),
        ("pending", pending, "warning", "#al-alerts"),
        ("active silences", active, "", "#al-silences"),
    ] {
        let _ = write!(
            out,
            r#"<a class="card {class}" href="{href}"><span class="n" data-count="{label}">{}</span><span class="label">{label}</span></a>"#,
            count(n as u64)
        );
    }
    out.push_str("</section>\n");
}

fn severity_class(s: &str) -> &'static str {
    match s {
        "critical" | "page" => "critical",
        "warning" => "warning",
        _ => "",
    }
}

/// The alerts as a table; `with_device` adds the device column (the alerts view).
pub fn alert_table(out: &mut String, rows: &[AlertRow], now: i64, with_device: bool) {
    out.push_str(r#"<div class="scroll"><table class="alerts"><thead><tr><th scope="col">state</th><th scope="col">severity</th><th scope="col">alert</th>"#);
    if with_device {
        out.push_str(r#"<th scope="col">device</th>"#);
    }
    out.push_str(r#"<th scope="col">summary</th><th scope="col">since</th><th scope="col">muted</th><th scope="col"><span class="sr">action</span></th></tr></thead><tbody>"#);
    for row in rows {
        let a = &row.alert;
        let name = a.labels.get("alertname").map_or("", String::as_str);
        let device = a.labels.get("device").map(String::as_str);
        let severity = a.labels.get("severity").map_or("", String::as_str);
        let summary = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
            .map_or("", String::as_str);
        let state = a.state.as_str();
        let _ = write!(
            out,
            r#"<tr data-alert="{}" data-device="{}" data-state="{state}"><td>{}</td><td>{}</td><td class="alertname">{}</td>"#,
            escape(name),
            escape(device.unwrap_or("")),
            badge(
                if a.state == AlertState::Firing {
                    "critical"
                } else {
                    "warning"
                },
                state
            ),
            if severity.is_empty() {
                "–".to_owned()
            } else {
                badge(severity_class(severity), severity)
            },
            escape(name),
        );
        if with_device {
            match device {
                Some(d) => {
                    let _ = write!(
                        out,
                        r#"<td class="id"><a href="{}">{}</a></td>"#,
                        device_href(d),
                        escape(d)
                    );
                }
                None => out.push_str("<td>–</td>"),
            }
        }
        let _ = write!(
            out,
            r#"<td class="reason">{}</td><td title="{}">{}</td><td class="muting">"#,
            escape(summary),
            escape(&fleetmon_alert::time::format_rfc3339(a.active_at)),
            ago(now, a.active_at),
        );
        muting(out, row, rows);
        out.push_str("</td><td>");
        if row.muting.silenced_by.is_empty() {
            silence_form(out, row);
        }
        out.push_str("</td></tr>");
        if !row.suppressed.is_empty() {
            let cols = if with_device { 9 } else { 8 };
            let _ = write!(
                out,
                r#"<tr class="children"><td colspan="{cols}"><span class="muted">Suppressed under this gateway alert ({}):</span> <ul class="inline">"#,
                row.suppressed.len()
            );
            for fp in &row.suppressed {
                let child = rows.iter().find(|r| r.alert.fingerprint == *fp);
                match child.and_then(|c| c.alert.labels.get("device").map(|d| (c, d))) {
                    Some((c, d)) => {
                        let _ = write!(
                            out,
                            r#"<li><a class="id" href="{}">{}</a> <span class="muted">since {}</span></li>"#,
                            device_href(d),
                            escape(d),
                            ago(now, c.alert.active_at)
                        );
                    }
                    None => {
                        let _ = write!(out, r#"<li class="id">{fp}</li>"#);
                    }
                }
            }
            out.push_str("</ul></td></tr>");
        }
    }
    out.push_str("</tbody></table></div>");
}

/// Why an alert is muted, as badges.
fn muting(out: &mut String, row: &AlertRow, rows: &[AlertRow]) {
    let m = &row.muting;
    if !m.is_muted() {
        out.push_str(r#"<span class="muted">no</span>"#);
        return;
    }
    if !m.silenced_by.is_empty() {
        let _ = write!(
            out,
            r#"<span class="badge muted-by" data-muting="silenced" title="silence {}">silenced</span> "#,
            escape(&m.silenced_by.join(", "))
        );
    }
    if !m.inhibited_by.is_empty() {
        let _ = write!(
            out,
            r#"<span class="badge muted-by" data-muting="inhibited" title="by {} firing alert{}">inhibited</span> "#,
            m.inhibited_by.len(),
            if m.inhibited_by.len() == 1 { "" } else { "s" }
        );
    }
    if let Some(fp) = m.suppressed_by {
        let gateway = rows
            .iter()
            .find(|r| r.alert.fingerprint == fp)
            .and_then(|r| r.alert.labels.get("device"));
        let _ = write!(
            out,
            r#"<span class="badge muted-by" data-muting="suppressed">under gateway{}</span> "#,
            gateway.map_or(String::new(), |g| format!(" {}", escape(g)))
        );
    }
    if m.flapping {
        out.push_str(r#"<span class="badge muted-by" data-muting="flapping">flapping</span>"#);
    }
}

/// The "Silence…" button and its confirm form; matchers on `alertname` and `device` (every
/// label when the alert has no device).
fn silence_form(out: &mut String, row: &AlertRow) {
    let labels = &row.alert.labels;
    let matcher = |name: &str, value: &str| serde_json::json!({"name": name, "value": value, "isRegex": false, "isEqual": true});
    let matchers: Vec<serde_json::Value> = if labels.contains_key("device") {
        ["alertname", "device"]
            .iter()
            .filter_map(|k| labels.get(*k).map(|v| matcher(k, v)))
            .collect()
    } else {
        labels.iter().map(|(k, v)| matcher(k, v)).collect()
    };
    let text: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !labels.contains_key("device") || *k == "alertname" || *k == "device")
        .map(|(k, v)| format!("{k}{}\"{v}\"", MatchOp::Equal.as_str()))
        .collect();
    let _ = write!(
        out,
        r#"<details class="silence"><summary>Silence…</summary><form class="silence-form" data-silence="{}" method="post" action="/api/v1/silences"><p class="muted">Silences <code>{}</code></p><label>for <select name="duration">"#,
        escape(&serde_json::Value::Array(matchers).to_string()),
        escape(&text.join(", ")),
    );
    for (value, label) in DURATIONS {
        let selected = if value == "2h" { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{value}"{selected}>{label}</option>"#);
    }
    out.push_str(
        r#"</select></label><label>comment <input name="comment" required maxlength="500" placeholder="why"></label><label>author <input name="author" required maxlength="100" autocomplete="username"></label><button type="submit">Confirm silence</button><span class="form-status" role="status"></span></form></details>"#,
    );
}

fn silence_table(out: &mut String, silences: &[SilenceView], now: i64) {
    out.push_str(r#"<section id="al-silences" class="panel wide" data-live><h2>Silences</h2>"#);
    if silences.is_empty() {
        out.push_str(r#"<p class="muted">No silences.</p></section>"#);
        return;
    }
    out.push_str(r#"<div class="scroll"><table class="silences"><thead><tr><th scope="col">state</th><th scope="col">matchers</th><th scope="col">ends</th><th scope="col">by</th><th scope="col">comment</th><th scope="col"><span class="sr">action</span></th></tr></thead><tbody>"#);
    for v in silences {
        let s = &v.silence;
        let state = s.state(now);
        let (class, name) = match state {
            SilenceState::Active => ("ok", "active"),
            SilenceState::Pending => ("warning", "pending"),
            SilenceState::Expired => ("", "expired"),
        };
        let matchers: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
        let ends = if state == SilenceState::Expired {
            ago(now, s.ends_at)
        } else {
            format!("in {}", duration((s.ends_at - now) as f64 / 1000.0))
        };
        let _ = write!(
            out,
            r#"<tr data-silence-id="{id}" data-state="{name}"><td>{}</td><td class="id">{}</td><td title="{}">{ends}</td><td>{}</td><td>{}</td><td>"#,
            badge(class, name),
            escape(&matchers.join(", ")),
            escape(&fleetmon_alert::time::format_rfc3339(s.ends_at)),
            escape(&s.created_by),
            escape(&s.comment),
            id = escape(&s.id),
        );
        if state != SilenceState::Expired {
            let _ = write!(
                out,
                r#"<button type="button" data-expire="{}">Expire</button>"#,
                escape(&s.id)
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table></div></section>\n");
}
