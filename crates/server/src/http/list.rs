//! The device list: filters, sorting and paging, shared by `GET /api/v1/devices` and the
//! dashboard's device list. Each device is first assessed cheaply (status, health, the few
//! fields filters and sort keys need); only the page asked for is turned into full
//! [`DeviceView`]s, so a page of 50 out of 100,000 devices costs little more than the count.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{DeviceView, view};
use super::error::ApiError;
use crate::fleet::health::{self, Health, Level};
use crate::fleet::{Device, HealthKey, Registry, Status};
use crate::state::State;

/// Filters, order and page of the device list; every filter given must hold.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub health: Option<Level>,
    pub site: Option<String>,
    pub group: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// Substring of the device id.
    pub q: Option<String>,
    /// A health check that fires on the device (`battery_low`, `offline`, ...).
    pub check: Option<String>,
    /// A [`SortKey`] name, `-` in front for descending (`-health`: worst first).
    pub sort: Option<String>,
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
}

/// What the list can be sorted by; ties are broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Status,
    Health,
    Site,
    Group,
    Model,
    Firmware,
    LastSeen,
    Cpu,
    Memory,
    Temperature,
    Battery,
}

impl SortKey {
    pub const ALL: [SortKey; 12] = [
        SortKey::Id,
        SortKey::Status,
        SortKey::Health,
        SortKey::Site,
        SortKey::Group,
        SortKey::Model,
        SortKey::Firmware,
        SortKey::LastSeen,
        SortKey::Cpu,
        SortKey::Memory,
        SortKey::Temperature,
        SortKey::Battery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Status => "status",
            SortKey::Health => "health",
            SortKey::Site => "site",
            SortKey::Group => "group",
            SortKey::Model => "model",
            SortKey::Firmware => "firmware",
            SortKey::LastSeen => "last_seen",
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Temperature => "temperature",
            SortKey::Battery => "battery",
        }
    }

    /// The metric behind a value column.
    fn metric(self) -> Option<&'static str> {
        match self {
            SortKey::Cpu => Some("cpu_usage_ratio"),
            SortKey::Memory => Some("memory_used_ratio"),
            SortKey::Temperature => Some("temperature_celsius"),
            SortKey::Battery => Some("battery_charge_ratio"),
            _ => None,
        }
    }
}

/// A sort key and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    /// `name` or `-name`; none means by id.
    pub fn parse(s: Option<&str>) -> Result<Sort, ApiError> {
        let s = s.unwrap_or("id");
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let key = SortKey::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = SortKey::ALL.iter().map(|k| k.name()).collect();
                ApiError::bad_request(format!(
                    "sort {s:?}: expected one of {}, with `-` in front for descending",
                    names.join(", ")
                ))
            })?;
        Ok(Sort { key, descending })
    }

    pub fn as_param(self) -> String {
        format!(
            "{}{}",
            if self.descending { "-" } else { "" },
            self.key.name()
        )
    }

    pub fn compare(self, a: &Brief<'_>, b: &Brief<'_>) -> Ordering {
        let text = |x: Option<&str>, y: Option<&str>| none_last(x, y, self.descending);
        let ord = match self.key {
            SortKey::Id => Ordering::Equal,
            SortKey::Status => status_rank(a.status).cmp(&status_rank(b.status)),
            SortKey::Health => a
                .health
                .level
                .cmp(&b.health.level)
                .then(a.health.reasons.len().cmp(&b.health.reasons.len())),
            SortKey::Site => text(a.tag("site"), b.tag("site")),
            SortKey::Group => text(a.tag("group"), b.tag("group")),
            SortKey::Model => text(a.model, b.model),
            SortKey::Firmware => text(a.firmware, b.firmware),
            SortKey::LastSeen => a.device.last_seen_ms.cmp(&b.device.last_seen_ms),
            key => {
                let metric = key.metric().unwrap_or_default();
                let (x, y) = (a.device.max_value(metric), b.device.max_value(metric));
                match (x, y) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    _ => none_last(x.map(|_| ()), y.map(|_| ()), self.descending),
                }
            }
        };
        let ord = if self.descending { ord.reverse() } else { ord };
        ord.then_with(|| a.id.cmp(b.id))
    }
}

