//! The durable core of ingest: deduplicate by `(device, seq)`, write to the WAL with group
//! commit, then make the batch visible (registry, store) and only then answer, so an
//! acknowledgement always follows durability.
//!
//! One writer thread owns the WAL. Requests queue on a channel; the writer takes everything
//! waiting (up to a bound), writes it, syncs once, and replies to all. While it syncs, the
//! next group gathers — no timer needed. A resend of a batch already stored, or already in
//! the same group, is answered `Duplicate` after that same sync, never before the original is
//! durable. Duplicates and rejected payloads are written as small event records, so a
//! device's integrity counters survive restarts too.

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

/// Integrity events that store no samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum EventKind {
    Duplicate = 1,
    Corrupt = 2,
}

enum Request {
    Batch {
        device: String,
        seq: u64,
        batch: Batch,
        transport: Transport,
        received_ms: i64,
        record: Vec<u8>,
        reply: oneshot::Sender<Result<Accepted, IngestError>>,
    },
    /// A rejected payload's event record; already counted in memory.
    Corrupt { record: Vec<u8> },
}

impl Request {
    fn record_len(&self) -> usize {
        match self {
            Request::Batch { record, .. } | Request::Corrupt { record, .. } => record.len(),
        }
    }
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
        let (wal, replay) = Wal::open(dir, options, |kind, payload| {
            if let Err(reason) = replay_record(&state, kind, payload) {
                tracing::error!(%reason, "WAL record does not decode; skipped");
            }
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
        let record = encode_batch_record(&batch, transport, received_ms);
        let request = Request::Batch {
            device: batch.device.clone(),
            seq: batch.seq,
            batch,
            transport,
            received_ms,
            record,
            reply,
        };
        if let Err(mpsc::error::SendError(Request::Batch { reply, .. })) =
            self.tx.send(request).await
        {
            let _ = reply.send(Err(IngestError::ShuttingDown));
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

    /// Counts a rejected payload against `device`: at once in memory, so the count is visible
    /// before the sender hears of the refusal, and durably with the next group.
    pub async fn record_corrupt(&self, device: &str) {
        let received_ms = self.state.now_ms();
        apply_event(&self.state, EventKind::Corrupt, device, received_ms);
        let request = Request::Corrupt {
            record: encode_event_record(EventKind::Corrupt, device, received_ms),
        };
        let _ = self.tx.send(request).await;
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// WAL payload of a batch: `received_ms: i64 LE | transport: u8 | protobuf body`.
fn encode_batch_record(batch: &Batch, transport: Transport, received_ms: i64) -> Vec<u8> {
    let body = PbBatch::from(batch);
    let mut out = Vec::with_capacity(9 + body.encoded_len());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.push(transport.to_byte());
    body.encode(&mut out)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    out
}

/// WAL payload of an event: `received_ms: i64 LE | kind: u8 | device (UTF-8)`.
fn encode_event_record(kind: EventKind, device: &str, received_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + device.len());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(device.as_bytes());
    out
}

/// Splits `received_ms: i64 LE | tag: u8 | rest`.
fn split_header(payload: &[u8]) -> Result<(i64, u8, &[u8]), String> {
    let (head, rest) = payload
        .split_at_checked(9)
        .ok_or("record shorter than 9 bytes")?;
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&head[..8]);
    Ok((i64::from_le_bytes(ms), head[8], rest))
}

fn replay_record(state: &State, kind: RecordKind, payload: &[u8]) -> Result<(), String> {
    let (received_ms, tag, rest) = split_header(payload)?;
    match kind {
        RecordKind::Batch => {
            let transport =
                Transport::from_byte(tag).ok_or_else(|| format!("unknown transport {tag}"))?;
            let pb = PbBatch::decode(rest).map_err(|e| e.to_string())?;
            let batch = Batch::try_from(pb).map_err(|e| e.to_string())?;
            if state.registry().is_stored(&batch.device, batch.seq) {
                apply_event(state, EventKind::Duplicate, &batch.device, received_ms);
            } else {
                apply(state, &batch, transport, received_ms);
            }
        }
        RecordKind::Event => {
            let device = std::str::from_utf8(rest).map_err(|e| e.to_string())?;
            let kind = match tag {
                1 => EventKind::Duplicate,
                2 => EventKind::Corrupt,
                other => return Err(format!("unknown event kind {other}")),
            };
            apply_event(state, kind, device, received_ms);
        }
    }
    Ok(())
}

fn apply_event(state: &State, kind: EventKind, device: &str, received_ms: i64) {
    let mut registry = state.registry_mut();
    let d = registry.entry(device);
    d.seen(received_ms);
    match kind {
        EventKind::Duplicate => d.integrity.duplicate_batch(),
        EventKind::Corrupt => d.integrity.corrupt_batch(),
    }
}

/// Makes a durable batch visible: registry and store.
fn apply(state: &State, batch: &Batch, transport: Transport, received_ms: i64) {
    let tags = {
        let mut registry = state.registry_mut();
        let device = registry.entry(&batch.device);
        device.record_batch(batch, transport, received_ms, state.missing_grace_ms);
        device.tags.clone()
    };
    for s in &batch.samples {
        let mut labels: BTreeMap<String, String> = s.labels.clone();
        for (k, v) in &tags {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
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
        let mut bytes = first.record_len();
        group.push(first);
        while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.record_len();
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
    // For each request: is it a duplicate batch? (Events are never duplicates.)
    let duplicate: Vec<bool> = {
        let mut in_group: HashSet<(&str, u64)> = HashSet::new();
        let registry = state.registry();
        group
            .iter()
            .map(|r| match r {
                Request::Batch { device, seq, .. } => {
                    registry.is_stored(device, *seq) || !in_group.insert((device, *seq))
                }
                Request::Corrupt { .. } => false,
            })
            .collect()
    };
    let dup_records: Vec<Vec<u8>> = group
        .iter()
        .zip(&duplicate)
        .filter_map(|(r, dup)| match r {
            Request::Batch {
                device,
                received_ms,
                ..
            } if *dup => Some(encode_event_record(
                EventKind::Duplicate,
                device,
                *received_ms,
            )),
            _ => None,
        })
        .collect();
    let records = group
        .iter()
        .zip(&duplicate)
        .filter(|(_, dup)| !**dup)
        .map(|(r, _)| match r {
            Request::Batch { record, .. } => (RecordKind::Batch, record.as_slice()),
            Request::Corrupt { record, .. } => (RecordKind::Event, record.as_slice()),
        })
        .chain(
            dup_records
                .iter()
                .map(|r| (RecordKind::Event, r.as_slice())),
        );
    let t = &state.telemetry;
    match wal.append_group(records) {
        Ok(()) => {
            t.wal_syncs.inc();
            t.wal_disk_bytes.set(gauge(wal.disk_bytes()));
            let stored = duplicate.iter().filter(|d| !**d).count();
            t.wal_group_batches.observe(stored as f64);
            for (r, dup) in group.drain(..).zip(duplicate) {
                match r {
                    Request::Batch {
                        device,
                        batch,
                        transport,
                        received_ms,
                        record,
                        reply,
                        ..
                    } => {
                        let outcome = if dup {
                            apply_event(state, EventKind::Duplicate, &device, received_ms);
                            Accepted::Duplicate
                        } else {
                            t.wal_bytes.inc_by(record.len() as u64);
                            t.samples.inc_by(batch.samples.len() as u64);
                            apply(state, &batch, transport, received_ms);
                            Accepted::Stored
                        };
                        t.batches
                            .get_or_create(&BatchLabels {
                                transport: transport.as_str(),
                                outcome: outcome.as_str(),
                            })
                            .inc();
                        let _ = reply.send(Ok(outcome));
                    }
                    // Counted when it was submitted.
                    Request::Corrupt { .. } => {}
                }
            }
        }
        Err(e) => {
            t.wal_errors.inc();
            tracing::error!(error = %e, requests = group.len(), "WAL append failed; group not acknowledged");
            let message = e.to_string();
            for r in group.drain(..) {
                match r {
                    Request::Batch { reply, .. } => {
                        let _ = reply.send(Err(IngestError::Storage(message.clone())));
                    }
                    // Counted when it was submitted, though it could not be made durable.
                    Request::Corrupt { .. } => {}
                }
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
    async fn duplicates_are_stored_once_and_counts_survive_restart() {
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
            ingest.store(batch("d", 3), Transport::Http).await.unwrap(),
            Accepted::Stored
        );
        ingest.record_corrupt("d").await;
        drop(ingest);
        handle.join().unwrap();
        let before = st.registry().get("d").unwrap().integrity.counts(0, 0);

        let st2 = state();
        let (ingest, replay, _) =
            Ingest::start(dir.path(), WalOptions::default(), st2.clone()).unwrap();
        assert_eq!(replay.records, 5, "2 batches, 2 duplicates, 1 corrupt");
        let got = st2.store.select(&Selector::default(), 0, i64::MAX);
        assert_eq!(got[0].points.len(), 2);
        let d = st2.registry().get("d").unwrap().clone();
        assert_eq!(d.integrity.stored().ranges(), &[[1, 1], [3, 3]]);
        let after = d.integrity.counts(0, 0);
        assert_eq!(after, before);
        assert_eq!((after.received, after.duplicate, after.corrupt), (2, 2, 1));
        assert_eq!(
            ingest.store(batch("d", 3), Transport::Mqtt).await.unwrap(),
            Accepted::Duplicate
        );
    }
}
