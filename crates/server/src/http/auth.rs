//! Who may call what: the middleware in front of every route. It finds the caller — an API
//! token (`Authorization: Bearer`), a session cookie, or nobody — checks the role the route
//! needs and, for a cookie session making a state-changing request, the CSRF token in
//! `X-CSRF-Token`. In open mode (see [`crate::operators`]) every caller is an anonymous admin.
//!
//! | routes | role |
//! |---|---|
//! | `/healthz`, `/login`, `/logout`, `/assets/*`, `/api/v1/{login,logout,setup,auth}`, `/api/v1/openapi.json`, device ingest and enrolment | none (outside operator auth) |
//! | `POST /api/v1/rules/reload`, `/api/v1/audit`, `/api/v1/users*`, `/api/v1/tokens*` | admin |
//! | other state-changing requests: silences, device tags | operator |
//! | every other read, `/metrics`, and the Prometheus API (also its POST queries) | viewer |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use super::error::ApiError;
use crate::operators::session::{COOKIE, cookie_value};
use crate::operators::{Operators, Principal, Role, Via, same};

/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The role `method path` needs; None for routes outside operator auth.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    const PUBLIC: [&str; 10] = [
        "/healthz",
        "/api/v1/openapi.json",
        "/login",
        "/logout",
        "/api/v1/login",
        "/api/v1/logout",
        "/api/v1/setup",
        "/api/v1/auth",
        "/api/v1/ingest",
        "/api/v1/enrol",
    ];
    if PUBLIC.contains(&path) || path.starts_with("/assets/") {
        return None;
    }
    let admin = path == "/api/v1/rules/reload"
        || ["/api/v1/audit", "/api/v1/users", "/api/v1/tokens"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if admin {
        Some(Role::Admin)
    } else if is_safe(method) || path.starts_with("/prometheus/") {
        Some(Role::Viewer)
    } else {
        Some(Role::Operator)
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The caller of a request with `headers`: open mode's anonymous admin, a token's or a
/// session's principal, or None.
pub fn authenticate(ops: &Operators, headers: &HeaderMap) -> Option<Principal> {
    if ops.is_open() {
        return Some(Principal {
            name: "anonymous".to_owned(),
            role: Role::Admin,
            via: Via::Open,
        });
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        return ops.token_principal(token);
    }
    session_id(headers).and_then(|id| ops.session_principal(id))
}

/// The session cookie's value.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_value(v, COOKIE))
}

fn source_of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// The middleware.
pub async fn authorize(
    AxumState(app): AxumState<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let Some(needed) = required_role(&method, &path) else {
        return next.run(request).await;
    };
    let ops = Arc::clone(&app.operators);
    let Some(principal) = authenticate(&ops, request.headers()) else {
        return unauthenticated(&path, request.uri().path_and_query().map(|p| p.as_str()));
    };
    let source = source_of(request.extensions());
    if principal.role < needed {
        if !is_safe(&method) {
            let actor = Actor {
                principal: principal.clone(),
                source,
            };
            let detail = format!("{method} {path} needs {needed}, has {}", principal.role);
            audit(&app, &actor, "access", "denied", detail).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not do this: {method} {path} needs the {needed} role, and {} has {}",
                principal.name, principal.name, principal.role
            ),
        )
        .into_response();
    }
    if let Via::Session { csrf } = &principal.via
        && !is_safe(&method)
    {
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !same(sent, csrf.as_bytes()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "CSRF token missing or wrong: send the session's token (from the login answer or GET /api/v1/auth) in X-CSRF-Token",
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// No (valid) credentials: pages go to the login page, the API answers 401.
fn unauthenticated(path: &str, path_and_query: Option<&str>) -> Response {
    let api = path.starts_with("/api/") || path.starts_with("/prometheus/") || path == "/metrics";
    if api {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "login required: a session cookie (POST /api/v1/login) or Authorization: Bearer TOKEN",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"fleetmon\""),
        );
        return r;
    }
    let next = path_and_query.unwrap_or("/");
    Redirect::to(&format!("/login?next={}", super::web::url_encode(next))).into_response()
}

/// Who did something, and from where: for handlers that write the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    pub source: Option<SocketAddr>,
}

impl Actor {
    pub fn source(&self) -> String {
        self.source
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal {
                name: "anonymous".to_owned(),
                role: Role::Viewer,
                via: Via::Open,
            });
        Ok(Actor {
            principal,
            source: source_of(&parts.extensions),
        })
    }
}

/// The peer's address, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(source_of(&parts.extensions)))
    }
}

/// Appends to the audit log off the runtime (it fsyncs).
pub async fn audit(
    app: &AppState,
    actor: &Actor,
    action: &'static str,
    outcome: &'static str,
    detail: String,
) {
    let ops = Arc::clone(&app.operators);
    let (who, source) = (actor.principal.actor(), actor.source());
    let done = tokio::task::spawn_blocking(move || {
        ops.record(&who, &source, action, outcome, &detail);
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "audit log write panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_routes() {
        let r = |m: Method, p: &str| required_role(&m, p);
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::POST, "/api/v1/ingest"), None);
        assert_eq!(r(Method::POST, "/api/v1/enrol"), None);
        assert_eq!(r(Method::GET, "/assets/app.js"), None);
        assert_eq!(r(Method::GET, "/api/v1/openapi.json"), None);
        assert_eq!(r(Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/api/v1/devices"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/"), Some(Role::Viewer));
        assert_eq!(
            r(Method::POST, "/prometheus/api/v1/query"),
            Some(Role::Viewer)
        );
        assert_eq!(r(Method::POST, "/api/v1/silences"), Some(Role::Operator));
        assert_eq!(
            r(Method::DELETE, "/api/v1/silences/x"),
            Some(Role::Operator)
        );
        assert_eq!(
            r(Method::PUT, "/api/v1/devices/d/tags"),
            Some(Role::Operator)
        );
        assert_eq!(r(Method::POST, "/api/v1/rules/reload"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/audit"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/users"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/usersx"), Some(Role::Viewer));
    }
}
