//! `/`: the fleet at a glance — devices by status and health, by site and group, the top
//! problems with their reasons, a map of devices that have `lat`/`lon` tags, the integrity
//! totals and the energy summary. Each section is a live region the script refreshes.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State as AxumState;

use super::{Page, Shell, badge, count, device_href, escape, level_name, pct, url_encode};
use crate::fleet::Counts;
use crate::fleet::health::Level;
use crate::http::AppState;
use crate::http::api::{FleetView, Rollup};
use crate::http::list::{Brief, assess_all};

/// Devices listed under "top problems".
const TOP: usize = 12;
/// Dots on the map at most: nearby devices share one.
const MAX_DOTS: usize = 600;

pub async fn page(AxumState(app): AxumState<AppState>) -> Page {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let all = assess_all(&registry, st, now);
    let fleet = FleetView::of(&all, registry.integrity_totals(now, st.missing_grace_ms));
    let mut body = String::from("<h1>Fleet overview</h1>\n");
    counts(&mut body, &fleet.fleet);
    body.push_str(r#"<div class="columns">"#);
    problems(&mut body, &all);
    map(&mut body, &all);
    rollups(&mut body, "sites", "Sites", "site", &fleet.sites);
    rollups(&mut body, "groups", "Groups", "group", &fleet.groups);
    integrity(&mut body, &fleet.integrity);
    energy(&mut body, &all, st.thresholds.battery_warning);
    body.push_str("</div>");
    Shell {
        title: "Overview",
        nav: "/",
        page: "overview",
        device: None,
        charts: false,
    }
    .render(&body)
}

fn counts(out: &mut String, r: &Rollup) {
    let card = |out: &mut String, label: &str, n: usize, class: &str, href: &str| {
        let _ = write!(
            out,
            r#"<a class="card {class}" href="{href}"><span class="n" data-count="{label}">{}</span><span class="label">{label}</span></a>"#,
            count(n as u64)
        );
    };
    out.push_str(r#"<section id="ov-counts" class="cards" data-live aria-label="Counts">"#);
    card(out, "devices", r.total, "", "/devices");
    card(out, "online", r.online, "ok", "/devices?status=online");
    card(
        out,
        "offline",
        r.offline,
        "critical",
        "/devices?status=offline",
    );
    card(out, "ok", r.ok, "ok", "/devices?health=ok");
    card(
        out,
        "warning",
        r.warning,
        "warning",
        "/devices?health=warning",
    );
    card(
        out,
        "critical",
        r.critical,
        "critical",
        "/devices?health=critical",
    );
    out.push_str("</section>\n");
}

/// Which checks fire on how many devices, then the worst devices with every reason.
fn problems(out: &mut String, all: &[Brief<'_>]) {
    let mut by_check: BTreeMap<&str, (usize, Level)> = BTreeMap::new();
    for b in all {
        for r in &b.health.reasons {
            let e = by_check.entry(r.check).or_insert((0, r.level));
            e.0 += 1;
            e.1 = e.1.max(r.level);
        }
    }
    let mut checks: Vec<_> = by_check.into_iter().collect();
    checks.sort_by(|a, b| (b.1.1, b.1.0).cmp(&(a.1.1, a.1.0)).then(a.0.cmp(b.0)));
    out.push_str(r#"<section id="ov-problems" class="panel wide" data-live><h2>Top problems</h2>"#);
    if checks.is_empty() {
        out.push_str(r#"<p class="muted">No device has a problem.</p></section>"#);
        return;
    }
    out.push_str(r#"<ul class="checks">"#);
    for (check, (n, level)) in &checks {
        let _ = write!(
            out,
            r#"<li><a href="/devices?check={}&amp;sort=-health">{} <span class="check">{}</span> on {} device{}</a></li>"#,
            url_encode(check),
            badge(level_name(*level), level_name(*level)),
            escape(check),
            count(*n as u64),
            if *n == 1 { "" } else { "s" }
        );
    }
    out.push_str("</ul>");
    let mut worst: Vec<&Brief<'_>> = all.iter().filter(|b| b.health.level != Level::Ok).collect();
    worst.sort_by(|a, b| {
        (b.health.level, b.health.reasons.len())
            .cmp(&(a.health.level, a.health.reasons.len()))
            .then(a.id.cmp(b.id))
    });
    out.push_str(
        r#"<div class="scroll"><table class="problems"><thead><tr><th scope="col">health</th><th scope="col">device</th><th scope="col">reasons</th></tr></thead><tbody>"#,
    );
    for b in worst.iter().take(TOP) {
        let mut reasons: Vec<_> = b.health.reasons.iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
        let text: Vec<String> = reasons.iter().map(|r| escape(&r.message)).collect();
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="id"><a href="{}">{}</a></td><td class="reason">{}</td></tr>"#,
            badge(level_name(b.health.level), level_name(b.health.level)),
            device_href(b.id),
            escape(b.id),
            text.join("; ")
        );
    }
    out.push_str("</tbody></table></div>");
    if worst.len() > TOP {
        let _ = write!(
            out,
            r#"<p><a href="/devices?sort=-health">All {} devices with problems →</a></p>"#,
            count(worst.len() as u64)
        );
    }
    out.push_str("</section>\n");
}

fn rollups(out: &mut String, id: &str, title: &str, param: &str, r: &BTreeMap<String, Rollup>) {
    let _ = write!(
        out,
        r#"<section id="ov-{id}" class="panel" data-live><h2>{title}</h2><div class="scroll"><table><thead><tr><th scope="col">{param}</th><th scope="col" class="num">devices</th><th scope="col" class="num">online</th><th scope="col" class="num">warning</th><th scope="col" class="num">critical</th></tr></thead><tbody>"#
    );
    for (name, r) in r {
        let name_cell = if name == crate::http::api::UNTAGGED {
            escape(name)
        } else {
            format!(
                r#"<a href="/devices?{param}={}">{}</a>"#,
                url_encode(name),
                escape(name)
            )
        };
        let _ = write!(
            out,
            r#"<tr><td>{name_cell}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            count(r.total as u64),
            count(r.online as u64),
            count(r.warning as u64),
            count(r.critical as u64)
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// The integrity counters as a definition list.
pub fn integrity_list(out: &mut String, c: &Counts) {
    out.push_str(r#"<dl class="kv">"#);
    for (name, v) in [
        ("received", c.received),
        ("duplicate", c.duplicate),
        ("missing", c.missing),
        ("out of order", c.out_of_order),
        ("late", c.late),
        ("corrupt", c.corrupt),
        ("dropped on device", c.device_dropped),
    ] {
        let _ = write!(
            out,
            r#"<div><dt>{name}</dt><dd data-integrity="{name}">{}</dd></div>"#,
            count(v)
        );
    }
    out.push_str("</dl>");
}

fn integrity(out: &mut String, c: &Counts) {
    out.push_str(r#"<section id="ov-integrity" class="panel" data-live><h2>Integrity</h2>"#);
    integrity_list(out, c);
    out.push_str(r#"<p><a href="/integrity">Per device →</a></p></section>"#);
}

/// Battery devices from their last values: how many, draining, low; the median charge.
fn energy(out: &mut String, all: &[Brief<'_>], low: f64) {
    let mut charges = Vec::new();
    let (mut discharging, mut mains) = (0, 0);
    for b in all {
        if let Some(c) = b.device.min_value("battery_charge_ratio") {
            charges.push(c);
            if b.device
                .max_value("battery_discharging")
                .is_some_and(|v| v > 0.5)
            {
                discharging += 1;
            }
        }
        if b.device
            .max_value("power_source_mains")
            .is_some_and(|v| v > 0.5)
        {
            mains += 1;
        }
    }
    charges.sort_by(f64::total_cmp);
    let n_low = charges.iter().filter(|&&c| c <= low).count();
    let median = charges.get(charges.len() / 2).copied();
    out.push_str(
        r#"<section id="ov-energy" class="panel" data-live><h2>Energy</h2><dl class="kv">"#,
    );
    for (name, v) in [
        ("on battery power", count(charges.len() as u64)),
        ("discharging", count(discharging)),
        (
            "low battery",
            format!("{} (≤ {})", count(n_low as u64), pct(Some(low))),
        ),
        ("median charge", pct(median)),
        ("lowest charge", pct(charges.first().copied())),
        ("on mains", count(mains)),
    ] {
        let _ = write!(out, "<div><dt>{name}</dt><dd>{v}</dd></div>");
    }
    out.push_str(r#"</dl><p><a href="/energy">Ranked by time to empty →</a></p></section>"#);
}

/// Devices with `lat`/`lon` tags on a plain equirectangular projection of their bounding box.
/// Nearby devices share one dot (a grid of 40 cells across, coarser until at most
/// [`MAX_DOTS`] are left), sized by how many and coloured by the worst among them, so 50,000
/// devices stay a light drawing.
fn map(out: &mut String, all: &[Brief<'_>]) {
    let placed: Vec<(f64, f64, &Brief<'_>)> = all
        .iter()
        .filter_map(|b| {
            let lat = b.tag("lat")?.parse::<f64>().ok()?;
            let lon = b.tag("lon")?.parse::<f64>().ok()?;
            Some((lat, lon, b))
        })
        .collect();
    out.push_str(r#"<section id="ov-map" class="panel wide" data-live><h2>Map</h2>"#);
    if placed.is_empty() {
        out.push_str(r#"<p class="muted">No device has <code>lat</code> and <code>lon</code> tags.</p></section>"#);
        return;
    }
    let (mut lat0, mut lat1, mut lon0, mut lon1) = (90f64, -90f64, 180f64, -180f64);
    for &(lat, lon, _) in &placed {
        (lat0, lat1, lon0, lon1) = (lat0.min(lat), lat1.max(lat), lon0.min(lon), lon1.max(lon));
    }
    let pad = ((lat1 - lat0).max(lon1 - lon0) * 0.08).max(0.5);
    (lat0, lat1, lon0, lon1) = (lat0 - pad, lat1 + pad, lon0 - pad, lon1 + pad);
    let k = ((lat0 + lat1) / 2.0).to_radians().cos().max(0.2);
    let (w, h) = (
        800.0,
        (800.0 * (lat1 - lat0) / ((lon1 - lon0) * k)).clamp(200.0, 600.0),
    );
    // (cell) → (count, worst, sum lat, sum lon, one id)
    type Cell<'a> = (usize, Level, f64, f64, &'a str);
    let mut cell = (lon1 - lon0) / 40.0;
    let cells = loop {
        let mut cells: BTreeMap<(i64, i64), Cell<'_>> = BTreeMap::new();
        for &(lat, lon, b) in &placed {
            let key = ((lon / cell).floor() as i64, (lat / cell).floor() as i64);
            let e = cells.entry(key).or_insert((0, Level::Ok, 0.0, 0.0, b.id));
            e.0 += 1;
            e.1 = e.1.max(b.health.level);
            e.2 += lat;
            e.3 += lon;
        }
        if cells.len() <= MAX_DOTS {
            break cells;
        }
        cell *= 2.0;
    };
    let _ = write!(
        out,
        r#"<svg class="map" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="{} devices with a position"><rect class="bg" width="{w:.0}" height="{h:.0}"/>"#,
        placed.len()
    );
    let mut ordered: Vec<_> = cells.into_values().collect();
    ordered.sort_by_key(|c| c.1); // the worst drawn last, on top
    for (n, level, slat, slon, id) in ordered {
        let (lat, lon) = (slat / n as f64, slon / n as f64);
        let x = (lon - lon0) / (lon1 - lon0) * w;
        let y = (lat1 - lat) / (lat1 - lat0) * h;
        let r = 4.0 + 2.0 * (n as f64).sqrt().min(10.0);
        let class = level_name(level);
        if n == 1 {
            let _ = write!(
                out,
                r#"<a href="{}"><circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="{r:.1}"><title>{} ({class})</title></circle></a>"#,
                device_href(id),
                escape(id)
            );
        } else {
            let _ = write!(
                out,
                r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="{r:.1}"><title>{n} devices, worst {class}</title></circle>"#
            );
        }
    }
    let _ = write!(
        out,
        r#"<text x="6" y="16">{:.1}°, {:.1}°</text><text x="{:.0}" y="{:.0}" text-anchor="end">{:.1}°, {:.1}°</text></svg>"#,
        lat1,
        lon0,
        w - 6.0,
        h - 6.0,
        lat0,
        lon1
    );
    out.push_str("</section>\n");
}
