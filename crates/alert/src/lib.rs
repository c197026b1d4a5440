//! fleetmon alerting: rule files, rule evaluation and the alert lifecycle, and the
//! dispatcher that turns alerts into notifications (routing, grouping, inhibition, silences,
//! topology suppression, flap damping). A library: every time comes from the caller (an
//! injected clock), state is persisted to files the caller names, and delivery is someone
//! else's job (`fleetmon-notify` delivers the [`Notification`]s).
//!
//! # Layout
//! - [`rulefile`]: YAML rule files in Prometheus's shape → validated [`RuleSet`]; the
//!   built-in pack (`rules/builtin.yml`).
//! - [`template`]: `{{ $labels.x }}` / `{{ $value }}` templates; [`duration`]: `5m`, `1h30m`.
//! - [`manager`]: [`Manager`] evaluates rules over a PromQL [`fleetmon_promql::Source`],
//!   keeps each rule's [`Alert`]s (inactive → pending → firing → resolved), persists them.
//! - [`dispatch`]: [`Dispatcher`] — routes, groups, inhibition, topology, flap damping →
//!   [`Notification`]s; [`silence`]: [`Silences`].
//! - [`labels`]: fingerprints and matchers; [`persist`]: atomic state files; [`time`]:
//!   RFC 3339 text.
//!
//! Semantics are written down in `docs/alerting.md`.

pub mod alert;
pub mod dispatch;
pub mod duration;
pub mod labels;
pub mod manager;
pub mod persist;
pub mod rulefile;
pub mod silence;
pub mod template;
pub mod time;

pub use alert::{Alert, AlertState};
pub use dispatch::{
    DispatchError, DispatchedAlert, Dispatcher, DispatcherConfig, Muting, Notification,
    NotificationAlert, Status, SuppressedAlert,
};
pub use labels::{Fingerprint, LabelSet, MatchOp, Matcher, fingerprint};
pub use manager::{AlertChange, EvalOutput, Health, Manager, ManagerOptions, RecordedSample};
pub use persist::StateError;
pub use rulefile::{Group, Rule, RuleFileError, RuleKind, RuleLoadError, RuleSet};
pub use silence::{NewSilence, Silence, SilenceError, SilenceState, Silences};
