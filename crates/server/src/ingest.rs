//! The durable core of ingest: deduplicate by `(device, seq)`, write to the WAL with group
//! commit, then make the batch visible (registry, store) and only then answer, so an
//! acknowledgement always follows durability.
//!
//! One writer thread owns the WAL. Requests queue on a channel; the writer takes everything
//! waiting (up to a bound), writes it, syncs once, and replies to all. While it syncs, the
//! next group gathers — no timer needed. A resend of a batch already stored, or already in
//! the same group, is answered `Duplicate` after that same sync, never before the original is
//! durable.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use fleetmon_protocol::Batch;
use fleetmon_protocol::pb::PbBatch;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::fleet::Transport;
use crate::state::State;
use crate::store::{Point, SeriesKey};
use crate::telemetry::BatchLabels;
use crate::wal::{RecordKind, Replay, Wal, WalError, WalOptions};

/// Largest group written with one sync.
const MAX_GROUP_BATCHES: usize = 1024;
const MAX_GROUP_BYTES: usize = 8 << 20;

/// What happened to an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored,
    Duplicate,
}

impl Accepted {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Stored => "stored",
            Accepted::Duplicate => "duplicate",
        }
    }
}

/// Why a valid batch was not accepted. Never acknowledged; the sender should retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("storage failed, batch not stored; retry later: {0}")]
    Storage(String),
    #[error("server is shutting down; retry later")]
    ShuttingDown,
}

struct Request {
    device: String,
    seq: u64,
    batch: Batch,
    transport: Transport,
    received_ms: i64,
    record: Vec<u8>,
    reply: oneshot::Sender<Result<Accepted, IngestError>>,
}

/// A handle to the ingest pipeline; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Request>,
    state: Arc<State>,
}

/// The answer to one submitted batch, awaited separately so a connection can keep reading
/// while earlier batches commit.
pub type Pending = oneshot::Receiver<Result<Accepted, IngestError>>;

impl Ingest {
    /// Replays the WAL in `dir` into `state`, then starts the writer thread.
    pub fn start(
        dir: &Path,
        options: WalOptions,
        state: Arc<State>,
    ) -> Result<(Ingest, Replay, JoinHandle<()>), WalError> {
        let (wal, replay) = Wal::open(dir, options, |kind, payload| match kind {
            RecordKind::Batch => match decode_record(payload) {
                Ok((batch, transport, received_ms)) => {
                    if !state.registry().is_stored(&batch.device, batch.seq) {
                        apply(&state, &batch, transport, received_ms);
                    }
                }
                Err(reason) => tracing::error!(%reason, "WAL record does not decode; skipped"),
            },
        })?;
        state.telemetry.wal_disk_bytes.set(gauge(wal.disk_bytes()));
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP_BATCHES);
        let writer_state = Arc::clone(&state);
        let handle = std::thread::Builder::new()
            .name("fleetmon-wal".into())
            .spawn(move || writer_loop(wal, rx, &writer_state))
            .map_err(|source| WalError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        Ok((Ingest { tx, state }, replay, handle))
    }

    /// Queues `batch` (already decoded and validated) for durable storage.
    pub async fn submit(&self, batch: Batch, transport: Transport) -> Pending {
        let (reply, pending) = oneshot::channel();
        let received_ms = self.state.now_ms();
        let record = encode_record(&batch, transport, received_ms);
        let request = Request {
            device: batch.device.clone(),
            seq: batch.seq,
            batch,
            transport,
            received_ms,
            record,
            reply,
        };
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request).await {
            let _ = request.reply.send(Err(IngestError::ShuttingDown));
        }
        pending
    }

    /// Submits and waits for the outcome.
    pub async fn store(&self, batch: Batch, transport: Transport) -> Result<Accepted, IngestError> {
        self.submit(batch, transport)
            .await
            .await
            .unwrap_or(Err(IngestError::ShuttingDown))
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// WAL payload of a batch: `received_ms: i64 LE | transport: u8 | protobuf body`.
fn encode_record(batch: &Batch, transport: Transport, received_ms: i64) -> Vec<u8> {
    let body = PbBatch::from(batch);
    let mut out = Vec::with_capacity(9 + body.encoded_len());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.push(transport.to_byte());
    body.encode(&mut out)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    out
}

fn decode_record(payload: &[u8]) -> Result<(Batch, Transport, i64), String> {
    let (head, body) = payload
        .split_at_checked(9)
        .ok_or("record shorter than 9 bytes")?;
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&head[..8]);
    let transport =
        Transport::from_byte(head[8]).ok_or_else(|| format!("unknown transport {}", head[8]))?;
    let pb = PbBatch::decode(body).map_err(|e| e.to_string())?;
    let batch = Batch::try_from(pb).map_err(|e| e.to_string())?;
    Ok((batch, transport, i64::from_le_bytes(ms)))
}

