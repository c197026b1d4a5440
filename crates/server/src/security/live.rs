//! Live connections by certificate: one certificate, one connection. A second connection with
//! the same certificate takes over (as a second MQTT connection with the same client id does)
//! and is flagged; a revocation closes the connections of the revoked certificates.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::Security;

/// Why the server closes a certificate's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Revoked,
    /// The same certificate connected again, from `by`.
    Shared {
        by: SocketAddr,
    },
}

struct Entry {
    id: u64,
    peer: SocketAddr,
    device: String,
    close: Option<oneshot::Sender<Close>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_serial: HashMap<String, Entry>,
}

/// The registry.
#[derive(Default)]
pub struct LiveCerts {
    inner: Mutex<Inner>,
}

impl LiveCerts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection of certificate `serial`; an older one of the same certificate
    /// is told to close, and its peer returned.
    pub fn register(
        &self,
        serial: &str,
        device: &str,
        peer: SocketAddr,
    ) -> (u64, oneshot::Receiver<Close>, Option<SocketAddr>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let old = inner.by_serial.insert(
            serial.to_owned(),
            Entry {
                id,
                peer,
                device: device.to_owned(),
                close: Some(tx),
            },
        );
        let previous = old.map(|mut old| {
            if let Some(close) = old.close.take() {
                let _ = close.send(Close::Shared { by: peer });
            }
            old.peer
        });
        (id, rx, previous)
    }

    /// Forgets connection `id` of `serial`, unless a newer one replaced it.
    pub fn unregister(&self, serial: &str, id: u64) {
        let mut inner = self.lock();
        if inner.by_serial.get(serial).is_some_and(|e| e.id == id) {
            inner.by_serial.remove(serial);
        }
    }

    /// Closes the connections of `serials`; returns `(device, peer)` of each.
    pub fn close(&self, serials: &HashSet<String>) -> Vec<(String, SocketAddr)> {
        let mut inner = self.lock();
        let mut closed = Vec::new();
        for serial in serials {
            if let Some(mut e) = inner.by_serial.remove(serial) {
                if let Some(close) = e.close.take() {
                    let _ = close.send(Close::Revoked);
                }
                closed.push((e.device, e.peer));
            }
        }
        closed
    }

    pub fn len(&self) -> usize {
        self.lock().by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unregisters its connection when dropped.
pub struct LiveGuard {
    pub(super) security: Arc<Security>,
    pub(super) serial: String,
    pub(super) id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.security.live.unregister(&self.serial, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_connection_wins_and_revocation_closes() {
        let live = LiveCerts::default();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let (id1, mut rx1, prev) = live.register("s1", "pi", a);
        assert_eq!(prev, None);
        let (id2, mut rx2, prev) = live.register("s1", "pi", b);
        assert_eq!(prev, Some(a));
        assert_eq!(rx1.try_recv().unwrap(), Close::Shared { by: b });
        live.unregister("s1", id1);
        assert_eq!(
            live.len(),
            1,
            "the old id does not remove the new connection"
        );
        let closed = live.close(&HashSet::from(["s1".to_owned()]));
        assert_eq!(closed, vec![("pi".to_owned(), b)]);
        assert_eq!(rx2.try_recv().unwrap(), Close::Revoked);
        live.unregister("s1", id2);
        assert!(live.is_empty());
    }
}
