//! Abuse limits: how fast one device may publish, and how many MQTT connections the server,
//! and one source address, may have open or open per second.
//!
//! Everything here is a [`TokenBucket`]: `burst` tokens at most, refilled at `per_second`,
//! one token per message or new connection. Time comes in as milliseconds from the caller
//! (the server's [`crate::clock::Clock`]), so tests move it by hand.
//!
//! - [`DeviceRate`]: one bucket per device id, shared by MQTT and HTTP ingest. What to do
//!   when it is empty is the transport's choice: MQTT 5 refuses the publish (PUBACK "quota
//!   exceeded"), MQTT 3.1.1 stops reading the connection until a token is due, HTTP answers
//!   429 with `Retry-After`. Nothing is ever acknowledged and dropped.
//! - [`Connections`]: open connections in total and per source address, and new connections
//!   per second per address. A connection over the rate waits for its token (at most
//!   [`MAX_CONNECT_DELAY_MS`]), so a reconnect storm from one address is served at the rate,
//!   not refused outright and not served unbounded.
//!
//! Both report at most once per [`REPORT_EVERY_MS`] per device or address, so a flood makes
//! one security event a minute, not one per message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A limited device or address is reported (security event) at most this often.
pub const REPORT_EVERY_MS: i64 = 60_000;
/// Longest a new connection is held back to keep to its address's connection rate; one
/// that would have to wait longer is refused.
pub const MAX_CONNECT_DELAY_MS: i64 = 5_000;
/// Most devices with a rate bucket; past it, buckets that are full again are forgotten
/// (a full bucket is the same as none).
const MAX_DEVICES: usize = 1_000_000;
/// Most source addresses tracked, likewise.
const MAX_ADDRESSES: usize = 200_000;
/// Forgetting full buckets scans the map; at most once a second.
const SWEEP_EVERY_MS: i64 = 1_000;

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens held (at least 1).
    pub burst: f64,
}

impl Rate {
    /// A rate of `per_second` (> 0) with a burst of `burst` (≥ 1); `None` otherwise.
    pub fn new(per_second: f64, burst: f64) -> Option<Rate> {
        (per_second.is_finite() && per_second > 0.0 && burst.is_finite() && burst >= 1.0)
            .then_some(Rate { per_second, burst })
    }

    /// Milliseconds for `tokens` to be added, rounded up.
    fn ms_for(&self, tokens: f64) -> i64 {
        let ms = (tokens * 1000.0 / self.per_second).ceil();
        if ms >= i64::MAX as f64 {
            i64::MAX
        } else {
            ms as i64
        }
    }
}

/// One bucket. Starts full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn full(rate: Rate, now_ms: i64) -> Self {
        Self {
            tokens: rate.burst,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: i64) {
        // A clock that steps back adds nothing (and takes nothing away).
        if now_ms > self.last_ms {
            let added = (now_ms - self.last_ms) as f64 * rate.per_second / 1000.0;
            self.tokens = (self.tokens + added).min(rate.burst);
            self.last_ms = now_ms;
        }
    }

    /// Takes a token, or says in how many milliseconds one will be there.
    pub fn take(&mut self, rate: Rate, now_ms: i64) -> Result<(), i64> {
        self.refill(rate, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(rate.ms_for(1.0 - self.tokens).max(1))
        }
    }

    /// Takes a token now or reserves the next one due: returns how long the caller must
    /// wait for it (0 when there was one). Reservations queue, so the n-th caller waits n
    /// refill periods. Refused, taking nothing, when the wait would exceed `max_wait_ms`.
    pub fn reserve(&mut self, rate: Rate, now_ms: i64, max_wait_ms: i64) -> Result<i64, i64> {
        self.refill(rate, now_ms);
        let wait = if self.tokens >= 1.0 {
            0
        } else {
            rate.ms_for(1.0 - self.tokens)
        };
        if wait > max_wait_ms {
            return Err(wait);
        }
        self.tokens -= 1.0;
        Ok(wait)
    }

    /// Whether the bucket has refilled completely by `now_ms` (then it can be forgotten).
    pub fn is_full(&self, rate: Rate, now_ms: i64) -> bool {
        let mut b = *self;
        b.refill(rate, now_ms);
        b.tokens >= rate.burst
    }
}

/// A publish over its device's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the next message would be accepted.
    pub retry_after_ms: i64,
    /// Set when this is to be reported: the messages limited since the last report,
    /// this one included.
    pub report: Option<u64>,
}

