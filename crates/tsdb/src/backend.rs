//! The storage backend: every byte the engine persists goes through the [`Backend`] trait, so
//! tests can swap the real filesystem for one that fails the N-th write or fsync, writes only
//! part of a buffer, or forgets everything that was not synced (a simulated power cut).
//!
//! Files live in one flat directory and are named by plain strings (`wal-…`, `block-…`). The
//! engine never holds file handles itself; [`FsBackend`] caches append handles internally.
//!
//! Three implementations:
//! - [`FsBackend`]: the real filesystem, `fdatasync` on [`Backend::fsync`], directory fsync on
//!   [`Backend::sync_dir`].
//! - [`MemBackend`]: in memory; [`MemBackend::crash`] drops every byte not yet fsynced.
//! - [`FaultBackend`]: wraps another backend and injects failures into appends and fsyncs.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the engine's files live. Names are flat (no `/`).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Creates an empty file, replacing any existing one.
    fn create(&self, name: &str) -> io::Result<()>;
    /// Reads a whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Opens a file for random reads; the handle stays readable after the file is removed
    /// (a query may still hold a block that compaction just replaced).
    fn open_read(&self, name: &str) -> io::Result<Arc<dyn RandomRead>>;
    /// Appends bytes at the end of a file.
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes a file's contents durable.
    fn fsync(&self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes (durably).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Atomically renames a file, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Names of all files.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Length of a file in bytes.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Makes creations, renames and removals durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// Random reads from one open file.
pub trait RandomRead: Send + Sync + std::fmt::Debug {
    /// Reads exactly `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

#[derive(Debug)]
struct FileReader(File);

impl RandomRead for FileReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; len];
        self.0.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// A snapshot of an in-memory file.
#[derive(Debug)]
struct BytesReader(Vec<u8>);

impl RandomRead for BytesReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        self.0
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short read"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Name of the lock file [`FsBackend`] holds while open.
pub const LOCK_FILE: &str = "LOCK";

/// The real filesystem, rooted at one directory, which it locks (`LOCK`, an advisory
/// `flock`) so two processes never write one database.
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
    handles: Mutex<HashMap<String, File>>,
    _lock: File,
}

impl FsBackend {
    /// Uses `root` (created if missing); fails if another process has it open.
    pub fn new(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another fleetmon process (lock file {LOCK_FILE}): {e}",
                    root.display()
                ),
            )
        })?;
        Ok(Self {
            root: root.to_owned(),
            handles: Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn with_handle<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut File) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut handles = lock(&self.handles);
        if !handles.contains_key(name) {
            let file = OpenOptions::new().append(true).open(self.path(name))?;
            handles.insert(name.to_owned(), file);
        }
        match handles.get_mut(name) {
            Some(file) => f(file),
            None => Err(io::Error::other("handle vanished")),
        }
    }
}

impl Backend for FsBackend {
    fn create(&self, name: &str) -> io::Result<()> {
        lock(&self.handles).remove(name);
        File::create(self.path(name)).map(drop)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }
    fn open_read(&self, name: &str) -> io::Result<Arc<dyn RandomRead>> {
        Ok(Arc::new(FileReader(File::open(self.path(name))?)))
    }
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.with_handle(name, |f| f.write_all(data))
    }
    fn fsync(&self, name: &str) -> io::Result<()> {
        self.with_handle(name, |f| f.sync_data())
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.with_handle(name, |f| {
            f.set_len(len)?;
            f.sync_all()
        })
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut handles = lock(&self.handles);
        handles.remove(from);
        handles.remove(to);
        fs::rename(self.path(from), self.path(to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.handles).remove(name);
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
                && name != LOCK_FILE
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name))?.len())
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    synced: usize,
}

/// An in-memory backend that remembers what was fsynced. Cloning shares the files.
#[derive(Debug, Default, Clone)]
pub struct MemBackend {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
}

impl MemBackend {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power cut: every byte not fsynced is lost.
    pub fn crash(&self) {
        for file in lock(&self.files).values_mut() {
            let synced = file.synced;
            file.data.truncate(synced);
        }
    }

