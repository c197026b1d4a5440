//! Operators end to end, on `fleetmon server` child processes: open mode on loopback without
//! accounts; after `fleetmon user add`, login with password and TOTP, roles, CSRF, API tokens
//! and logout; lockout after repeated failures; a server beyond loopback with no usable
//! default credentials and a one-time setup token; the audit log with `fleetmon audit
//! verify` catching an edited line; and accounts and tokens managed over the API.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, free_addr, start_server, wait_for};
use fleetmon_server::operators::totp;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// An answer: status, JSON body (or the text as a string), and the headers wanted here.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    set_cookie: Option<String>,
    location: Option<String>,
    retry_after: Option<u64>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Answer {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let sent = match body {
        Some(b) => request
            .header("Content-Type", "application/json")
            .body(b.to_string())
            .map(|r| agent().run(r)),
        None => request.body(()).map(|r| agent().run(r)),
    };
    let mut response = sent
        .expect("a well-formed request")
        .expect("an answer from the server");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let set_cookie = header("set-cookie");
    let location = header("location");
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        set_cookie,
        location,
        retry_after,
    }
}

/// A logged-in session: the cookie header and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn get(&self, server: &ServerProcess, path: &str) -> Answer {
        call("GET", &server.url(path), &[("Cookie", &self.cookie)], None)
    }

    /// A state-changing request with the cookie and, when `csrf`, the CSRF token.
    fn send(
        &self,
        server: &ServerProcess,
        method: &str,
        path: &str,
        body: Option<&Value>,
        csrf: bool,
    ) -> Answer {
        let mut headers = vec![("Cookie", self.cookie.as_str())];
        if csrf {
            headers.push(("X-CSRF-Token", self.csrf.as_str()));
        }
        call(method, &server.url(path), &headers, body)
    }
}

fn login(server: &ServerProcess, user: &str, password: &str, code: Option<&str>) -> Answer {
    let mut body = json!({"user": user, "password": password});
    if let Some(c) = code {
        body["code"] = json!(c);
    }
    call("POST", &server.url("/api/v1/login"), &[], Some(&body))
}

fn session(answer: &Answer) -> Session {
    assert_eq!(answer.status, 200, "login: {answer:?}");
    let set = answer.set_cookie.as_deref().expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("cookie pair").to_owned();
    Session {
        cookie,
        csrf: answer.body["csrf"]
            .as_str()
            .expect("a CSRF token")
            .to_owned(),
    }
}

