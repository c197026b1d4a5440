//! The series index: stable ids for label sets, and inverted postings per `(label, value)` so a
//! selector touches only the series it can match.
//!
//! Ids are dense `u32`s handed out in order and never reused while the series exists anywhere
//! (WAL or blocks); the index itself is not persisted — it is rebuilt on open from the blocks'
//! series tables and the WAL's series records. Strings are interned as `u32` symbols, so a
//! device name shared by its thirty series is stored once and a series' labels cost 8 bytes
//! each.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::hash::{FastMap, hash_pairs};
use crate::series::{Labels, Matcher};

/// A series' id.
pub type SeriesId = u32;

/// A series' labels as `(name symbol, value symbol)`, in label-name order.
type Pairs = Box<[(u32, u32)]>;

/// Label sets, their ids and postings.
#[derive(Debug, Default)]
pub struct Index {
    /// Symbol → string, and back.
    symbols: Vec<Arc<str>>,
    symbol_ids: FastMap<Arc<str>, u32>,
    /// Indexed by id; `None` for ids not (or no longer) in use.
    series: Vec<Option<Pairs>>,
    /// Hash of a label set to its id; label sets whose hash is taken go to `collisions`.
    by_hash: FastMap<u64, SeriesId>,
    collisions: FastMap<u64, Vec<SeriesId>>,
    /// Label name → value → sorted ids.
    postings: FastMap<Arc<str>, FastMap<Arc<str>, Vec<SeriesId>>>,
    count: usize,
}

