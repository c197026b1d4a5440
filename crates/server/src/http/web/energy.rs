//! `/energy`: every battery-powered device ranked by time to empty, soonest first, with its
//! charge and drain rate (the estimate of docs/health.md, from 24 h of charge history).

use std::fmt::Write;

use axum::extract::State as AxumState;

use super::{Page, Shell, count, device_href, duration, escape, pct};
use crate::fleet::energy::Estimate;
use crate::http::AppState;
use crate::http::api::battery;

pub async fn page(AxumState(app): AxumState<AppState>) -> Page {
    let st = &app.state;
    let now = st.now_ms();
    let candidates: Vec<(String, Option<String>)> = {
        let registry = st.registry();
        registry
            .iter()
            .filter(|(_, d)| d.last_values.has_metric("battery_charge_ratio"))
            .map(|(id, d)| (id.clone(), d.tags.get("site").cloned()))
            .collect()
    };
    let mut rows: Vec<(String, Option<String>, Estimate)> = candidates
        .into_iter()
        .filter_map(|(id, site)| battery(st, &id, now).map(|e| (id, site, e)))
        .collect();
    let key = |e: &Estimate| e.time_to_empty_seconds.unwrap_or(f64::INFINITY);
    rows.sort_by(|a, b| key(&a.2).total_cmp(&key(&b.2)).then(a.0.cmp(&b.0)));
    let draining = rows
        .iter()
        .filter(|r| r.2.time_to_empty_seconds.is_some())
        .count();
    let mut body = format!(
        r#"<h1>Energy</h1><section id="en-list" class="panel wide" data-live><h2>Batteries by time to empty</h2><p><span data-batteries="{}">{}</span> devices on battery, {} with a time to empty.</p>"#,
        rows.len(),
        count(rows.len() as u64),
        count(draining as u64)
    );
    if !rows.is_empty() {
        body.push_str(r#"<div class="scroll"><table class="energy"><thead><tr><th scope="col">device</th><th scope="col">site</th><th scope="col" class="num">time to empty</th><th scope="col" class="num">charge</th><th scope="col" class="num">drain per hour</th><th scope="col">state</th></tr></thead><tbody>"#);
        for (id, site, e) in &rows {
            let _ = write!(
                body,
                r#"<tr><td class="id"><a href="{}">{}</a></td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                device_href(id),
                escape(id),
                escape(site.as_deref().unwrap_or("–")),
                e.time_to_empty_seconds.map_or("–".to_owned(), duration),
                pct(Some(e.charge_ratio)),
                if e.drain_ratio_per_hour > 0.0 {
                    format!("{:.2} %", e.drain_ratio_per_hour * 100.0)
                } else {
                    "–".to_owned()
                },
                if e.charging {
                    "charging"
                } else if e.time_to_empty_seconds.is_some() {
                    "discharging"
                } else {
                    "not enough history"
                }
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");
    Shell {
        title: "Energy",
        nav: "/energy",
        page: "energy",
        device: None,
        charts: false,
    }
    .render(&body)
}
