//! `/devices`: the device list — search by id, filters (status, health, problem, site, group,
//! model, firmware), sorting by any column, pages of 50. A plain GET form, so every view has
//! a URL and works without the script; the script only submits on change and keeps the
//! results live.

use std::collections::BTreeSet;
use std::fmt::Write;

use axum::extract::{RawQuery, State as AxumState};
use axum::http::StatusCode;

use super::{
    Page, Shell, ago, badge, count, device_href, escape, health_summary, level_name, pct,
    status_name, url_encode,
};
use crate::fleet::Status;
use crate::fleet::health::Level;
use crate::http::AppState;
use crate::http::list::{Brief, ListQuery, Sort, SortKey, assess_all};
use crate::http::prometheus::decode_form;

/// Devices per page.
pub const PAGE: usize = 50;

/// The list's query from the form: empty fields mean "any".
fn parse(raw: Option<&str>) -> Result<ListQuery, String> {
    let mut q = ListQuery::default();
    for (k, v) in decode_form(raw.unwrap_or("")) {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "status" => {
                q.status = Some(match v.as_str() {
                    "online" => Status::Online,
                    "offline" => Status::Offline,
                    _ => return Err(format!("status {v:?}: expected online or offline")),
                });
            }
            "health" => {
                q.health = Some(match v.as_str() {
                    "ok" => Level::Ok,
                    "warning" => Level::Warning,
                    "critical" => Level::Critical,
                    _ => return Err(format!("health {v:?}: expected ok, warning or critical")),
                });
            }
            "site" => q.site = Some(v),
            "group" => q.group = Some(v),
            "model" => q.model = Some(v),
            "firmware" => q.firmware = Some(v),
            "q" => q.q = Some(v),
            "check" => q.check = Some(v),
            "sort" => q.sort = Some(v),
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| format!("offset {v:?}: expected a number"))?;
            }
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    Ok(q)
}

/// The query string of `q` with a different sort and offset.
fn href(q: &ListQuery, sort: Sort, offset: usize) -> String {
    let mut parts = Vec::new();
    let status = q.status.map(status_name);
    let health = q.health.map(level_name);
    for (k, v) in [
        ("q", q.q.as_deref()),
        ("status", status),
        ("health", health),
        ("check", q.check.as_deref()),
        ("site", q.site.as_deref()),
        ("group", q.group.as_deref()),
        ("model", q.model.as_deref()),
        ("firmware", q.firmware.as_deref()),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", url_encode(v)));
        }
    }
    if sort.key != SortKey::Id || sort.descending {
        parts.push(format!("sort={}", url_encode(&sort.as_param())));
    }
    if offset > 0 {
        parts.push(format!("offset={offset}"));
    }
    if parts.is_empty() {
        "/devices".to_owned()
    } else {
        format!("/devices?{}", escape(&parts.join("&")))
    }
}

pub async fn page(AxumState(app): AxumState<AppState>, RawQuery(raw): RawQuery) -> Page {
    let shell = Shell {
        title: "Devices",
        nav: "/devices",
        page: "devices",
        device: None,
        charts: false,
    };
    let q = match parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return shell.render_status(StatusCode::BAD_REQUEST, &error(&e)),
    };
    let sort = match Sort::parse(q.sort.as_deref()) {
        Ok(s) => s,
        Err(e) => return shell.render_status(StatusCode::BAD_REQUEST, &error(&e.message)),
    };
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let all = assess_all(&registry, st, now);
    let mut body = String::from("<h1>Devices</h1>\n");
    form(&mut body, &q, sort, &all);
    let mut matched: Vec<&Brief<'_>> = all.iter().filter(|b| q.matches(b)).collect();
    matched.sort_by(|a, b| sort.compare(a, b));
    let offset = q.offset.min(matched.len().saturating_sub(1) / PAGE * PAGE);
    let shown = &matched[offset.min(matched.len())..(offset + PAGE).min(matched.len())];
    let _ = write!(
        body,
        r#"<section id="dl-results" data-live aria-label="Results"><p class="summary" role="status"><span data-matched="{m}">{}</span> of {} devices{}</p>"#,
        count(matched.len() as u64),
        count(all.len() as u64),
        if matched.is_empty() {
            String::new()
        } else {
            format!(" · showing {}–{}", offset + 1, offset + shown.len())
        },
        m = matched.len(),
    );
    table(&mut body, &q, sort, shown, now);
    pager(&mut body, &q, sort, offset, matched.len());
    body.push_str("</section>");
    shell.render(&body)
}

