//! `/security`: the security events the server keeps (failed TLS handshakes, revoked or
//! expired certificates, ACL violations, shared certificates, enrolments...), newest first,
//! filtered by kind and device, with the counts by kind as a bar chart. [`event_table`] is
//! shared with the device page.

use std::fmt::Write;

use axum::extract::{RawQuery, State as AxumState};
use axum::http::StatusCode;

use super::{Page, Shell, ago, badge, count, device_href, escape, url_encode};
use crate::http::AppState;
use crate::http::prometheus::decode_form;
use crate::security::events::{Event, Filter, Kind};

/// Events listed at most (the server keeps the newest 1000).
const SHOWN: usize = 200;

/// How serious an event of `kind` is, as a badge class.
fn class(kind: Kind) -> &'static str {
    match kind {
        Kind::Enrolled => "ok",
        Kind::CertificateExpiring | Kind::EnrolmentRefused => "warning",
        _ => "critical",
    }
}

fn parse(raw: Option<&str>) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in decode_form(raw.unwrap_or("")) {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "kind" => {
                f.kind = Some(Kind::parse(&v).ok_or_else(|| {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    format!("kind {v:?}: expected one of {}", known.join(", "))
                })?);
            }
            "device" => f.device = Some(v),
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    Ok(f)
}

pub async fn page(AxumState(app): AxumState<AppState>, RawQuery(raw): RawQuery) -> Page {
    let shell = Shell {
        title: "Security events",
        nav: "/security",
        page: "security",
        device: None,
        charts: false,
    };
    let filter = match parse(raw.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            return shell.render_status(
                StatusCode::BAD_REQUEST,
                &format!(
                    r#"<h1>Security events</h1><p class="error">{}</p><p><a href="/security">All events</a></p>"#,
                    escape(&e)
                ),
            );
        }
    };
    let now = app.state.now_ms();
    let events = &app.state.security.events;
    // Counts by kind over the events kept for this device (or all), whatever the kind filter.
    let kept = events.list(&Filter {
        device: filter.device.clone(),
        ..Filter::default()
    });
    let listed: Vec<&Event> = kept
        .iter()
        .filter(|e| filter.kind.is_none_or(|k| e.kind == k))
        .collect();
    let mut body = String::from("<h1>Security events</h1>\n");
    form(&mut body, &filter);
    chart(&mut body, &kept, &filter);
    let _ = write!(
        body,
        r#"<section id="se-events" class="panel wide" data-live><h2>Events, newest first</h2><p class="summary" role="status"><span data-matched="{n}">{}</span> event{}{}</p>"#,
        count(listed.len() as u64),
        if listed.len() == 1 { "" } else { "s" },
        if listed.len() > SHOWN {
            format!(
                " · the newest {SHOWN} shown; all in <a href=\"/api/v1/events\">/api/v1/events</a>"
            )
        } else {
            String::new()
        },
        n = listed.len(),
    );
    if listed.is_empty() {
        body.push_str(r#"<p class="muted">No security event.</p>"#);
    } else {
        let shown: Vec<&Event> = listed.into_iter().take(SHOWN).collect();
        event_table(&mut body, &shown, now, true);
    }
    body.push_str("</section>");
    shell.render(&body)
}

fn form(out: &mut String, f: &Filter) {
    out.push_str(r#"<form class="filters" method="get" action="/security" role="search"><label>kind <select name="kind" data-autosubmit><option value="">any</option>"#);
    for k in Kind::ALL {
        let selected = if f.kind == Some(k) { " selected" } else { "" };
        let _ = write!(
            out,
            r#"<option value="{0}"{selected}>{0}</option>"#,
            k.as_str()
        );
    }
    let _ = write!(
        out,
        r#"</select></label><label>device <input name="device" value="{}" placeholder="device id"></label><button type="submit">Filter</button></form>"#,
        escape(f.device.as_deref().unwrap_or(""))
    );
}

/// Counts by kind as horizontal bars (SVG: no inline styles under the page's policy).
fn chart(out: &mut String, kept: &[Event], f: &Filter) {
    let mut counts: Vec<(Kind, usize)> = Kind::ALL
        .iter()
        .map(|k| (*k, kept.iter().filter(|e| e.kind == *k).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
    out.push_str(r#"<section id="se-kinds" class="panel wide" data-live><h2>By kind</h2>"#);
    let Some(max) = counts.iter().map(|(_, n)| *n).max() else {
        out.push_str(r#"<p class="muted">No security event kept.</p></section>"#);
        return;
    };
    let (label_w, bar_w, row_h) = (190.0, 520.0, 24.0);
    let h = row_h * counts.len() as f64 + 4.0;
    let _ = write!(
        out,
        r#"<svg class="bars" viewBox="0 0 {:.0} {h:.0}" role="img" aria-label="security events by kind">"#,
        label_w + bar_w + 60.0
    );
    let device = f
        .device
        .as_deref()
        .map_or(String::new(), |d| format!("&amp;device={}", url_encode(d)));
    for (i, (kind, n)) in counts.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let w = (*n as f64 / max as f64 * bar_w).max(2.0);
        let _ = write!(
            out,
            r#"<a href="/security?kind={k}{device}"><text x="{lx:.0}" y="{ty:.1}" text-anchor="end">{k}</text><rect class="{c}" x="{label_w:.0}" y="{y:.1}" width="{w:.1}" height="{bh:.0}"><title>{k}: {n}</title></rect><text x="{nx:.1}" y="{ty:.1}" data-kind-count="{k}">{n}</text></a>"#,
            k = kind.as_str(),
            c = class(*kind),
            lx = label_w - 8.0,
            ty = y + row_h * 0.65,
            bh = row_h - 6.0,
            nx = label_w + w + 6.0,
        );
    }
    out.push_str("</svg></section>\n");
}

/// Events as a table; `with_device` adds the device column (the security view).
pub fn event_table(out: &mut String, events: &[&Event], now: i64, with_device: bool) {
    out.push_str(r#"<div class="scroll"><table class="events"><thead><tr><th scope="col">when</th><th scope="col">kind</th>"#);
    if with_device {
        out.push_str(r#"<th scope="col">device</th>"#);
    }
    out.push_str(r#"<th scope="col">source</th><th scope="col">detail</th></tr></thead><tbody>"#);
    for e in events {
        let _ = write!(
            out,
            r#"<tr data-kind="{k}"><td title="{}">{}</td><td>{}</td>"#,
            escape(&fleetmon_alert::time::format_rfc3339(e.time_ms)),
            ago(now, e.time_ms),
            badge(class(e.kind), e.kind.as_str()),
            k = e.kind.as_str(),
        );
        if with_device {
            match &e.device {
                Some(d) => {
                    let _ = write!(
                        out,
                        r#"<td class="id"><a href="{}">{}</a></td>"#,
                        device_href(d),
                        escape(d)
                    );
                }
                None => out.push_str(r#"<td class="muted">–</td>"#),
            }
        }
        let _ = write!(
            out,
            r#"<td class="id">{}</td><td class="reason">{}</td></tr>"#,
            escape(e.source.as_deref().unwrap_or("–")),
            escape(&e.detail)
        );
    }
    out.push_str("</tbody></table></div>");
}
