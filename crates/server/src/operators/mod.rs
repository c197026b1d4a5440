//! Operators: the people and programs that use the HTTP API and dashboard, as opposed to
//! devices. Accounts with roles, passwords and two-factor codes, login sessions, API tokens,
//! login throttling, and the audit log of what operators did.
//!
//! - [`users`]: `users.json` — accounts (Argon2id hashes, TOTP secrets) and API token hashes.
//! - [`totp`]: RFC 6238 codes.
//! - [`session`]: login sessions and their cookies and CSRF tokens.
//! - [`throttle`]: backoff and lockout per source address and per account.
//! - [`audit`]: the hash-chained, append-only audit log.
//!
//! The HTTP side (who may call what) is `http::auth`; the login routes are `http::login`.
//!
//! **Auth mode.** While no account or token exists and the HTTP listener is on loopback, the
//! server is *open*: every request acts as an anonymous admin, as before accounts existed, and
//! the server says so in its log and at `GET /api/v1/auth`. Once an account exists, or with
//! `require_login` (which a listener beyond loopback implies), every operator route needs a
//! session or an API token.

pub mod audit;
pub mod hashing;
pub mod session;
pub mod throttle;
pub mod totp;
pub mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use audit::{Action, AuditLog};
use session::{Session, Sessions};
use throttle::{Throttle, ThrottleConfig, Throttled};
use users::{User, UserError, UserStore};

/// What an operator may do; each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: devices, fleet, alerts, rules, silences, events, metrics, queries.
    Viewer,
    /// And acts on alerts: silences; device tags.
    Operator,
    /// And changes the server: rule reloads, users, tokens, the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the operator side is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Login is needed even before any account exists (implied by a listener beyond
    /// loopback).
    pub require_login: bool,
    /// Session cookies get `Secure` (set this behind a TLS-terminating proxy).
    pub secure_cookies: bool,
    pub throttle: ThrottleConfig,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

#[derive(Debug, Clone)]
pub enum Via {
    /// Open mode: no accounts, loopback.
    Open,
    /// A login session; state-changing requests must carry its CSRF token.
    Session { csrf: String },
    /// `Authorization: Bearer` with an API token.
    Token,
}

impl Principal {
    /// The audit log's `actor`.
    pub fn actor(&self) -> String {
        match self.via {
            Via::Open => "anonymous".to_owned(),
            Via::Session { .. } => self.name.clone(),
            Via::Token => format!("token:{}", self.name),
        }
    }
}

/// Why a login failed, as the client is told (the audit log has the precise reason).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed logins; try again in {} s", .0.retry_after_secs())]
    Throttled(Throttled),
    #[error("wrong user name, password or code")]
    Rejected,
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("an account exists already; setup is over")]
    Done,
    #[error("wrong or no setup token")]
    BadToken,
    #[error(transparent)]
    User(#[from] UserError),
}

/// Most Argon2 hashes computed at once: half the cores, at least one. Further logins wait, so
/// a flood of them cannot take every core from the rest of the server.
pub fn max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

pub struct Operators {
    pub users: UserStore,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub audit: AuditLog,
    pub config: AuthConfig,
    /// Bounds concurrent password hashing.
    pub hashing: tokio::sync::Semaphore,
    /// Where passwords are hashed: low-priority threads of their own.
    pub hasher: hashing::Hashing,
    clock: Arc<dyn Clock>,
    /// SHA-256 of the one-time setup token, while there is one.
    setup_token: Mutex<Option<String>>,
    /// The last TOTP step each user logged in with: a code works once.
    totp_last: Mutex<HashMap<String, u64>>,
}

