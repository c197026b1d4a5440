//! Login sessions, in memory: a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie,
//! and a CSRF token that state-changing requests made with the cookie must echo in a header.
//! Only the id's SHA-256 is kept, so the table itself holds nothing a client could present. A
//! session ends on logout, after [`IDLE_MS`] unused or [`MAX_AGE_MS`] in all, and at restart.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{hex, random_bytes, sha256_hex};

/// The cookie's name.
pub const COOKIE: &str = "fleetmon_session";
/// A session unused this long ends.
pub const IDLE_MS: i64 = 8 * 3_600_000;
/// No session lives longer than this.
pub const MAX_AGE_MS: i64 = 24 * 3_600_000;
/// Most sessions at once; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// What state-changing requests must send in `X-CSRF-Token`.
    pub csrf: String,
    pub created_ms: i64,
    pub last_ms: i64,
}

#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`: the id (for the cookie) and the session.
    pub fn create(&self, user: &str, now_ms: i64) -> Option<(String, Session)> {
        let id = hex(&random_bytes::<32>()?);
        let session = Session {
            user: user.to_owned(),
            csrf: hex(&random_bytes::<24>()?),
            created_ms: now_ms,
            last_ms: now_ms,
        };
        let mut all = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| alive(s, now_ms));
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(sha256_hex(id.as_bytes()), session.clone());
        Some((id, session))
    }

    /// The live session with cookie value `id`, marked used.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let key = sha256_hex(id.as_bytes());
        let mut all = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        match all.get_mut(&key) {
            Some(s) if alive(s, now_ms) => {
                s.last_ms = now_ms;
                Some(s.clone())
            }
            Some(_) => {
                all.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie value `id`; returns its user.
    pub fn end(&self, id: &str) -> Option<String> {
        let key = sha256_hex(id.as_bytes());
        let mut all = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(&key).map(|s| s.user)
    }

    /// Ends every session of `user` (removed, or password changed).
    pub fn end_all_of(&self, user: &str) {
        let mut all = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| s.user != user);
    }
}

fn alive(s: &Session, now_ms: i64) -> bool {
    now_ms - s.last_ms < IDLE_MS && now_ms - s.created_ms < MAX_AGE_MS
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        MAX_AGE_MS / 1000
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_idle_too_long_or_ended() {
        let s = Sessions::default();
        let (id, session) = s.create("ada", 0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(session.csrf, id);
        assert_eq!(s.get(&id, 1000).unwrap().user, "ada");
        assert!(s.get("nope", 1000).is_none());
        assert!(s.get(&id, 1000 + IDLE_MS).is_none(), "idle");
        let (id, _) = s.create("ada", 0).unwrap();
        let mut t = 0;
        while t + IDLE_MS / 2 < MAX_AGE_MS {
            t += IDLE_MS / 2;
            assert!(s.get(&id, t).is_some());
        }
        assert!(s.get(&id, MAX_AGE_MS).is_none(), "too old");
        let (id, _) = s.create("bob", 0).unwrap();
        assert_eq!(s.end(&id).as_deref(), Some("bob"));
        assert!(s.get(&id, 1).is_none());
        let (id, _) = s.create("bob", 0).unwrap();
        s.end_all_of("bob");
        assert!(s.get(&id, 1).is_none());
    }

    #[test]
    fn cookies() {
        assert_eq!(
            cookie_value("a=1; fleetmon_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("a=1", COOKIE), None);
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