/// Runs `fleetmon ARGS`; returns (success, stdout, stderr).
fn fleetmon(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(args)
        .env("USER", "tester")
        .output()
        .expect("run fleetmon");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fleetmon user add NAME ...` with the test password; the TOTP secret when `--totp`.
fn add_user(dir: &Path, name: &str, extra: &[&str]) -> Option<String> {
    let pw = dir.join("password.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write the password file");
    let data = dir.to_str().expect("utf-8 path");
    let pw = pw.to_str().expect("utf-8 path");
    let mut args = vec![
        "user",
        "add",
        name,
        "--data-dir",
        data,
        "--password-file",
        pw,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = fleetmon(&args);
    assert!(ok, "user add {name}: {err}");
    out.lines()
        .find_map(|l| l.strip_prefix("TOTP secret "))
        .map(str::to_owned)
}

fn silence() -> Value {
    json!({"matchers": ["alertname=DeviceOffline"], "duration": "1h", "createdBy": "test"})
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

fn has(lines: &[Value], actor: &str, action: &str, outcome: &str) -> bool {
    lines.iter().any(|l| {
        l["actor"] == actor
            && l["action"] == action
            && l["outcome"] == outcome
            && l["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:") || s == "local")
    })
}

#[test]
fn open_mode_on_loopback_without_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let me = call("GET", &server.url("/api/v1/auth"), &[], None);
    assert_eq!(me.body["mode"], "open", "{me:?}");
    assert_eq!(
        call("GET", &server.url("/api/v1/devices"), &[], None).status,
        200
    );
    assert_eq!(call("GET", &server.url("/"), &[], None).status, 200);
    assert_eq!(call("GET", &server.url("/metrics"), &[], None).status, 200);
    let added = call(
        "POST",
        &server.url("/api/v1/silences"),
        &[],
        Some(&silence()),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let lines = audit_lines(dir.path());
    assert!(has(&lines, "anonymous", "silence.add", "ok"), "{lines:?}");
}

#[test]
fn login_roles_csrf_tokens_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let secret = add_user(dir.path(), "ada", &["--admin", "--totp"]).expect("a TOTP secret");
    assert!(add_user(dir.path(), "olga", &["--role", "operator"]).is_none());
    add_user(dir.path(), "vic", &[]);
    let users = std::fs::read_to_string(dir.path().join("users.json")).expect("users.json");
    assert!(!users.contains(PASSWORD) && users.contains("$argon2id$"));
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);

    // Nothing without credentials; pages send you to the login page.
    let none = call("GET", &server.url("/api/v1/devices"), &[], None);
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(call("GET", &server.url("/metrics"), &[], None).status, 401);
    let page = call("GET", &server.url("/devices"), &[], None);
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/login?next=%2Fdevices"));
    let form = call("GET", &server.url("/login"), &[], None);
    assert!(
        form.body
            .as_str()
            .is_some_and(|h| h.contains("name=\"password\""))
    );
    assert_eq!(
        call("GET", &server.url("/api/v1/auth"), &[], None).body["mode"],
        "login"
    );
    assert_eq!(call("GET", &server.url("/healthz"), &[], None).status, 200);

    // Password and TOTP.
    let key = totp::base32_decode(&secret).expect("base32 secret");
    let now_ms = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("fits")
    };
    assert_eq!(
        login(&server, "ada", PASSWORD, None).status,
        401,
        "code missing"
    );
    let code = totp::code_at(&key, now_ms());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(login(&server, "ada", PASSWORD, Some(wrong)).status, 401);
    assert_eq!(
        login(&server, "ada", "wrong password", Some(&code)).status,
        401
    );
    let ada = session(&login(&server, "ada", PASSWORD, Some(&code)));
    assert_eq!(ada.get(&server, "/api/v1/devices").status, 200);
    assert_eq!(ada.get(&server, "/").status, 200);
    let me = ada.get(&server, "/api/v1/auth");
    assert_eq!(
        (me.body["user"].as_str(), me.body["role"].as_str()),
        (Some("ada"), Some("admin"))
    );

    // A viewer reads, but can neither silence nor reload rules.
    let vic = session(&login(&server, "vic", PASSWORD, None));
    assert_eq!(vic.get(&server, "/api/v1/alerts").status, 200);
    assert_eq!(vic.get(&server, "/metrics").status, 200);
    let s = vic.send(&server, "POST", "/api/v1/silences", Some(&silence()), true);
    assert_eq!(s.status, 403, "{s:?}");
    let r = vic.send(&server, "POST", "/api/v1/rules/reload", None, true);
    assert_eq!(r.status, 403);

    // An operator silences, with the CSRF token only; no rule reloads.
    let olga = session(&login(&server, "olga", PASSWORD, None));
    let s = olga.send(&server, "POST", "/api/v1/silences", Some(&silence()), false);
    assert_eq!(s.status, 403, "no CSRF token: {s:?}");
    assert!(s.body["error"].as_str().is_some_and(|e| e.contains("CSRF")));
    let s = olga.send(&server, "POST", "/api/v1/silences", Some(&silence()), true);
    assert_eq!(s.status, 201, "{s:?}");
    let id = s.body["silenceID"].as_str().expect("silence id").to_owned();
    let e = olga.send(
        &server,
        "DELETE",
        &format!("/api/v1/silences/{id}"),
        None,
        true,
    );
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(
        olga.send(&server, "POST", "/api/v1/rules/reload", None, true)
            .status,
        403
    );
    assert_eq!(olga.get(&server, "/api/v1/audit").status, 403);

    // An admin reloads rules and reads the audit log.
    let r = ada.send(&server, "POST", "/api/v1/rules/reload", None, true);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ada.get(&server, "/api/v1/audit").status, 200);

    // API tokens, made while the server runs: scoped by role, no CSRF needed.
    let (ok, token, err) = fleetmon(&[
        "token",
        "create",
        "--name",
        "ci",
        "--role",
        "operator",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{err}");
    let bearer = format!("Bearer {}", token.trim());
    let auth = [("Authorization", bearer.as_str())];
    let s = call(
        "POST",
        &server.url("/api/v1/silences"),
        &auth,
        Some(&silence()),
    );
    assert_eq!(s.status, 201, "{s:?}");
    let r = call("POST", &server.url("/api/v1/rules/reload"), &auth, None);
    assert_eq!(r.status, 403);
    let bad = [("Authorization", "Bearer fmt_0000")];
    assert_eq!(
        call("GET", &server.url("/api/v1/devices"), &bad, None).status,
        401
    );
    // The command-line client takes the token too.
    let url = server.url("");
    let (ok, _, err) = fleetmon(&[
        "silence",
        "add",
        "--server",
        &url,
        "--token",
        token.trim(),
        "alertname=X",
    ]);
    assert!(ok, "{err}");
    let (ok, _, _) = fleetmon(&["silence", "add", "--server", &url, "alertname=X"]);
    assert!(!ok, "no token, no silence");

    // Logout needs the CSRF token and ends the session.
    let out = ada.send(&server, "POST", "/api/v1/logout", None, true);
    assert_eq!(out.status, 200);
    assert_eq!(ada.get(&server, "/api/v1/devices").status, 401);

    // A removed user is out at once.
    let (ok, _, err) = fleetmon(&["user", "remove", "vic", "--data-dir", &data]);
    assert!(ok, "{err}");
    assert_eq!(vic.get(&server, "/api/v1/devices").status, 401);

    // The audit log: who, what, from where.
    let lines = audit_lines(dir.path());
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l["actor"] == "ada" && l["action"] == "login" && l["outcome"] == "failed")
        .filter_map(|l| l["detail"].as_str())
        .collect();
    assert_eq!(
        failed,
        ["code missing", "wrong code", "wrong password"],
        "{lines:?}"
    );
    for (actor, action, outcome) in [
        ("cli:tester", "user.add", "ok"),
        ("cli:tester", "token.create", "ok"),
        ("cli:tester", "user.remove", "ok"),
        ("ada", "login", "ok"),
        ("vic", "access", "denied"),
        ("olga", "silence.add", "ok"),
        ("olga", "silence.expire", "ok"),
        ("ada", "rules.reload", "ok"),
        ("token:ci", "silence.add", "ok"),
        ("ada", "logout", "ok"),
    ] {
        assert!(
            has(&lines, actor, action, outcome),
            "{actor} {action} {outcome}: {lines:#?}"
        );
    }
    let text = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit.log");
    assert!(!text.contains(PASSWORD) && !text.contains(token.trim()) && !text.contains(&secret));

    // `fleetmon audit verify` passes, then names the edited line.
    let (ok, out, err) = fleetmon(&["audit", "verify", "--data-dir", &data]);
    assert!(ok, "{err}");
    assert!(out.contains("chain intact"), "{out}");
    let edited_line = text
        .lines()
        .position(|l| l.contains("\"actor\":\"olga\""))
        .expect("olga is in the log");
    std::fs::write(
        dir.path().join("audit.log"),
        text.replacen("\"actor\":\"olga\"", "\"actor\":\"mallory\"", 1),
    )
    .expect("edit the audit log");
    let (ok, _, err) = fleetmon(&["audit", "verify", "--data-dir", &data]);
    assert!(!ok);
    assert!(
        err.contains(&format!("line {}", edited_line + 2)),
        "the line after the edited one no longer chains: {err}"
    );
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// The current TOTP code of the `secret=` in an `otpauth://` URI.
fn code_of_uri(uri: &str) -> String {
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("a secret in the otpauth URI");
    let key = totp::base32_decode(secret).expect("base32 secret");
    totp::code_at(&key, now_ms())
}

#[test]
fn users_and_tokens_over_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    add_user(dir.path(), "ada", &["--admin"]);
    add_user(dir.path(), "olga", &["--role", "operator"]);
    add_user(dir.path(), "vic", &[]);
    let server = start_server(dir.path(), free_addr(), free_addr(), &[]);
    let ada = session(&login(&server, "ada", PASSWORD, None));
    let olga = session(&login(&server, "olga", PASSWORD, None));
    let vic = session(&login(&server, "vic", PASSWORD, None));
    let grace_new =
        json!({"name": "grace", "role": "operator", "password": PASSWORD, "totp": true});
    let deploy_new = json!({"name": "deploy", "role": "operator"});

    // Viewers and operators get 403 on every route of accounts and tokens.
    let routes: [(&str, &str, Option<&Value>); 6] = [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", Some(&grace_new)),
        ("DELETE", "/api/v1/users/vic", None),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", Some(&deploy_new)),
        ("DELETE", "/api/v1/tokens/deploy", None),
    ];
    for who in [&vic, &olga] {
        for (method, path, body) in routes {
            let a = who.send(&server, method, path, body, true);
            assert_eq!(a.status, 403, "{method} {path}: {a:?}");
        }
    }
    assert_eq!(
        vic.get(&server, "/api/v1/devices").status,
        200,
        "vic is still there"
    );

    // A cookie session needs its CSRF token to change accounts.
    let a = ada.send(&server, "POST", "/api/v1/users", Some(&grace_new), false);
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.body["error"].as_str().is_some_and(|e| e.contains("CSRF")));

    // Bad input: 400 naming the field; an existing name: 409.
    for (body, field) in [
        (
            json!({"name": "x y", "role": "viewer", "password": PASSWORD}),
            "name",
        ),
        (
            json!({"name": "x", "role": "root", "password": PASSWORD}),
            "role",
        ),
        (
            json!({"name": "x", "role": "viewer", "password": "short"}),
            "password",
        ),
    ] {
        let a = ada.send(&server, "POST", "/api/v1/users", Some(&body), true);
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let e = a.body["error"].as_str().expect("an error message");
        assert!(e.starts_with(field), "{field}: {e}");
    }
    let dup = json!({"name": "olga", "role": "viewer", "password": PASSWORD});
    let a = ada.send(&server, "POST", "/api/v1/users", Some(&dup), true);
    assert_eq!(a.status, 409, "{a:?}");
    let a = ada.send(
        &server,
        "POST",
        "/api/v1/users",
        Some(&json!({"name": "x"})),
        true,
    );
    assert_eq!(a.status, 422, "missing fields: {a:?}");

    // An admin adds a user with two-factor login, who then logs in with the code.
    let a = ada.send(&server, "POST", "/api/v1/users", Some(&grace_new), true);
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(
        (a.body["name"].as_str(), a.body["role"].as_str()),
        (Some("grace"), Some("operator"))
    );
    assert_eq!(a.body["totp"], true);
    let uri = a.body["totp_uri"]
        .as_str()
        .expect("the otpauth URI, once")
        .to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert_eq!(
        login(&server, "grace", PASSWORD, None).status,
        401,
        "code missing"
    );
    let grace = session(&login(&server, "grace", PASSWORD, Some(&code_of_uri(&uri))));
    let me = grace.get(&server, "/api/v1/auth");
    assert_eq!(
        (me.body["user"].as_str(), me.body["role"].as_str()),
        (Some("grace"), Some("operator"))
    );

    // The list: names, roles, two-factor; never a hash or a secret.
    let list = ada.get(&server, "/api/v1/users");
    assert_eq!(list.status, 200);
    let text = list.body.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("secret") && !text.contains("password"),
        "{text}"
    );
    let users = list.body["users"].as_array().expect("users");
    let grace_row = users
        .iter()
        .find(|u| u["name"] == "grace")
        .expect("grace listed");
    assert_eq!(grace_row["totp"], true);
    assert_eq!(grace_row["role"], "operator");
    let names: Vec<&str> = users.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["ada", "olga", "vic", "grace"]);

    // A token made over the API: shown once, works with Bearer, has the asked role.
    let a = ada.send(&server, "POST", "/api/v1/tokens", Some(&deploy_new), true);
    assert_eq!(a.status, 201, "{a:?}");
    let deploy = a.body["token"].as_str().expect("the token").to_owned();
    assert_eq!(a.body["owner"], "ada");
    let bearer = format!("Bearer {deploy}");
    let auth = [("Authorization", bearer.as_str())];
    let me = call("GET", &server.url("/api/v1/auth"), &auth, None);
    assert_eq!(
        (me.body["role"].as_str(), me.body["via"].as_str()),
        (Some("operator"), Some("token"))
    );
    let s = call(
        "POST",
        &server.url("/api/v1/silences"),
        &auth,
        Some(&silence()),
    );
    assert_eq!(s.status, 201, "an operator token silences: {s:?}");
    let u = call("GET", &server.url("/api/v1/users"), &auth, None);
    assert_eq!(u.status, 403, "an operator token is no admin: {u:?}");
    let a = ada.send(&server, "POST", "/api/v1/tokens", Some(&deploy_new), true);
    assert_eq!(a.status, 409, "{a:?}");
    let bad = json!({"name": "t", "role": "superuser"});
    let a = ada.send(&server, "POST", "/api/v1/tokens", Some(&bad), true);
    assert_eq!(a.status, 400, "{a:?}");
    let list = ada.get(&server, "/api/v1/tokens");
    assert_eq!(list.status, 200);
    assert!(!list.body.to_string().contains(&deploy) && !list.body.to_string().contains("sha256"));
    let row = list.body["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "deploy"))
        .expect("deploy listed");
    assert_eq!(row["role"], "operator");

    // Deleting a user ends their sessions and revokes the tokens they made.
    let bea_new = json!({"name": "bea", "role": "admin", "password": PASSWORD});
    assert_eq!(
        ada.send(&server, "POST", "/api/v1/users", Some(&bea_new), true)
            .status,
        201
    );
    let bea = session(&login(&server, "bea", PASSWORD, None));
    let a = bea.send(
        &server,
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "beas", "role": "admin"})),
        true,
    );
    assert_eq!(a.status, 201, "{a:?}");
    let beas = format!("Bearer {}", a.body["token"].as_str().expect("the token"));
    let beas_auth = [("Authorization", beas.as_str())];
    assert_eq!(
        call("GET", &server.url("/api/v1/users"), &beas_auth, None).status,
        200
    );
    let d = ada.send(&server, "DELETE", "/api/v1/users/bea", None, true);
    assert_eq!(d.status, 204, "{d:?}");
    assert_eq!(
        bea.get(&server, "/api/v1/devices").status,
        401,
        "bea's session ended"
    );
    assert_eq!(
        call("GET", &server.url("/api/v1/devices"), &beas_auth, None).status,
        401,
        "bea's token revoked"
    );
    assert_eq!(login(&server, "bea", PASSWORD, None).status, 401);
    assert_eq!(
        ada.send(&server, "DELETE", "/api/v1/users/bea", None, true)
            .status,
        404
    );
    let d = ada.send(&server, "DELETE", "/api/v1/users/grace", None, true);
    assert_eq!(d.status, 204, "{d:?}");
    assert_eq!(
        grace.get(&server, "/api/v1/devices").status,
        401,
        "grace's session ended"
    );

    // Not yourself, and not the last admin.
    let d = ada.send(&server, "DELETE", "/api/v1/users/ada", None, true);
    assert_eq!(d.status, 409, "{d:?}");
    let (ok, root, err) = fleetmon(&[
        "token",
        "create",
        "--name",
        "root",
        "--role",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{err}");
    let root = format!("Bearer {}", root.trim());
    let root_auth = [("Authorization", root.as_str())];
    let d = call("DELETE", &server.url("/api/v1/users/ada"), &root_auth, None);
    assert_eq!(d.status, 409, "the last admin: {d:?}");
    assert!(
        d.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("last admin")),
        "{d:?}"
    );
    assert_eq!(ada.get(&server, "/api/v1/devices").status, 200);

    // Revoking a token: it stops working at once.
    let r = ada.send(&server, "DELETE", "/api/v1/tokens/deploy", None, true);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        call("GET", &server.url("/api/v1/devices"), &auth, None).status,
        401
    );
    assert_eq!(
        ada.send(&server, "DELETE", "/api/v1/tokens/deploy", None, true)
            .status,
        404
    );

    // Every change is in the audit log with who and from where, and the chain holds.
    let lines = audit_lines(dir.path());
    for (actor, action, outcome) in [
        ("ada", "user.add", "ok"),
        ("ada", "user.add", "failed"),
        ("ada", "token.create", "ok"),
        ("bea", "token.create", "ok"),
        ("ada", "user.remove", "ok"),
        ("ada", "user.remove", "failed"),
        ("token:root", "user.remove", "failed"),
        ("ada", "token.revoke", "ok"),
        ("vic", "access", "denied"),
        ("olga", "access", "denied"),
    ] {
        assert!(
            has(&lines, actor, action, outcome),
            "{actor} {action} {outcome}: {lines:#?}"
        );
    }
    assert!(
        lines.iter().any(|l| l["action"] == "user.remove"
            && l["detail"].as_str().is_some_and(|d| d.contains("beas"))),
        "the revoked tokens are named: {lines:#?}"
    );
    let text = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit.log");
    assert!(!text.contains(PASSWORD) && !text.contains(&deploy) && !text.contains(&uri));
    let (ok, out, err) = fleetmon(&["audit", "verify", "--data-dir", &data]);
    assert!(ok, "{err}");
    assert!(out.contains("chain intact"), "{out}");
}

