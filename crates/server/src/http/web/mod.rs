//! The dashboard: server-rendered HTML pages over the registry and the store, kept live by one
//! small script (`assets/app.js`) that listens to `/api/v1/stream` and re-reads the page's live
//! regions, and draws charts with uPlot from `/prometheus/api/v1/query_range`.
//!
//! - [`overview`]: `/` — the fleet at a glance: counts, top problems, map, integrity, energy.
//! - [`devices`]: `/devices` — search, filters, sorting, pages.
//! - [`device`]: `/devices/{id}` — one device's whole story; [`charts`] says which.
//! - [`alerts`]: `/alerts` — firing and pending alerts, why muted, silences (add, expire).
//! - [`security`]: `/security` — security events by kind and device.
//! - [`integrity`], [`energy`], [`firmware`]: the fleet seen through one concern.
//! - [`assets`]: the script, the styles and vendored uPlot, embedded in the binary.
//!
//! Everything a device or an operator wrote (ids, tags, reasons) goes through [`escape`];
//! pages carry a Content-Security-Policy that allows only this server.

pub mod alerts;
pub mod assets;
pub mod charts;
pub mod device;
pub mod devices;
pub mod energy;
pub mod firmware;
pub mod integrity;
pub mod overview;
pub mod security;

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fleet::Status;
use crate::fleet::health::{Health, Level};

/// The views in the navigation, in order: (path, label).
const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/alerts", "Alerts"),
    ("/integrity", "Integrity"),
    ("/energy", "Energy"),
    ("/firmware", "Firmware"),
    ("/security", "Security events"),
];

/// Only this server: no inline script or style, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// A rendered page: the HTML and the headers every page carries.
pub struct Page {
    pub status: StatusCode,
    pub html: String,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.html).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// What a page is, for the shell around its body.
pub struct Shell<'a> {
    pub title: &'a str,
    /// The nav entry to mark current.
    pub nav: &'a str,
    /// `data-page` on `<body>`, which the script reads.
    pub page: &'a str,
    /// The device of a device page (`data-device`).
    pub device: Option<&'a str>,
    /// Loads uPlot.
    pub charts: bool,
}

impl Shell<'_> {
    /// The whole document around `body`.
    pub fn render(&self, body: &str) -> Page {
        self.render_status(StatusCode::OK, body)
    }

    pub fn render_status(&self, status: StatusCode, body: &str) -> Page {
        let mut nav = String::new();
        for (path, label) in NAV {
            let current = if path == self.nav {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(nav, r#"<a href="{path}"{current}>{label}</a>"#);
        }
        let mut head = format!(
            r#"<link rel="stylesheet" href="{}">"#,
            assets::url("app.css")
        );
        if self.charts {
            let _ = write!(
                head,
                r#"<link rel="stylesheet" href="{}"><script src="{}" defer></script>"#,
                assets::url("vendor/uPlot.min.css"),
                assets::url("vendor/uPlot.iife.min.js")
            );
        }
        let _ = write!(
            head,
            r#"<script src="{}" defer></script>"#,
            assets::url("app.js")
        );
        let device = self
            .device
            .map(|d| format!(r#" data-device="{}""#, escape(d)))
            .unwrap_or_default();
        Page {
            status,
            html: format!(
                r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · fleetmon</title>
<link rel="icon" href="data:,">
{head}
</head>
<body data-page="{page}"{device}>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/">fleetmon</a>
<nav aria-label="Views">{nav}</nav>
<span id="live" class="live" role="status" title="updates as data arrives">static</span>
</header>
<main id="main" tabindex="-1">
{body}
</main>
</body>
</html>
"##,
                title = escape(self.title),
                page = self.page,
            ),
        }
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

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The link to a device's page.
pub fn device_href(id: &str) -> String {
    format!("/devices/{}", url_encode(id))
}

pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Critical => "critical",
    }
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Online => "online",
        Status::Offline => "offline",
    }
}

/// A coloured badge: `<span class="badge ok">ok</span>`.
pub fn badge(class: &str, text: &str) -> String {
    format!(r#"<span class="badge {class}">{}</span>"#, escape(text))
}

/// The health's level and its worst reason, with how many more.
pub fn health_summary(h: &Health) -> String {
    let mut reasons: Vec<_> = h.reasons.iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    match reasons.as_slice() {
        [] => "ok".to_owned(),
        [one] => one.message.clone(),
        [first, rest @ ..] => format!("{} (+{})", first.message, rest.len()),
    }
}

/// Every reason as a list, worst first.
pub fn reasons_list(h: &Health) -> String {
    if h.reasons.is_empty() {
        return r#"<p class="muted">No problems.</p>"#.to_owned();
    }
    let mut reasons: Vec<_> = h.reasons.iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    let mut out = String::from(r#"<ul class="reasons">"#);
    for r in reasons {
        let _ = write!(
            out,
            r#"<li>{} <span class="check">{}</span> {}</li>"#,
            badge(level_name(r.level), level_name(r.level)),
            escape(r.check),
            escape(&r.message)
        );
    }
    out.push_str("</ul>");
    out
}

pub fn pct(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{:.0} %", v * 100.0))
}

pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds as a person says it: `45 s`, `12 min`, `3 h 20 min`, `4 d 2 h`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".to_owned();
    }
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..90 => format!("{s} s"),
        90..5_400 => format!("{} min", s / 60),
        5_400..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long ago `then_ms` was.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms == 0 {
        return "never".to_owned();
    }
    format!("{} ago", duration((now_ms - then_ms) as f64 / 1000.0))
}

/// A whole number with thin-space thousands: `12 345`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(device_href("sim-00001"), "/devices/sim-00001");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(count(999), "999");
        assert_eq!(duration(45.0), "45 s");
        assert_eq!(duration(7_260.0), "2 h 1 min");
        assert_eq!(duration(3.0 * 86_400.0 + 7_200.0), "3 d 2 h");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(pct(Some(0.256)), "26 %");
    }
}