impl Limited {
    /// The wait in whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> i64 {
        (self.retry_after_ms.saturating_add(999) / 1000).max(1)
    }
}

#[derive(Debug, Clone, Copy)]
struct DeviceBucket {
    bucket: TokenBucket,
    reported_ms: Option<i64>,
    unreported: u64,
}

/// Message rate per device id, across transports.
pub struct DeviceRate {
    rate: Option<Rate>,
    inner: Mutex<Buckets<String, DeviceBucket>>,
}

#[derive(Debug)]
struct Buckets<K, V> {
    map: HashMap<K, V>,
    swept_ms: i64,
}

impl<K, V> Default for Buckets<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            swept_ms: i64::MIN,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a limited key is due a report now; counts it either way.
fn due_report(reported_ms: &mut Option<i64>, unreported: &mut u64, now_ms: i64) -> Option<u64> {
    *unreported += 1;
    if reported_ms.is_none_or(|t| now_ms.saturating_sub(t) >= REPORT_EVERY_MS) {
        *reported_ms = Some(now_ms);
        Some(std::mem::take(unreported))
    } else {
        None
    }
}

impl DeviceRate {
    /// `None`: no limit.
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            rate,
            inner: Mutex::default(),
        }
    }

    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// Counts one message of `device` at `now_ms`.
    pub fn check(&self, device: &str, now_ms: i64) -> Result<(), Limited> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let mut inner = lock(&self.inner);
        if !inner.map.contains_key(device) && inner.map.len() >= MAX_DEVICES {
            sweep(&mut inner, now_ms, |b: &DeviceBucket| {
                b.bucket.is_full(rate, now_ms)
                    && b.reported_ms
                        .is_none_or(|t| now_ms.saturating_sub(t) >= REPORT_EVERY_MS)
            });
            if inner.map.len() >= MAX_DEVICES {
                // Every tracked device is busy: more devices than this cannot be told
                // apart from a flood of new ids, so the newcomer waits like a limited one.
                return Err(Limited {
                    retry_after_ms: rate.ms_for(1.0),
                    report: None,
                });
            }
        }
        let entry = inner
            .map
            .entry(device.to_owned())
            .or_insert_with(|| DeviceBucket {
                bucket: TokenBucket::full(rate, now_ms),
                reported_ms: None,
                unreported: 0,
            });
        entry.bucket.take(rate, now_ms).map_err(|wait| Limited {
            retry_after_ms: wait,
            report: due_report(&mut entry.reported_ms, &mut entry.unreported, now_ms),
        })
    }
}

fn sweep<K, V>(inner: &mut Buckets<K, V>, now_ms: i64, forgettable: impl Fn(&V) -> bool) {
    if now_ms.saturating_sub(inner.swept_ms) < SWEEP_EVERY_MS {
        return;
    }
    inner.swept_ms = now_ms;
    inner.map.retain(|_, v| !forgettable(v));
}

/// The connection limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// Open connections in all (0: no limit).
    pub max_total: usize,
    /// Open connections per source address (0: no limit).
    pub max_per_address: usize,
    /// New connections per second per source address (`None`: no limit).
    pub rate: Option<Rate>,
    /// Apply the per-address limits to loopback addresses too (off by default: the
    /// simulator and `fleetmon demo` open thousands of connections from 127.0.0.1).
    pub limit_loopback: bool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_total: 100_000,
            max_per_address: 1_000,
            rate: Rate::new(50.0, 500.0),
            limit_loopback: false,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server has `max_total` connections open.
    Total,
    /// The address has `max_per_address` connections open.
    PerAddress,
    /// The address opens connections faster than its rate, even after the longest wait.
    Rate,
}

impl Refused {
    /// The `reason` label of `fleetmon_mqtt_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerAddress => "max_connections_per_address",
            Refused::Rate => "connection_rate",
        }
    }
}

/// A refused connection, and whether to report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub why: Refused,
    /// Set when due a report: refusals of this address since the last report.
    pub report: Option<u64>,
}

#[derive(Debug, Default)]
struct Address {
    open: usize,
    bucket: Option<TokenBucket>,
    reported_ms: Option<i64>,
    unreported: u64,
}

#[derive(Debug, Default)]
struct ConnInner {
    total: usize,
    total_reported_ms: Option<i64>,
    total_unreported: u64,
    addresses: Buckets<IpAddr, Address>,
}

/// Open connections and connection rates; shared by the MQTT listeners.
#[derive(Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    inner: Mutex<ConnInner>,
}