    /// Replaces a file's bytes (durably), for corruption tests.
    pub fn put(&self, name: &str, data: Vec<u8>) {
        let synced = data.len();
        lock(&self.files).insert(name.to_owned(), MemFile { data, synced });
    }

    /// Names of WAL segment files.
    pub fn list_wal(&self) -> Vec<String> {
        lock(&self.files)
            .keys()
            .filter(|n| n.starts_with("wal-"))
            .cloned()
            .collect()
    }

    /// Empties a file's contents (keeping the file), to bound memory in long in-memory runs.
    pub fn forget(&self, name: &str) {
        if let Some(f) = lock(&self.files).get_mut(name) {
            f.data = Vec::new();
            f.synced = 0;
        }
    }

    fn not_found(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
    }
}

impl Backend for MemBackend {
    fn create(&self, name: &str) -> io::Result<()> {
        lock(&self.files).insert(name.to_owned(), MemFile::default());
        Ok(())
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        lock(&self.files)
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| Self::not_found(name))
    }
    fn open_read(&self, name: &str) -> io::Result<Arc<dyn RandomRead>> {
        Ok(Arc::new(BytesReader(self.read(name)?)))
    }
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut files = lock(&self.files);
        let file = files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        file.data.extend_from_slice(data);
        Ok(())
    }
    fn fsync(&self, name: &str) -> io::Result<()> {
        let mut files = lock(&self.files);
        let file = files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        file.synced = file.data.len();
        Ok(())
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut files = lock(&self.files);
        let file = files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        file.data.truncate(len);
        file.synced = file.data.len();
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = lock(&self.files);
        let file = files.remove(from).ok_or_else(|| Self::not_found(from))?;
        files.insert(to.to_owned(), file);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.files).remove(name);
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.files).keys().cloned().collect())
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        lock(&self.files)
            .get(name)
            .map(|f| f.data.len() as u64)
            .ok_or_else(|| Self::not_found(name))
    }
    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Which operations a [`FaultBackend`] counts and fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Appends only.
    Write,
    /// Fsyncs only.
    Fsync,
    /// Appends and fsyncs, counted together.
    Any,
}

/// A planned failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which operations are counted.
    pub op: FaultOp,
    /// The 1-based index of the first counted operation that fails.
    pub nth: u64,
    /// Keep failing every later counted operation (disk full) until [`FaultBackend::clear`].
    pub persistent: bool,
    /// A failing append first writes half of its bytes (a short write).
    pub short_write: bool,
}

/// Wraps a backend and fails chosen appends or fsyncs. Truncation, reads and metadata
/// operations are never failed: shrinking a file works even on a full disk.
#[derive(Debug)]
pub struct FaultBackend<B> {
    inner: B,
    fault: Mutex<Option<Fault>>,
    counted: AtomicU64,
    tripped: AtomicBool,
    failures: AtomicU64,
}

impl<B: Backend> FaultBackend<B> {
    /// No fault planned yet.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            fault: Mutex::new(None),
            counted: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }

    /// Plans a fault; counting restarts from zero.
    pub fn set(&self, fault: Fault) {
        *lock(&self.fault) = Some(fault);
        self.counted.store(0, Ordering::SeqCst);
        self.tripped.store(false, Ordering::SeqCst);
    }

    /// Removes the fault (the disk has space again).
    pub fn clear(&self) {
        *lock(&self.fault) = None;
    }

    /// How many operations failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Decides whether this operation fails; returns the fault when it does.
    fn check(&self, is_write: bool) -> Option<Fault> {
        let fault = (*lock(&self.fault))?;
        let counted = match fault.op {
            FaultOp::Write => is_write,
            FaultOp::Fsync => !is_write,
            FaultOp::Any => true,
        };
        if !counted {
            return None;
        }
        let n = self.counted.fetch_add(1, Ordering::SeqCst) + 1;
        let fails = if fault.persistent {
            n >= fault.nth
        } else {
            n == fault.nth && !self.tripped.swap(true, Ordering::SeqCst)
        };
        if fails {
            self.failures.fetch_add(1, Ordering::SeqCst);
            Some(fault)
        } else {
            None
        }
    }

    fn injected() -> io::Error {
        io::Error::new(
            io::ErrorKind::StorageFull,
            "injected fault: no space left on device",
        )
    }
}

