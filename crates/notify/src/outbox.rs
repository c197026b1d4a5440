//! The persistent outbox: a notification accepted here is on disk before `enqueue` returns,
//! survives a crash or `kill -9`, and is delivered to each of its targets once.
//!
//! # Layout of the directory
//!
//! ```text
//! LOCK                      flock'ed by the one process that owns the outbox
//! q/<key>.json              a waiting notification and its targets (written to .tmp, fsynced,
//!                           renamed, directory fsynced)
//! q/<key>.<i>.ok            target i was delivered   (empty file; directory fsynced)
//! q/<key>.<i>.dead          target i failed for good (after its dead-letter record)
//! done/<key>                tombstone {"id", "finishedMs"}: every target is finished; kept for
//!                           `keep_finished_ids` so re-enqueueing the same id stays a no-op
//! dead-letter.jsonl         one JSON line per target given up on, with the notification
//! ```
//!
//! `<key>` is the hex SHA-256 of the notification id, so any id is a safe file name. When the
//! last target of an entry is marked, the tombstone is written and the entry's files removed
//! (compaction); on open, an entry that has a tombstone, or whose targets are all marked, is
//! finished the same way, so a crash between those steps costs nothing.
//!
//! A corrupt `q/*.json` (unparseable, or not matching its key) is renamed to `*.corrupt` with an
//! error log naming it, and skipped.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::config::OutboxLimits;
use crate::payload::Notification;

