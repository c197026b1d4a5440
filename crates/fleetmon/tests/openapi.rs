//! The OpenAPI description (`docs/openapi.json`, served at `GET /api/v1/openapi.json`) held to
//! the real router: every route the server has is described with exactly the methods it
//! answers, nothing else is described, each operation names the role the auth middleware
//! really asks for, and every `$ref` resolves. Adding a route without describing it (or
//! describing one that does not exist) fails here.
//!
//! The methods a path answers are asked of the running server: axum answers a method a path
//! does not route with 405 and an `Allow` header listing the ones it does.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::http::Method;
use common::{free_addr, start_server};
use fleetmon_server::http::auth::required_role;
use fleetmon_server::http::openapi::SPEC;
use fleetmon_server::http::route_paths;
use serde_json::Value;

/// The dashboard's HTML pages and assets: routes the description leaves out on purpose.
const PAGES: [&str; 11] = [
    "/",
    "/devices",
    "/devices/{id}",
    "/integrity",
    "/energy",
    "/firmware",
    "/alerts",
    "/security",
    "/assets/{*name}",
    "/login",
    "/logout",
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    serde_json::from_str(SPEC).expect("docs/openapi.json is JSON")
}

/// The methods `path` answers, from the `Allow` header of a 405 to an unrouted method.
fn allowed(http: SocketAddr, path: &str) -> BTreeSet<String> {
    let mut s = TcpStream::connect(http).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        s,
        "TRACE {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send a request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    assert!(
        answer.starts_with("HTTP/1.1 405"),
        "TRACE {path}: expected 405 with Allow, got {:?}",
        answer.lines().next()
    );
    let allow = answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("allow")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("TRACE {path}: 405 without an Allow header"));
    allow
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty() && m != "head")
        .collect()
}

/// A concrete path for a templated one: each `{param}` becomes `x`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `$ref` under `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_route_is_described_with_its_methods_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let spec = spec();
    let described = spec["paths"].as_object().expect("paths is an object");
    let routes = route_paths();

    let mut missing = Vec::new();
    for path in &routes {
        if PAGES.contains(path) {
            assert!(
                !described.contains_key(*path),
                "{path} is a dashboard page; take it out of docs/openapi.json or out of PAGES"
            );
            continue;
        }
        let Some(item) = described.get(*path) else {
            missing.push(*path);
            continue;
        };
        let in_spec: BTreeSet<String> = item
            .as_object()
            .expect("a path item is an object")
            .keys()
            .filter(|k| HTTP_METHODS.contains(&k.as_str()))
            .cloned()
            .collect();
        let answered = allowed(server.http, &concrete(path));
        assert_eq!(
            in_spec, answered,
            "{path}: docs/openapi.json describes {in_spec:?}, the router answers {answered:?}"
        );
    }
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.json: {missing:?}"
    );
    let extra: Vec<&String> = described
        .keys()
        .filter(|p| !routes.contains(&p.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "docs/openapi.json describes routes the router does not have: {extra:?}"
    );
}

#[test]
fn each_operation_names_the_role_the_server_asks_for() {
    let spec = spec();
    let mut ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .expect("every operation has an id");
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let role = required_role(&m, path).map_or("none".to_owned(), |r| r.to_string());
            assert_eq!(
                op["x-fleetmon-role"], role,
                "{method} {path}: x-fleetmon-role differs from the auth middleware's"
            );
            let responses = op["responses"].as_object().expect("responses");
            if role == "none" {
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
            } else {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} needs {role}, so it may answer 401"
                );
            }
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path} has no success answer"
            );
        }
    }
}

#[test]
fn every_reference_resolves() {
    let spec = spec();
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: only local references are used"));
        assert!(
            spec.pointer(pointer).is_some(),
            "{r} does not resolve in docs/openapi.json"
        );
    }
}

#[test]
fn the_server_serves_the_description_in_login_mode_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), free_addr(), free_addr(), &["--require-login"]);
    let (status, served) = common::get(&server.url("/api/v1/openapi.json"));
    assert_eq!(status, 200, "{served}");
    assert_eq!(served, spec());
    let on_disk = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
    )
    .expect("read docs/openapi.json");
    assert_eq!(on_disk, SPEC);
    // Everything else still needs a login.
    assert_eq!(common::get(&server.url("/api/v1/devices")).0, 401);
}

/// The enum's strings at `pointer` in the description.
fn enum_at(spec: &Value, pointer: &str) -> BTreeSet<String> {
    spec.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("docs/openapi.json has no enum at {pointer}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The `schema.enum` of a query parameter of `GET path`.
fn param_enum(spec: &Value, path: &str, name: &str) -> BTreeSet<String> {
    let params = spec["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path} has no parameters"));
    let i = params
        .iter()
        .position(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("GET {path} has no parameter {name}"));
    enum_at(
        spec,
        &format!(
            "/paths/{}/get/parameters/{i}/schema/enum",
            path.replace('/', "~1")
        ),
    )
}

#[test]
fn enums_list_what_the_code_has() {
    use fleetmon_server::http::list::SortKey;
    use fleetmon_server::operators::Role;
    use fleetmon_server::security::events::Kind;
    let spec = spec();
    let kinds: BTreeSet<String> = Kind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(
        enum_at(
            &spec,
            "/components/schemas/SecurityEvent/properties/kind/enum"
        ),
        kinds,
        "security event kinds"
    );
    let mut filter = kinds.clone();
    filter.insert(String::new());
    assert_eq!(param_enum(&spec, "/api/v1/events", "kind"), filter);
    let sorts: BTreeSet<String> = SortKey::ALL
        .iter()
        .flat_map(|k| [k.name().to_owned(), format!("-{}", k.name())])
        .collect();
    assert_eq!(param_enum(&spec, "/api/v1/devices", "sort"), sorts);
    let roles: BTreeSet<String> = Role::ALL.iter().map(|r| r.as_str().to_owned()).collect();
    assert_eq!(enum_at(&spec, "/components/schemas/Role/enum"), roles);
}