impl<B: Backend> Backend for FaultBackend<B> {
    fn create(&self, name: &str) -> io::Result<()> {
        self.inner.create(name)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn open_read(&self, name: &str) -> io::Result<Arc<dyn RandomRead>> {
        self.inner.open_read(name)
    }
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        if let Some(fault) = self.check(true) {
            if fault.short_write && data.len() > 1 {
                self.inner.append(name, &data[..data.len() / 2])?;
            }
            return Err(Self::injected());
        }
        self.inner.append(name, data)
    }
    fn fsync(&self, name: &str) -> io::Result<()> {
        if self.check(false).is_some() {
            return Err(Self::injected());
        }
        self.inner.fsync(name)
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.inner.truncate(name, len)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.inner.len(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn create(&self, name: &str) -> io::Result<()> {
        (**self).create(name)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        (**self).read(name)
    }
    fn open_read(&self, name: &str) -> io::Result<Arc<dyn RandomRead>> {
        (**self).open_read(name)
    }
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        (**self).append(name, data)
    }
    fn fsync(&self, name: &str) -> io::Result<()> {
        (**self).fsync(name)
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        (**self).truncate(name, len)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        (**self).remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        (**self).list()
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        (**self).len(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        (**self).sync_dir()
    }
}

/// Writes a whole file atomically: temp file, fsync, rename, directory fsync.
pub fn write_atomic(backend: &dyn Backend, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    backend.create(&tmp)?;
    let result = backend
        .append(&tmp, data)
        .and_then(|()| backend.fsync(&tmp))
        .and_then(|()| backend.rename(&tmp, name))
        .and_then(|()| backend.sync_dir());
    if result.is_err() {
        let _ = backend.remove(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_crash_keeps_only_synced_bytes() {
        let b = MemBackend::new();
        b.create("f").unwrap();
        b.append("f", b"abc").unwrap();
        b.fsync("f").unwrap();
        b.append("f", b"def").unwrap();
        b.crash();
        assert_eq!(b.read("f").unwrap(), b"abc");
    }

    #[test]
    fn fault_once_fails_exactly_the_nth_write() {
        let b = FaultBackend::new(MemBackend::new());
        b.create("f").unwrap();
        b.set(Fault {
            op: FaultOp::Write,
            nth: 2,
            persistent: false,
            short_write: true,
        });
        b.append("f", b"11").unwrap();
        assert!(b.append("f", b"2222").is_err());
        b.append("f", b"33").unwrap();
        assert_eq!(b.read("f").unwrap(), b"112233");
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn persistent_fault_fails_until_cleared() {
        let b = FaultBackend::new(MemBackend::new());
        b.create("f").unwrap();
        b.set(Fault {
            op: FaultOp::Fsync,
            nth: 1,
            persistent: true,
            short_write: false,
        });
        b.append("f", b"x").unwrap();
        assert!(b.fsync("f").is_err());
        assert!(b.fsync("f").is_err());
        b.clear();
        b.fsync("f").unwrap();
    }

    #[test]
    fn fs_backend_round_trip_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path()).unwrap();
        b.create("a").unwrap();
        b.append("a", b"hello").unwrap();
        b.fsync("a").unwrap();
        b.truncate("a", 2).unwrap();
        b.append("a", b"y").unwrap();
        assert_eq!(b.read("a").unwrap(), b"hey");
        let r = b.open_read("a").unwrap();
        assert_eq!(r.read_at(1, 2).unwrap(), b"ey");
        assert!(r.read_at(2, 5).is_err());
        b.remove("a").unwrap();
        assert_eq!(
            r.read_at(0, 3).unwrap(),
            b"hey",
            "an open reader outlives removal"
        );
        write_atomic(&b, "blk", b"data").unwrap();
        assert_eq!(
            b.list().unwrap(),
            vec!["blk".to_owned()],
            "LOCK is not listed"
        );
        b.remove("a").unwrap();
        assert_eq!(b.len("blk").unwrap(), 4);
        let err = FsBackend::new(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(b);
        FsBackend::new(dir.path()).unwrap();
    }
}
