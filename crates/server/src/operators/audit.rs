//! The audit log, `DATA_DIR/audit.log`: one JSON object a line for every operator action —
//! who, when, from where, what, and whether it worked. Each line carries the SHA-256 of the line
//! before it (`prev`; 64 zeros on the first) and a sequence number, so editing, removing or
//! reordering any line breaks the chain after it, which [`verify`] finds. The file is only
//! appended to, under an exclusive lock (the server and the CLI both write it), and each line
//! is fsynced before the action is reported done.
//!
//! What the chain cannot show is the loss of the newest lines; [`verify`] returns the hash of
//! the last line, to be kept somewhere else when that matters.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sha256_hex;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest detail kept; more is cut.
const MAX_DETAIL: usize = 1000;
/// How much of the file's end is read to find the last line.
const TAIL_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: line {line}: {problem}")]
    Broken {
        path: PathBuf,
        line: u64,
        problem: String,
    },
}

/// One action, as the caller describes it.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// Who: a user name, `token:NAME`, `cli:USER`, or `anonymous` in open mode.
    pub actor: &'a str,
    /// From where: the peer's address, or `local` for the command line.
    pub source: &'a str,
    /// What, e.g. `login`, `silence.add`, `user.add`, `ca.revoke`.
    pub action: &'a str,
    /// `ok`, `failed` or `denied`.
    pub outcome: &'a str,
    /// The object and anything else worth knowing; never a secret.
    pub detail: &'a str,
}

/// A line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub seq: u64,
    pub time: String,
    pub time_ms: i64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub outcome: String,
    pub detail: String,
    pub prev: String,
}

/// The log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// A whole log that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub lines: u64,
    /// SHA-256 of the last line (the genesis value for an empty log).
    pub head: String,
}

impl AuditLog {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("audit.log"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends `action` at `now_ms`, chained to the last line, and fsyncs it. Blocking.
    pub fn append(&self, action: &Action<'_>, now_ms: i64) -> Result<Line, AuditError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        f.lock().map_err(|e| self.io(e))?;
        let (seq, prev) = match last_line(&mut f).map_err(|e| self.io(e))? {
            None => (0, GENESIS.to_owned()),
            Some(text) => {
                let line: Line = serde_json::from_str(&text).map_err(|e| AuditError::Broken {
                    path: self.path.clone(),
                    line: 0,
                    problem: format!(
                        "the last line is not an audit record ({e}); run `fleetmon audit verify`"
                    ),
                })?;
                (line.seq, sha256_hex(text.as_bytes()))
            }
        };
        let mut detail = action.detail.to_owned();
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        let line = Line {
            seq: seq + 1,
            time: fleetmon_alert::time::format_rfc3339(now_ms),
            time_ms: now_ms,
            actor: action.actor.to_owned(),
            source: action.source.to_owned(),
            action: action.action.to_owned(),
            outcome: action.outcome.to_owned(),
            detail,
            prev,
        };
        let mut text = serde_json::to_string(&line).map_err(|e| AuditError::Broken {
            path: self.path.clone(),
            line: seq + 1,
            problem: e.to_string(),
        })?;
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
        f.sync_data().map_err(|e| self.io(e))?;
        Ok(line)
    }

    /// Every line, oldest first (for `GET /api/v1/audit`); unparsable lines are skipped.
    pub fn read_all(&self) -> Result<Vec<Line>, AuditError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// The last complete line of `f`, if any.
fn last_line(f: &mut File) -> std::io::Result<Option<String>> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.rsplit('\n').next().map(str::to_owned))
}

/// Checks the whole chain of the log at `path`: every line parses, numbers follow on, and each
/// `prev` is the hash of the line before. The first broken line is the error.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Verified {
                lines: 0,
                head: GENESIS.to_owned(),
            });
        }
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let broken = |line: u64, problem: String| AuditError::Broken {
        path: path.to_owned(),
        line,
        problem,
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        let n = text.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        return Err(broken(n, "the last line is incomplete".to_owned()));
    }
    let mut head = GENESIS.to_owned();
    let mut n = 0u64;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    for raw in body.split(|&b| b == b'\n').filter(|_| !body.is_empty()) {
        n += 1;
        let line_text = std::str::from_utf8(raw).map_err(|_| broken(n, "not UTF-8".to_owned()))?;
        let line: Line = serde_json::from_str(line_text)
            .map_err(|e| broken(n, format!("not an audit record: {e}")))?;
        if line.seq != n {
            return Err(broken(
                n,
                format!("sequence number {} where {n} was due", line.seq),
            ));
        }
        if line.prev != head {
            return Err(broken(
                n,
                "does not chain to the line before: this line or the one before was changed, or lines were removed"
                    .to_owned(),
            ));
        }
        head = sha256_hex(raw);
    }
    Ok(Verified { lines: n, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act<'a>(action: &'a str, detail: &'a str) -> Action<'a> {
        Action {
            actor: "ada",
            source: "127.0.0.1:5000",
            action,
            outcome: "ok",
            detail,
        }
    }

    #[test]
    fn a_chain_that_verifies_until_edited() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        assert_eq!(verify(log.path()).unwrap().lines, 0);
        for i in 0..5 {
            let l = log
                .append(&act("silence.add", &format!("silence {i}")), 1000 + i)
                .unwrap();
            assert_eq!(l.seq, u64::try_from(i).unwrap() + 1);
        }
        // A second writer (another process) continues the same chain.
        AuditLog::new(dir.path())
            .append(&act("ca.revoke", "dev1"), 2000)
            .unwrap();
        let ok = verify(log.path()).unwrap();
        assert_eq!(ok.lines, 6);
        assert_eq!(log.read_all().unwrap()[5].action, "ca.revoke");

        let text = std::fs::read_to_string(log.path()).unwrap();
        let edited = text.replacen("silence 2", "silence 9", 1);
        std::fs::write(log.path(), &edited).unwrap();
        let e = verify(log.path()).unwrap_err();
        assert!(matches!(e, AuditError::Broken { line: 4, .. }), "{e}");

        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(log.path(), lines.join("\n") + "\n").unwrap();
        let e = verify(log.path()).unwrap_err();
        assert!(matches!(e, AuditError::Broken { line: 2, .. }), "{e}");

        std::fs::write(log.path(), &text[..text.len() - 3]).unwrap();
        assert!(matches!(
            verify(log.path()).unwrap_err(),
            AuditError::Broken { line: 6, .. }
        ));
    }
}
