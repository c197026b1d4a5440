//! Firmware policy: which versions each model must at least run, and which version ranges are
//! known vulnerable (with their advisory ids). Loaded from a TOML file
//! (`--firmware-policy FILE`, see `docs/health.md` for the format):
//!
//! ```toml
//! [[minimum]]
//! model = "rpi4"           # a device's `model` tag or device_info model; "*" = every model
//! version = "1.4.0"
//!
//! [[vulnerable]]
//! advisory = "FM-2026-001"
//! model = "*"
//! versions = ">=1.2.0, <1.3.2"
//! ```
//!
//! Versions compare part by part (`1.10.0` > `1.9.3`): numeric parts as numbers, others as
//! text, a missing part as zero.

use std::cmp::Ordering;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("firmware policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("firmware policy {path}: {message}")]
    Parse { path: String, message: String },
    #[error("firmware policy: advisory {advisory}: range {range:?} is invalid: {why}")]
    Range {
        advisory: String,
        range: String,
        why: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub minimum: Vec<Minimum>,
    #[serde(default)]
    pub vulnerable: Vec<Vulnerable>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minimum {
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vulnerable {
    pub advisory: String,
    #[serde(default = "any_model")]
    pub model: String,
    pub versions: String,
}

fn any_model() -> String {
    "*".to_owned()
}

/// What the policy says about one device's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// In a vulnerable range.
    Vulnerable { advisory: String, range: String },
    /// Older than the model's minimum.
    BelowMinimum { minimum: String },
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let policy: Policy = toml::from_str(&text).map_err(|e| PolicyError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        for v in &policy.vulnerable {
            parse_range(&v.versions).map_err(|why| PolicyError::Range {
                advisory: v.advisory.clone(),
                range: v.versions.clone(),
                why,
            })?;
        }
        Ok(policy)
    }

    /// Findings for `firmware` on a device of `model`, vulnerabilities first.
    pub fn check(&self, model: Option<&str>, firmware: &str) -> Vec<Finding> {
        let applies = |m: &str| m == "*" || Some(m) == model;
        let mut out: Vec<Finding> = self
            .vulnerable
            .iter()
            .filter(|v| applies(&v.model))
            .filter(|v| {
                parse_range(&v.versions).is_ok_and(|r| {
                    r.iter()
                        .all(|(op, bound)| op.holds(compare(firmware, bound)))
                })
            })
            .map(|v| Finding::Vulnerable {
                advisory: v.advisory.clone(),
                range: v.versions.clone(),
            })
            .collect();
        out.extend(
            self.minimum
                .iter()
                .filter(|m| applies(&m.model) && compare(firmware, &m.version) == Ordering::Less)
                .map(|m| Finding::BelowMinimum {
                    minimum: m.version.clone(),
                }),
        );
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Ge => o != Ordering::Less,
            Op::Gt => o == Ordering::Greater,
            Op::Le => o != Ordering::Greater,
            Op::Lt => o == Ordering::Less,
            Op::Eq => o == Ordering::Equal,
        }
    }
}

/// `">=1.2.0, <1.3.2"` → constraints that must all hold.
fn parse_range(range: &str) -> Result<Vec<(Op, String)>, String> {
    let mut out = Vec::new();
    for part in range.split(',').map(str::trim) {
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("=", Op::Eq),
        ]
        .into_iter()
        .find_map(|(p, op)| part.strip_prefix(p).map(|r| (op, r.trim())))
        .ok_or_else(|| format!("{part:?} must start with >=, >, <=, < or ="))?;
        if rest.is_empty() {
            return Err(format!("{part:?} has no version"));
        }
        out.push((op, rest.to_owned()));
    }
    Ok(out)
}

/// Compares two versions part by part.
pub fn compare(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.trim_start_matches(['v', 'V'])
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map_or("0", String::as_str);
        let y = pb.get(i).map_or("0", String::as_str);
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare("v2.0", "2.0.0"), Ordering::Equal);
        assert_eq!(compare("1.2.0-rc1", "1.2.0"), Ordering::Greater);
        assert_eq!(compare("0.9", "1"), Ordering::Less);
    }

    #[test]
    fn findings_name_the_advisory_and_the_minimum() {
        let policy: Policy = toml::from_str(
            r#"
            [[minimum]]
            model = "rpi4"
            version = "1.4.0"
            [[vulnerable]]
            advisory = "FM-2026-001"
            versions = ">=1.2.0, <1.3.2"
            "#,
        )
        .unwrap();
        assert_eq!(
            policy.check(Some("rpi4"), "1.3.0"),
            vec![
                Finding::Vulnerable {
                    advisory: "FM-2026-001".into(),
                    range: ">=1.2.0, <1.3.2".into()
                },
                Finding::BelowMinimum {
                    minimum: "1.4.0".into()
                }
            ]
        );
        assert_eq!(policy.check(Some("gateway"), "1.3.5"), vec![]);
        assert_eq!(policy.check(Some("rpi4"), "1.4.1"), vec![]);
        assert_eq!(policy.check(None, "1.2.0").len(), 1);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[[vulnerable]]\nadvisory = \"A\"\nversions = \"~1.2\"\n",
        )
        .unwrap();
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("advisory A") && e.contains("must start with"),
            "{e}"
        );
        std::fs::write(&path, "[[minimum]]\nmodle = \"x\"\nversion = \"1\"\n").unwrap();
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(e.contains("modle"), "{e}");
    }
}