/// What went wrong with the outbox; paths are named so an operator can act.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("outbox {0} is in use by another process")]
    Locked(String),
    #[error(
        "outbox full: {entries} notifications / {bytes} bytes waiting (limits {max_entries} / \
         {max_bytes}); is a receiver down? raise outbox.max_entries / outbox.max_bytes if not"
    )]
    Full {
        entries: usize,
        bytes: u64,
        max_entries: usize,
        max_bytes: u64,
    },
    #[error("notification {id} has no targets")]
    NoTargets { id: String },
    #[error("notification {id} cannot be encoded: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("notification {id} has no pending target `{target}`")]
    NoSuchTarget { id: String, target: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Result of [`Outbox::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Newly accepted and durable.
    Accepted,
    /// The id is already waiting, or was finished within `keep_finished_ids`: nothing done.
    Duplicate,
}

/// Where one target of one entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug)]
pub(crate) struct Target {
    pub name: String,
    pub state: TargetState,
    /// Failed attempts in this process (not persisted: a restart retries at once).
    pub failures: u32,
    pub next_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    key: String,
    pub enqueued_ms: u64,
    pub notification: Arc<Notification>,
    pub targets: Vec<Target>,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryFile {
    format: u32,
    id: String,
    enqueued_ms: u64,
    /// Enqueue order within this outbox (ties in `enqueued_ms` are common).
    #[serde(default)]
    seq: u64,
    targets: Vec<String>,
    notification: Notification,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tombstone {
    id: String,
    finished_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetter<'a> {
    id: &'a str,
    receiver: &'a str,
    target: &'a str,
    reason: &'a str,
    enqueued_ms: u64,
    failed_ms: u64,
    notification: &'a Notification,
}

/// What a delivery worker should do next for one target.
#[derive(Debug)]
pub(crate) enum Next {
    Due {
        seq: u64,
        index: usize,
        notification: Arc<Notification>,
        enqueued_ms: u64,
        failures: u32,
    },
    WaitUntil(Instant),
    Idle,
}

/// The durable queue. One process at a time (enforced by a lock file).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    q: PathBuf,
    done: PathBuf,
    _lock: File,
    limits: OutboxLimits,
    entries: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    finished: HashMap<String, u64>,
    bytes: u64,
    next_seq: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn key_of(id: &str) -> String {
    crate::signature::hex(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref())
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically and durably (tmp file, fsync, rename, fsync dir).
fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn remove_if_exists(path: &Path) -> Result<(), OutboxError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn quarantine(path: &Path, why: &str) {
    let mut bad = path.as_os_str().to_owned();
    bad.push(".corrupt");
    error!(file = %path.display(), problem = why, "outbox: corrupt file skipped (renamed to .corrupt)");
    if let Err(e) = fs::rename(path, &bad) {
        error!(file = %path.display(), error = %e, "outbox: cannot rename corrupt file");
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`, loading what waits there.
    pub fn open(dir: impl AsRef<Path>, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        let dir = dir.as_ref().to_path_buf();
        let q = dir.join("q");
        let done = dir.join("done");
        for d in [&dir, &q, &done] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| OutboxError::Locked(dir.display().to_string()))?;
        let mut ob = Outbox {
            dir,
            q,
            done,
            _lock: lock,
            limits,
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            finished: HashMap::new(),
            bytes: 0,
            next_seq: 0,
        };
        ob.load_tombstones()?;
        ob.load_queue()?;
        ob.prune_finished(now_ms())?;
        Ok(ob)
    }

    fn load_tombstones(&mut self) -> Result<(), OutboxError> {
        for de in fs::read_dir(&self.done).map_err(io_err(&self.done))? {
            let path = de.map_err(io_err(&self.done))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                remove_if_exists(&path)?;
                continue;
            }
            if name.ends_with(".corrupt") {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Tombstone>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(t) if key_of(&t.id) == name => {
                    self.finished.insert(t.id, t.finished_ms);
                }
                Ok(_) => quarantine(&path, "id does not match the file name"),
                Err(e) => quarantine(&path, &e),
            }
        }
        Ok(())
    }

    fn load_queue(&mut self) -> Result<(), OutboxError> {
        let mut files: Vec<(String, EntryFile, u64)> = Vec::new();
        let mut marks: HashMap<String, Vec<(usize, TargetState, PathBuf)>> = HashMap::new();
        for de in fs::read_dir(&self.q).map_err(io_err(&self.q))? {
            let path = de.map_err(io_err(&self.q))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".tmp") {
                remove_if_exists(&path)?;
            } else if let Some(key) = name.strip_suffix(".json") {
                let read = fs::read(&path).map_err(io_err(&path))?;
                match serde_json::from_slice::<EntryFile>(&read) {
                    Ok(e) if key_of(&e.id) == key && !e.targets.is_empty() => {
                        files.push((key.to_owned(), e, read.len() as u64));
                    }
                    Ok(_) => quarantine(&path, "id does not match the file name, or no targets"),
                    Err(e) => quarantine(&path, &e.to_string()),
                }
            } else if let Some((key, idx, state)) = parse_mark(&name) {
                let mark = (idx, state, path.clone());
                marks.entry(key.to_owned()).or_default().push(mark);
            }
        }
        files.sort_by(|a, b| {
            (a.1.seq, a.1.enqueued_ms, &a.0).cmp(&(b.1.seq, b.1.enqueued_ms, &b.0))
        });
        let mut finish = Vec::new();
        for (key, ef, size) in files {
            // Keep the recorded order; a duplicate seq (from a hand-edited file) gets a new one.
            let seq = ef.seq.max(self.next_seq);
            self.next_seq = seq + 1;
            let mut targets: Vec<Target> = ef
                .targets
                .into_iter()
                .map(|name| Target {
                    name,
                    state: TargetState::Pending,
                    failures: 0,
                    next_at: None,
                })
                .collect();
            for (idx, state, _) in marks.remove(&key).unwrap_or_default() {
                if let Some(t) = targets.get_mut(idx) {
                    t.state = state;
                }
            }
            let all_done = targets.iter().all(|t| t.state != TargetState::Pending);
            if self.finished.contains_key(&ef.id) || all_done {
                finish.push(seq);
            }
            self.by_id.insert(ef.id.clone(), seq);
            self.bytes += size;
            self.entries.insert(
                seq,
                Entry {
                    key,
                    enqueued_ms: ef.enqueued_ms,
                    notification: Arc::new(ef.notification),
                    targets,
                    size,
                },
            );
        }
        // Marks without an entry are left from a finish interrupted after the entry went.
        for (_, _, path) in marks.into_values().flatten() {
            remove_if_exists(&path)?;
        }
        for seq in finish {
            self.finish(seq)?;
        }
        Ok(())
    }

    /// Accepts a notification for these targets (integration names of its receiver) and returns
    /// once it is durable. The same id again is a no-op.
    pub fn enqueue(
        &mut self,
        notification: Notification,
        targets: Vec<String>,
    ) -> Result<Enqueued, OutboxError> {
        let id = notification.id.clone();
        if self.by_id.contains_key(&id) || self.finished.contains_key(&id) {
            return Ok(Enqueued::Duplicate);
        }
        if targets.is_empty() {
            return Err(OutboxError::NoTargets { id });
        }
        let enqueued_ms = now_ms();
        let seq = self.next_seq;
        let ef = EntryFile {
            format: 1,
            id: id.clone(),
            enqueued_ms,
            seq,
            targets,
            notification,
        };
        let bytes = serde_json::to_vec(&ef).map_err(|source| OutboxError::Encode {
            id: id.clone(),
            source,
        })?;
        let size = bytes.len() as u64;
        if self.entries.len() >= self.limits.max_entries
            || self.bytes + size > self.limits.max_bytes
        {
            return Err(OutboxError::Full {
                entries: self.entries.len(),
                bytes: self.bytes,
                max_entries: self.limits.max_entries,
                max_bytes: self.limits.max_bytes,
            });
        }
        let key = key_of(&id);
        write_durable(&self.q, &format!("{key}.json"), &bytes)?;
        self.next_seq += 1;
        self.bytes += size;
        self.by_id.insert(id, seq);
        self.entries.insert(
            seq,
            Entry {
                key,
                enqueued_ms,
                notification: Arc::new(ef.notification),
                targets: ef
                    .targets
                    .into_iter()
                    .map(|name| Target {
                        name,
                        state: TargetState::Pending,
                        failures: 0,
                        next_at: None,
                    })
                    .collect(),
                size,
            },
        );
        Ok(Enqueued::Accepted)
    }

    /// Notifications waiting (with at least one target not finished).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of waiting notifications on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The dead-letter file: one JSON line per target given up on.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dir.join("dead-letter.jsonl")
    }

    /// `(notification id, receiver, target)` for every target still to deliver, oldest first.
    pub fn pending(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for e in self.entries.values() {
            for t in &e.targets {
                if t.state == TargetState::Pending {
                    out.push((
                        e.notification.id.clone(),
                        e.notification.receiver.clone(),
                        t.name.clone(),
                    ));
                }
            }
        }
        out
    }

    /// Whether this id is waiting or was finished recently.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id) || self.finished.contains_key(id)
    }

    fn locate(&self, id: &str, target: &str) -> Result<(u64, usize), OutboxError> {
        let missing = || OutboxError::NoSuchTarget {
            id: id.to_owned(),
            target: target.to_owned(),
        };
        let seq = *self.by_id.get(id).ok_or_else(missing)?;
        let e = self.entries.get(&seq).ok_or_else(missing)?;
        let idx = e
            .targets
            .iter()
            .position(|t| t.name == target && t.state == TargetState::Pending)
            .ok_or_else(missing)?;
        Ok((seq, idx))
    }

    /// Records, durably, that `target` of notification `id` was delivered.
    pub fn mark_delivered(&mut self, id: &str, target: &str) -> Result<(), OutboxError> {
        let (seq, idx) = self.locate(id, target)?;
        self.mark(seq, idx, TargetState::Delivered)
    }

    /// Gives up on `target` of notification `id`: appends a dead-letter record (fsynced), then
    /// marks the target failed.
    pub fn mark_failed(&mut self, id: &str, target: &str, reason: &str) -> Result<(), OutboxError> {
        let (seq, idx) = self.locate(id, target)?;
        self.fail(seq, idx, reason)
    }

    pub(crate) fn fail(&mut self, seq: u64, idx: usize, reason: &str) -> Result<(), OutboxError> {
        let Some(e) = self.entries.get(&seq) else {
            return Ok(());
        };
        let Some(t) = e.targets.get(idx) else {
            return Ok(());
        };
        let rec = DeadLetter {
            id: &e.notification.id,
            receiver: &e.notification.receiver,
            target: &t.name,
            reason,
            enqueued_ms: e.enqueued_ms,
            failed_ms: now_ms(),
            notification: &e.notification,
        };
        let mut line = serde_json::to_vec(&rec).map_err(|source| OutboxError::Encode {
            id: e.notification.id.clone(),
            source,
        })?;
        line.push(b'\n');
        let path = self.dead_letter_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&line).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        error!(
            id = %e.notification.id, receiver = %e.notification.receiver, target = %t.name,
            reason, dead_letter = %path.display(),
            "notification given up; recorded in the dead-letter file"
        );
        self.mark(seq, idx, TargetState::Failed)
    }

    pub(crate) fn mark(
        &mut self,
        seq: u64,
        idx: usize,
        state: TargetState,
    ) -> Result<(), OutboxError> {
        let Some(e) = self.entries.get_mut(&seq) else {
            return Ok(());
        };
        let suffix = if state == TargetState::Delivered {
            "ok"
        } else {
            "dead"
        };
        let path = self.q.join(format!("{}.{idx}.{suffix}", e.key));
        File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&path))?;
        sync_dir(&self.q)?;
        if let Some(t) = e.targets.get_mut(idx) {
            t.state = state;
        }
        if e.targets.iter().all(|t| t.state != TargetState::Pending) {
            self.finish(seq)?;
        }
        Ok(())
    }

    /// Every target is finished: tombstone, then drop the entry's files.
    fn finish(&mut self, seq: u64) -> Result<(), OutboxError> {
        let Some(e) = self.entries.get(&seq) else {
            return Ok(());
        };
        let id = e.notification.id.clone();
        let key = e.key.clone();
        let n_targets = e.targets.len();
        let finished_ms = *self.finished.get(&id).unwrap_or(&now_ms());
        let tomb = serde_json::to_vec(&Tombstone {
            id: id.clone(),
            finished_ms,
        })
        .map_err(|source| OutboxError::Encode {
            id: id.clone(),
            source,
        })?;
        write_durable(&self.done, &key, &tomb)?;
        self.remove_entry_files(&key, n_targets)?;
        if let Some(e) = self.entries.remove(&seq) {
            self.bytes -= e.size;
        }
        self.by_id.remove(&id);
        self.finished.insert(id, finished_ms);
        Ok(())
    }

    fn remove_entry_files(&self, key: &str, n_targets: usize) -> Result<(), OutboxError> {
        remove_if_exists(&self.q.join(format!("{key}.json")))?;
        for i in 0..n_targets {
            for s in ["ok", "dead"] {
                remove_if_exists(&self.q.join(format!("{key}.{i}.{s}")))?;
            }
        }
        Ok(())
    }

    /// Forgets finished ids older than `keep_finished_ids`.
    pub fn prune_finished(&mut self, now_ms: u64) -> Result<(), OutboxError> {
        let keep = u64::try_from(self.limits.keep_finished_ids.as_millis()).unwrap_or(u64::MAX);
        let old: Vec<String> = self
            .finished
            .iter()
            .filter(|(id, at)| now_ms.saturating_sub(**at) > keep && !self.by_id.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            remove_if_exists(&self.done.join(key_of(&id)))?;
            self.finished.remove(&id);
        }
        Ok(())
    }

    /// The next piece of work for `target` of `receiver`: the oldest pending entry whose
    /// backoff has passed, else when the earliest backoff ends.
    pub(crate) fn next_due(&self, receiver: &str, target: &str, now: Instant) -> Next {
        let mut earliest: Option<Instant> = None;
        for (seq, e) in &self.entries {
            if e.notification.receiver != receiver {
                continue;
            }
            for (index, t) in e.targets.iter().enumerate() {
                if t.name != target || t.state != TargetState::Pending {
                    continue;
                }
                match t.next_at {
                    Some(at) if at > now => {
                        earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    }
                    _ => {
                        return Next::Due {
                            seq: *seq,
                            index,
                            notification: Arc::clone(&e.notification),
                            enqueued_ms: e.enqueued_ms,
                            failures: t.failures,
                        };
                    }
                }
            }
        }
        earliest.map_or(Next::Idle, Next::WaitUntil)
    }

    pub(crate) fn schedule_retry(&mut self, seq: u64, idx: usize, failures: u32, at: Instant) {
        if let Some(t) = self
            .entries
            .get_mut(&seq)
            .and_then(|e| e.targets.get_mut(idx))
        {
            t.failures = failures;
            t.next_at = Some(at);
        }
    }

    /// Pending targets as `(seq, index, receiver, target)`, for the notifier's start-up check.
    pub(crate) fn pending_slots(&self) -> Vec<(u64, usize, String, String)> {
        let mut out = Vec::new();
        for (seq, e) in &self.entries {
            for (i, t) in e.targets.iter().enumerate() {
                if t.state == TargetState::Pending {
                    out.push((*seq, i, e.notification.receiver.clone(), t.name.clone()));
                }
            }
        }
        out
    }
}

fn parse_mark(name: &str) -> Option<(&str, usize, TargetState)> {
    let (rest, state) = if let Some(r) = name.strip_suffix(".ok") {
        (r, TargetState::Delivered)
    } else if let Some(r) = name.strip_suffix(".dead") {
        (r, TargetState::Failed)
    } else {
        return None;
    };
    let (key, idx) = rest.rsplit_once('.')?;
    Some((key, idx.parse().ok()?, state))
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            warn!(
                waiting = self.entries.len(),
                "outbox closed with notifications waiting; they are sent on the next start"
            );
        }
    }
}
