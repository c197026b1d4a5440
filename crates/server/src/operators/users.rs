//! Operator accounts and API tokens in `DATA_DIR/users.json`: names, roles, Argon2id password
//! hashes, TOTP secrets, and the SHA-256 of each API token. Never a password or a token.
//!
//! The file is replaced whole (temporary file, fsync, rename, directory fsync) under
//! `users.lock`, so the CLI (`fleetmon user add`) and a running server can both change it. The
//! server re-reads it when its size, time or inode changes, so a user added from the command
//! line can log in at once and a removed one is out at their next request.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use super::{Role, random_bytes, sha256_hex};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {problem}")]
    Damaged { path: PathBuf, problem: String },
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("an API token named {0:?} already exists")]
    TokenExists(String),
    #[error("no API token named {0:?}")]
    NoSuchToken(String),
    #[error("user {0:?} is the last admin; make another admin first")]
    LastAdmin(String),
    #[error(
        "name {0:?}: expected 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
    )]
    BadName(String),
    #[error("password too short: at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error("no secure random numbers")]
    Random,
}

/// An operator account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id in PHC string form (algorithm, parameters, salt, hash).
    pub password: String,
    /// The TOTP secret in base32 when two-factor login is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    pub created_ms: i64,
}

/// An API token for automation: its name, role and SHA-256; the token itself is shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    pub created_ms: i64,
    /// The account that made it over the API; it is revoked with that account. None for
    /// tokens made on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// What `users.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

impl Accounts {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.tokens.is_empty()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The token whose hash is `sha256(token)`.
    pub fn token(&self, token: &str) -> Option<&ApiToken> {
        let hash = sha256_hex(token.as_bytes());
        self.tokens
            .iter()
            .find(|t| super::same(t.sha256.as_bytes(), hash.as_bytes()))
    }
}

/// Checks a user or token name.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_owned()))
    }
}

/// Argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane) with a random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::WeakPassword);
    }
    let salt_bytes = random_bytes::<16>().ok_or(UserError::Random)?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| UserError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. A damaged hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// `users.json` and a cached copy of it.
pub struct UserStore {
    path: PathBuf,
    cache: Mutex<(Option<Stamp>, Arc<Accounts>)>,
}

impl UserStore {
    /// The store of `DATA_DIR/users.json` (which need not exist yet).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("users.json"),
            cache: Mutex::new((None, Arc::new(Accounts::default()))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> UserError {
        UserError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<Accounts, UserError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| UserError::Damaged {
                path: self.path.clone(),
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Accounts::default()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The accounts as on disk now (re-read only when the file changed). A file that cannot
    /// be read keeps the last good copy, and says so in the log.
    pub fn accounts(&self) -> Arc<Accounts> {
        let now = stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != now {
            match self.read() {
                Ok(a) => *cache = (now, Arc::new(a)),
                Err(e) => tracing::error!(error = %e, "operator accounts not reloaded"),
            }
        }
        Arc::clone(&cache.1)
    }

    fn lock(&self) -> Result<File, UserError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("users.lock"))
            .map_err(|e| self.io(e))?;
        f.lock().map_err(|e| self.io(e))?;
        Ok(f)
    }

    /// Reads the file fresh under the lock, applies `change`, and writes it back whole.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Accounts) -> Result<T, UserError>,
    ) -> Result<T, UserError> {
        let _lock = self.lock()?;
        let mut accounts = self.read()?;
        let out = change(&mut accounts)?;
        let json = serde_json::to_vec_pretty(&accounts).map_err(|e| UserError::Damaged {
            path: self.path.clone(),
            problem: e.to_string(),
        })?;
        write_atomic(&self.path, &json).map_err(|e| self.io(e))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        *cache = (stamp(&self.path), Arc::new(accounts));
        Ok(out)
    }

    /// Adds a user with a new password; refuses an existing name.
    pub fn add_user(&self, user: User) -> Result<(), UserError> {
        check_name(&user.name)?;
        self.update(|a| {
            if a.user(&user.name).is_some() {
                return Err(UserError::Exists(user.name.clone()));
            }
            a.users.push(user);
            Ok(())
        })
    }

    /// Applies `change` to user `name`.
    pub fn change_user(&self, name: &str, change: impl FnOnce(&mut User)) -> Result<(), UserError> {
        self.update(|a| {
            let u = a
                .users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
            change(u);
            Ok(())
        })
    }