/// A connection counted as open until dropped.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Connections>,
    /// The address it counts against, when per-address limits apply.
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = lock(&self.owner.inner);
        inner.total = inner.total.saturating_sub(1);
        if let Some(ip) = self.address
            && let Some(a) = inner.addresses.map.get_mut(&ip)
        {
            a.open = a.open.saturating_sub(1);
        }
    }
}

/// The key an address counts under: IPv4 as is, IPv6 by its /64 (one subscriber's
/// prefix), IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(s.into())
        }
        v4 => v4,
    }
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::default(),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Admits a new connection from `ip` at `now_ms`: its slot and how long it must wait
    /// before being served (the connection rate), or why it is refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now_ms: i64) -> Result<(Slot, Duration), Refusal> {
        let limits = self.limits;
        let mut inner = lock(&self.inner);
        let per_address = limits.limit_loopback || !ip.to_canonical().is_loopback();
        let key = address_key(ip);
        if limits.max_total > 0 && inner.total >= limits.max_total {
            // The total limit is the whole server's: reported once a minute in all.
            let i = &mut *inner;
            let report = due_report(&mut i.total_reported_ms, &mut i.total_unreported, now_ms);
            return Err(Refusal {
                why: Refused::Total,
                report,
            });
        }
        let mut wait_ms = 0;
        if per_address {
            if !inner.addresses.map.contains_key(&key) && inner.addresses.map.len() >= MAX_ADDRESSES
            {
                let rate = limits.rate;
                sweep(&mut inner.addresses, now_ms, |a: &Address| {
                    a.open == 0
                        && a.reported_ms
                            .is_none_or(|t| now_ms.saturating_sub(t) >= REPORT_EVERY_MS)
                        && match (rate, a.bucket) {
                            (Some(r), Some(b)) => b.is_full(r, now_ms),
                            _ => true,
                        }
                });
            }
            let a = inner.addresses.map.entry(key).or_default();
            let mut refused = None;
            if limits.max_per_address > 0 && a.open >= limits.max_per_address {
                refused = Some(Refused::PerAddress);
            } else if let Some(rate) = limits.rate {
                let bucket = a
                    .bucket
                    .get_or_insert_with(|| TokenBucket::full(rate, now_ms));
                match bucket.reserve(rate, now_ms, MAX_CONNECT_DELAY_MS) {
                    Ok(w) => wait_ms = w,
                    Err(_) => refused = Some(Refused::Rate),
                }
            }
            if let Some(why) = refused {
                let report = due_report(&mut a.reported_ms, &mut a.unreported, now_ms);
                return Err(Refusal { why, report });
            }
            a.open += 1;
        }
        inner.total += 1;
        let slot = Slot {
            owner: Arc::clone(self),
            address: per_address.then_some(key),
        };
        Ok((slot, Duration::from_millis(wait_ms.unsigned_abs())))
    }

    /// Open connections counted, in all.
    pub fn open(&self) -> usize {
        lock(&self.inner).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate::new(per_second, burst).unwrap()
    }

    #[test]
    fn a_bucket_gives_its_burst_then_keeps_to_the_rate() {
        let clock = ManualClock::new(1_000_000);
        let r = rate(10.0, 5.0);
        let mut b = TokenBucket::full(r, clock.now_ms());
        for _ in 0..5 {
            assert_eq!(b.take(r, clock.now_ms()), Ok(()));
        }
        // Empty: the next token is due in 100 ms.
        assert_eq!(b.take(r, clock.now_ms()), Err(100));
        clock.advance_ms(40);
        assert_eq!(b.take(r, clock.now_ms()), Err(60));
        clock.advance_ms(60);
        assert_eq!(b.take(r, clock.now_ms()), Ok(()));
        // A long pause refills to the burst, not beyond.
        clock.advance_ms(3_600_000);
        assert!(b.is_full(r, clock.now_ms()));
        let taken = (0..100)
            .filter(|_| b.take(r, clock.now_ms()).is_ok())
            .count();
        assert_eq!(taken, 5);
        // Over a minute of steady demand, exactly the burst plus the rate gets through.
        let mut b = TokenBucket::full(r, clock.now_ms());
        let mut ok = 0;
        for _ in 0..60_000 {
            if b.take(r, clock.now_ms()).is_ok() {
                ok += 1;
            }
            clock.advance_ms(1);
        }
        assert_eq!(ok, 5 + 600 - 1, "burst 5 + 10/s over 59.999 s");
    }

    #[test]
    fn a_clock_stepping_back_neither_adds_nor_removes() {
        let r = rate(1.0, 1.0);
        let mut b = TokenBucket::full(r, 10_000);
        assert_eq!(b.take(r, 10_000), Ok(()));
        assert!(b.take(r, 5_000).is_err());
        assert_eq!(b.take(r, 11_000), Ok(()));
    }

    #[test]
    fn reservations_queue_up_to_the_longest_wait() {
        let r = rate(2.0, 2.0);
        let mut b = TokenBucket::full(r, 0);
        assert_eq!(b.reserve(r, 0, 1_000), Ok(0));
        assert_eq!(b.reserve(r, 0, 1_000), Ok(0));
        assert_eq!(b.reserve(r, 0, 1_000), Ok(500));
        assert_eq!(b.reserve(r, 0, 1_000), Ok(1_000));
        // The next would wait 1.5 s: refused, and nothing taken.
        assert_eq!(b.reserve(r, 0, 1_000), Err(1_500));
        assert_eq!(b.reserve(r, 500, 1_000), Ok(1_000));
    }

    #[test]
    fn devices_have_their_own_buckets_and_are_reported_once_a_minute() {
        let clock = ManualClock::new(0);
        let limiter = DeviceRate::new(Some(rate(1.0, 2.0)));
        assert!(limiter.check("a", clock.now_ms()).is_ok());
        assert!(limiter.check("a", clock.now_ms()).is_ok());
        let first = limiter.check("a", clock.now_ms()).unwrap_err();
        assert_eq!(first.retry_after_ms, 1000);
        assert_eq!(first.retry_after_secs(), 1);
        assert_eq!(
            first.report,
            Some(1),
            "the first limited message is reported"
        );
        assert!(limiter.check("b", clock.now_ms()).is_ok(), "b is not a");
        for _ in 0..10 {
            assert_eq!(limiter.check("a", clock.now_ms()).unwrap_err().report, None);
        }
        clock.advance_ms(REPORT_EVERY_MS);
        // Refilled: accepted, and not reported.
        assert!(limiter.check("a", clock.now_ms()).is_ok());
        assert!(limiter.check("a", clock.now_ms()).is_ok());
        assert_eq!(
            limiter.check("a", clock.now_ms()).unwrap_err().report,
            Some(11),
            "a minute on, one report counts the ten suppressed and this one"
        );
        assert!(DeviceRate::new(None).check("a", 0).is_ok());
    }

    #[test]
    fn connections_are_limited_per_address_and_in_all() {
        let limits = ConnectionLimits {
            max_total: 3,
            max_per_address: 2,
            rate: None,
            limit_loopback: false,
        };
        let c = Connections::new(limits);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = c.admit(a, 0).unwrap();
        let _a2 = c.admit(a, 0).unwrap();
        let refused = c.admit(a, 0).unwrap_err();
        assert_eq!(refused.why, Refused::PerAddress);
        assert_eq!(refused.report, Some(1));
        assert_eq!(c.admit(a, 0).unwrap_err().report, None);
        let _b1 = c.admit(b, 0).unwrap();
        assert_eq!(c.admit(lo, 0).unwrap_err().why, Refused::Total);
        drop(a1);
        assert_eq!(c.open(), 2);
        // Loopback is exempt from the per-address limit by default, not from the total.
        let _l1 = c.admit(lo, 0).unwrap();
        assert_eq!(c.admit(lo, 0).unwrap_err().why, Refused::Total);
    }

    #[test]
    fn a_connection_storm_waits_for_the_rate_and_the_rest_is_refused() {
        let limits = ConnectionLimits {
            max_total: 0,
            max_per_address: 0,
            rate: Rate::new(1.0, 2.0),
            limit_loopback: true,
        };
        let c = Connections::new(limits);
        let lo: IpAddr = "::1".parse().unwrap();
        let mut waits = Vec::new();
        let mut slots = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            match c.admit(lo, 0) {
                Ok((slot, wait)) => {
                    slots.push(slot);
                    waits.push(wait.as_millis());
                }
                Err(r) => {
                    assert_eq!(r.why, Refused::Rate);
                    refused += 1;
                }
            }
        }
        assert_eq!(waits, [0, 0, 1000, 2000, 3000, 4000, 5000]);
        assert_eq!(refused, 13);
        // Another address is not slowed by this one.
        assert_eq!(
            c.admit("192.0.2.9".parse().unwrap(), 0).unwrap().1,
            Duration::ZERO
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
