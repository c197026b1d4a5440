//! Operator accounts and API tokens over HTTP, admins only (the roles are in [`super::auth`]):
//! `GET`/`POST /api/v1/users`, `DELETE /api/v1/users/{name}`, `GET`/`POST /api/v1/tokens`,
//! `DELETE /api/v1/tokens/{name}`. The same store and the same rules as `fleetmon user` and
//! `fleetmon token`; every change, and every refused one, goes into the audit log with the
//! caller and their address.
//!
//! Answers never carry a password hash, a TOTP secret or a token's hash. A new account's
//! `otpauth://` URI and a new token are shown once, in the answer that made them.
//!
//! Deleting an account ends its sessions and revokes the tokens it made over the API. The last
//! admin account cannot be deleted (409), nor can an operator delete the account they are
//! signed in with (409): another admin, or the command line, does that.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use fleetmon_alert::time::format_rfc3339;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Actor, audit};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::operators::users::{self, ApiToken, User, UserError};
use crate::operators::{Role, Via, new_totp_secret};

/// An account as the API shows it.
fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "role": u.role,
        "totp": u.totp.is_some(),
        "created": format_rfc3339(u.created_ms),
        "created_ms": u.created_ms,
    })
}

/// A token as the API shows it: never the token or its hash.
fn token_json(t: &ApiToken) -> Value {
    json!({
        "name": t.name,
        "role": t.role,
        "owner": t.owner,
        "created": format_rfc3339(t.created_ms),
        "created_ms": t.created_ms,
    })
}

/// A store error as an answer: 409 for conflicts, 404 for what is not there, 400 naming the
/// field for bad input, 500 for the server's own trouble.
fn store_error(e: UserError) -> ApiError {
    let status = match &e {
        UserError::Exists(_) | UserError::TokenExists(_) | UserError::LastAdmin(_) => {
            StatusCode::CONFLICT
        }
        UserError::NoSuchUser(_) | UserError::NoSuchToken(_) => StatusCode::NOT_FOUND,
        UserError::BadName(_) => return ApiError::bad_request(format!("name: {e}")),
        UserError::WeakPassword => return ApiError::bad_request(format!("password: {e}")),
        UserError::Io { .. }
        | UserError::Damaged { .. }
        | UserError::Hash(_)
        | UserError::Random => {
            tracing::error!(error = %e, "operator accounts not changed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The role named in field `role` of a request.
fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role: {s:?} is not a role; expected viewer, operator or admin"
        ))
    })
}

