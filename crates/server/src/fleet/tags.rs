//! Device tags: static facts about a device that the device does not report itself — its
//! `site`, `group`, `model`, position (`lat`, `lon`), the `gateway` it sits behind. Set through
//! the API, kept in `DATA_DIR/tags.json` (written whole, atomically), and attached as labels to
//! every series of the device at ingest (a label the sample sets itself wins).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use fleetmon_protocol::validate::is_valid_label_name;

/// Tag name → value.
pub type Tags = BTreeMap<String, String>;

/// At most this many tags per device.
pub const MAX_TAGS: usize = 16;
const MAX_VALUE_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("tag name {0:?} is invalid: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __")]
    Name(String),
    #[error("tag `{0}` is reserved (it is the device id label)")]
    Reserved(String),
    #[error("tag `{name}` value is {len} bytes; at most {MAX_VALUE_LEN} allowed")]
    ValueTooLong { name: String, len: usize },
    #[error("{0} tags; at most {MAX_TAGS} allowed")]
    TooMany(usize),
    #[error("tag `{name}` must be a number in [{min}, {max}], got {value:?}")]
    Coordinate {
        name: &'static str,
        value: String,
        min: f64,
        max: f64,
    },
    #[error("tags file {path}: {source}")]
    File { path: String, source: io::Error },
    #[error("tags file {path} is not valid JSON: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// Checks a device's tags.
pub fn validate(tags: &Tags) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany(tags.len()));
    }
    for (name, value) in tags {
        if !is_valid_label_name(name) || name.len() > 100 {
            return Err(TagError::Name(name.clone()));
        }
        if name == "device" {
            return Err(TagError::Reserved(name.clone()));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(TagError::ValueTooLong {
                name: name.clone(),
                len: value.len(),
            });
        }
    }
    for (name, min, max) in [("lat", -90.0, 90.0), ("lon", -180.0, 180.0)] {
        if let Some(v) = tags.get(name)
            && !v.parse::<f64>().is_ok_and(|x| (min..=max).contains(&x))
        {
            return Err(TagError::Coordinate {
                name,
                value: v.clone(),
                min,
                max,
            });
        }
    }
    Ok(())
}

/// Reads the tags file; a missing file is no tags.
pub fn load(path: &Path) -> Result<HashMap<String, Tags>, TagError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(TagError::File {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let all: HashMap<String, Tags> =
        serde_json::from_str(&text).map_err(|source| TagError::Parse {
            path: path.display().to_string(),
            source,
        })?;
    Ok(all)
}

/// Writes every device's tags: a temporary file, fsync, rename, fsync of the directory.
pub fn save(path: &Path, all: &BTreeMap<&str, &Tags>) -> Result<(), TagError> {
    let err = |source| TagError::File {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(all).unwrap_or_default();
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&json).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate(&tags(&[("site", "a"), ("lat", "52.5"), ("lon", "13.4")])).is_ok());
        let e = validate(&tags(&[("bad-name", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"bad-name\""), "{e}");
        assert!(validate(&tags(&[("device", "x")])).is_err());
        let e = validate(&tags(&[("lat", "95")])).unwrap_err().to_string();
        assert!(e.contains("[-90, 90]"), "{e}");
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        assert!(load(&path).unwrap().is_empty());
        let a = tags(&[("site", "north")]);
        save(&path, &BTreeMap::from([("d1", &a)])).unwrap();
        assert_eq!(load(&path).unwrap()["d1"], a);
        fs::write(&path, "{oops").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
