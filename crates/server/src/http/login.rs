//! Login and its neighbours: the `/login` page and form, `POST /api/v1/login` and
//! `/api/v1/logout` (JSON), `GET /api/v1/auth` (open or login mode, and who you are),
//! `POST /api/v1/setup` (the first admin, with the one-time setup token) and
//! `GET /api/v1/audit` (the audit log, admins only).
//!
//! A login is refused with 429 and `Retry-After` while its address or account is throttled,
//! before any password is hashed; otherwise the hash runs off the runtime, at most
//! [`crate::operators::max_concurrent_hashes`] at once.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{self, CSRF_HEADER, Peer};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::web::{Page, assets, escape};
use crate::operators::session::{Session, clear_cookie, set_cookie};
use crate::operators::{LoginError, Principal, SetupError, Via, same};

type Source = Peer;

fn addr(source: &Peer) -> Option<SocketAddr> {
    source.0
}

/// Throttle check, then the password hash off the runtime.
async fn login(
    app: &AppState,
    user: String,
    password: String,
    code: Option<String>,
    source: Option<SocketAddr>,
) -> Result<(String, Session), LoginError> {
    let ops = Arc::clone(&app.operators);
    ops.throttle
        .check(source.map(|s| s.ip()), &user, ops.now_ms())
        .map_err(LoginError::Throttled)?;
    let _permit = ops
        .hashing
        .acquire()
        .await
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    let worker = Arc::clone(&ops);
    ops.hasher
        .run(move || worker.login(&user, &password, code.as_deref(), source))
        .await
        .ok_or_else(|| LoginError::Internal("password check failed".to_owned()))?
}

