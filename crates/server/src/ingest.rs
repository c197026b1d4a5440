//! The durable core of ingest: deduplicate by `(device, seq)`, store the samples, record the
//! batches in the WAL, then make them visible and only then answer, so an acknowledgement
//! always follows durability.
//!
//! One writer thread owns the WAL. Requests queue on a channel; the writer takes everything
//! waiting (up to a bound) as one group: it appends all the group's samples to the sample
//! store (one durable append), then writes one summary record per batch to the WAL (one
//! sync), then replies to all. While it works, the next group gathers — no timer needed.
//!
//! The order matters. Samples first: a crash between the two steps leaves samples stored but
//! the batch unrecorded, so the sender (never acknowledged) resends and the store keeps one
//! copy per timestamp. The other order could record a batch whose samples were lost, and its
//! resend would be discarded as a duplicate. A resend of a batch already stored, or already in
//! the same group, is answered `Duplicate` after that same sync, never before the original is
//! durable. Duplicates and rejected payloads are written as small event records, so a device's
//! integrity counters survive restarts too.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use fleetmon_protocol::Batch;
use fleetmon_protocol::pb::PbBatch;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::fleet::{BatchSummary, Transport};
use crate::state::State;
use crate::store::{Point, Selector, SeriesKey, SeriesRef, StoreError};
use crate::telemetry::BatchLabels;
use crate::wal::{RecordKind, Replay, Wal, WalError, WalOptions};

mod series;