fn insert_sorted(list: &mut Vec<SeriesId>, id: SeriesId) {
    if let Err(pos) = list.binary_search(&id) {
        list.insert(pos, id);
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True with no series.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next id [`Index::get_or_create`] would hand out.
    pub fn next_id(&self) -> SeriesId {
        SeriesId::try_from(self.series.len()).unwrap_or(SeriesId::MAX)
    }

    /// The id of a label set, if known.
    pub fn get(&self, labels: &Labels) -> Option<SeriesId> {
        let h = hash_pairs(labels.iter());
        let first = self.by_hash.get(&h).copied()?;
        let same = |id: SeriesId| {
            self.series
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|p| {
                    p.len() == labels.len()
                        && p.iter()
                            .zip(labels.iter())
                            .all(|(&(a, b), (c, d))| self.sym(a) == c && self.sym(b) == d)
                })
        };
        if same(first) {
            return Some(first);
        }
        self.collisions
            .get(&h)?
            .iter()
            .copied()
            .find(|&id| same(id))
    }

    /// The id of a label set, creating it; the bool is true when it was created.
    pub fn get_or_create(&mut self, labels: &Labels) -> (SeriesId, bool) {
        if let Some(id) = self.get(labels) {
            return (id, false);
        }
        let id = self.next_id();
        self.insert(id, labels);
        (id, true)
    }

    fn intern(&mut self, s: &str) -> (u32, Arc<str>) {
        if let Some((a, &id)) = self.symbol_ids.get_key_value(s) {
            return (id, a.clone());
        }
        let a: Arc<str> = Arc::from(s);
        let id = u32::try_from(self.symbols.len()).unwrap_or(u32::MAX);
        self.symbols.push(a.clone());
        self.symbol_ids.insert(a.clone(), id);
        (id, a)
    }

    fn sym(&self, id: u32) -> &str {
        self.symbols.get(id as usize).map_or("", |s| s)
    }

    /// Registers a label set under a known id (replay). Re-inserting the same pair is a no-op.
    pub fn insert(&mut self, id: SeriesId, labels: &Labels) {
        if self.contains(id) {
            return;
        }
        let idx = id as usize;
        if self.series.len() <= idx {
            self.series.resize(idx + 1, None);
        }
        let mut pairs = Vec::with_capacity(labels.len());
        for (k, v) in labels.iter() {
            let (ks, ka) = self.intern(k);
            let (vs, va) = self.intern(v);
            let values = self.postings.entry(ka).or_default();
            insert_sorted(values.entry(va).or_default(), id);
            pairs.push((ks, vs));
        }
        let pairs: Pairs = pairs.into_boxed_slice();
        let h = hash_pairs(labels.iter());
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(h).or_default().push(id);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
        self.series[idx] = Some(pairs);
        self.count += 1;
    }

    /// Whether an id is in use.
    pub fn contains(&self, id: SeriesId) -> bool {
        self.series.get(id as usize).is_some_and(Option::is_some)
    }

    /// A series' labels.
    pub fn labels(&self, id: SeriesId) -> Option<Labels> {
        let pairs = self.series.get(id as usize)?.as_ref()?;
        Some(Labels::from_sorted(
            pairs
                .iter()
                .map(|&(k, v)| (self.sym(k).to_owned(), self.sym(v).to_owned()))
                .collect(),
        ))
    }

    fn value_of(&self, id: SeriesId, name: &str) -> Option<&str> {
        let pairs = self.series.get(id as usize)?.as_ref()?;
        pairs
            .binary_search_by(|&(k, _)| self.sym(k).cmp(name))
            .ok()
            .map(|i| self.sym(pairs[i].1))
    }

    /// All ids in use, ascending.
    pub fn all_ids(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as SeriesId)
    }

    /// Ids of the series every matcher accepts, ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        // Candidates from the matchers that reject the empty value: those need the label, so
        // postings narrow the set. The rest are checked series by series.
        let mut candidates: Option<BTreeSet<SeriesId>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let mut ids = BTreeSet::new();
            if let Some(values) = self.postings.get(m.name.as_str()) {
                for (v, list) in values {
                    if m.matches(v) {
                        ids.extend(list.iter().copied());
                    }
                }
            }
            candidates = Some(match candidates {
                None => ids,
                Some(prev) => prev.intersection(&ids).copied().collect(),
            });
        }
        let check = |id: &SeriesId| {
            matchers
                .iter()
                .all(|m| m.matches(self.value_of(*id, &m.name).unwrap_or("")))
        };
        match candidates {
            Some(set) => set.into_iter().filter(check).collect(),
            None => self.all_ids().filter(check).collect(),
        }
    }

    /// Label names used by the selected series (all series with no matchers), sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            let mut names: Vec<String> = self.postings.keys().map(|k| k.to_string()).collect();
            names.sort();
            return names;
        }
        let mut names = BTreeSet::new();
        for id in self.select(matchers) {
            if let Some(Some(pairs)) = self.series.get(id as usize) {
                names.extend(pairs.iter().map(|&(k, _)| self.sym(k).to_owned()));
            }
        }
        names.into_iter().collect()
    }

    /// Values of one label among the selected series, sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            let mut values: Vec<String> = self
                .postings
                .get(name)
                .map(|m| m.keys().map(|v| v.to_string()).collect())
                .unwrap_or_default();
            values.sort();
            return values;
        }
        let values: BTreeSet<String> = self
            .select(matchers)
            .into_iter()
            .filter_map(|id| self.value_of(id, name).map(str::to_owned))
            .collect();
        values.into_iter().collect()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        // A string: its bytes, the Arc header, two table slots.
        let strings: usize = self.symbols.iter().map(|s| s.len() + 16 + 16 + 24).sum();
        let series: usize = self
            .series
            .iter()
            .map(|s| 16 + s.as_ref().map_or(0, |p| p.len() * 8))
            .sum();
        let postings: usize = self
            .postings
            .values()
            .flat_map(|m| m.values())
            .map(|l| l.capacity() * 4 + 48)
            .sum();
        strings + series + postings + self.by_hash.capacity() * 13 + self.collisions.len() * 48
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::MatchOp;

    fn l(metric: &str, pairs: &[(&str, &str)]) -> Labels {
        Labels::from_metric(metric, pairs.iter().copied()).unwrap()
    }

    fn index() -> Index {
        let mut ix = Index::new();
        ix.get_or_create(&l("cpu", &[("device", "a"), ("site", "x")]));
        ix.get_or_create(&l("cpu", &[("device", "b"), ("site", "y")]));
        ix.get_or_create(&l("cpu", &[("device", "c")]));
        ix.get_or_create(&l("mem", &[("device", "a"), ("site", "x")]));
        ix
    }

    #[test]
    fn ids_are_stable_and_dense() {
        let mut ix = index();
        assert_eq!(
            ix.get_or_create(&l("cpu", &[("device", "b"), ("site", "y")])),
            (1, false)
        );
        assert_eq!(ix.get_or_create(&l("disk", &[])), (4, true));
        assert_eq!(ix.len(), 5);
        assert_eq!(
            ix.labels(3).unwrap(),
            l("mem", &[("device", "a"), ("site", "x")])
        );
    }

    #[test]
    fn selectors_use_prometheus_semantics() {
        let ix = index();
        let sel = |ms: &[Matcher]| ix.select(ms);
        assert_eq!(sel(&[Matcher::metric("cpu")]), vec![0, 1, 2]);
        assert_eq!(
            sel(&[Matcher::metric("cpu"), Matcher::ne("site", "x")]),
            vec![1, 2]
        );
        assert_eq!(
            sel(&[Matcher::metric("cpu"), Matcher::eq("site", "")]),
            vec![2]
        );
        let re = Matcher::new("device", MatchOp::Regex, "a|c").unwrap();
        assert_eq!(sel(&[re]), vec![0, 2, 3]);
        let nre = Matcher::new("site", MatchOp::NotRegex, "x").unwrap();
        assert_eq!(sel(&[nre]), vec![1, 2]);
        let nre_empty = Matcher::new("site", MatchOp::NotRegex, ".*").unwrap();
        assert!(sel(&[nre_empty]).is_empty());
        assert_eq!(sel(&[]), vec![0, 1, 2, 3]);
    }

    #[test]
    fn label_names_and_values() {
        let ix = index();
        assert_eq!(ix.label_names(&[]), vec!["__name__", "device", "site"]);
        assert_eq!(
            ix.label_names(&[Matcher::eq("device", "c")]),
            vec!["__name__", "device"]
        );
        assert_eq!(ix.label_values("device", &[]), vec!["a", "b", "c"]);
        assert_eq!(
            ix.label_values("device", &[Matcher::metric("mem")]),
            vec!["a"]
        );
    }
}
