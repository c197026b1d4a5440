//! The Prometheus-compatible query API through the real server: JSON shapes of every result
//! type, GET and POST forms, time and step formats, and the error shapes (400 `bad_data` with
//! a position, 422 over the sample limit).

mod common;

use std::sync::Arc;

use common::{get, post};
use fleetmon_protocol::{Batch, Sample, encode_json};
use fleetmon_server::clock::SystemClock;
use fleetmon_server::{Server, ServerConfig};
use serde_json::{Value, json};

fn post_form(url: &str, form: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("JSON"))
}

#[test]
fn prometheus_api_shapes_and_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = rt
        .block_on(Server::start(
            ServerConfig {
                // Derived series (device_up, ingest_*) only from the pass at start, before
                // any device: the label and series listings below see the ingested ones.
                derive_interval: std::time::Duration::from_secs(3600),
                ..ServerConfig::local(dir.path())
            },
            Arc::new(SystemClock),
        ))
        .expect("start the server");
    let base = format!("http://{}/prometheus/api/v1", server.http_addr());
    // temp{device="d1",room="a"}: 1, 2, ..., 10 at t0, t0+10 s, ...
    let now = fleetmon_tsdb::db::system_clock();
    let t0 = (now / 1000 - 200) * 1000;
    let samples = (0..10)
        .map(|i| Sample {
            metric: "temp".into(),
            labels: [("room".to_owned(), "a".to_owned())].into(),
            ts_ms: t0 + i * 10_000,
            value: (i + 1) as f64,
        })
        .collect();
    let body = encode_json(&Batch {
        device: "d1".into(),
        boot_id: "b".into(),
        seq: 1,
        sent_at_ms: now,
        dropped_before: 0,
        samples,
    });
    let (s, r) = post(
        &format!("http://{}/api/v1/ingest", server.http_addr()),
        &body,
    );
    assert_eq!(s, 200, "{r}");
    let at = (t0 + 90_000) / 1000;

    // Instant vector, GET.
    let (s, r) = get(&format!("{base}/query?query=temp&time={at}"));
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r,
        json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "temp", "device": "d1", "room": "a"}, "value": [at, "10"]}
        ]}})
    );
    // The same as a POST form, with an RFC 3339 time and an expression needing escapes.
    let (s, r) = post_form(
        &format!("{base}/query"),
        &format!("query=sum%20by%20(room)%20(temp%7Broom%3D%22a%22%7D)+*+2&time={at}.5"),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["result"][0]["metric"], json!({"room": "a"}));
    assert_eq!(
        r["data"]["result"][0]["value"],
        json!([at as f64 + 0.5, "20"])
    );
    // Scalars, strings, NaN and infinities.
    let (_, r) = get(&format!(
        "{base}/query?query=1%2F0&time=1970-01-01T00:01:40Z"
    ));
    assert_eq!(
        r["data"],
        json!({"resultType": "scalar", "result": [100, "+Inf"]})
    );
    let (_, r) = get(&format!("{base}/query?query=-1%2F0&time=100"));
    assert_eq!(r["data"]["result"], json!([100, "-Inf"]));
    let (_, r) = get(&format!("{base}/query?query=0%2F0&time=100"));
    assert_eq!(r["data"]["result"], json!([100, "NaN"]));
    let (_, r) = get(&format!("{base}/query?query=%22hi%22&time=100"));
    assert_eq!(
        r["data"],
        json!({"resultType": "string", "result": [100, "hi"]})
    );
    // A range vector in an instant query: a matrix of raw samples.
    let (_, r) = get(&format!("{base}/query?query=temp%5B20s%5D&time={at}"));
    assert_eq!(r["data"]["resultType"], "matrix");
    assert_eq!(
        r["data"]["result"][0]["values"],
        json!([[at - 20, "8"], [at - 10, "9"], [at, "10"]])
    );
    // Range query, step as a duration and as seconds, GET and POST.
    let start = t0 / 1000;
    for step in ["30s", "30"] {
        let (s, r) = get(&format!(
            "{base}/query_range?query=temp&start={start}&end={}&step={step}",
            start + 60
        ));
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            r["data"],
            json!({"resultType": "matrix", "result": [{
                "metric": {"__name__": "temp", "device": "d1", "room": "a"},
                "values": [[start, "1"], [start + 30, "4"], [start + 60, "7"]]
            }]})
        );
    }
    let (s, r) = post_form(
        &format!("{base}/query_range"),
        &format!("query=time()&start={start}&end={}&step=30", start + 30),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["data"]["result"],
        json!([{"metric": {}, "values": [[start, start.to_string()], [start + 30, (start + 30).to_string()]]}])
    );
    // Metadata endpoints.
    let (_, r) = get(&format!("{base}/series?match[]=temp&match[]=nope"));
    assert_eq!(
        r,
        json!({"status": "success", "data": [{"__name__": "temp", "device": "d1", "room": "a"}]})
    );
    let (_, r) = get(&format!("{base}/labels"));
    assert_eq!(r["data"], json!(["__name__", "device", "room"]));
    let (_, r) = post_form(&format!("{base}/labels"), "match[]=temp");
    assert_eq!(r["data"], json!(["__name__", "device", "room"]));
    let (_, r) = get(&format!("{base}/label/room/values"));
    assert_eq!(r["data"], json!(["a"]));
    let (_, r) = get(&format!(
        "{base}/label/__name__/values?match[]=%7Broom%3D%22a%22%7D"
    ));
    assert_eq!(r["data"], json!(["temp"]));
    // With start/end, series (and their labels) without samples in the range are left out:
    // humidity{sensor="h1"} has one sample, 60 s after temp's last.
    let body = encode_json(&Batch {
        device: "d1".into(),
        boot_id: "b".into(),
        seq: 2,
        sent_at_ms: now,
        dropped_before: 0,
        samples: vec![Sample {
            metric: "humidity".into(),
            labels: [("sensor".to_owned(), "h1".to_owned())].into(),
            ts_ms: t0 + 150_000,
            value: 0.5,
        }],
    });
    let (s, r) = post(
        &format!("http://{}/api/v1/ingest", server.http_addr()),
        &body,
    );
    assert_eq!(s, 200, "{r}");
    let names = |r: &Value| -> Vec<String> {
        r["data"]
            .as_array()
            .expect("series list")
            .iter()
            .map(|s| s["__name__"].as_str().expect("name").to_owned())
            .collect()
    };
    // The server derives series of its own for d1 (device_up, ingest_*, ALERTS) whenever its
    // first passes run; only the ingested metrics are under test in the listings below.
    let all = "match[]=%7Bdevice%3D%22d1%22%2C__name__%3D~%22temp%7Chumidity%22%7D";
    let (_, r) = get(&format!("{base}/series?{all}"));
    assert_eq!(names(&r), ["humidity", "temp"]);
    let (s, r) = get(&format!(
        "{base}/series?{all}&start={start}&end={}",
        start + 100
    ));
    assert_eq!(s, 200, "{r}");
    assert_eq!(names(&r), ["temp"]);
    let (_, r) = post_form(
        &format!("{base}/series"),
        &format!("{all}&start={}&end={}", start + 91, start + 200),
    );
    assert_eq!(names(&r), ["humidity"]);
    // Only an end: everything before it; a range between samples: nothing.
    let (_, r) = get(&format!("{base}/series?{all}&end={}", start + 100));
    assert_eq!(names(&r), ["temp"]);
    let (_, r) = get(&format!(
        "{base}/series?{all}&start={}&end={}",
        start + 91,
        start + 149
    ));
    assert_eq!(r["data"], json!([]));
    let (_, r) = get(&format!(
        "{base}/labels?{all}&start={}&end={}",
        start + 140,
        start + 160
    ));
    assert_eq!(r["data"], json!(["__name__", "device", "sensor"]));
    let (_, r) = get(&format!(
        "{base}/labels?{all}&start={start}&end={}",
        start + 100
    ));
    assert_eq!(r["data"], json!(["__name__", "device", "room"]));
    let (_, r) = get(&format!(
        "{base}/label/__name__/values?{all}&start={}&end={}",
        start + 140,
        start + 160
    ));
    assert_eq!(r["data"], json!(["humidity"]));
    let (_, r) = get(&format!("{base}/label/__name__/values?{all}"));
    assert_eq!(r["data"], json!(["humidity", "temp"]));
    let (s, r) = get(&format!("{base}/series?{all}&start=yesterday"));
    assert_eq!((s, r["errorType"].as_str()), (400, Some("bad_data")));
    assert!(
        r["error"].as_str().expect("message").contains("\"start\""),
        "{r}"
    );
    let (s, r) = get(&format!("{base}/labels?start={}&end={start}", start + 1));
    assert_eq!((s, r["errorType"].as_str()), (400, Some("bad_data")));
    let (_, r) = get(&format!("{base}/status/buildinfo"));
    assert_eq!(r["data"]["version"], "2.42.0");
    let (_, r) = get(&format!("{base}/metadata"));
    assert_eq!(r, json!({"status": "success", "data": {}}));
    let (_, r) = get(&format!(
        "{base}/format_query?query=sum(temp)%2Bon()%20%20vector(1)"
    ));
    assert_eq!(r["status"], "success");
    assert!(r["data"].as_str().unwrap().contains("sum(temp)"), "{r}");

    // Errors: bad query with its position, bad parameters, range vectors in range queries.
    let (s, r) = get(&format!("{base}/query?query=sum(temp&time=100"));
    assert_eq!(s, 400);
    assert_eq!(r["status"], "error");
    assert_eq!(r["errorType"], "bad_data");
    assert_eq!(
        r["error"],
        "invalid parameter \"query\": 1:9: parse error: unclosed left parenthesis"
    );
    let (s, r) = get(&format!("{base}/query?query=temp&time=soon"));
    assert_eq!((s, r["errorType"].as_str()), (400, Some("bad_data")));
    let (s, r) = get(&format!(
        "{base}/query_range?query=temp%5B1m%5D&start=0&end=10&step=1"
    ));
    assert_eq!((s, r["errorType"].as_str()), (400, Some("bad_data")));
    let (s, _) = get(&format!(
        "{base}/query_range?query=temp&start=10&end=0&step=1"
    ));
    assert_eq!(s, 400);
    let (s, _) = get(&format!(
        "{base}/query_range?query=temp&start=0&end=100000&step=1"
    ));
    assert_eq!(s, 400);
    // Over the sample limit: 422 execution. The same data, served with a limit of 5 samples.
    rt.block_on(server.shutdown());
    let mut config = ServerConfig::local(dir.path());
    config.query.max_samples = 5;
    let server = rt
        .block_on(Server::start(config, Arc::new(SystemClock)))
        .expect("restart the server with a sample limit");
    let base = format!("http://{}/prometheus/api/v1", server.http_addr());
    let (s, r) = get(&format!(
        "{base}/query?query=sum_over_time(temp%5B5m%5D)&time={at}"
    ));
    assert_eq!(s, 422, "{r}");
    assert_eq!(r["errorType"], "execution");
    assert!(
        r["error"].as_str().unwrap().contains("too many samples"),
        "{r}"
    );
    rt.block_on(server.shutdown());
}
