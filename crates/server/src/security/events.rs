//! Security events: what the server saw that an operator should know about — failed TLS
//! handshakes, revoked certificates in use, topic ACL violations, one certificate used from
//! two places, certificates about to expire, enrolments, devices and addresses over the abuse
//! limits ([`crate::ratelimit`]).
//!
//! The newest [`CAPACITY`] events are kept in memory (`GET /api/v1/events`) and on disk
//! ([`super::journal`], read back at start), every event is logged, and counters survive the
//! ring buffer: `fleetmon_security_events_total{kind}` among
//! the self-metrics, and `security_auth_failures_total{device, source}` written into the
//! store with the derived series (the built-in `AuthFailureBurst` rule reads it).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

use super::journal::{self, Journal};
use crate::store::{Point, SeriesKey};
use crate::telemetry::SecurityLabels;

/// Events kept for the API.
pub const CAPACITY: usize = 1000;
/// Distinct `(device, source)` failure counters; more sources share one `other` counter.
const MAX_FAILURE_SERIES: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A TLS client presented no certificate.
    NoClientCertificate,
    /// A certificate this CA did not sign.
    UnknownCa,
    CertificateExpired,
    /// A revoked certificate at the handshake, or a live connection closed by a revocation.
    CertificateRevoked,
    /// Any other failed TLS handshake (protocol version, bad message...).
    TlsHandshakeFailed,
    /// A device published or subscribed outside its own topics, or used another client id.
    AclViolation,
    /// Two connections at once with one certificate.
    CertificateShared,
    /// A certificate in use expires within the warning period.
    CertificateExpiring,
    /// An enrolment request with a bad token or request.
    EnrolmentRefused,
    /// A device enrolled and got a certificate.
    Enrolled,
    /// A device published faster than its message rate (reported once a minute at most).
    RateLimited,
    /// MQTT connections refused by the connection limits (once a minute per address).
    ConnectionLimited,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::NoClientCertificate,
        Kind::UnknownCa,
        Kind::CertificateExpired,
        Kind::CertificateRevoked,
        Kind::TlsHandshakeFailed,
        Kind::AclViolation,
        Kind::CertificateShared,
        Kind::CertificateExpiring,
        Kind::EnrolmentRefused,
        Kind::Enrolled,
        Kind::RateLimited,
        Kind::ConnectionLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NoClientCertificate => "no_client_certificate",
            Kind::UnknownCa => "unknown_ca",
            Kind::CertificateExpired => "certificate_expired",
            Kind::CertificateRevoked => "certificate_revoked",
            Kind::TlsHandshakeFailed => "tls_handshake_failed",
            Kind::AclViolation => "acl_violation",
            Kind::CertificateShared => "certificate_shared",
            Kind::CertificateExpiring => "certificate_expiring",
            Kind::EnrolmentRefused => "enrolment_refused",
            Kind::Enrolled => "enrolled",
            Kind::RateLimited => "rate_limited",
            Kind::ConnectionLimited => "connection_limited",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Counted in `security_auth_failures_total`.
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            Kind::NoClientCertificate
                | Kind::UnknownCa
                | Kind::CertificateExpired
                | Kind::CertificateRevoked
                | Kind::TlsHandshakeFailed
                | Kind::EnrolmentRefused
        )
    }
}

/// One event as the API shows it (and the journal keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: i64,
    pub kind: Kind,
    pub device: Option<String>,
    /// The peer, `IP:PORT`.
    pub source: Option<String>,
    pub detail: String,
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub kind: Option<Kind>,
    pub device: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Default)]
struct Inner {
    ring: VecDeque<Event>,
    next_id: u64,
    /// `(device, source IP)` → failures.
    failures: HashMap<(Option<String>, String), u64>,
    /// Journal lines of events recorded since the last [`Events::sync`].
    unsynced: Vec<u8>,
}

/// The event log, shared by the listeners, the sessions and the API.
pub struct Events {
    inner: Mutex<Inner>,
    counters: Family<SecurityLabels, Counter>,
    journal: Mutex<Option<Journal>>,
}

