//! The dispatcher's configuration: the routing tree (Alertmanager's `route:`), inhibition
//! rules, topology suppression and flap damping — deserialisable from YAML or JSON, with
//! Alertmanager's defaults and duration notation.

use serde::Deserialize;

use crate::duration::Duration;
use crate::labels::{LabelSet, Matcher, format_labels, matches_all};

/// Everything the dispatcher is told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub route: RouteConfig,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRule>,
    #[serde(default)]
    pub topology: TopologyConfig,
    #[serde(default)]
    pub flap: FlapConfig,
}

impl Default for DispatcherConfig {
    /// One route to receiver `default`, grouping by `alertname`.
    fn default() -> Self {
        Self {
            route: RouteConfig {
                receiver: Some("default".into()),
                group_by: Some(vec!["alertname".into()]),
                ..RouteConfig::default()
            },
            inhibit_rules: Vec::new(),
            topology: TopologyConfig::default(),
            flap: FlapConfig::default(),
        }
    }
}

/// A config that does not parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dispatcher config: {0}")]
pub struct ConfigError(pub String);

impl DispatcherConfig {
    /// Parses YAML (JSON is YAML too).
    pub fn from_yaml(text: &str) -> Result<DispatcherConfig, ConfigError> {
        let c: DispatcherConfig = serde_saphyr::from_str(text).map_err(|e| {
            use serde_saphyr::MessageFormatter;
            let msg = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
            match e.location() {
                Some(l) => ConfigError(format!("line {}:{}: {msg}", l.line(), l.column())),
                None => ConfigError(msg.into_owned()),
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot: the root route has a receiver and no matchers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.route.receiver.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError("the root route needs a `receiver`".into()));
        }
        if !self.route.matchers.is_empty() {
            return Err(ConfigError(
                "the root route matches every alert; it cannot have `matchers`".into(),
            ));
        }
        if self.flap.max_changes == 0 {
            return Err(ConfigError("flap.max_changes must be at least 1".into()));
        }
        Ok(())
    }
}

/// One node of the routing tree, as written. Unset fields are inherited from the parent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Labels to group by; `["..."]` groups by all labels (one alert per group).
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<Duration>,
    pub group_interval: Option<Duration>,
    pub repeat_interval: Option<Duration>,
    /// Keep looking at later siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Alertmanager's inhibition rule: while an alert matching `source_matchers` fires, alerts
/// matching `target_matchers` with the same values of the `equal` labels are muted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    #[serde(default)]
    pub source_matchers: Vec<Matcher>,
    #[serde(default)]
    pub target_matchers: Vec<Matcher>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Topology-aware suppression: while a gateway's offline alert fires, its children's
/// offline alerts are folded into it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    pub enabled: bool,
    /// The alert names of the "offline" family.
    pub alertnames: Vec<String>,
    /// The label on a child naming its gateway's device id.
    pub gateway_label: String,
    /// The label holding a device's id.
    pub device_label: String,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            alertnames: vec!["DeviceOffline".into()],
            gateway_label: "gateway".into(),
            device_label: "device".into(),
        }
    }
}

/// Flap damping. An alert flaps when it changed between firing and resolved more than
/// `max_changes` times within `window`; its notifications are then held until it has not
/// changed for `hold`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlapConfig {
    pub enabled: bool,
    pub max_changes: usize,
    pub window: Duration,
    pub hold: Duration,
}

impl Default for FlapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_changes: 4,
            window: Duration(3_600_000),
            hold: Duration(30 * 60_000),
        }
    }
}

/// How a route groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per alert (`...`).
    All,
    Labels(Vec<String>),
}

/// A route with inherited values filled in.
#[derive(Debug, Clone)]
pub struct Route {
    /// Identity in group keys: the matchers from the root down, with sibling positions.
    pub key: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: GroupBy,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub continue_matching: bool,
    pub routes: Vec<Route>,
}

/// Alertmanager's defaults.
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 5 * 60_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;

