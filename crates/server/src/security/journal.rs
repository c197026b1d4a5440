//! The security events on disk, so an attack seen before a restart is still listed after it:
//! `DATA_DIR/security/events.jsonl`, one JSON object per line, appended by
//! [`super::events::Events::sync`] about once a second (one write and one `fdatasync` for
//! everything recorded since — a burst of failed handshakes costs no fsync per event). When
//! the file passes [`MAX_FILE_BYTES`] it becomes `events.1.jsonl` (replacing the one before),
//! so the journal never holds more than twice that.
//!
//! Opening reads the newest events back. A line cut short by a crash is cut off the file; a
//! line that does not parse is skipped and counted, never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::events::Event;

/// Size at which the journal file is rotated.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

const CURRENT: &str = "events.jsonl";
const PREVIOUS: &str = "events.1.jsonl";

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    size: u64,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest `keep` events, oldest first.
    pub events: Vec<Event>,
    /// Lines that did not parse (skipped).
    pub skipped: usize,
}

impl Journal {
    /// Opens (creating) the journal in `dir` and reads back its newest `keep` events.
    pub fn open(dir: &Path, keep: usize) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut file = open_current(dir)?;
        let size = cut_torn_tail(&mut file)?;
        let mut recovered = Recovered::default();
        for name in [PREVIOUS, CURRENT] {
            read_lines(&dir.join(name), keep, &mut recovered)?;
        }
        Ok((
            Journal {
                dir: dir.to_owned(),
                file,
                size,
            },
            recovered,
        ))
    }

    /// Appends `lines` (whole JSON lines) durably, then rotates if the file is full.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.file.write_all(lines)?;
        self.file.sync_data()?;
        self.size += lines.len() as u64;
        if self.size >= MAX_FILE_BYTES {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
        self.file = open_current(&self.dir)?;
        File::open(&self.dir)?.sync_all()?;
        self.size = 0;
        Ok(())
    }
}

/// The journal file events are appended to (made when missing).
fn open_current(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(dir.join(CURRENT))
}

/// The JSON line of an event.
pub fn line(event: &Event) -> Vec<u8> {
    let mut out = serde_json::to_vec(event).unwrap_or_default();
    out.push(b'\n');
    out
}

fn read_lines(path: &Path, keep: usize, into: &mut Recovered) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(e) => {
                into.events.push(e);
                if into.events.len() > keep.saturating_mul(2) {
                    let excess = into.events.len() - keep;
                    into.events.drain(..excess);
                }
            }
            Err(_) => into.skipped += 1,
        }
    }
    let excess = into.events.len().saturating_sub(keep);
    into.events.drain(..excess);
    Ok(())
}

/// Truncates whatever follows the last newline (a line a crash cut short); the new size.
fn cut_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Find the last newline, reading backwards in blocks.
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(buf.len());
        file.seek(SeekFrom::Start(start))?;
        io::Read::read_exact(file, &mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(keep);
        }
        end = start;
    }
    file.set_len(0)?;
    file.sync_data()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::super::events::Kind;
    use super::*;

    fn event(id: u64) -> Event {
        Event {
            id,
            time_ms: 1_700_000_000_000 + id as i64,
            kind: Kind::UnknownCa,
            device: Some("pi-1".into()),
            source: Some("192.0.2.1:5000".into()),
            detail: format!("event {id}"),
        }
    }

    #[test]
    fn events_come_back_after_reopening_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path(), 10).unwrap();
        assert!(r.events.is_empty());
        let lines: Vec<u8> = (1..=15).flat_map(|i| line(&event(i))).collect();
        j.append(&lines).unwrap();
        drop(j);

        // A crash in the middle of the next line, and a line of garbage before it.
        let path = dir.path().join(CURRENT);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n{\"id\":16,\"time_ms\":").unwrap();
        drop(f);

        let (mut j, r) = Journal::open(dir.path(), 10).unwrap();
        let ids: Vec<u64> = r.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (6..=15).collect::<Vec<_>>());
        assert_eq!(r.skipped, 1);
        assert_eq!(r.events[0].detail, "event 6");
        j.append(&line(&event(16))).unwrap();
        drop(j);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("\"detail\":\"event 16\"}\n"), "{text}");
        let (_, r) = Journal::open(dir.path(), 3).unwrap();
        let ids: Vec<u64> = r.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [14, 15, 16]);
    }

    #[test]
    fn a_full_file_rotates_and_both_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 5).unwrap();
        let mut big = event(1);
        big.detail = "x".repeat(MAX_FILE_BYTES as usize);
        j.append(&line(&big)).unwrap();
        assert!(dir.path().join(PREVIOUS).exists());
        j.append(&line(&event(2))).unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path(), 5).unwrap();
        let ids: Vec<u64> = r.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2]);
    }
}