/// `GET /api/v1/users`: `{"users": [{name, role, totp, created, created_ms}]}`.
pub async fn list_users(AxumState(app): AxumState<AppState>) -> Json<Value> {
    let accounts = app.operators.users.accounts();
    let users: Vec<Value> = accounts.users.iter().map(user_json).collect();
    Json(json!({ "users": users }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    role: String,
    password: String,
    #[serde(default)]
    totp: bool,
}

/// `POST /api/v1/users` with `{name, role, password, totp?}`: 201 with the account (and
/// `totp_uri` once, when two-factor login was asked for); 409 when the name is taken; 400
/// naming the field that is wrong.
pub async fn add_user(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = parse_role(&req.role)?;
    users::check_name(&req.name).map_err(store_error)?;
    if req.password.chars().count() < users::MIN_PASSWORD_CHARS {
        return Err(store_error(UserError::WeakPassword));
    }
    let ops = Arc::clone(&app.operators);
    if ops.users.accounts().user(&req.name).is_some() {
        let e = UserError::Exists(req.name.clone());
        audit(&app, &actor, "user.add", "failed", e.to_string()).await;
        return Err(store_error(e));
    }
    // The password is hashed where logins hash theirs: bounded, at low priority.
    let _permit = ops.hashing.acquire().await.map_err(internal)?;
    let worker = Arc::clone(&ops);
    let NewUser {
        name,
        password,
        totp,
        ..
    } = req;
    let done = ops
        .hasher
        .run(move || {
            let (secret, uri) = if totp {
                let (s, u) = new_totp_secret(&name).ok_or(UserError::Random)?;
                (Some(s), Some(u))
            } else {
                (None, None)
            };
            let user = User {
                name,
                role,
                password: users::hash_password(&password)?,
                totp: secret,
                created_ms: worker.now_ms(),
            };
            worker.users.add_user(user.clone())?;
            Ok::<_, UserError>((user, uri))
        })
        .await
        .ok_or_else(|| internal("adding the account failed"))?;
    match done {
        Ok((user, uri)) => {
            let with = if uri.is_some() { ", two-factor" } else { "" };
            let detail = format!("{} ({role}{with})", user.name);
            audit(&app, &actor, "user.add", "ok", detail).await;
            let mut body = user_json(&user);
            body["totp_uri"] = json!(uri);
            Ok((StatusCode::CREATED, Json(body)))
        }
        Err(e) => {
            audit(&app, &actor, "user.add", "failed", e.to_string()).await;
            Err(store_error(e))
        }
    }
}

/// `DELETE /api/v1/users/{name}`: 204; the account's sessions end and the tokens it made are
/// revoked. 409 for the last admin or the caller's own account, 404 when there is none.
pub async fn remove_user(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if matches!(actor.principal.via, Via::Session { .. }) && actor.principal.name == name {
        let message = format!(
            "user {name:?} is the account you are signed in with; another admin, or `fleetmon user remove`, can remove it"
        );
        audit(&app, &actor, "user.remove", "failed", message.clone()).await;
        return Err(ApiError::new(StatusCode::CONFLICT, message));
    }
    let ops = Arc::clone(&app.operators);
    let who = name.clone();
    let done = tokio::task::spawn_blocking(move || {
        let revoked = ops.users.remove_user_keeping_an_admin(&who)?;
        ops.sessions.end_all_of(&who);
        Ok::<_, UserError>(revoked)
    })
    .await
    .map_err(internal)?;
    match done {
        Ok(revoked) => {
            let detail = if revoked.is_empty() {
                name
            } else {
                format!("{name}; its tokens revoked: {}", revoked.join(", "))
            };
            audit(&app, &actor, "user.remove", "ok", detail).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e @ UserError::NoSuchUser(_)) => Err(store_error(e)),
        Err(e) => {
            audit(&app, &actor, "user.remove", "failed", e.to_string()).await;
            Err(store_error(e))
        }
    }
}

/// `GET /api/v1/tokens`: `{"tokens": [{name, role, owner, created, created_ms}]}`.
pub async fn list_tokens(AxumState(app): AxumState<AppState>) -> Json<Value> {
    let accounts = app.operators.users.accounts();
    let tokens: Vec<Value> = accounts.tokens.iter().map(token_json).collect();
    Json(json!({ "tokens": tokens }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: String,
}

/// `POST /api/v1/tokens` with `{name, role}`: 201 with the token, shown this once. Its role
/// may not exceed the caller's (403). The token belongs to the caller's account (a token made
/// with a token belongs to that token's account) and is revoked with it.
pub async fn create_token(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = parse_role(&req.role)?;
    users::check_name(&req.name).map_err(store_error)?;
    let p = &actor.principal;
    if role > p.role {
        let message = format!(
            "role: a token may not have more than its creator's role; {} has {}, asked for {role}",
            p.name, p.role
        );
        audit(&app, &actor, "token.create", "denied", message.clone()).await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, message));
    }
    let ops = Arc::clone(&app.operators);
    let owner = match p.via {
        Via::Session { .. } => Some(p.name.clone()),
        Via::Token => ops
            .users
            .accounts()
            .tokens
            .iter()
            .find(|t| t.name == p.name)
            .and_then(|t| t.owner.clone()),
        Via::Open => None,
    };
    let name = req.name.clone();
    let worker = Arc::clone(&ops);
    let done = tokio::task::spawn_blocking(move || {
        let now = worker.now_ms();
        let token = worker
            .users
            .create_owned_token(&name, role, owner.as_deref(), now)?;
        let made = worker
            .users
            .accounts()
            .tokens
            .iter()
            .find(|t| t.name == name)
            .cloned();
        Ok::<_, UserError>((token, made))
    })
    .await
    .map_err(internal)?;
    match done {
        Ok((token, made)) => {
            let detail = format!("{} ({role})", req.name);
            audit(&app, &actor, "token.create", "ok", detail).await;
            let mut body = made
                .as_ref()
                .map_or_else(|| json!({"name": req.name, "role": role}), token_json);
            body["token"] = json!(token);
            Ok((StatusCode::CREATED, Json(body)))
        }
        Err(e) => {
            audit(&app, &actor, "token.create", "failed", e.to_string()).await;
            Err(store_error(e))
        }
    }
}

/// `DELETE /api/v1/tokens/{name}`: 204, or 404 when there is no such token.
pub async fn revoke_token(
    AxumState(app): AxumState<AppState>,
    actor: Actor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let ops = Arc::clone(&app.operators);
    let who = name.clone();
    let done = tokio::task::spawn_blocking(move || ops.users.revoke_token(&who))
        .await
        .map_err(internal)?;
    match done {
        Ok(()) => {
            audit(&app, &actor, "token.revoke", "ok", name).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(store_error(e)),
    }
}