fn login_error(e: &LoginError) -> Response {
    match e {
        LoginError::Throttled(t) => {
            let mut r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(t.retry_after_secs()));
            r
        }
        LoginError::Rejected => {
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response()
        }
        LoginError::Internal(_) => {
            tracing::error!(error = %e, "login failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

fn cookie_header(value: String) -> HeaderValue {
    // Only hex and fixed text go into it, so it is always a valid header value.
    HeaderValue::try_from(value)
        .unwrap_or_else(|_| HeaderValue::from_static("fleetmon_session=; Max-Age=0"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    user: String,
    password: String,
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/v1/login` with `{"user", "password", "code"?}`: 200 `{user, role, csrf}` and the
/// session cookie; 401 when wrong; 429 with `Retry-After` while throttled.
pub async fn api_login(
    AxumState(app): AxumState<AppState>,
    source: Source,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Response {
    match login(&app, req.user, req.password, req.code, addr(&source)).await {
        Ok((id, session)) => {
            let role = app
                .operators
                .users
                .accounts()
                .user(&session.user)
                .map(|u| u.role);
            let cookie = set_cookie(&id, app.operators.config.secure_cookies);
            let mut r = Json(json!({"user": session.user, "role": role, "csrf": session.csrf}))
                .into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, cookie_header(cookie));
            r
        }
        Err(e) => login_error(&e),
    }
}

/// `POST /api/v1/logout`: ends the session of the cookie (its CSRF token in `X-CSRF-Token`).
pub async fn api_logout(
    AxumState(app): AxumState<AppState>,
    source: Source,
    headers: HeaderMap,
) -> Response {
    let sent = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default()
        .to_vec();
    logout(&app, &headers, addr(&source), &sent).await;
    let mut r = Json(json!({"status": "logged out"})).into_response();
    let clear = clear_cookie(app.operators.config.secure_cookies);
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie_header(clear));
    r
}

/// Ends the session of `headers`' cookie when `csrf` is its token.
async fn logout(app: &AppState, headers: &HeaderMap, source: Option<SocketAddr>, csrf: &[u8]) {
    let Some(id) = auth::session_id(headers).map(str::to_owned) else {
        return;
    };
    let ops = Arc::clone(&app.operators);
    let Some(p) = ops.session_principal(&id) else {
        return;
    };
    if let Via::Session { csrf: token } = &p.via
        && same(token.as_bytes(), csrf)
    {
        let src = source.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        let _ = tokio::task::spawn_blocking(move || ops.logout(&id, &src)).await;
    }
}

/// `GET /api/v1/auth`: `{"mode": "open"|"login", "user", "role", "csrf"}`.
pub async fn whoami(AxumState(app): AxumState<AppState>, headers: HeaderMap) -> Json<Value> {
    let ops = &app.operators;
    let mode = if ops.is_open() { "open" } else { "login" };
    let p: Option<Principal> = auth::authenticate(ops, &headers);
    let csrf = p.as_ref().and_then(|p| match &p.via {
        Via::Session { csrf } => Some(csrf.clone()),
        _ => None,
    });
    Json(json!({
        "mode": mode,
        "user": p.as_ref().map(|p| p.name.clone()),
        "role": p.as_ref().map(|p| p.role),
        "csrf": csrf,
        "via": p.as_ref().map(|p| match p.via {
            Via::Open => "open",
            Via::Session { .. } => "session",
            Via::Token => "token",
        }),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    token: String,
    user: String,
    password: String,
    #[serde(default)]
    totp: bool,
}

/// `POST /api/v1/setup` with `{"token", "user", "password", "totp"?}`: creates the first
/// admin with the setup token printed at start. 201 `{user, role, totp_uri?}`.
pub async fn setup(
    AxumState(app): AxumState<AppState>,
    source: Source,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ops = Arc::clone(&app.operators);
    let src = addr(&source);
    let now = ops.now_ms();
    if let Err(t) = ops.throttle.check(src.map(|s| s.ip()), "setup", now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed attempts; try again in {} s",
                t.retry_after_secs()
            ),
        ));
    }
    let _permit = ops
        .hashing
        .acquire()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let user = req.user.clone();
    let worker = Arc::clone(&ops);
    let done = ops
        .hasher
        .run(move || {
            let s = src.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            let r = worker.setup(&req.token, &req.user, &req.password, req.totp, &s);
            if matches!(r, Err(SetupError::BadToken)) {
                worker
                    .throttle
                    .failed(src.map(|s| s.ip()), "setup", worker.now_ms());
            }
            r
        })
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "setting up the first admin failed".to_owned(),
            )
        })?;
    match done {
        Ok(uri) => Ok((
            StatusCode::CREATED,
            Json(json!({"user": user, "role": "admin", "totp_uri": uri})),
        )),
        Err(e @ SetupError::Done) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(e @ SetupError::BadToken) => Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string())),
        Err(SetupError::User(e)) => Err(ApiError::bad_request(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<usize>,
}

/// `GET /api/v1/audit?limit=N`: the newest N lines (default 100), newest first.
pub async fn audit_log(
    AxumState(app): AxumState<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let ops = Arc::clone(&app.operators);
    let lines = tokio::task::spawn_blocking(move || ops.audit.read_all())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let limit = q.limit.unwrap_or(100);
    let newest: Vec<_> = lines.into_iter().rev().take(limit).collect();
    Ok(Json(json!({"entries": newest})))
}

#[derive(Debug, Deserialize)]
pub struct LoginPageQuery {
    pub next: Option<String>,
}

/// A local path to go to after login; anything else goes to `/`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

/// `GET /login`.
pub async fn page(
    AxumState(app): AxumState<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginPageQuery>,
) -> Page {
    let current = auth::authenticate(&app.operators, &headers);
    login_page(
        &app,
        StatusCode::OK,
        "",
        safe_next(q.next.as_deref()),
        current.as_ref(),
    )
}

fn login_page(
    app: &AppState,
    status: StatusCode,
    message: &str,
    next: &str,
    current: Option<&Principal>,
) -> Page {
    let open = app.operators.is_open();
    let note = if open {
        "<p class=\"notice\">This server is open: no operator account exists and it listens on \
         loopback only, so no login is needed. Create one with <code>fleetmon user add NAME \
         --admin</code>.</p>"
            .to_owned()
    } else {
        String::new()
    };
    let signed_in = match current {
        Some(
            p @ Principal {
                via: Via::Session { csrf },
                ..
            },
        ) => format!(
            r#"<form method="post" action="/logout" class="logout"><p>Signed in as <strong>{}</strong> ({}).</p><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
            escape(&p.name),
            p.role,
            escape(csrf)
        ),
        _ => String::new(),
    };
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert">{}</p>"#, escape(message))
    };
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · fleetmon</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{css}">
</head>
<body data-page="login">
<header class="top"><a class="brand" href="/">fleetmon</a></header>
<main id="main">
<h1>Sign in</h1>
{note}{signed_in}{message}
<form method="post" action="/login" class="login">
<input type="hidden" name="next" value="{next}">
<p><label for="user">User</label><br><input id="user" name="user" autocomplete="username" required></p>
<p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><label for="code">Code from your authenticator app (if you have one)</label><br><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}"></p>
<p><button type="submit">Sign in</button></p>
</form>
</main>
</body>
</html>
"##,
        css = assets::url("app.css"),
        next = escape(next),
    );
    Page { status, html }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

/// A form posted from another site (login CSRF) is refused.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

/// `POST /login` (the form): to `next` with the cookie, or the page again with why.
pub async fn form_login(
    AxumState(app): AxumState<AppState>,
    source: Source,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(Some(&f.next)).to_owned();
    if cross_site(&headers) {
        return login_page(
            &app,
            StatusCode::FORBIDDEN,
            "cross-site login refused",
            &next,
            None,
        )
        .into_response();
    }
    let code = (!f.code.is_empty()).then_some(f.code);
    match login(&app, f.user, f.password, code, addr(&source)).await {
        Ok((id, _)) => {
            let cookie = set_cookie(&id, app.operators.config.secure_cookies);
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, cookie_header(cookie));
            r
        }
        Err(e) => {
            let status = match e {
                LoginError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Rejected => StatusCode::UNAUTHORIZED,
                LoginError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut r = login_page(&app, status, &e.to_string(), &next, None).into_response();
            if let LoginError::Throttled(t) = e {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(t.retry_after_secs()));
            }
            r
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout` (the form on the login page).
pub async fn form_logout(
    AxumState(app): AxumState<AppState>,
    source: Source,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    logout(&app, &headers, addr(&source), f.csrf.as_bytes()).await;
    let mut r = Redirect::to("/login").into_response();
    let clear = clear_cookie(app.operators.config.secure_cookies);
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie_header(clear));
    r
}
