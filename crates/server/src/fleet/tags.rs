//! Device tags: static facts about a device that the device does not report itself — its
//! `site`, `group`, `model`, position (`lat`, `lon`), the `gateway` it sits behind. They come
//! from two places: a tags file in the configuration ([`TagRules`], by device id or id pattern)
//! and the API (kept in `DATA_DIR/tags.json`, written whole, atomically), the API's winning
//! tag by tag. They are attached as labels to every series of the device at ingest (a label
//! the sample sets itself wins).

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
    #[error("device tags {path}: {message}")]
    Rules { path: String, message: String },
}

/// Tags for devices by id from the configuration (`--device-tags FILE`):
///
/// ```toml
/// [[device]]
/// id = "pi-berlin-*"   # a device id, or a pattern: `*` any run of characters, `?` one
/// site = "berlin"
/// group = "line-1"
///
/// [[device]]
/// id = "pi-berlin-007"
/// lat = 52.52          # numbers and booleans become their text
/// lon = 13.40
/// ```
///
/// Every entry whose `id` matches applies, in file order, a later one winning on the same tag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagRules {
    rules: Vec<(String, Tags)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    device: Vec<RuleEntry>,
}

#[derive(serde::Deserialize)]
struct RuleEntry {
    id: String,
    #[serde(flatten)]
    tags: BTreeMap<String, toml::Value>,
}

impl TagRules {
    /// Reads and checks a tags file; the error names the file, the entry and what is wrong.
    pub fn load(path: &Path) -> Result<Self, TagError> {
        let shown = path.display().to_string();
        let fail = |message: String| TagError::Rules {
            path: shown.clone(),
            message,
        };
        let text = fs::read_to_string(path).map_err(|source| TagError::File {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(fail)
    }

    /// Parses the TOML text of a tags file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::with_capacity(file.device.len());
        for (n, entry) in file.device.into_iter().enumerate() {
            let at = format!("[[device]] #{} (id {:?})", n + 1, entry.id);
            let valid_char = |c: char| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '*' | '?')
            };
            if entry.id.is_empty() || entry.id.len() > 128 || !entry.id.chars().all(valid_char) {
                return Err(format!(
                    "{at}: id must be 1 to 128 characters of A-Z a-z 0-9 . _ : - and the wildcards * ?"
                ));
            }
            let mut tags = Tags::new();
            for (name, value) in entry.tags {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "{at}: tag `{name}` must be a string, number or boolean, not a {}",
                            other.type_str()
                        ));
                    }
                };
                tags.insert(name, text);
            }
            validate(&tags).map_err(|e| format!("{at}: {e}"))?;
            rules.push((entry.id, tags));
        }
        Ok(Self { rules })
    }

    /// The tags the file gives device `id`.
    pub fn tags_for(&self, id: &str) -> Tags {
        let mut out = Tags::new();
        for (pattern, tags) in &self.rules {
            if matches(pattern.as_bytes(), id.as_bytes()) {
                out.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether `id` matches `pattern` (`*` any run, `?` one character); linear backtracking over
/// the last `*`, so a hostile pattern cannot blow up.
fn matches(pattern: &[u8], id: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < id.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == id[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A device's tags: the file's, then the API's over them.
pub fn effective(rules: &TagRules, id: &str, api: &Tags) -> Tags {
    let mut tags = rules.tags_for(id);
    tags.extend(api.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags
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
    fn patterns_match_ids() {
        for (pattern, id, yes) in [
            ("pi-1", "pi-1", true),
            ("pi-1", "pi-10", false),
            ("pi-*", "pi-10", true),
            ("pi-*", "pi", false),
            ("*", "anything", true),
            ("pi-?", "pi-7", true),
            ("pi-?", "pi-77", false),
            ("*-berlin-*", "pi-berlin-07", true),
            ("*-berlin-*", "pi-munich-07", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "", true),
        ] {
            assert_eq!(
                matches(pattern.as_bytes(), id.as_bytes()),
                yes,
                "{pattern} {id}"
            );
        }
    }

    #[test]
    fn rules_apply_in_order_and_the_api_wins() {
        let rules = TagRules::parse(
            "[[device]]\nid = \"pi-*\"\nsite = \"berlin\"\ngroup = \"line-1\"\n\n\
             [[device]]\nid = \"pi-7\"\ngroup = \"line-2\"\nlat = 52.52\nlink_capacity_bits_per_second = 1000000\n",
        )
        .unwrap();
        assert_eq!(
            rules.tags_for("pi-7"),
            tags(&[
                ("site", "berlin"),
                ("group", "line-2"),
                ("lat", "52.52"),
                ("link_capacity_bits_per_second", "1000000")
            ])
        );
        assert_eq!(
            rules.tags_for("pi-8"),
            tags(&[("site", "berlin"), ("group", "line-1")])
        );
        assert!(rules.tags_for("gw-1").is_empty());
        let api = tags(&[("site", "paris")]);
        assert_eq!(
            effective(&rules, "pi-8", &api),
            tags(&[("site", "paris"), ("group", "line-1")])
        );
    }

    #[test]
    fn bad_rules_name_the_entry_and_the_problem() {
        for (text, expect) in [
            ("[[device]]\nsite = \"x\"\n", "id"),
            ("[[device]]\nid = \"a b\"\n", "#1"),
            (
                "[[device]]\nid = \"a\"\n\"bad-name\" = \"x\"\n",
                "\"bad-name\"",
            ),
            ("[[device]]\nid = \"a\"\nlat = 95\n", "[-90, 90]"),
            ("[[device]]\nid = \"a\"\nsite = [1]\n", "tag `site` must be"),
            ("[[device]]\nid = \"a\"\ndevice = \"b\"\n", "reserved"),
            ("[[devices]]\nid = \"a\"\n", "devices"),
        ] {
            let e = TagRules::parse(text).unwrap_err();
            assert!(e.contains(expect), "{text}: {e}");
        }
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
