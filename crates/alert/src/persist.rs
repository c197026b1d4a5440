//! State files: written whole and atomically — a temporary file beside the target, written,
//! `fsync`ed, renamed over the target, then the directory `fsync`ed — so a crash leaves either
//! the old or the new state, never a torn one. A file that does not parse is set aside as
//! `NAME.corrupt` (with a warning) rather than stopping the server.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reading or writing a state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path}: cannot encode: {message}")]
    Encode { path: PathBuf, message: String },
}

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(io_err)?;
        f.write_all(data).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok(())
}

/// Serialises `value` as JSON and writes it atomically unless it equals `last` (the bytes
/// last written), which is then updated.
pub(crate) fn save_json<T: Serialize>(
    path: &Path,
    value: &T,
    last: &mut Vec<u8>,
) -> Result<(), StateError> {
    let data = serde_json::to_vec(value).map_err(|e| StateError::Encode {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if data == *last {
        return Ok(());
    }
    write_atomic(path, &data)?;
    *last = data;
    Ok(())
}

/// Reads a JSON state file: `None` when it does not exist; a file that does not parse is
/// renamed to `NAME.corrupt` and `None` returned.
pub(crate) fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    match serde_json::from_slice(&data) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            tracing::warn!(path = %path.display(), error = %e, "state file does not parse; set aside, starting without it");
            fs::rename(path, &aside).map_err(|source| StateError::Io {
                path: path.to_owned(),
                source,
            })?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        fs::write(&p, b"{not json").expect("write");
        let got: Option<Vec<u32>> = load_json(&p).expect("load");
        assert!(got.is_none());
        assert!(dir.path().join("state.json.corrupt").exists());
        assert!(!p.exists());
        let none: Option<Vec<u32>> = load_json(&p).expect("missing is fine");
        assert!(none.is_none());
    }
}
