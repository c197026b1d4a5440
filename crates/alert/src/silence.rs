//! Silences: label matchers with a time window, made by a person for a reason. An alert
//! matching every matcher of a silence active at the time is not notified. Silences are
//! added, listed and expired by id, and persisted (atomically) on every change.
//!
//! A silence is *pending* before `starts_at`, *active* in `[starts_at, ends_at)`, and
//! *expired* from `ends_at`; expired silences are kept for `retention` (5 days) to be listed,
//! then dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, Matcher, matches_all};
use crate::persist::{StateError, load_json, save_json};

/// How long expired silences are kept (Alertmanager's default).
pub const DEFAULT_RETENTION_MS: i64 = 5 * 86_400_000;

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    #[serde(with = "crate::time::rfc3339")]
    pub starts_at: i64,
    #[serde(with = "crate::time::rfc3339")]
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: i64,
}

/// Where a silence is in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms >= self.ends_at {
            SilenceState::Expired
        } else if now_ms < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether it mutes `labels` at `now_ms`.
    pub fn mutes(&self, labels: &LabelSet, now_ms: i64) -> bool {
        self.state(now_ms) == SilenceState::Active && matches_all(&self.matchers, labels)
    }
}

/// What to silence (the id, `updated_at` are assigned).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: Vec<Matcher>,
    #[serde(with = "crate::time::rfc3339")]
    pub starts_at: i64,
    #[serde(with = "crate::time::rfc3339")]
    pub ends_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// A listed silence with its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub status: SilenceStatus,
}

/// `{"state": "active"}` as Alertmanager's API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

/// Why a silence was refused.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error(
        "every matcher also matches alerts without the label (e.g. `{0}`); add one that \
         needs a value, or the silence would mute everything"
    )]
    MatchesEverything(String),
    #[error("ends_at must be after starts_at")]
    EndsBeforeStart,
    #[error("ends_at is in the past")]
    AlreadyEnded,
    #[error("created_by is empty: say who made the silence")]
    NoAuthor,
    #[error("no silence with id `{0}`")]
    NotFound(String),
    #[error("silence `{0}` has already expired")]
    AlreadyExpired(String),
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SilencesFile {
    version: u32,
    next_seq: u64,
    silences: Vec<Silence>,
}

/// The silences, optionally persisted to a file.
#[derive(Debug, Default)]
pub struct Silences {
    file: SilencesFile,
    path: Option<PathBuf>,
    last_saved: Vec<u8>,
    retention_ms: i64,
}

impl Silences {
    /// In memory only.
    pub fn new() -> Silences {
        Silences {
            retention_ms: DEFAULT_RETENTION_MS,
            ..Silences::default()
        }
    }

    /// Persisted at `path`, loading what is there.
    pub fn open(path: &Path) -> Result<Silences, StateError> {
        let file = load_json::<SilencesFile>(path)?.unwrap_or_default();
        Ok(Silences {
            file,
            path: Some(path.to_owned()),
            last_saved: Vec::new(),
            retention_ms: DEFAULT_RETENTION_MS,
        })
    }

    /// Adds a silence and returns its id.
    pub fn add(&mut self, new: NewSilence, now_ms: i64) -> Result<String, SilenceError> {
        if new.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if new.matchers.iter().all(|m| m.matches_value("")) {
            return Err(SilenceError::MatchesEverything(new.matchers[0].to_string()));
        }
        if new.ends_at <= new.starts_at {
            return Err(SilenceError::EndsBeforeStart);
        }
        if new.ends_at <= now_ms {
            return Err(SilenceError::AlreadyEnded);
        }
        if new.created_by.trim().is_empty() {
            return Err(SilenceError::NoAuthor);
        }
        self.file.next_seq += 1;
        let id = silence_id(self.file.next_seq, now_ms, &new);
        self.file.silences.push(Silence {
            id: id.clone(),
            matchers: new.matchers,
            starts_at: new.starts_at.max(now_ms),
            ends_at: new.ends_at,
            created_by: new.created_by,
            comment: new.comment,
            updated_at: now_ms,
        });
        self.gc(now_ms);
        self.save()?;
        tracing::info!(id = %id, "silence added");
        Ok(id)
    }

    /// Ends a silence now (a pending one is ended before it starts).
    pub fn expire(&mut self, id: &str, now_ms: i64) -> Result<(), SilenceError> {
        let s = self
            .file
            .silences
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        if s.state(now_ms) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired(id.to_owned()));
        }
        if now_ms < s.starts_at {
            s.starts_at = now_ms;
        }
        s.ends_at = now_ms;
        s.updated_at = now_ms;
        self.save()?;
        tracing::info!(id = %id, "silence expired");
        Ok(())
    }

    /// Every silence kept, with its state, newest first.
    pub fn list(&self, now_ms: i64) -> Vec<SilenceView> {
        let mut v: Vec<SilenceView> = self
            .file
            .silences
            .iter()
            .map(|s| SilenceView {
                silence: s.clone(),
                status: SilenceStatus {
                    state: s.state(now_ms),
                },
            })
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.silence.updated_at));
        v
    }

    /// One silence.
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.file.silences.iter().find(|s| s.id == id)
    }

    /// Ids of the silences muting `labels` at `now_ms`.
    pub fn muting(&self, labels: &LabelSet, now_ms: i64) -> Vec<String> {
        self.file
            .silences
            .iter()
            .filter(|s| s.mutes(labels, now_ms))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Drops silences expired longer than the retention ago.
    pub fn gc(&mut self, now_ms: i64) -> usize {
        let before = self.file.silences.len();
        let keep_after = now_ms - self.retention_ms;
        self.file.silences.retain(|s| s.ends_at > keep_after);
        before - self.file.silences.len()
    }

    /// Writes the file if anything changed.
    pub fn save(&mut self) -> Result<(), StateError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.file.version = 1;
        save_json(&path, &self.file, &mut self.last_saved)
    }
}

