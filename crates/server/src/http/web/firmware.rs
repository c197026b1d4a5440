//! `/firmware`: which firmware runs where (versions by model), and the devices outside the
//! firmware policy — vulnerable releases with their advisory, versions below the minimum.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State as AxumState;

use super::{Page, Shell, badge, count, device_href, escape, level_name, url_encode};
use crate::http::AppState;
use crate::http::list::assess_all;

pub async fn page(AxumState(app): AxumState<AppState>) -> Page {
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let all = assess_all(&registry, st, now);
    let mut versions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for b in &all {
        *versions
            .entry((b.model.unwrap_or("–"), b.firmware.unwrap_or("–")))
            .or_default() += 1;
    }
    let mut body = String::from(
        r#"<h1>Firmware</h1><div class="columns"><section id="fw-versions" class="panel" data-live><h2>Versions by model</h2><div class="scroll"><table><thead><tr><th scope="col">model</th><th scope="col">firmware</th><th scope="col" class="num">devices</th></tr></thead><tbody>"#,
    );
    for ((model, firmware), n) in &versions {
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td><a href="/devices?model={}&amp;firmware={}">{}</a></td><td class="num" data-version="{}">{}</td></tr>"#,
            escape(model),
            url_encode(model),
            url_encode(firmware),
            escape(firmware),
            escape(firmware),
            count(*n as u64)
        );
    }
    body.push_str("</tbody></table></div></section>");
    let mut out_of_policy: Vec<_> = all
        .iter()
        .filter_map(|b| {
            let reasons: Vec<_> = b
                .health
                .reasons
                .iter()
                .filter(|r| r.check.starts_with("firmware"))
                .collect();
            (!reasons.is_empty()).then_some((b, reasons))
        })
        .collect();
    out_of_policy.sort_by(|a, b| {
        let worst = |r: &Vec<&crate::fleet::health::Reason>| r.iter().map(|r| r.level).max();
        worst(&b.1).cmp(&worst(&a.1)).then(a.0.id.cmp(b.0.id))
    });
    let policy = if st.firmware_policy.is_some() {
        ""
    } else {
        r#"<p class="muted">No firmware policy is configured (<code>--firmware-policy</code>).</p>"#
    };
    let _ = write!(
        body,
        r#"<section id="fw-policy" class="panel" data-live><h2>Out of policy</h2>{policy}<p><span data-out-of-policy="{n}">{}</span> devices out of policy.</p>"#,
        count(out_of_policy.len() as u64),
        n = out_of_policy.len()
    );
    if !out_of_policy.is_empty() {
        body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">device</th><th scope="col">firmware</th><th scope="col">why</th></tr></thead><tbody>"#);
        for (b, reasons) in out_of_policy.iter().take(500) {
            let why: Vec<String> = reasons
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        badge(level_name(r.level), level_name(r.level)),
                        escape(&r.message)
                    )
                })
                .collect();
            let _ = write!(
                body,
                r#"<tr><td class="id"><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>"#,
                device_href(b.id),
                escape(b.id),
                escape(b.firmware.unwrap_or("–")),
                why.join("<br>")
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section></div>");
    Shell {
        title: "Firmware",
        nav: "/firmware",
        page: "firmware",
        device: None,
        charts: false,
    }
    .render(&body)
}