/// Orders missing values last whichever the direction (the caller reverses for descending).
fn none_last<T: Ord>(a: Option<T>, b: Option<T>, descending: bool) -> Ordering {
    let ord = match (&a, &b) {
        (Some(x), Some(y)) => x.cmp(y),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    };
    if descending && (a.is_none() || b.is_none()) {
        ord.reverse()
    } else {
        ord
    }
}

fn status_rank(s: Status) -> u8 {
    match s {
        Status::Online => 0,
        Status::Offline => 1,
    }
}

/// A device assessed: what filters, sorting and the overview need.
#[derive(Debug)]
pub struct Brief<'a> {
    pub id: &'a str,
    pub device: &'a Device,
    pub status: Status,
    /// Shared with the device's health cache.
    pub health: Arc<Health>,
    pub model: Option<&'a str>,
    pub firmware: Option<&'a str>,
}

impl<'a> Brief<'a> {
    pub fn of(id: &'a str, d: &'a Device, st: &State, now_ms: i64) -> Self {
        let status = d.status(now_ms, st.offline_after_ms);
        let missing = d.integrity.missing(now_ms, st.missing_grace_ms);
        let key = HealthKey {
            generation: d.generation,
            status,
            missing,
            disconnects: d.availability.recent_disconnects(now_ms),
        };
        let health = d.health_cache.get_or(key, || {
            health::assess(
                d,
                status,
                now_ms,
                missing,
                &st.thresholds,
                st.firmware_policy.as_ref(),
            )
        });
        Brief {
            id,
            device: d,
            status,
            health,
            model: d.tag_or_info("model"),
            firmware: d.info("firmware"),
        }
    }

    pub fn tag(&self, name: &str) -> Option<&'a str> {
        self.device.tags.get(name).map(String::as_str)
    }
}

/// Every device of the registry, assessed, in no particular order.
pub fn assess_all<'a>(registry: &'a Registry, st: &State, now_ms: i64) -> Vec<Brief<'a>> {
    registry
        .iter()
        .map(|(id, d)| Brief::of(id, d, st, now_ms))
        .collect()
}

impl ListQuery {
    pub fn matches(&self, b: &Brief<'_>) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        self.status.is_none_or(|s| s == b.status)
            && self.health.is_none_or(|h| h == b.health.level)
            && eq(&self.site, b.tag("site"))
            && eq(&self.group, b.tag("group"))
            && eq(&self.model, b.model)
            && eq(&self.firmware, b.firmware)
            && self.q.as_deref().is_none_or(|q| b.id.contains(q))
            && self
                .check
                .as_deref()
                .is_none_or(|c| b.health.reasons.iter().any(|r| r.check == c))
    }
}

#[derive(Debug, Serialize)]
pub struct DeviceList {
    pub total: usize,
    pub online: usize,
    pub offline: usize,
    pub matched: usize,
    pub devices: Vec<DeviceView>,
}

/// The device list as the API and the page show it: `total`, `online` and `offline` count
/// the whole fleet, `matched` the devices passing the filters, of which `devices` is the page
/// (`offset`, `limit`) in the order asked for.
pub fn device_list(app: &AppState, q: &ListQuery) -> Result<DeviceList, ApiError> {
    let sort = Sort::parse(q.sort.as_deref())?;
    let st = &app.state;
    let now = st.now_ms();
    let registry = st.registry();
    let all = assess_all(&registry, st, now);
    let total = all.len();
    let online = all.iter().filter(|b| b.status == Status::Online).count();
    let mut matched: Vec<Brief<'_>> = all.into_iter().filter(|b| q.matches(b)).collect();
    matched.sort_by(|a, b| sort.compare(a, b));
    let devices = matched
        .iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|b| view(b.id, b.device, st, now, false))
        .collect();
    Ok(DeviceList {
        total,
        online,
        offline: total - online,
        matched: matched.len(),
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_names_parse_both_ways() {
        for key in SortKey::ALL {
            for descending in [false, true] {
                let s = Sort { key, descending };
                assert_eq!(Sort::parse(Some(&s.as_param())).ok(), Some(s));
            }
        }
        let e = Sort::parse(Some("colour")).err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("last_seen")));
    }

    #[test]
    fn missing_values_sort_last_either_way() {
        assert_eq!(none_last(Some(1), None, false), Ordering::Less);
        // `compare` reverses the whole ordering when descending.
        assert_eq!(
            none_last(Some(1), None, true).reverse(),
            Ordering::Less,
            "a value comes before a missing one when descending too"
        );
    }
}