fn silence_id(seq: u64, now_ms: i64, new: &NewSilence) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!(
        "{seq}\u{0}{now_ms}\u{0}{:?}\u{0}{}",
        new.matchers, new.created_by
    );
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{seq:06}-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(m: &[&str], start: i64, end: i64) -> NewSilence {
        NewSilence {
            matchers: m.iter().map(|t| Matcher::parse(t).expect(t)).collect(),
            starts_at: start,
            ends_at: end,
            created_by: "ops@example".into(),
            comment: "maintenance".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn window_and_matchers() {
        let mut s = Silences::new();
        let id = s
            .add(
                new(&["site=\"berlin\"", "severity!=\"critical\""], 1_000, 5_000),
                500,
            )
            .expect("added");
        let warn = labels(&[("site", "berlin"), ("severity", "warning")]);
        let crit = labels(&[("site", "berlin"), ("severity", "critical")]);
        assert!(s.muting(&warn, 999).is_empty(), "pending");
        assert_eq!(s.muting(&warn, 1_000), vec![id.clone()]);
        assert!(s.muting(&crit, 2_000).is_empty());
        assert!(s.muting(&warn, 5_000).is_empty(), "ended");
        s.expire(&id, 2_000).expect("expire");
        assert!(s.muting(&warn, 2_000).is_empty());
        assert_eq!(s.list(2_000)[0].status.state, SilenceState::Expired);
        assert!(matches!(
            s.expire(&id, 2_001),
            Err(SilenceError::AlreadyExpired(_))
        ));
        assert!(matches!(
            s.expire("nope", 2_001),
            Err(SilenceError::NotFound(_))
        ));
    }

    #[test]
    fn refuses_bad_silences() {
        let mut s = Silences::new();
        assert!(matches!(
            s.add(new(&[], 0, 10), 0),
            Err(SilenceError::NoMatchers)
        ));
        assert!(matches!(
            s.add(new(&["site=~\".*\""], 0, 10), 0),
            Err(SilenceError::MatchesEverything(_))
        ));
        assert!(matches!(
            s.add(new(&["a=\"b\""], 10, 5), 0),
            Err(SilenceError::EndsBeforeStart)
        ));
        assert!(matches!(
            s.add(new(&["a=\"b\""], 0, 5), 6),
            Err(SilenceError::AlreadyEnded)
        ));
        let mut anon = new(&["a=\"b\""], 0, 10);
        anon.created_by = " ".into();
        assert!(matches!(s.add(anon, 0), Err(SilenceError::NoAuthor)));
    }

    #[test]
    fn persisted_and_collected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silences.json");
        let mut s = Silences::open(&path).expect("open");
        let a = s.add(new(&["device=\"d1\""], 0, 10_000), 0).expect("a");
        let b = s.add(new(&["device=\"d2\""], 0, 10_000), 0).expect("b");
        assert_ne!(a, b);
        drop(s);
        let mut s = Silences::open(&path).expect("reopen");
        assert_eq!(s.list(1).len(), 2);
        assert!(!s.muting(&labels(&[("device", "d1")]), 1).is_empty());
        let c = s.add(new(&["device=\"d3\""], 0, 10_000), 1).expect("c");
        assert!(c != a && c != b, "ids stay unique after reopening");
        assert_eq!(s.gc(10_000 + DEFAULT_RETENTION_MS + 1), 3);
    }

    #[test]
    fn api_json_shape() {
        let mut s = Silences::new();
        s.add(new(&["device=\"d1\""], 0, 60_000), 0).expect("add");
        let v = serde_json::to_value(&s.list(1)[0]).expect("json");
        assert_eq!(v["status"]["state"], "active");
        assert_eq!(v["startsAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["createdBy"], "ops@example");
        assert_eq!(v["matchers"][0]["isRegex"], false);
        let back: NewSilence = serde_json::from_value(serde_json::json!({
            "matchers": [{"name": "device", "value": "d1", "isRegex": false}],
            "startsAt": "2024-01-01T00:00:00Z",
            "endsAt": "2024-01-01T01:00:00Z",
            "createdBy": "me",
        }))
        .expect("new silence from API JSON");
        assert_eq!(back.ends_at - back.starts_at, 3_600_000);
    }
}
