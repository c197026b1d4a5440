//! Secrets (HMAC keys, SMTP passwords) given inline, in a file, or in an environment variable.
//!
//! The resolved value is held in [`Secret`], whose `Debug` never shows it, so a config or an
//! error can be logged without leaking it.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from. In TOML: `secret = "..."`, `secret_file = "/path"` or
/// `secret_env = "NAME"` (and `password`, `password_file`, `password_env` for SMTP).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Env(n) => write!(f, "Env({n})"),
        }
    }
}

/// A secret value. `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a secret could not be read; names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set (or not UTF-8)")]
    Env(String),
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret now. A file's trailing newline is dropped.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretSource::Inline(v) => (v.0.clone(), "inline value".to_string()),
            SecretSource::File(p) => {
                let v = std::fs::read_to_string(p).map_err(|source| SecretError::File {
                    path: p.display().to_string(),
                    source,
                })?;
                (
                    v.trim_end_matches(['\r', '\n']).to_string(),
                    format!("file {}", p.display()),
                )
            }
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::Env(name.clone()))?,
                format!("environment variable {name}"),
            ),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(value))
    }

    /// Builds a source from the three optional config keys; at most one may be set.
    pub(crate) fn from_keys(
        what: &str,
        inline: Option<Secret>,
        file: Option<PathBuf>,
        env: Option<String>,
    ) -> Result<Option<SecretSource>, String> {
        match (inline, file, env) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => Ok(Some(SecretSource::Inline(v))),
            (None, Some(p), None) => Ok(Some(SecretSource::File(p))),
            (None, None, Some(n)) => Ok(Some(SecretSource::Env(n))),
            _ => Err(format!(
                "give at most one of `{what}`, `{what}_file` and `{what}_env`"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretSource::Inline(Secret::new("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = s.resolve().unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(r.expose(), "hunter2");
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(SecretSource::File(p).resolve().unwrap().expose(), "abc");
    }

    #[test]
    fn missing_env_is_an_error_naming_the_variable() {
        let e = SecretSource::Env("FLEETMON_NOTIFY_TEST_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("FLEETMON_NOTIFY_TEST_UNSET_VAR"));
    }
}