impl Route {
    /// The tree with inheritance applied.
    pub fn compile(root: &RouteConfig) -> Route {
        let base = Route {
            key: "{}".into(),
            receiver: root.receiver.clone().unwrap_or_else(|| "default".into()),
            matchers: Vec::new(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait_ms: DEFAULT_GROUP_WAIT_MS,
            group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
            continue_matching: false,
            routes: Vec::new(),
        };
        Self::child(&base, root, "{}".into())
    }

    fn child(parent: &Route, c: &RouteConfig, key: String) -> Route {
        let mut r = Route {
            key,
            receiver: c
                .receiver
                .clone()
                .unwrap_or_else(|| parent.receiver.clone()),
            matchers: c.matchers.clone(),
            group_by: match &c.group_by {
                Some(g) if g.iter().any(|l| l == "...") => GroupBy::All,
                Some(g) => GroupBy::Labels(g.clone()),
                None => parent.group_by.clone(),
            },
            group_wait_ms: c.group_wait.map_or(parent.group_wait_ms, Duration::ms),
            group_interval_ms: c
                .group_interval
                .map_or(parent.group_interval_ms, Duration::ms)
                .max(1),
            repeat_interval_ms: c
                .repeat_interval
                .map_or(parent.repeat_interval_ms, Duration::ms),
            continue_matching: c.continue_matching,
            routes: Vec::new(),
        };
        r.routes = c
            .routes
            .iter()
            .enumerate()
            .map(|(i, sub)| {
                let m: Vec<String> = sub.matchers.iter().map(ToString::to_string).collect();
                let key = format!("{}/{i}{{{}}}", r.key, m.join(","));
                Route::child(&r, sub, key)
            })
            .collect();
        r
    }

    /// The routes an alert goes to: depth first, the first matching child wins unless it
    /// has `continue`; a route none of whose children match takes the alert itself.
    pub fn matching(&self, labels: &LabelSet) -> Vec<&Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn collect<'a>(&'a self, labels: &LabelSet, out: &mut Vec<&'a Route>) -> bool {
        if !matches_all(&self.matchers, labels) {
            return false;
        }
        let before = out.len();
        for child in &self.routes {
            if child.collect(labels, out) && !child.continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    /// The group labels of an alert under this route.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// The key of the group an alert with these group labels is in.
    pub fn group_key(&self, group_labels: &LabelSet) -> String {
        format!("{}:{}", self.key, format_labels(group_labels))
    }
}

impl InhibitRule {
    /// Whether `source` (firing) inhibits `target`.
    pub fn inhibits(&self, source: &LabelSet, target: &LabelSet) -> bool {
        if !matches_all(&self.target_matchers, target)
            || !matches_all(&self.source_matchers, source)
        {
            return false;
        }
        // An alert matching both sides cannot inhibit another that does too (else two such
        // alerts would mute each other).
        if matches_all(&self.target_matchers, source) && matches_all(&self.source_matchers, target)
        {
            return false;
        }
        self.equal.iter().all(|l| {
            source.get(l).map_or("", String::as_str) == target.get(l).map_or("", String::as_str)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const CONFIG: &str = "
route:
  receiver: ops
  group_by: [alertname, site]
  group_wait: 10s
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: pager
      continue: true
      group_wait: 0s
    - matchers: ['site=~\"lab.*\"']
      receiver: lab
      group_by: ['...']
    - matchers: ['severity=\"critical\"']
      receiver: critical-chat
inhibit_rules:
  - source_matchers: ['severity=\"critical\"']
    target_matchers: ['severity=\"warning\"']
    equal: [device]
flap:
  max_changes: 3
  window: 30m
  hold: 10m
";

    #[test]
    fn routes_first_match_continue_and_default() {
        let c = DispatcherConfig::from_yaml(CONFIG).expect("parses");
        let root = Route::compile(&c.route);
        let names = |l: &LabelSet| -> Vec<String> {
            root.matching(l)
                .iter()
                .map(|r| r.receiver.clone())
                .collect()
        };
        assert_eq!(names(&ls(&[("severity", "warning")])), ["ops"]);
        assert_eq!(
            names(&ls(&[("severity", "critical")])),
            ["pager", "critical-chat"]
        );
        assert_eq!(
            names(&ls(&[("severity", "critical"), ("site", "lab1")])),
            ["pager", "lab"]
        );
        let pager = root.matching(&ls(&[("severity", "critical")]))[0];
        assert_eq!(pager.group_wait_ms, 0);
        assert_eq!(pager.group_interval_ms, DEFAULT_GROUP_INTERVAL_MS);
        assert_eq!(
            pager.group_by,
            GroupBy::Labels(vec!["alertname".into(), "site".into()])
        );
        let l = ls(&[("alertname", "X"), ("site", "b"), ("device", "d")]);
        assert_eq!(
            pager.group_key(&pager.group_labels(&l)),
            "{}/0{severity=\"critical\"}:{alertname=\"X\", site=\"b\"}"
        );
        assert_eq!(c.flap.hold.ms(), 600_000);
    }

    #[test]
    fn inhibition_needs_equal_labels_and_not_self() {
        let c = DispatcherConfig::from_yaml(CONFIG).expect("parses");
        let rule = &c.inhibit_rules[0];
        let crit = ls(&[("severity", "critical"), ("device", "d1")]);
        assert!(rule.inhibits(&crit, &ls(&[("severity", "warning"), ("device", "d1")])));
        assert!(!rule.inhibits(&crit, &ls(&[("severity", "warning"), ("device", "d2")])));
        assert!(!rule.inhibits(&crit, &ls(&[("severity", "critical"), ("device", "d1")])));
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(DispatcherConfig::from_yaml("route: {}\n").is_err());
        assert!(DispatcherConfig::from_yaml("route:\n  receiver: a\n  recevier: b\n").is_err());
        assert!(
            DispatcherConfig::from_yaml("route:\n  receiver: a\n  group_wait: soon\n").is_err()
        );
        assert!(
            DispatcherConfig::from_yaml("route:\n  receiver: a\n  matchers: ['a=\"b\"']\n")
                .is_err()
        );
    }
}
