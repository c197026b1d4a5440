//! Login throttling, per source address and per account name: after `backoff_after` failures
//! in a row each further attempt must wait (1 s, 2 s, 4 s ... doubling), and after
//! `lockout_after` the key is locked for `lockout`. A throttled attempt is answered 429 before
//! any password is hashed, so an attack costs the server almost nothing. Failures are
//! forgotten `lockout` after the last one; a successful login clears its account's count but
//! not its address's, so logging in to one's own account does not buy more guesses at others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Most keys remembered; past it the stalest are forgotten.
const MAX_KEYS: usize = 100_000;
/// The first backoff delay.
const BASE_DELAY_MS: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures before each attempt must wait.
    pub backoff_after: u32,
    /// Failures before the key is locked.
    pub lockout_after: u32,
    /// How long a lockout lasts.
    pub lockout: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            backoff_after: 5,
            lockout_after: 10,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Account(u64),
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_ms: i64,
    blocked_until_ms: i64,
}

pub struct Throttle {
    config: ThrottleConfig,
    records: Mutex<HashMap<Key, Record>>,
}

/// Why an attempt may not be made now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_ms: i64,
    /// The lockout, rather than a backoff delay.
    pub locked: bool,
}

impl Throttled {
    /// The wait in whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> i64 {
        (self.retry_after_ms.saturating_add(999) / 1000).max(1)
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            records: Mutex::default(),
        }
    }

    fn lockout_ms(&self) -> i64 {
        i64::try_from(self.config.lockout.as_millis()).unwrap_or(i64::MAX)
    }

    fn keys(address: Option<IpAddr>, account: &str) -> impl Iterator<Item = Key> {
        // Names are hashed so that the map holds no attacker-chosen strings.
        address
            .map(Key::Address)
            .into_iter()
            .chain(std::iter::once(Key::Account(account_key(account))))
    }

    /// Whether an attempt from `address` at `account` may go ahead at `now_ms`.
    pub fn check(
        &self,
        address: Option<IpAddr>,
        account: &str,
        now_ms: i64,
    ) -> Result<(), Throttled> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut worst: Option<Throttled> = None;
        for key in Self::keys(address, account) {
            if let Some(r) = records.get(&key)
                && r.blocked_until_ms > now_ms
            {
                let t = Throttled {
                    retry_after_ms: r.blocked_until_ms - now_ms,
                    locked: r.failures >= self.config.lockout_after,
                };
                if worst.is_none_or(|w| w.retry_after_ms < t.retry_after_ms) {
                    worst = Some(t);
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Counts a failed attempt; returns the throttle now in force, if any.
    pub fn failed(&self, address: Option<IpAddr>, account: &str, now_ms: i64) -> Option<Throttled> {
        let lockout_ms = self.lockout_ms();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| now_ms - r.last_ms < lockout_ms || r.blocked_until_ms > now_ms);
            if records.len() >= MAX_KEYS {
                records.clear();
            }
        }
        for key in Self::keys(address, account) {
            let r = records.entry(key).or_default();
            if now_ms - r.last_ms >= lockout_ms && r.blocked_until_ms <= now_ms {
                *r = Record::default();
            }
            r.failures = r.failures.saturating_add(1);
            r.last_ms = now_ms;
            if r.failures >= self.config.lockout_after {
                r.blocked_until_ms = now_ms.saturating_add(lockout_ms);
            } else if r.failures >= self.config.backoff_after {
                let doublings = (r.failures - self.config.backoff_after).min(20);
                let delay = (BASE_DELAY_MS << doublings).min(lockout_ms);
                r.blocked_until_ms = now_ms.saturating_add(delay);
            }
        }
        drop(records);
        self.check(address, account, now_ms).err()
    }

    /// A successful login: the account's failures are forgotten (the address's are not).
    pub fn succeeded(&self, account: &str) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(&Key::Account(account_key(account)));
    }
}

/// A stable, per-process key for an account name.
fn account_key(account: &str) -> u64 {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static SEED: OnceLock<std::hash::RandomState> = OnceLock::new();
    SEED.get_or_init(std::hash::RandomState::new)
        .hash_one(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn backoff_then_lockout_then_forgotten() {
        let t = Throttle::new(ThrottleConfig::default());
        for i in 0..4 {
            assert_eq!(t.failed(ip(1), "ada", i), None);
        }
        let d = t.failed(ip(1), "ada", 10).unwrap();
        assert_eq!((d.retry_after_ms, d.locked), (1000, false));
        assert!(t.check(ip(1), "ada", 500).is_err());
        assert!(
            t.check(ip(2), "ada", 500).is_err(),
            "the account is throttled too"
        );
        assert!(t.check(ip(1), "bob", 500).is_err(), "and the address");
        assert!(t.check(ip(2), "bob", 500).is_ok());
        assert!(t.check(ip(1), "ada", 1010).is_ok());
        let d = t.failed(ip(1), "ada", 1010).unwrap();
        assert_eq!(d.retry_after_ms, 2000);
        let mut now = 1010;
        for _ in 0..4 {
            now += 100_000;
            t.failed(ip(1), "ada", now);
        }
        let d = t.check(ip(1), "ada", now).unwrap_err();
        assert!(d.locked);
        assert_eq!(d.retry_after_ms, 15 * 60_000);
        // A lockout is not shortened by a success elsewhere, and ends in time.
        t.succeeded("ada");
        assert!(
            t.check(ip(1), "ada", now + 1).is_err(),
            "address still locked"
        );
        assert!(t.check(ip(1), "ada", now + 15 * 60_000).is_ok());
        assert_eq!(t.failed(ip(1), "ada", now + 30 * 60_000), None, "forgotten");
    }
}
