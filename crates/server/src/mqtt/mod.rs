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

use tokio::sync::watch;

use crate::ingest::Ingest;
use crate::listener::Listener;
use crate::state::State;
use broker::Broker;

/// What every session needs.
pub struct Context {
    pub state: Arc<State>,
    pub ingest: Ingest,
    pub broker: Broker,
    /// Largest MQTT packet read (remaining length), in bytes.
    pub max_packet_bytes: usize,
    pub connect_timeout: Duration,
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
            connect_timeout: Duration::from_secs(10),
            auto_ids: AtomicU64::new(0),
        }
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
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let peer = incoming.peer();
            match incoming.establish().await {
                Ok(conn) => session::run(conn, ctx, shutdown).await,
                Err(e) => tracing::debug!(%peer, error = %e, "MQTT connection setup failed"),
            }
        });
    }
}