fn error(message: &str) -> String {
    format!(
        r#"<h1>Devices</h1><p class="error" role="alert">{}</p><p><a href="/devices">All devices</a></p>"#,
        escape(message)
    )
}

fn select(out: &mut String, name: &str, label: &str, current: Option<&str>, options: &[&str]) {
    let _ = write!(
        out,
        r#"<label>{label} <select name="{name}" data-autosubmit><option value="">any</option>"#
    );
    for o in options {
        let selected = if current == Some(o) { " selected" } else { "" };
        let _ = write!(
            out,
            r#"<option value="{v}"{selected}>{v}</option>"#,
            v = escape(o)
        );
    }
    out.push_str("</select></label>");
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn form(out: &mut String, q: &ListQuery, sort: Sort, all: &[Brief<'_>]) {
    let distinct = |f: &dyn Fn(&Brief<'_>) -> Option<String>| -> Vec<String> {
        all.iter()
            .filter_map(f)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let sites = distinct(&|b| b.tag("site").map(str::to_owned));
    let groups = distinct(&|b| b.tag("group").map(str::to_owned));
    let models = distinct(&|b| b.model.map(str::to_owned));
    let firmware = distinct(&|b| b.firmware.map(str::to_owned));
    let checks: Vec<String> = all
        .iter()
        .flat_map(|b| b.health.reasons.iter().map(|r| r.check.to_owned()))
        .chain(q.check.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = write!(
        out,
        r#"<form class="filters" method="get" action="/devices" role="search"><label>Search <input type="search" name="q" value="{}" placeholder="device id" autocomplete="off"></label>"#,
        escape(q.q.as_deref().unwrap_or(""))
    );
    select(
        out,
        "status",
        "Status",
        q.status.map(status_name),
        &["online", "offline"],
    );
    select(
        out,
        "health",
        "Health",
        q.health.map(level_name),
        &["ok", "warning", "critical"],
    );
    if !checks.is_empty() {
        select(out, "check", "Problem", q.check.as_deref(), &refs(&checks));
    }
    select(out, "site", "Site", q.site.as_deref(), &refs(&sites));
    select(out, "group", "Group", q.group.as_deref(), &refs(&groups));
    select(out, "model", "Model", q.model.as_deref(), &refs(&models));
    select(
        out,
        "firmware",
        "Firmware",
        q.firmware.as_deref(),
        &refs(&firmware),
    );
    if sort.key != SortKey::Id || sort.descending {
        let _ = write!(
            out,
            r#"<input type="hidden" name="sort" value="{}">"#,
            escape(&sort.as_param())
        );
    }
    out.push_str(r#"<button type="submit">Apply</button> <a href="/devices">Clear</a></form>"#);
}

fn table(out: &mut String, q: &ListQuery, sort: Sort, shown: &[&Brief<'_>], now: i64) {
    let columns: [(&str, Option<SortKey>, bool); 12] = [
        ("status", Some(SortKey::Status), false),
        ("health", Some(SortKey::Health), false),
        ("device", Some(SortKey::Id), false),
        ("site", Some(SortKey::Site), false),
        ("group", Some(SortKey::Group), false),
        ("model", Some(SortKey::Model), false),
        ("firmware", Some(SortKey::Firmware), false),
        ("last seen", Some(SortKey::LastSeen), false),
        ("cpu", Some(SortKey::Cpu), true),
        ("memory", Some(SortKey::Memory), true),
        ("temperature", Some(SortKey::Temperature), true),
        ("battery", Some(SortKey::Battery), true),
    ];
    out.push_str(r#"<div class="scroll"><table class="devices"><thead><tr>"#);
    for (label, key, num) in columns {
        let class = if num { r#" class="num""# } else { "" };
        let Some(key) = key else {
            let _ = write!(out, r#"<th scope="col"{class}>{label}</th>"#);
            continue;
        };
        let current = sort.key == key;
        let aria = match (current, sort.descending) {
            (true, false) => r#" aria-sort="ascending""#,
            (true, true) => r#" aria-sort="descending""#,
            _ => "",
        };
        // Numbers and health read best largest first; text A to Z.
        let first_desc = num || matches!(key, SortKey::Health | SortKey::LastSeen);
        let next = Sort {
            key,
            descending: if current {
                !sort.descending
            } else {
                first_desc
            },
        };
        let arrow = match (current, sort.descending) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        let _ = write!(
            out,
            r#"<th scope="col"{class}{aria}><a href="{}">{label}{arrow}</a></th>"#,
            href(q, next, 0)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for b in shown {
        let d = b.device;
        let temp = d
            .max_value("temperature_celsius")
            .map_or("–".to_owned(), |v| format!("{v:.1} °C"));
        let reasons: Vec<&str> = b
            .health
            .reasons
            .iter()
            .map(|r| r.message.as_str())
            .collect();
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="health {lvl}" title="{}">{}</td><td class="id"><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{temp}</td><td class="num">{}</td></tr>"#,
            badge(status_name(b.status), status_name(b.status)),
            escape(&reasons.join("; ")),
            escape(&health_summary(&b.health)),
            device_href(b.id),
            escape(b.id),
            escape(b.tag("site").unwrap_or("–")),
            escape(b.tag("group").unwrap_or("–")),
            escape(b.model.unwrap_or("–")),
            escape(b.firmware.unwrap_or("–")),
            ago(now, d.last_seen_ms),
            pct(d.max_value("cpu_usage_ratio")),
            pct(d.max_value("memory_used_ratio")),
            pct(d.min_value("battery_charge_ratio")),
            lvl = level_name(b.health.level),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn pager(out: &mut String, q: &ListQuery, sort: Sort, offset: usize, matched: usize) {
    if matched <= PAGE {
        return;
    }
    let pages = matched.div_ceil(PAGE);
    let page = offset / PAGE + 1;
    out.push_str(r#"<nav class="pager" aria-label="Pages">"#);
    let link = |out: &mut String, label: &str, to: Option<usize>, rel: &str| match to {
        Some(o) => {
            let _ = write!(
                out,
                r#"<a href="{}" rel="{rel}">{label}</a>"#,
                href(q, sort, o)
            );
        }
        None => {
            let _ = write!(out, r#"<span aria-disabled="true">{label}</span>"#);
        }
    };
    link(out, "« first", (page > 1).then_some(0), "first");
    link(out, "‹ previous", (page > 1).then(|| offset - PAGE), "prev");
    let _ = write!(out, "<span>page {page} of {pages}</span>");
    link(
        out,
        "next ›",
        (page < pages).then_some(offset + PAGE),
        "next",
    );
    link(
        out,
        "last »",
        (page < pages).then_some((pages - 1) * PAGE),
        "last",
    );
    out.push_str("</nav>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_mean_any_and_bad_ones_are_named() {
        let q = parse(Some("q=&status=online&site=north+hall&sort=-cpu&offset=50")).ok();
        let q = q.expect("parses");
        assert_eq!(q.status, Some(Status::Online));
        assert_eq!(q.site.as_deref(), Some("north hall"));
        assert_eq!(q.q, None);
        assert_eq!(q.offset, 50);
        let again = href(&q, Sort::parse(q.sort.as_deref()).expect("sort"), 100);
        assert_eq!(
            again,
            "/devices?status=online&amp;site=north%20hall&amp;sort=-cpu&amp;offset=100"
        );
        assert!(parse(Some("colour=red")).is_err_and(|e| e.contains("colour")));
        assert!(parse(Some("status=up")).is_err());
    }
}