impl Events {
    /// Events in memory only; `counters` is the self-metric family they are counted in.
    pub fn new(counters: Family<SecurityLabels, Counter>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            counters,
            journal: Mutex::new(None),
        }
    }

    /// Events kept in the journal in `dir` too, with the newest of earlier runs read back.
    pub fn open(counters: Family<SecurityLabels, Counter>, dir: &Path) -> std::io::Result<Self> {
        let (journal, recovered) = Journal::open(dir, CAPACITY)?;
        if recovered.skipped > 0 {
            tracing::warn!(
                skipped = recovered.skipped,
                "security event journal: lines that do not parse were skipped"
            );
        }
        let events = Self::new(counters);
        {
            let mut inner = events.lock();
            inner.next_id = recovered.events.iter().map(|e| e.id).max().unwrap_or(0);
            inner.ring.extend(recovered.events);
        }
        *events.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(journal);
        Ok(events)
    }

    /// Writes the events recorded since the last call to the journal (one write, one
    /// `fdatasync`). A failure is logged and those events stay in memory only.
    pub fn sync(&self) {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let Some(journal) = journal.as_mut() else {
            return;
        };
        let lines = std::mem::take(&mut self.lock().unsynced);
        if let Err(e) = journal.append(&lines) {
            tracing::error!(error = %e, "security events not written to the journal");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records (and logs) an event.
    pub fn record(
        &self,
        now_ms: i64,
        kind: Kind,
        device: Option<&str>,
        source: Option<SocketAddr>,
        detail: impl Into<String>,
    ) {
        let detail = detail.into();
        let (k, d) = (kind.as_str(), device.unwrap_or("-"));
        let src = source.map_or_else(|| "-".to_owned(), |s| s.to_string());
        if kind == Kind::Enrolled {
            tracing::info!(kind = k, device = d, source = %src, detail, "security event");
        } else {
            tracing::warn!(kind = k, device = d, source = %src, detail, "security event");
        }
        self.counters
            .get_or_create(&SecurityLabels {
                kind: kind.as_str(),
            })
            .inc();
        let mut inner = self.lock();
        if kind.is_auth_failure() {
            let ip = source.map_or_else(|| "unknown".to_owned(), |s| s.ip().to_string());
            let mut key = (device.map(str::to_owned), ip);
            if !inner.failures.contains_key(&key) && inner.failures.len() >= MAX_FAILURE_SERIES {
                key = (None, "other".to_owned());
            }
            *inner.failures.entry(key).or_default() += 1;
        }
        inner.next_id += 1;
        let event = Event {
            id: inner.next_id,
            time_ms: now_ms,
            kind,
            device: device.map(str::to_owned),
            source: source.map(|s| s.to_string()),
            detail,
        };
        if inner.ring.len() == CAPACITY {
            inner.ring.pop_front();
        }
        if inner.unsynced.len() < journal::MAX_FILE_BYTES as usize {
            let line = journal::line(&event);
            inner.unsynced.extend_from_slice(&line);
        }
        inner.ring.push_back(event);
    }

    /// Matching events, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<Event> {
        let inner = self.lock();
        inner
            .ring
            .iter()
            .rev()
            .filter(|e| filter.kind.is_none_or(|k| e.kind == k))
            .filter(|e| {
                filter
                    .device
                    .as_deref()
                    .is_none_or(|d| e.device.as_deref() == Some(d))
            })
            .take(filter.limit.unwrap_or(CAPACITY))
            .cloned()
            .collect()
    }

    /// `security_auth_failures_total{device, source}` at `now_ms`, for the store.
    pub fn series(&self, now_ms: i64) -> Vec<(SeriesKey, Point)> {
        let inner = self.lock();
        inner
            .failures
            .iter()
            .map(|((device, source), n)| {
                let mut labels = std::collections::BTreeMap::new();
                if let Some(d) = device {
                    labels.insert("device".to_owned(), d.clone());
                }
                labels.insert("source".to_owned(), source.clone());
                (
                    SeriesKey {
                        metric: "security_auth_failures_total".to_owned(),
                        labels,
                    },
                    Point {
                        ts_ms: now_ms,
                        value: *n as f64,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_filtered_bounded_and_counted() {
        let events = Events::new(Family::default());
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        for i in 0..(CAPACITY as i64 + 5) {
            events.record(i, Kind::UnknownCa, None, Some(peer), "x");
        }
        events.record(9_999, Kind::AclViolation, Some("pi-1"), Some(peer), "y");
        let all = events.list(&Filter::default());
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].kind, Kind::AclViolation);
        assert!(all.windows(2).all(|w| w[0].id > w[1].id));
        let acl = events.list(&Filter {
            device: Some("pi-1".into()),
            ..Filter::default()
        });
        assert_eq!(acl.len(), 1);
        let two = events.list(&Filter {
            kind: Some(Kind::UnknownCa),
            limit: Some(2),
            ..Filter::default()
        });
        assert_eq!(two.len(), 2);
        let series = events.series(10_000);
        assert_eq!(series.len(), 1, "ACL violations are not auth failures");
        assert_eq!(series[0].1.value, (CAPACITY + 5) as f64);
        assert_eq!(series[0].0.labels["source"], "192.0.2.1");
        assert_eq!(Kind::parse("unknown_ca"), Some(Kind::UnknownCa));
    }

    #[test]
    fn events_survive_reopening_and_ids_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let events = Events::open(Family::default(), dir.path()).unwrap();
        events.record(1, Kind::UnknownCa, None, Some(peer), "a");
        events.record(2, Kind::AclViolation, Some("pi-1"), Some(peer), "b");
        events.sync();
        events.record(3, Kind::Enrolled, Some("pi-2"), None, "not synced: lost");
        drop(events);

        let events = Events::open(Family::default(), dir.path()).unwrap();
        let listed: Vec<(u64, Kind, String)> = events
            .list(&Filter::default())
            .into_iter()
            .map(|e| (e.id, e.kind, e.detail))
            .collect();
        assert_eq!(
            listed,
            [
                (2, Kind::AclViolation, "b".to_owned()),
                (1, Kind::UnknownCa, "a".to_owned())
            ]
        );
        events.record(4, Kind::UnknownCa, None, None, "c");
        assert_eq!(events.list(&Filter::default())[0].id, 3);
    }
}