use series::SeriesCache;

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
        restore_last_values(&state);
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
        let record = encode_summary_record(&BatchSummary::of(&batch), transport, received_ms);
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
        // A whole batch, as the first WAL format kept them: store its samples (idempotent)
        // and record it.
        RecordKind::Batch => {
            let transport =
                Transport::from_byte(tag).ok_or_else(|| format!("unknown transport {tag}"))?;
            let pb = PbBatch::decode(rest).map_err(|e| e.to_string())?;
            let batch = Batch::try_from(pb).map_err(|e| e.to_string())?;
            if state.registry().is_stored(&batch.device, batch.seq) {
                apply_event(state, EventKind::Duplicate, &batch.device, received_ms);
            } else {
                let samples = labelled_samples(state, &batch);
                state.store.append(&samples).map_err(|e| e.to_string())?;
                apply(state, &batch, transport, received_ms, false);
            }
        }
        RecordKind::Summary => {
            let transport =
                Transport::from_byte(tag).ok_or_else(|| format!("unknown transport {tag}"))?;
            let summary = decode_summary(rest)?;
            let mut registry = state.registry_mut();
            let d = registry.entry(&summary.device);
            if d.integrity.is_stored(summary.seq) {
                d.integrity.duplicate_batch();
            } else {
                d.record_summary(&summary, transport, received_ms, state.missing_grace_ms);
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

/// Makes a batch whose samples are stored and whose summary is durable visible. A batch
/// arriving over HTTP now (not replayed) also marks its device seen over HTTP in the same
/// step: otherwise a derivation pass between the two could find the device registered but
/// not online, and store `device_up` 0 for a device that just delivered.
fn apply(state: &State, batch: &Batch, transport: Transport, received_ms: i64, live: bool) {
    let mut registry = state.registry_mut();
    registry.entry(&batch.device).record_batch(
        batch,
        transport,
        received_ms,
        state.missing_grace_ms,
    );
    if live && transport == Transport::Http {
        registry.http_seen(&batch.device, received_ms, None);
    }
}

/// A batch's samples as series of the store (see [`series::series_key`]).
fn labelled_samples(state: &State, batch: &Batch) -> Vec<(SeriesKey, Point)> {
    let registry = state.registry();
    let tags = registry.tags_of(&batch.device);
    batch
        .samples
        .iter()
        .map(|s| {
            (
                series::series_key(s, &batch.device, &tags),
                Point {
                    ts_ms: s.ts_ms,
                    value: s.value,
                },
            )
        })
        .collect()
}

/// After a restart: every device's last values, from the store (the WAL keeps summaries only).
fn restore_last_values(state: &State) {
    let last = state.store.last_values(&Selector::default());
    let mut registry = state.registry_mut();
    for (mut key, point) in last {
        let Some(device) = key.labels.remove("device") else {
            continue;
        };
        let d = registry.entry(&device);
        for tag in d.tags.keys() {
            key.labels.remove(tag);
        }
        d.record_values([(&key.metric, &key.labels, point.ts_ms, point.value)]);
    }
}

/// WAL payload of a batch summary: `received_ms: i64 LE | transport: u8 | seq: u64 |
/// sent_at_ms: i64 | dropped_before: u64 | samples: u64 | newest_ts_ms: i64 (i64::MIN =
/// none) | boot_id length: u8 | boot_id | device`, integers little-endian.
fn encode_summary_record(s: &BatchSummary, transport: Transport, received_ms: i64) -> Vec<u8> {
    let boot = &s.boot_id.as_bytes()[..s.boot_id.len().min(255)];
    let mut out = Vec::with_capacity(50 + boot.len() + s.device.len());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.push(transport.to_byte());
    out.extend_from_slice(&s.seq.to_le_bytes());
    out.extend_from_slice(&s.sent_at_ms.to_le_bytes());
    out.extend_from_slice(&s.dropped_before.to_le_bytes());
    out.extend_from_slice(&s.samples.to_le_bytes());
    out.extend_from_slice(&s.newest_ts_ms.unwrap_or(i64::MIN).to_le_bytes());
    out.push(u8::try_from(boot.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(boot);
    out.extend_from_slice(s.device.as_bytes());
    out
}

/// Decodes what follows the 9-byte header of a summary record.
fn decode_summary(rest: &[u8]) -> Result<BatchSummary, String> {
    let word = |i: usize| -> Result<[u8; 8], String> {
        rest.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "summary record too short".to_owned())
    };
    let seq = u64::from_le_bytes(word(0)?);
    let sent_at_ms = i64::from_le_bytes(word(1)?);
    let dropped_before = u64::from_le_bytes(word(2)?);
    let samples = u64::from_le_bytes(word(3)?);
    let newest = i64::from_le_bytes(word(4)?);
    let boot_len = usize::from(*rest.get(40).ok_or("summary record too short")?);
    let boot = rest
        .get(41..41 + boot_len)
        .ok_or("summary record too short")?;
    let device = rest
        .get(41 + boot_len..)
        .ok_or("summary record too short")?;
    Ok(BatchSummary {
        device: String::from_utf8(device.to_vec()).map_err(|e| e.to_string())?,
        boot_id: String::from_utf8(boot.to_vec()).map_err(|e| e.to_string())?,
        seq,
        sent_at_ms,
        dropped_before,
        samples,
        newest_ts_ms: (newest != i64::MIN).then_some(newest),
    })
}

fn writer_loop(mut wal: Wal, mut rx: mpsc::Receiver<Request>, state: &State) {
    let mut group: Vec<Request> = Vec::new();
    let mut series = SeriesCache::default();
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
        commit_group(&mut wal, &mut group, &mut series, state);
    }
    tracing::debug!("WAL writer stopped");
}

fn commit_group(wal: &mut Wal, group: &mut Vec<Request>, series: &mut SeriesCache, state: &State) {
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
    let t = &state.telemetry;

    // 1. The samples of every new batch, in one durable append. The samples of watched
    // metrics also as series keys, for the anomaly scorer.
    let mut samples: Vec<(SeriesRef, Point)> = Vec::new();
    let mut watched: Vec<(SeriesKey, Point)> = Vec::new();
    let resolved = {
        let registry = state.registry();
        let scorer = state.anomaly.lock().unwrap_or_else(|e| e.into_inner());
        group
            .iter()
            .zip(&duplicate)
            .try_for_each(|(r, dup)| match r {
                Request::Batch { batch, .. } if !dup => {
                    let tags = registry.tags_of(&batch.device);
                    series.resolve(state.store.as_ref(), batch, &tags, &mut samples)?;
                    watched.extend(
                        batch
                            .samples
                            .iter()
                            .filter(|s| scorer.watches(&s.metric))
                            .map(|s| {
                                (
                                    series::series_key(s, &batch.device, &tags),
                                    Point {
                                        ts_ms: s.ts_ms,
                                        value: s.value,
                                    },
                                )
                            }),
                    );
                    Ok(())
                }
                _ => Ok::<(), StoreError>(()),
            })
    };
    if let Err(e) = resolved {
        fail_group(group, state, &e.to_string());
        return;
    }
    if !samples.is_empty() {
        match state.store.append_refs(&samples) {
            Ok(appended) => {
                if appended.too_old > 0 {
                    t.samples_too_old.inc_by(appended.too_old as u64);
                    tracing::warn!(
                        samples = appended.too_old,
                        "samples older than the late-data limit were not stored"
                    );
                }
            }
            Err(e) => {
                fail_group(group, state, &e.to_string());
                return;
            }
        }
        // Derived, so never a reason to refuse the batches: a failure is logged.
        let scores = state.anomaly_scores(&watched);
        if !scores.is_empty()
            && let Err(e) = state.store.append(&scores)
        {
            tracing::error!(error = %e, "anomaly scores not stored");
        }
    }

    // 2. One record per batch (and event) in the WAL, one sync.
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
            Request::Batch { record, .. } => (RecordKind::Summary, record.as_slice()),
            Request::Corrupt { record } => (RecordKind::Event, record.as_slice()),
        })
        .chain(
            dup_records
                .iter()
                .map(|r| (RecordKind::Event, r.as_slice())),
        );
    if let Err(e) = wal.append_group(records) {
        // The samples may be stored already; a resend stores them once more, harmlessly.
        fail_group(group, state, &e.to_string());
        return;
    }
    t.wal_syncs.inc();
    t.wal_disk_bytes.set(gauge(wal.disk_bytes()));
    let stored = duplicate.iter().filter(|d| !**d).count();
    t.wal_group_batches.observe(stored as f64);

    // 3. Visible, then answered.
    for (r, dup) in group.drain(..).zip(duplicate) {
        let Request::Batch {
            device,
            batch,
            transport,
            received_ms,
            record,
            reply,
            ..
        } = r
        else {
            // Corrupt events were counted when submitted.
            continue;
        };
        let outcome = if dup {
            apply_event(state, EventKind::Duplicate, &device, received_ms);
            Accepted::Duplicate
        } else {
            t.wal_bytes.inc_by(record.len() as u64);
            t.samples.inc_by(batch.samples.len() as u64);
            apply(state, &batch, transport, received_ms, true);
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
}

/// Answers every batch of a failed group with the error: none is acknowledged.
fn fail_group(group: &mut Vec<Request>, state: &State, message: &str) {
    state.telemetry.wal_errors.inc();
    tracing::error!(error = %message, requests = group.len(), "storage failed; group not acknowledged");
    for r in group.drain(..) {
        if let Request::Batch { reply, .. } = r {
            let _ = reply.send(Err(IngestError::Storage(message.to_owned())));
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetmon_protocol::{Limits, Sample};

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{Selector, TsdbStore};

    fn state(dir: &Path) -> Arc<State> {
        let store = TsdbStore::open(&dir.join("tsdb"), fleetmon_tsdb::Options::default()).unwrap();
        Arc::new(State::new(
            Arc::new(store),
            Arc::new(SystemClock),
            Limits::default(),
            60_000,
        ))
    }

    /// A state over `dir` and the ingest pipeline replaying and writing `dir/wal`.
    fn start(dir: &Path) -> (Arc<State>, Ingest, Replay, JoinHandle<()>) {
        let st = state(dir);
        let (ingest, replay, handle) =
            Ingest::start(&dir.join("wal"), WalOptions::default(), st.clone()).unwrap();
        (st, ingest, replay, handle)
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
        let (st, ingest, _, handle) = start(dir.path());
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

        drop(st);
        let (st2, ingest, replay, _) = start(dir.path());
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

    #[tokio::test]
    async fn a_device_is_online_as_soon_as_its_first_http_batch_is_visible() {
        // A derivation pass must never find a device that just delivered over HTTP
        // registered but offline (it would store `device_up` 0 and start DeviceOffline).
        let dir = tempfile::tempdir().unwrap();
        let (st, ingest, _, handle) = start(dir.path());
        let sent_ms = st.now_ms();
        // Stored, not yet through the HTTP handler's own bookkeeping.
        assert_eq!(
            ingest.store(batch("h", 1), Transport::Http).await.unwrap(),
            Accepted::Stored
        );
        let d = st.registry().get("h").unwrap().clone();
        assert_eq!(d.status(st.now_ms(), 60_000), crate::fleet::Status::Online);
        assert!(d.http_last_seen_ms.is_some_and(|t| t >= sent_ms));
        // A batch over MQTT does not make its device look connected by itself.
        ingest.store(batch("m", 1), Transport::Mqtt).await.unwrap();
        let m = st.registry().get("m").unwrap().clone();
        assert_eq!(m.http_last_seen_ms, None);
        drop(ingest);
        handle.join().unwrap();
    }
}
