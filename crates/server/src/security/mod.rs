//! Device security: who a device is, what it may do, and what the server noticed.
//!
//! - [`ca`]: the built-in certificate authority on disk (`fleetmon ca ...`): CA, server and
//!   device certificates, the index that is also the revocation list, enrolment tokens.
//! - [`tls`]: the devices' mutual-TLS listener; the certificate's common name is the device.
//! - [`live`]: connections by certificate — one certificate, one connection; revocation
//!   closes live connections.
//! - [`events`]: security events, their counters and series.
//! - [`enrol`]: a device's certificate request signed in exchange for a single-use token.
//!
//! Topic ACLs are enforced where topics are: in [`crate::mqtt::session`], with [`acl`] here.
//! [`watch`] keeps the server current without restarts: it polls the CA index (revocations
//! take effect on live connections within a second), the server certificate files, and the
//! certificates about to expire.

pub mod acl;
pub mod ca;
pub mod enrol;
pub mod events;
pub mod journal;
pub mod live;
pub mod tls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clock::Clock;
use ca::CaDir;
use events::{Events, Kind};
use live::LiveCerts;

/// How often the revocation list is looked at.
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often the server certificate files are looked at.
const CERT_POLL: Duration = Duration::from_secs(1);
/// How often issued certificates are checked for expiry.
const EXPIRY_SCAN: Duration = Duration::from_secs(3600);

/// Shared security state.
pub struct Security {
    pub events: Events,
    /// The built-in CA, when the server has one (enrolment, revocation list).
    pub ca: Option<CaDir>,
    pub live: LiveCerts,
    /// A certificate expiring sooner than this is reported.
    pub expiry_warning_ms: i64,
    revoked: RwLock<HashSet<String>>,
    /// Serials already reported as expiring.
    warned: Mutex<HashSet<String>>,
    clock: Arc<dyn Clock>,
}

impl Security {
    pub fn new(events: Events, clock: Arc<dyn Clock>) -> Self {
        Self {
            events,
            ca: None,
            live: LiveCerts::default(),
            expiry_warning_ms: 30 * 86_400_000,
            revoked: RwLock::new(HashSet::new()),
            warned: Mutex::new(HashSet::new()),
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(serial)
    }

    /// Replaces the revocation list; returns the serials new to it.
    pub fn set_revoked(&self, serials: HashSet<String>) -> HashSet<String> {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let fresh = serials.difference(&revoked).cloned().collect();
        *revoked = serials;
        fresh
    }

    /// Reads the CA's revocation list and closes the live connections of newly revoked
    /// certificates.
    pub fn refresh_revocations(&self) {
        let Some(ca) = &self.ca else { return };
        let serials = match ca.revoked_serials() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading the revocation list failed; keeping the last one");
                return;
            }
        };
        let fresh = self.set_revoked(serials);
        if fresh.is_empty() {
            return;
        }
        let now = self.now_ms();
        for (device, peer) in self.live.close(&fresh) {
            self.events.record(
                now,
                Kind::CertificateRevoked,
                Some(&device),
                Some(peer),
                "certificate revoked while connected; connection closed",
            );
        }
    }

    /// Reports a certificate that expires within the warning period, once per certificate.
    pub fn check_expiry(
        &self,
        device: &str,
        serial: &str,
        not_after_ms: i64,
        source: Option<SocketAddr>,
    ) {
        let now = self.now_ms();
        if not_after_ms - now > self.expiry_warning_ms {
            return;
        }
        if !self
            .warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial.to_owned())
        {
            return;
        }
        let days = (not_after_ms - now).max(0) as f64 / 86_400_000.0;
        self.events.record(
            now,
            Kind::CertificateExpiring,
            Some(device),
            source,
            format!("certificate {serial} expires in {days:.1} days"),
        );
    }

    /// Reports the newest unrevoked certificate of each device when it expires soon.
    fn scan_expiry(&self) {
        let Some(ca) = &self.ca else { return };
        let Ok(all) = ca.list() else { return };
        let mut newest: std::collections::HashMap<&str, &ca::Issued> = Default::default();
        for c in &all {
            let slot = newest.entry(&c.device).or_insert(c);
            if c.issued_ms >= slot.issued_ms {
                *slot = c;
            }
        }
        let now = self.now_ms();
        for c in newest.values() {
            if c.revoked_ms.is_none() && c.not_after_ms > now {
                self.check_expiry(&c.device, &c.serial, c.not_after_ms, None);
            }
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Keeps revocations, the server certificate and expiry warnings current until shutdown.
pub async fn watch(
    security: Arc<Security>,
    server_cert: Option<Arc<tls::ReloadingCert>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let index = security.ca.as_ref().map(CaDir::index_path);
    let mut index_stamp = index.as_deref().and_then(stamp);
    security.refresh_revocations();
    security.scan_expiry();
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cert_poll = tokio::time::Instant::now();
    let mut last_scan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                security.events.sync();
                return;
            }
            _ = tick.tick() => {}
        }
        security.events.sync();
        if let Some(index) = &index {
            let now = stamp(index);
            if now != index_stamp {
                index_stamp = now;
                security.refresh_revocations();
            }
        }
        if let Some(cert) = &server_cert
            && last_cert_poll.elapsed() >= CERT_POLL
        {
            last_cert_poll = tokio::time::Instant::now();
            match cert.reload_if_changed() {
                Ok(true) => tracing::info!("server certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "server certificate changed but did not load; keeping the old one")
                }
            }
        }
        if last_scan.elapsed() >= EXPIRY_SCAN {
            last_scan = tokio::time::Instant::now();
            security.scan_expiry();
        }
    }
}
