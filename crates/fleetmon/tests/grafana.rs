//! The Grafana dashboard in `grafana/fleetmon.json` works against fleetmon: every panel's
//! query (and every template variable's) runs through `/prometheus` on a server fed by a
//! simulated fleet, and returns data.

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{free_addr, start_fleet, start_server};
use serde_json::{Value, json};

const DEVICES: usize = 8;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana/fleetmon.json");
    let text = std::fs::read_to_string(&path).expect("read grafana/fleetmon.json");
    serde_json::from_str(&text).expect("grafana/fleetmon.json is JSON")
}

/// A query with Grafana's variables filled in as Grafana would: `$site` as "All" (`.*`).
fn substitute(expr: &str, device: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$site", ".*")
        .replace("$device", device)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn call(url: &str, params: &[(&str, String)]) -> Value {
    let mut req = agent().get(url);
    for (k, v) in params {
        req = req.query(*k, v);
    }
    let mut r = req.call().expect("query the Prometheus API");
    let text = r.body_mut().read_to_string().expect("a body");
    serde_json::from_str(&text).expect("a JSON answer")
}

/// Does any series of a matrix or vector carry a number?
fn has_values(result: &Value) -> bool {
    result.as_array().is_some_and(|series| {
        series.iter().any(|s| {
            let mut values = s["values"].as_array().cloned().unwrap_or_default();
            if let Some(v) = s.get("value") {
                values.push(v.clone());
            }
            values.iter().any(|p| {
                p[1].as_str()
                    .is_some_and(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
            })
        })
    })
}

#[test]
fn every_grafana_panel_query_returns_data() {
    let dash = dashboard();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let agent = agent();
    for i in 0..DEVICES {
        let r = agent
            .put(&server.url(&format!("/api/v1/devices/sim-{i:05}/tags")))
            .send_json(json!({"site": format!("site-{}", i % 3)}))
            .expect("PUT tags");
        assert_eq!(r.status().as_u16(), 200);
    }
    let _sim = start_fleet(&server, DEVICES, "500ms", 10);

    let prom = server.url("/prometheus/api/v1");
    // Template variables: label_values(SELECTOR, LABEL) is /label/LABEL/values?match[]=...
    let mut device = String::new();
    for var in dash["templating"]["list"].as_array().expect("templating") {
        let q = var["query"]["query"].as_str().expect("a variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').expect("selector, label");
        let r = call(
            &format!("{prom}/label/{}/values", label.trim()),
            &[("match[]", substitute(selector.trim(), ""))],
        );
        let values = r["data"].as_array().cloned().unwrap_or_default();
        assert!(
            !values.is_empty(),
            "variable {} ({q}) has no values: {r}",
            var["name"]
        );
        if var["name"] == "device" {
            device = values[0].as_str().expect("a device").to_owned();
        }
    }
    assert!(!device.is_empty(), "no device variable");

    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs();
    let mut checked = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_FLEETMON}",
            "panel {} does not use the fleetmon data source",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = substitute(t["expr"].as_str().expect("expr"), &device);
            let r = if t["instant"] == true {
                call(&format!("{prom}/query"), &[("query", expr.clone())])
            } else {
                call(
                    &format!("{prom}/query_range"),
                    &[
                        ("query", expr.clone()),
                        ("start", (end - 300).to_string()),
                        ("end", end.to_string()),
                        ("step", "5".to_owned()),
                    ],
                )
            };
            assert_eq!(r["status"], "success", "{}: {expr}: {r}", panel["title"]);
            assert!(
                has_values(&r["data"]["result"]),
                "{}: {expr} returned no data: {r}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} queries in the dashboard");
}