    /// Removes user `name` unless they are the last admin, and revokes the API tokens they
    /// own; returns the names of those tokens.
    pub fn remove_user_keeping_an_admin(&self, name: &str) -> Result<Vec<String>, UserError> {
        self.update(|a| {
            let user = a
                .user(name)
                .ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
            let admins = a.users.iter().filter(|u| u.role == Role::Admin).count();
            if user.role == Role::Admin && admins <= 1 {
                return Err(UserError::LastAdmin(name.to_owned()));
            }
            a.users.retain(|u| u.name != name);
            let (gone, kept) = std::mem::take(&mut a.tokens)
                .into_iter()
                .partition(|t| t.owner.as_deref() == Some(name));
            a.tokens = kept;
            Ok(gone.into_iter().map(|t: ApiToken| t.name).collect())
        })
    }

    pub fn remove_user(&self, name: &str) -> Result<(), UserError> {
        self.update(|a| {
            let before = a.users.len();
            a.users.retain(|u| u.name != name);
            if a.users.len() == before {
                return Err(UserError::NoSuchUser(name.to_owned()));
            }
            Ok(())
        })
    }

    /// Makes a token for `name` with `role`: returns the token, stores only its SHA-256.
    pub fn create_token(&self, name: &str, role: Role, now_ms: i64) -> Result<String, UserError> {
        self.create_owned_token(name, role, None, now_ms)
    }

    /// As [`Self::create_token`], the token owned by account `owner` (revoked with it).
    pub fn create_owned_token(
        &self,
        name: &str,
        role: Role,
        owner: Option<&str>,
        now_ms: i64,
    ) -> Result<String, UserError> {
        check_name(name)?;
        let token = format!(
            "fmt_{}",
            super::hex(&random_bytes::<32>().ok_or(UserError::Random)?)
        );
        self.update(|a| {
            if a.tokens.iter().any(|t| t.name == name) {
                return Err(UserError::TokenExists(name.to_owned()));
            }
            a.tokens.push(ApiToken {
                name: name.to_owned(),
                role,
                sha256: sha256_hex(token.as_bytes()),
                created_ms: now_ms,
                owner: owner.map(str::to_owned),
            });
            Ok(())
        })?;
        Ok(token)
    }

    pub fn revoke_token(&self, name: &str) -> Result<(), UserError> {
        self.update(|a| {
            let before = a.tokens.len();
            a.tokens.retain(|t| t.name != name);
            if a.tokens.len() == before {
                return Err(UserError::NoSuchToken(name.to_owned()));
            }
            Ok(())
        })
    }
}

/// Writes `bytes` to `path` whole and private (0600): temporary file, fsync, rename, and an
/// fsync of the directory so the rename itself is durable.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> User {
        User {
            name: name.to_owned(),
            role,
            password: hash_password("correct horse battery").unwrap(),
            totp: None,
            created_ms: 1,
        }
    }

    #[test]
    fn passwords_are_hashed_and_verified() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(UserError::WeakPassword)
        ));
    }

    #[test]
    fn users_and_tokens_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path());
        assert!(store.accounts().is_empty());
        store.add_user(user("ada", Role::Admin)).unwrap();
        assert!(matches!(
            store.add_user(user("ada", Role::Viewer)),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            store.add_user(user("../x", Role::Viewer)),
            Err(UserError::BadName(_))
        ));
        let token = store.create_token("ci", Role::Operator, 5).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&token) && !text.contains("correct horse"));
        let mode = std::fs::metadata(store.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Another process (a second store on the same file) sees the changes.
        let other = UserStore::new(dir.path());
        let a = other.accounts();
        assert_eq!(a.user("ada").map(|u| u.role), Some(Role::Admin));
        assert_eq!(a.token(&token).map(|t| t.role), Some(Role::Operator));
        assert!(a.token("fmt_wrong").is_none());
        other.remove_user("ada").unwrap();
        other.revoke_token("ci").unwrap();
        assert!(store.accounts().is_empty());
    }

    #[test]
    fn the_last_admin_stays_and_owned_tokens_go_with_their_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path());
        store.add_user(user("ada", Role::Admin)).unwrap();
        store.add_user(user("bob", Role::Admin)).unwrap();
        store.add_user(user("eve", Role::Viewer)).unwrap();
        store
            .create_owned_token("bobs", Role::Operator, Some("bob"), 1)
            .unwrap();
        store.create_token("ci", Role::Viewer, 1).unwrap();
        assert!(matches!(
            store.remove_user_keeping_an_admin("nobody"),
            Err(UserError::NoSuchUser(_))
        ));
        assert_eq!(store.remove_user_keeping_an_admin("bob").unwrap(), ["bobs"]);
        assert!(matches!(
            store.remove_user_keeping_an_admin("ada"),
            Err(UserError::LastAdmin(_))
        ));
        assert!(
            store
                .remove_user_keeping_an_admin("eve")
                .unwrap()
                .is_empty()
        );
        let a = store.accounts();
        let names: Vec<&str> = a.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ada"]);
        let tokens: Vec<&str> = a.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tokens, ["ci"]);
    }
}