#[test]
fn lockout_after_repeated_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    add_user(dir.path(), "bob", &[]);
    let server = start_server(
        dir.path(),
        free_addr(),
        free_addr(),
        &["--login-backoff-after", "3", "--login-lockout-after", "5"],
    );
    let mut failures = 0;
    let mut throttled = 0;
    while failures < 5 {
        let a = login(&server, "bob", "wrong password", None);
        match a.status {
            401 => failures += 1,
            429 => {
                throttled += 1;
                let wait = a.retry_after.expect("Retry-After on 429");
                assert!(wait <= 4, "backoff, not lockout, yet: {wait}");
                std::thread::sleep(Duration::from_millis(wait * 1000 + 50));
            }
            other => panic!("unexpected {other}: {a:?}"),
        }
        if (3..5).contains(&failures) {
            // Backoff is on: an immediate retry is refused.
            let a = login(&server, "bob", "wrong password", None);
            assert_eq!(a.status, 429, "{a:?}");
            throttled += 1;
            std::thread::sleep(Duration::from_millis(
                a.retry_after.expect("Retry-After") * 1000 + 50,
            ));
        }
    }
    assert!(throttled >= 2);
    let locked = login(&server, "bob", PASSWORD, None);
    assert_eq!(
        locked.status, 429,
        "the right password is refused too: {locked:?}"
    );
    assert!(locked.retry_after.is_some_and(|s| s > 800), "{locked:?}");
    let lines = audit_lines(dir.path());
    assert!(has(&lines, "bob", "login.lockout", "denied"), "{lines:?}");
}