impl Operators {
    /// The operators of the server whose data directory is `data_dir`.
    pub fn new(data_dir: &Path, config: AuthConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            users: UserStore::new(data_dir),
            sessions: Sessions::default(),
            throttle: Throttle::new(config.throttle.clone()),
            audit: AuditLog::new(data_dir),
            config,
            hashing: tokio::sync::Semaphore::new(max_concurrent_hashes()),
            hasher: hashing::start(max_concurrent_hashes()),
            clock,
            setup_token: Mutex::new(None),
            totp_last: Mutex::default(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// True while requests need no login (no account, loopback, not required).
    pub fn is_open(&self) -> bool {
        !self.config.require_login && self.users.accounts().is_empty()
    }

    /// Appends to the audit log; a failure to do so is logged as an error. Blocking (fsync).
    pub fn record(&self, actor: &str, source: &str, action: &str, outcome: &str, detail: &str) {
        let a = Action {
            actor,
            source,
            action,
            outcome,
            detail,
        };
        if let Err(e) = self.audit.append(&a, self.now_ms()) {
            tracing::error!(error = %e, action, "audit log not written");
        }
    }

    /// The principal of API token `token`, if it is one.
    pub fn token_principal(&self, token: &str) -> Option<Principal> {
        let accounts = self.users.accounts();
        let t = accounts.token(token)?;
        Some(Principal {
            name: t.name.clone(),
            role: t.role,
            via: Via::Token,
        })
    }

    /// The principal of the session whose cookie value is `id`; the role is the user's now.
    pub fn session_principal(&self, id: &str) -> Option<Principal> {
        let s = self.sessions.get(id, self.now_ms())?;
        let accounts = self.users.accounts();
        let user = accounts.user(&s.user)?;
        Some(Principal {
            name: user.name.clone(),
            role: user.role,
            via: Via::Session { csrf: s.csrf },
        })
    }

    /// Checks a login and, if good, starts a session. Blocking: it hashes the password.
    /// Throttled attempts are refused before any hashing, and are not each audited.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        code: Option<&str>,
        source: Option<SocketAddr>,
    ) -> Result<(String, Session), LoginError> {
        let now = self.now_ms();
        let ip = source.map(|s| s.ip());
        self.throttle
            .check(ip, name, now)
            .map_err(LoginError::Throttled)?;
        let src = source.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        let accounts = self.users.accounts();
        let failure = match accounts.user(name) {
            None => {
                // As much work as for a real account, so timing does not tell names apart.
                let _ = users::verify_password(password, dummy_hash());
                Some("no such user")
            }
            Some(user) if !users::verify_password(password, &user.password) => {
                Some("wrong password")
            }
            Some(user) => self.check_code(user, code, now).err(),
        };
        if let Some(reason) = failure {
            self.record(name, &src, "login", "failed", reason);
            // The backoff runs from the refusal, not from the request: hashing may take a
            // while on a busy server, and the wait must still be felt by the next attempt.
            let refused = self.now_ms();
            let was_locked = self
                .throttle
                .check(ip, name, refused)
                .is_err_and(|t| t.locked);
            if let Some(t) = self.throttle.failed(ip, name, refused)
                && t.locked
                && !was_locked
            {
                let detail = format!("locked for {} s", t.retry_after_secs());
                self.record(name, &src, "login.lockout", "denied", &detail);
            }
            return Err(LoginError::Rejected);
        }
        self.throttle.succeeded(name);
        let session = self
            .sessions
            .create(name, now)
            .ok_or_else(|| LoginError::Internal("no secure random numbers".to_owned()))?;
        self.record(name, &src, "login", "ok", "");
        Ok(session)
    }

    /// The TOTP check of a login whose password was right.
    fn check_code(&self, user: &User, code: Option<&str>, now: i64) -> Result<(), &'static str> {
        let Some(secret) = &user.totp else {
            return Ok(());
        };
        let code = code.filter(|c| !c.is_empty()).ok_or("code missing")?;
        let key = totp::base32_decode(secret).ok_or("damaged TOTP secret")?;
        let mut last = self.totp_last.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last.get(&user.name).copied();
        match totp::check(&key, code, now, previous) {
            Some(step) => {
                last.insert(user.name.clone(), step);
                Ok(())
            }
            None if totp::check(&key, code, now, None).is_some() => Err("code reused"),
            None => Err("wrong code"),
        }
    }

    /// Ends the session with cookie value `id`.
    pub fn logout(&self, id: &str, source: &str) {
        if let Some(user) = self.sessions.end(id) {
            self.record(&user, source, "logout", "ok", "");
        }
    }

    /// Makes the one-time setup token (while no account exists); returns it to print.
    pub fn new_setup_token(&self) -> Option<String> {
        let token = hex(&random_bytes::<32>()?);
        *self.setup_token.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(sha256_hex(token.as_bytes()));
        Some(token)
    }

