//! Retry timing: exponential backoff with jitter, a receiver's `Retry-After`, and the token
//! bucket that rate-limits each integration.

use std::time::{Duration, Instant, SystemTime};

use crate::config::{RateLimit, RetryConfig};

/// Longest `Retry-After` honoured; a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Wait before attempt `failures + 1`: `initial * 2^(failures-1)` capped at `max`, with the
/// upper half jittered (so a fleet of notifiers does not retry in lockstep), and never less
/// than what the receiver asked for in `Retry-After` (itself capped at [`MAX_RETRY_AFTER`]).
pub fn delay(policy: &RetryConfig, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let half = base / 2;
    let jittered = half + half.mul_f64(fastrand::f64());
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// Parses a `Retry-After` value: delay in seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Token bucket for one integration.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let capacity = f64::from(limit.burst.unwrap_or(limit.per_minute).max(1));
        TokenBucket {
            capacity,
            per_sec: f64::from(limit.per_minute) / 60.0,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn doubles_within_jitter_and_caps() {
        let p = policy();
        for _ in 0..100 {
            let d1 = delay(&p, 1, None);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d3 = delay(&p, 3, None);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            let d20 = delay(&p, 20, None);
            assert!(d20 >= Duration::from_secs(30) && d20 <= Duration::from_secs(60));
            assert!(delay(&p, u32::MAX, None) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let p = policy();
        assert!(delay(&p, 1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(1 << 20))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_minute: 60,
                burst: Some(2),
            },
            t0,
        );
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(b.try_take(t0 + Duration::from_secs(1)).is_ok());
        assert!(b.try_take(t0 + Duration::from_secs(1)).is_err());
    }
}
