//! The MQTT endpoint devices connect to: our own MQTT 3.1.1 and 5 server on rumqttc's packet
//! codecs.
//!
//! Why not an embedded broker: the delivery guarantee needs PUBACK to wait until the batch is
//! in the WAL, and an off-the-shelf broker acknowledges from memory. The broker features the
//! protocol needs — retained status, Last Will, subscriptions for the control topic, client-id
//! takeover, keepalive — are small and live in [`broker`] and [`session`].
//!
//! - [`codec`]: both protocol versions on the wire, one vocabulary inside.
//! - [`filter`]: topic filter validation and matching.
//! - [`broker`]: sessions by client id, subscriptions, retained messages, routing.
//! - [`session`]: one connection.

pub mod broker;
pub mod codec;
pub mod filter;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::ingest::Ingest;
use crate::listener::Listener;
use crate::ratelimit::{ConnectionLimits, Connections, Refusal, Refused};
use crate::security::events::Kind;
use crate::state::State;
use broker::Broker;

/// The default of [`Context::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections answered at once (CONNACK with the reason); past it they are just
/// closed, so a flood of refusals costs nothing more than the accept.
const REFUSALS_IN_FLIGHT: usize = 256;

/// What every session needs.
pub struct Context {
    pub state: Arc<State>,
    pub ingest: Ingest,
    pub broker: Broker,
    /// Largest MQTT packet read (remaining length), in bytes.
    pub max_packet_bytes: usize,
    /// A connection that has not sent CONNECT this long after it was accepted is closed.
    pub connect_timeout: Duration,
    /// Open connections in all and per address, new connections per second per address.
    pub connections: Arc<Connections>,
    refusals: Arc<Semaphore>,
    auto_ids: AtomicU64,
}

impl Context {
    pub fn new(state: Arc<State>, ingest: Ingest) -> Self {
        let max_packet_bytes = state.limits.max_payload_bytes + (64 << 10);
        Self {
            state,
            ingest,
            broker: Broker::default(),
            max_packet_bytes,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connections: Connections::new(ConnectionLimits::default()),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
            auto_ids: AtomicU64::new(0),
        }
    }

    /// Sets the connection limits and the CONNECT timeout.
    pub fn with_limits(mut self, limits: ConnectionLimits, connect_timeout: Duration) -> Self {
        self.connections = Connections::new(limits);
        self.connect_timeout = connect_timeout;
        self
    }

    /// Counts a refused connection and reports it when due.
    fn refused(&self, peer: std::net::SocketAddr, refusal: Refusal) {
        let state = &self.state;
        let reason = refusal.why.as_str();
        state
            .telemetry
            .mqtt_connections_refused
            .get_or_create(&crate::telemetry::ReasonLabels { reason })
            .inc();
        let Some(n) = refusal.report else {
            tracing::debug!(%peer, reason, "MQTT connection refused");
            return;
        };
        let limits = self.connections.limits();
        let why = match refusal.why {
            Refused::Total => format!(
                "the server has its maximum of {} connections open",
                limits.max_total
            ),
            Refused::PerAddress => format!(
                "the address has its maximum of {} connections open",
                limits.max_per_address
            ),
            Refused::Rate => match limits.rate {
                Some(r) => format!(
                    "the address opens more than {} connections/s (burst {})",
                    r.per_second, r.burst
                ),
                None => "the address opens connections too fast".to_owned(),
            },
        };
        state.security.events.record(
            state.now_ms(),
            Kind::ConnectionLimited,
            None,
            Some(peer),
            format!("{n} MQTT connection(s) refused since the last report ({reason}): {why}"),
        );
    }

    fn next_auto_id(&self) -> u64 {
        self.auto_ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Accepts connections until `shutdown` turns true; each connection gets its own task.
pub async fn serve(listener: Listener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => r,
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = incoming.peer();
        let (slot, wait) = match ctx.connections.admit(peer.ip(), ctx.state.now_ms()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                ctx.refused(peer, refusal);
                // Dropping `incoming` closes it; answer with a reason while that is cheap.
                if let Ok(permit) = Arc::clone(&ctx.refusals).try_acquire_owned() {
                    let max = ctx.max_packet_bytes;
                    tokio::spawn(async move {
                        session::refuse_connection(incoming, max).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if !wait.is_zero() {
                // Over its address's connection rate: served when its turn comes.
                ctx.state.telemetry.mqtt_connections_delayed.inc();
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            match incoming.establish().await {
                Ok(conn) => session::run(conn, ctx, shutdown).await,
                Err(e) => tracing::debug!(%peer, error = %e, "MQTT connection setup failed"),
            }
        });
    }
}
