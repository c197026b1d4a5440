//! `/integrity`: the fleet's integrity totals and the devices that lost, repeated, reordered
//! or corrupted batches, worst first (see docs/health.md for what each counter means).

use std::fmt::Write;

use axum::extract::State as AxumState;

use super::{Page, Shell, count, device_href, escape};
use crate::fleet::Counts;
use crate::http::AppState;

/// Devices listed, worst first.
const SHOWN: usize = 200;

/// How bad a device's counters are: lost data first, then corrupt, then the rest.
fn badness(c: &Counts) -> (u64, u64, u64) {
    (
        c.missing + c.device_dropped,
        c.corrupt,
        c.duplicate + c.out_of_order + c.late,
    )
}

pub async fn page(AxumState(app): AxumState<AppState>) -> Page {
    let st = &app.state;
    let now = st.now_ms();
    let (totals, mut devices, n) = {
        let registry = st.registry();
        let devices: Vec<(String, Counts)> = registry
            .iter()
            .map(|(id, d)| (id.clone(), d.integrity.counts(now, st.missing_grace_ms)))
            .filter(|(_, c)| badness(c) != (0, 0, 0))
            .collect();
        (
            registry.integrity_totals(now, st.missing_grace_ms),
            devices,
            registry.len(),
        )
    };
    devices.sort_by(|a, b| badness(&b.1).cmp(&badness(&a.1)).then(a.0.cmp(&b.0)));
    let mut body = String::from(
        r#"<h1>Integrity</h1><section id="in-totals" class="panel wide" data-live><h2>Fleet totals</h2>"#,
    );
    super::overview::integrity_list(&mut body, &totals);
    let _ = write!(
        body,
        r#"<p><span data-affected="{a}">{}</span> of {} devices have lost, repeated, reordered or corrupt batches.</p></section>"#,
        count(devices.len() as u64),
        count(n as u64),
        a = devices.len()
    );
    body.push_str(
        r#"<section id="in-devices" class="panel wide" data-live><h2>Devices, worst first</h2>"#,
    );
    if devices.is_empty() {
        body.push_str(r#"<p class="muted">Every batch of every device is accounted for.</p>"#);
    } else {
        body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">device</th>"#);
        for h in [
            "received",
            "missing",
            "dropped on device",
            "corrupt",
            "duplicate",
            "out of order",
            "late",
        ] {
            let _ = write!(body, r#"<th scope="col" class="num">{h}</th>"#);
        }
        body.push_str("</tr></thead><tbody>");
        for (id, c) in devices.iter().take(SHOWN) {
            let _ = write!(
                body,
                r#"<tr><td class="id"><a href="{}">{}</a></td>"#,
                device_href(id),
                escape(id)
            );
            for v in [
                c.received,
                c.missing,
                c.device_dropped,
                c.corrupt,
                c.duplicate,
                c.out_of_order,
                c.late,
            ] {
                let _ = write!(body, r#"<td class="num">{}</td>"#, count(v));
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table></div>");
        if devices.len() > SHOWN {
            let _ = write!(
                body,
                "<p class=\"muted\">The worst {SHOWN} shown; all in <a href=\"/api/v1/integrity\">/api/v1/integrity</a>.</p>"
            );
        }
    }
    body.push_str("</section>");
    Shell {
        title: "Integrity",
        nav: "/integrity",
        page: "integrity",
        device: None,
        charts: false,
    }
    .render(&body)
}