#[test]
fn a_server_beyond_loopback_has_no_default_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_addr().port();
    let mqtt = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--http-listen",
            &format!("0.0.0.0:{port}"),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--allow-plaintext",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fleetmon server");
    let stdout = child.stdout.take().expect("stdout");
    let token = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            let at = l.find("\"token\": \"")? + 10;
            Some(l[at..at + 64].to_owned())
        })
        .expect("the setup token is printed");
    let server = ServerProcess {
        child,
        http: format!("127.0.0.1:{port}").parse().expect("address"),
        mqtt,
    };
    wait_for(Duration::from_secs(10), || {
        (call("GET", &server.url("/healthz"), &[], None).status == 200).then_some(())
    })
    .expect("server up");
    assert_eq!(
        call("GET", &server.url("/api/v1/devices"), &[], None).status,
        401
    );
    assert_eq!(login(&server, "admin", "admin", None).status, 401);
    let setup = |t: &str| {
        let body = json!({"token": t, "user": "root", "password": PASSWORD});
        call("POST", &server.url("/api/v1/setup"), &[], Some(&body))
    };
    assert_eq!(setup("not-the-token").status, 403);
    let made = setup(&token);
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(setup(&token).status, 409, "the token works once");
    let root = session(&login(&server, "root", PASSWORD, None));
    assert_eq!(root.get(&server, "/api/v1/devices").status, 200);
}