/// Makes a durable batch visible: registry and store.
fn apply(state: &State, batch: &Batch, transport: Transport, received_ms: i64) {
    state
        .registry_mut()
        .entry(&batch.device)
        .record_batch(batch, transport, received_ms);
    for s in &batch.samples {
        let mut labels: BTreeMap<String, String> = s.labels.clone();
        labels.insert("device".to_owned(), batch.device.clone());
        state.store.append(
            SeriesKey {
                metric: s.metric.clone(),
                labels,
            },
            Point {
                ts_ms: s.ts_ms,
                value: s.value,
            },
        );
    }
}

fn writer_loop(mut wal: Wal, mut rx: mpsc::Receiver<Request>, state: &State) {
    let mut group: Vec<Request> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = first.record.len();
        group.push(first);
        while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.record.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        commit_group(&mut wal, &mut group, state);
    }
    tracing::debug!("WAL writer stopped");
}

fn commit_group(wal: &mut Wal, group: &mut Vec<Request>, state: &State) {
    let duplicate: Vec<bool> = {
        let mut in_group: HashSet<(&str, u64)> = HashSet::new();
        let registry = state.registry();
        group
            .iter()
            .map(|r| registry.is_stored(&r.device, r.seq) || !in_group.insert((&r.device, r.seq)))
            .collect()
    };
    let records = group
        .iter()
        .zip(&duplicate)
        .filter(|(_, dup)| !**dup)
        .map(|(r, _)| (RecordKind::Batch, r.record.as_slice()));
    let t = &state.telemetry;
    match wal.append_group(records) {
        Ok(()) => {
            t.wal_syncs.inc();
            t.wal_disk_bytes.set(gauge(wal.disk_bytes()));
            let stored = duplicate.iter().filter(|d| !**d).count();
            t.wal_group_batches.observe(stored as f64);
            for (r, dup) in group.drain(..).zip(duplicate) {
                let outcome = if dup {
                    state.registry_mut().entry(&r.device).batches_duplicate += 1;
                    Accepted::Duplicate
                } else {
                    t.wal_bytes.inc_by(r.record.len() as u64);
                    t.samples.inc_by(r.batch.samples.len() as u64);
                    apply(state, &r.batch, r.transport, r.received_ms);
                    Accepted::Stored
                };
                t.batches
                    .get_or_create(&BatchLabels {
                        transport: r.transport.as_str(),
                        outcome: outcome.as_str(),
                    })
                    .inc();
                let _ = r.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            t.wal_errors.inc();
            tracing::error!(error = %e, batches = group.len(), "WAL append failed; group not acknowledged");
            let message = e.to_string();
            for r in group.drain(..) {
                let _ = r.reply.send(Err(IngestError::Storage(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetmon_protocol::{Limits, Sample};

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{MemoryStore, Selector};

    fn state() -> Arc<State> {
        Arc::new(State::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            Limits::default(),
            60_000,
        ))
    }

    fn batch(device: &str, seq: u64) -> Batch {
        Batch {
            device: device.into(),
            boot_id: "b".into(),
            seq,
            sent_at_ms: 1,
            dropped_before: 0,
            samples: vec![Sample::new("m", seq as i64 * 1000, seq as f64)],
        }
    }

    #[tokio::test]
    async fn duplicates_are_stored_once_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let st = state();
        let (ingest, _, handle) =
            Ingest::start(dir.path(), WalOptions::default(), st.clone()).unwrap();
        // Original and resend in flight together, then a later resend.
        let a = ingest.submit(batch("d", 1), Transport::Mqtt).await;
        let b = ingest.submit(batch("d", 1), Transport::Mqtt).await;
        let mut outcomes = vec![a.await.unwrap().unwrap(), b.await.unwrap().unwrap()];
        outcomes.sort_by_key(|o| o.as_str());
        assert_eq!(outcomes, vec![Accepted::Duplicate, Accepted::Stored]);
        assert_eq!(
            ingest.store(batch("d", 1), Transport::Http).await.unwrap(),
            Accepted::Duplicate
        );
        assert_eq!(
            ingest.store(batch("d", 2), Transport::Http).await.unwrap(),
            Accepted::Stored
        );
        drop(ingest);
        handle.join().unwrap();

        let st2 = state();
        let (ingest, replay, _) =
            Ingest::start(dir.path(), WalOptions::default(), st2.clone()).unwrap();
        assert_eq!(replay.records, 2);
        let got = st2.store.select(&Selector::default(), 0, i64::MAX);
        assert_eq!(got[0].points.len(), 2);
        assert_eq!(st2.registry().get("d").unwrap().seqs.ranges(), &[[1, 2]]);
        assert_eq!(
            ingest.store(batch("d", 2), Transport::Mqtt).await.unwrap(),
            Accepted::Duplicate
        );
    }
}
