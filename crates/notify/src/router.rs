//! Label routes to receivers, for a server that does not route in its alert engine.
//!
//! Deliberately small: every route whose matchers all match a notification's common labels
//! contributes its receiver (each once, in route order); there is no nesting or `continue`.

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::RouteConfig;

#[derive(Debug)]
enum Matcher {
    Equal(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, value: Option<&String>) -> bool {
        let v = value.map(String::as_str).unwrap_or("");
        match self {
            Matcher::Equal(want) => v == want,
            Matcher::Regex(re) => re.is_match(v),
        }
    }
}

/// Compiled [`RouteConfig`]s.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<(Vec<(String, Matcher)>, String)>,
}

/// A route matcher whose regular expression does not compile.
#[derive(Debug, thiserror::Error)]
#[error("route {index} label `{label}`: invalid regex: {source}")]
pub struct RouteError {
    pub index: usize,
    pub label: String,
    pub source: regex::Error,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Result<Self, RouteError> {
        let mut out = Vec::with_capacity(routes.len());
        for (index, r) in routes.iter().enumerate() {
            let mut ms = Vec::new();
            for (label, value) in &r.matchers {
                let m =
                    match value.strip_prefix('~') {
                        Some(re) => Matcher::Regex(Regex::new(&format!("^(?:{re})$")).map_err(
                            |source| RouteError {
                                index,
                                label: label.clone(),
                                source,
                            },
                        )?),
                        None => Matcher::Equal(value.clone()),
                    };
                ms.push((label.clone(), m));
            }
            out.push((ms, r.receiver.clone()));
        }
        Ok(Router { routes: out })
    }

    /// Receivers for these labels (a missing label matches only `""` or a regex that
    /// accepts the empty string).
    pub fn route(&self, labels: &BTreeMap<String, String>) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (ms, receiver) in &self.routes {
            if ms.iter().all(|(l, m)| m.matches(labels.get(l))) && !out.contains(&receiver.as_str())
            {
                out.push(receiver);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &[(&str, &str)], r: &str) -> RouteConfig {
        RouteConfig {
            matchers: m
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            receiver: r.into(),
        }
    }

    fn labels(m: &[(&str, &str)]) -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exact_regex_and_catch_all() {
        let r = Router::new(&[
            route(&[("severity", "critical")], "pager"),
            route(&[("site", "~ber.*|munich")], "berlin-team"),
            route(&[], "everything"),
            route(&[("severity", "critical")], "pager"),
        ])
        .unwrap();
        assert_eq!(
            r.route(&labels(&[("severity", "critical"), ("site", "berlin")])),
            vec!["pager", "berlin-team", "everything"]
        );
        assert_eq!(
            r.route(&labels(&[("severity", "warning"), ("site", "xberlin")])),
            vec!["everything"]
        );
        assert_eq!(
            r.route(&labels(&[("site", "munich")])),
            vec!["berlin-team", "everything"]
        );
    }

    #[test]
    fn bad_regex_names_the_route() {
        let e = Router::new(&[route(&[("site", "~(")], "x")]).unwrap_err();
        assert!(e.to_string().contains("route 0 label `site`"));
    }
}