    /// Creates the first admin with the setup token, which is then spent. Blocking.
    /// Returns the TOTP `otpauth://` URI when `with_totp`.
    pub fn setup(
        &self,
        token: &str,
        name: &str,
        password: &str,
        with_totp: bool,
        source: &str,
    ) -> Result<Option<String>, SetupError> {
        let mut slot = self.setup_token.lock().unwrap_or_else(|e| e.into_inner());
        if !self.users.accounts().is_empty() {
            *slot = None;
            return Err(SetupError::Done);
        }
        let good = slot
            .as_deref()
            .is_some_and(|h| same(h.as_bytes(), sha256_hex(token.as_bytes()).as_bytes()));
        if !good {
            self.record(name, source, "setup", "failed", "wrong setup token");
            return Err(SetupError::BadToken);
        }
        let (secret, uri) = if with_totp {
            let (s, u) = new_totp_secret(name).ok_or(UserError::Random)?;
            (Some(s), Some(u))
        } else {
            (None, None)
        };
        self.users.add_user(User {
            name: name.to_owned(),
            role: Role::Admin,
            password: users::hash_password(password)?,
            totp: secret,
            created_ms: self.now_ms(),
        })?;
        *slot = None;
        self.record(
            name,
            source,
            "user.add",
            "ok",
            "first admin, by setup token",
        );
        Ok(uri)
    }
}

/// A new TOTP secret (20 random bytes, base32) and its `otpauth://` URI for `account`.
pub fn new_totp_secret(account: &str) -> Option<(String, String)> {
    let secret = totp::base32_encode(&random_bytes::<20>()?);
    let uri = totp::otpauth_uri("fleetmon", account, &secret);
    Some((secret, uri))
}

/// The hash checked when the account does not exist.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        users::hash_password("no such account, no such password").unwrap_or_default()
    })
}

/// `N` bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(b)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Equal, in time that depends only on the lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn operators(dir: &Path) -> (Operators, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let ops = Operators::new(dir, AuthConfig::default(), clock.clone());
        (ops, clock)
    }

    fn add(ops: &Operators, name: &str, role: Role, totp: Option<String>) {
        ops.users
            .add_user(User {
                name: name.to_owned(),
                role,
                password: users::hash_password("correct horse battery").unwrap(),
                totp,
                created_ms: 0,
            })
            .unwrap();
    }

    #[test]
    fn open_until_an_account_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (ops, _) = operators(dir.path());
        assert!(ops.is_open());
        add(&ops, "ada", Role::Admin, None);
        assert!(!ops.is_open());
        let required = Operators::new(
            dir.path().join("other").as_path(),
            AuthConfig {
                require_login: true,
                ..AuthConfig::default()
            },
            Arc::new(ManualClock::new(0)),
        );
        assert!(!required.is_open());
    }

    #[test]
    fn login_with_password_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let (ops, clock) = operators(dir.path());
        let (secret, _) = new_totp_secret("ada").unwrap();
        add(&ops, "ada", Role::Operator, Some(secret.clone()));
        let key = totp::base32_decode(&secret).unwrap();
        let src: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let code = totp::code_at(&key, clock.now_ms());
        assert!(matches!(
            ops.login("ada", "correct horse battery", None, Some(src)),
            Err(LoginError::Rejected)
        ));
        assert!(matches!(
            ops.login("ada", "wrong password!", Some(&code), Some(src)),
            Err(LoginError::Rejected)
        ));
        let (id, _) = ops
            .login("ada", "correct horse battery", Some(&code), Some(src))
            .unwrap();
        let p = ops.session_principal(&id).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ada", Role::Operator));
        assert!(
            matches!(
                ops.login("ada", "correct horse battery", Some(&code), Some(src)),
                Err(LoginError::Rejected)
            ),
            "a code works once"
        );
        let lines = ops.audit.read_all().unwrap();
        let reasons: Vec<&str> = lines.iter().map(|l| l.detail.as_str()).collect();
        assert_eq!(
            reasons,
            ["code missing", "wrong password", "", "code reused"]
        );
        assert!(lines.iter().all(|l| l.source == "192.0.2.7:4000"));
        assert_eq!(audit::verify(ops.audit.path()).unwrap().lines, 4);
    }

    #[test]
    fn setup_token_makes_the_first_admin_once() {
        let dir = tempfile::tempdir().unwrap();
        let (ops, _) = operators(dir.path());
        let token = ops.new_setup_token().unwrap();
        assert!(matches!(
            ops.setup("wrong", "root", "correct horse battery", false, "x"),
            Err(SetupError::BadToken)
        ));
        ops.setup(&token, "root", "correct horse battery", false, "x")
            .unwrap();
        assert_eq!(
            ops.users.accounts().user("root").map(|u| u.role),
            Some(Role::Admin)
        );
        assert!(matches!(
            ops.setup(&token, "evil", "correct horse battery", false, "x"),
            Err(SetupError::Done)
        ));
    }
}
