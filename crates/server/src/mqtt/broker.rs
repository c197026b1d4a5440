//! The broker part of the MQTT endpoint: which client ids are connected, who subscribed to
//! what, retained messages, and routing of a publish to the subscribers it matches.
//!
//! Exact filters (the common case: a device on its own control topic) are found by hash
//! lookup; only wildcard filters are scanned, so routing does not grow with the fleet.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};

use super::filter;

/// A message on its way to a subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// Told to a session when another connection takes its client id over.
#[derive(Debug)]
pub struct Kick;

struct SessionEntry {
    id: u64,
    kick: Option<oneshot::Sender<Kick>>,
    deliveries: mpsc::Sender<Delivery>,
    filters: Vec<String>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionEntry>,
    exact: HashMap<String, Vec<(String, QoS)>>,
    wildcard: Vec<(String, String, QoS)>,
    retained: BTreeMap<String, (Bytes, QoS)>,
    next_id: u64,
}

/// Shared by every session.
#[derive(Default)]
pub struct Broker {
    inner: Mutex<Inner>,
}

/// What [`Broker::route`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub delivered: usize,
    pub dropped: usize,
}

impl Broker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session under `client_id`, kicking out any session that held it. Returns
    /// the session's id (for [`Broker::unregister`]) and the receiver of its kick.
    pub fn register(
        &self,
        client_id: &str,
        deliveries: mpsc::Sender<Delivery>,
    ) -> (u64, oneshot::Receiver<Kick>) {
        let (kick, kicked) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let entry = SessionEntry {
            id,
            kick: Some(kick),
            deliveries,
            filters: Vec::new(),
        };
        if let Some(mut old) = inner.sessions.insert(client_id.to_owned(), entry) {
            remove_filters(&mut inner, client_id, &old.filters);
            if let Some(k) = old.kick.take() {
                let _ = k.send(Kick);
            }
        }
        (id, kicked)
    }

    /// Removes the session `id` of `client_id`, unless it was already replaced.
    pub fn unregister(&self, client_id: &str, id: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(client_id).is_some_and(|s| s.id == id)
            && let Some(old) = inner.sessions.remove(client_id)
        {
            remove_filters(&mut inner, client_id, &old.filters);
        }
    }

    /// Subscribes `client_id` to a valid `filter`; returns the retained messages it matches.
    pub fn subscribe(&self, client_id: &str, filter: &str, qos: QoS) -> Vec<Delivery> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(client_id) else {
            return Vec::new();
        };
        let fresh = !session.filters.iter().any(|f| f == filter);
        if fresh {
            session.filters.push(filter.to_owned());
        }
        remove_filters(&mut inner, client_id, &[filter.to_owned()]);
        if filter::has_wildcard(filter) {
            inner
                .wildcard
                .push((filter.to_owned(), client_id.to_owned(), qos));
        } else {
            inner
                .exact
                .entry(filter.to_owned())
                .or_default()
                .push((client_id.to_owned(), qos));
        }
        inner
            .retained
            .iter()
            .filter(|(topic, _)| filter::matches(filter, topic))
            .map(|(topic, (payload, rqos))| Delivery {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: min_qos(*rqos, qos),
                retain: true,
            })
            .collect()
    }

    pub fn unsubscribe(&self, client_id: &str, filter: &str) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.get_mut(client_id) {
            s.filters.retain(|f| f != filter);
        }
        remove_filters(&mut inner, client_id, &[filter.to_owned()]);
    }

    /// Keeps (or, with an empty payload, clears) the retained message of `topic`.
    pub fn retain(&self, topic: &str, payload: Bytes, qos: QoS) {
        let mut inner = self.lock();
        if payload.is_empty() {
            inner.retained.remove(topic);
        } else {
            inner.retained.insert(topic.to_owned(), (payload, qos));
        }
    }

    /// The retained payload of `topic`.
    pub fn retained(&self, topic: &str) -> Option<Bytes> {
        self.lock().retained.get(topic).map(|(p, _)| p.clone())
    }

    /// Sends a publish to every matching subscriber whose queue has room.
    pub fn route(&self, topic: &str, payload: &Bytes, qos: QoS) -> Routed {
        let inner = self.lock();
        let mut routed = Routed::default();
        let targets = inner
            .exact
            .get(topic)
            .into_iter()
            .flatten()
            .map(|(c, q)| (c, *q))
            .chain(
                inner
                    .wildcard
                    .iter()
                    .filter(|(f, _, _)| filter::matches(f, topic))
                    .map(|(_, c, q)| (c, *q)),
            );
        for (client, sub_qos) in targets {
            let Some(session) = inner.sessions.get(client) else {
                continue;
            };
            let delivery = Delivery {
                topic: topic.to_owned(),
                payload: payload.clone(),
                qos: min_qos(qos, sub_qos),
                retain: false,
            };
            match session.deliveries.try_send(delivery) {
                Ok(()) => routed.delivered += 1,
                Err(_) => routed.dropped += 1,
            }
        }
        routed
    }
}

fn remove_filters(inner: &mut Inner, client_id: &str, filters: &[String]) {
    for f in filters {
        if let Some(subs) = inner.exact.get_mut(f) {
            subs.retain(|(c, _)| c != client_id);
            if subs.is_empty() {
                inner.exact.remove(f);
            }
        }
        inner
            .wildcard
            .retain(|(wf, c, _)| !(wf == f && c == client_id));
    }
}

fn qos_level(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// The lower of two QoS levels.
pub fn min_qos(a: QoS, b: QoS) -> QoS {
    if qos_level(a) <= qos_level(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_exact_and_wildcard_subscribers() {
        let broker = Broker::default();
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let (id1, _) = broker.register("a", tx1);
        broker.register("b", tx2);
        broker.subscribe("a", "fleetmon/v1/d1/control", QoS::AtLeastOnce);
        broker.subscribe("b", "fleetmon/v1/+/control", QoS::AtMostOnce);
        let r = broker.route(
            "fleetmon/v1/d1/control",
            &Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
        );
        assert_eq!(
            r,
            Routed {
                delivered: 2,
                dropped: 0
            }
        );
        assert_eq!(rx1.try_recv().unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(rx2.try_recv().unwrap().qos, QoS::AtMostOnce);
        broker.unregister("a", id1);
        let r = broker.route(
            "fleetmon/v1/d1/control",
            &Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
        );
        assert_eq!(r.delivered, 1);
    }

    #[test]
    fn retained_messages_reach_later_subscribers_and_clear() {
        let broker = Broker::default();
        broker.retain(
            "fleetmon/v1/d/status",
            Bytes::from_static(b"online"),
            QoS::AtLeastOnce,
        );
        let (tx, _rx) = mpsc::channel(4);
        broker.register("c", tx);
        let got = broker.subscribe("c", "fleetmon/v1/+/status", QoS::AtLeastOnce);
        assert_eq!(got.len(), 1);
        assert!(got[0].retain);
        broker.retain("fleetmon/v1/d/status", Bytes::new(), QoS::AtLeastOnce);
        assert!(broker.subscribe("c", "#", QoS::AtMostOnce).is_empty());
    }

    #[test]
    fn a_second_connection_kicks_the_first() {
        let broker = Broker::default();
        let (tx, _rx) = mpsc::channel(1);
        let (id1, mut kicked) = broker.register("dev", tx.clone());
        assert!(kicked.try_recv().is_err());
        broker.register("dev", tx);
        assert!(kicked.try_recv().is_ok());
        // The old session's late unregister must not remove the new one.
        broker.unregister("dev", id1);
        assert_eq!(broker.lock().sessions.len(), 1);
    }
}
