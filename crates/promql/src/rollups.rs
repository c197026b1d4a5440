//! Long windows from rollup rows: `min max sum count avg last present _over_time` over a range
//! selector read the store's rollup rows (min, max, sum, count, last per `[t, t + resolution)`)
//! where a row is exact, and raw samples everywhere else, with the same answer as the raw path.
//!
//! A window `[t − range, t]` (closed, as the raw path and Prometheus 2.x) is split into the row
//! intervals lying wholly inside it — one row each — and the rest: samples outside any row
//! (head, level-0 blocks, late data, series without rollups) and the samples of the at most two
//! row intervals the window's edges cut, which count only in part. The cut parts of every step
//! of the query are known before the first read, so one read per selector brings rows and
//! those raw samples together; a window the plan did not foresee (inside a subquery) reads its
//! cut parts with one extra raw read, cached.
//!
//! Agreement: min, max, count and last are exact; sum adds row sums in time order instead of
//! every sample, and avg is sum / count instead of Prometheus's incremental mean, both within
//! float rounding (~1e-15 relative). A window without a whole row is computed from its samples
//! exactly as the raw path does. Rows with a non-finite min, max or sum are never used.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use fleetmon_tsdb::rollup::floor;
use fleetmon_tsdb::{Labels, Row};
use promql_parser::parser::VectorSelector;

use crate::error::Result;
use crate::eval::{Evaluator, label_set, matchers_of};
use crate::functions::range::{extreme, incremental_mean};
use crate::value::LabelSet;

/// How much time one rollup read covers at first (rounded up to whole row intervals).
const LOAD_SLICE_MS: i64 = 6 * 3600 * 1000;

/// Functions a window [`Summary`] answers.
pub(crate) fn answers(name: &str) -> bool {
    matches!(
        name,
        "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "avg_over_time"
            | "last_over_time"
            | "present_over_time"
    )
}

/// One series of a rollup read.
pub(crate) struct RollupSeries {
    pub(crate) labels: LabelSet,
    key: Labels,
    rows: Vec<Row>,
    /// Samples outside `rows`, plus those inside the planned cut parts.
    raw: Vec<(i64, f64)>,
}

/// The series of one rollup read, shared by the steps it covers.
pub(crate) type Read = Rc<Vec<RollupSeries>>;

struct Loaded {
    lo: i64,
    hi: i64,
    resolution: i64,
    /// Closed time ranges whose samples `raw` holds even inside rows, ascending, disjoint.
    planned: Vec<(i64, i64)>,
    series: Rc<Vec<RollupSeries>>,
}

/// Samples per series (one read of a cut part).
type Points = Rc<HashMap<Labels, Vec<(i64, f64)>>>;

/// Closed time ranges, ascending.
type Ranges = Vec<(i64, i64)>;

/// Rollup reads of one query.
#[derive(Default)]
pub(crate) struct Cache {
    loaded: HashMap<usize, Loaded>,
    /// Raw samples of an unplanned cut part, by (selector, from, to), per series.
    cuts: HashMap<(usize, i64, i64), Points>,
}

/// What the functions need of one window of one series.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: f64,
    pub last: f64,
    pub avg: f64,
}

impl Summary {
    /// The value of function `name` (one of [`answers`]).
    pub(crate) fn value(&self, name: &str) -> f64 {
        match name {
            "min_over_time" => self.min,
            "max_over_time" => self.max,
            "sum_over_time" => self.sum,
            "count_over_time" => self.count,
            "avg_over_time" => self.avg,
            "last_over_time" => self.last,
            _ => 1.0,
        }
    }
}

/// The closed parts of row intervals of `resolution` that window `[lo, hi]` cuts (holds only
/// in part).
fn cut_parts(lo: i64, hi: i64, resolution: i64) -> [Option<(i64, i64)>; 2] {
    let first = floor(lo, resolution);
    let last = floor(hi, resolution);
    let lo_cut = first != lo;
    let hi_cut = hi.saturating_add(1).rem_euclid(resolution) != 0;
    if first == last {
        return [(lo_cut || hi_cut).then_some((lo, hi)), None];
    }
    [
        lo_cut.then(|| (lo, first.saturating_add(resolution - 1))),
        hi_cut.then_some((last, hi)),
    ]
}

/// Sorts and merges closed ranges.
fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn contains(ranges: &[(i64, i64)], (a, b): (i64, i64)) -> bool {
    let i = ranges.partition_point(|r| r.1 < a);
    ranges.get(i).is_some_and(|r| r.0 <= a && b <= r.1)
}

impl Evaluator<'_> {
    /// The resolution to read windows of `range` at: the coarsest that fits in the range.
    pub(crate) fn rollup_resolution(&self, range: i64) -> Option<i64> {
        self.resolutions
            .iter()
            .rev()
            .copied()
            .find(|&r| r > 0 && r <= range)
    }

    /// The cut parts of the windows the query's steps will ask for.
    fn plan_cuts(&self, vs: &VectorSelector, range: i64, resolution: i64) -> Vec<(i64, i64)> {
        let mut parts = Vec::new();
        let mut t = self.start;
        loop {
            let rt = self.ref_time(&vs.at, &vs.offset, t);
            parts.extend(
                cut_parts(rt.saturating_sub(range), rt, resolution)
                    .into_iter()
                    .flatten(),
            );
            if self.step <= 0 || vs.at.is_some() {
                break;
            }
            match t.checked_add(self.step) {
                Some(next) if next <= self.end => t = next,
                _ => break,
            }
        }
        merge_ranges(parts)
    }

    /// The selector's rows and samples covering `[lo, hi]`, from the cache when it can.
    fn load_rollups(
        &self,
        vs: &VectorSelector,
        range: i64,
        resolution: i64,
        lo: i64,
        hi: i64,
    ) -> Result<(Rc<Vec<RollupSeries>>, Ranges)> {
        let key = vs as *const VectorSelector as usize;
        let previous = match self.rollups.borrow().loaded.get(&key) {
            Some(c) if c.lo <= lo && hi <= c.hi && c.resolution == resolution => {
                return Ok((Rc::clone(&c.series), c.planned.clone()));
            }
            Some(c) => Some((
                c.lo,
                c.hi,
                c.series.iter().map(|s| s.rows.len() + s.raw.len()).sum(),
            )),
            None => None,
        };
        let reach = if vs.at.is_some() { 0 } else { self.reach };
        let (lo, hi, freed) = match previous {
            Some((plo, phi, n)) => (lo.min(plo), hi.max(phi).saturating_add(reach), n),
            None => (lo, hi.saturating_add(reach), 0),
        };
        let matchers = matchers_of(vs)?;
        let planned = self.plan_cuts(vs, range, resolution);
        self.budget.take(0, freed)?;
        // Slices end on row boundaries, so no row is split between two reads.
        let mut merged: BTreeMap<Labels, RollupSeries> = BTreeMap::new();
        let mut slice = LOAD_SLICE_MS.div_euclid(resolution).max(1) * resolution;
        if self
            .budget
            .fits(self.source.estimate_samples(&matchers, lo, hi))
        {
            // One read (rows are fewer than the samples estimated).
            let span = hi.saturating_sub(floor(lo, resolution)).saturating_add(1);
            slice = span
                .div_euclid(resolution)
                .saturating_add(1)
                .saturating_mul(resolution);
        }
        let mut from = lo;
        loop {
            let boundary = floor(from, resolution).saturating_add(slice);
            let to = boundary.saturating_sub(1).min(hi);
            let first = planned.partition_point(|r| r.1 < from);
            let parts: Vec<(i64, i64)> = planned[first..]
                .iter()
                .take_while(|r| r.0 <= to)
                .map(|&(a, b)| (a.max(from), b.min(to)))
                .collect();
            let mut count = 0;
            for s in self
                .source
                .select_rollups(&matchers, from, to, resolution, &parts)
            {
                count += s.rows.len() + s.raw.len();
                let e = merged
                    .entry(s.labels)
                    .or_insert_with_key(|key| RollupSeries {
                        labels: label_set(key),
                        key: key.clone(),
                        rows: Vec::new(),
                        raw: Vec::new(),
                    });
                e.rows.extend(s.rows);
                e.raw.extend(s.raw);
            }
            self.budget.take(count, 0)?;
            self.budget.check_time()?;
            if self.budget.may_grow(count) {
                slice = slice.saturating_mul(4);
            }
            if to >= hi {
                break;
            }
            from = to + 1;
        }
        let series: Rc<Vec<RollupSeries>> = Rc::new(merged.into_values().collect());
        self.rollups.borrow_mut().loaded.insert(
            key,
            Loaded {
                lo,
                hi,
                resolution,
                planned: planned.clone(),
                series: Rc::clone(&series),
            },
        );
        Ok((series, planned))
    }

    /// Raw samples of `[a, b]` per series, for a cut part the plan did not foresee.
    fn unplanned_cut(&self, vs: &VectorSelector, a: i64, b: i64) -> Result<Points> {
        let key = (vs as *const VectorSelector as usize, a, b);
        if let Some(c) = self.rollups.borrow().cuts.get(&key) {
            return Ok(Rc::clone(c));
        }
        let read: HashMap<Labels, Vec<(i64, f64)>> = self
            .source
            .select(&matchers_of(vs)?, a, b)
            .into_iter()
            .map(|s| (s.labels, s.points))
            .collect();
        self.budget.take(read.values().map(Vec::len).sum(), 0)?;
        let read = Rc::new(read);
        self.rollups.borrow_mut().cuts.insert(key, Rc::clone(&read));
        Ok(read)
    }

    /// Per series with samples in `[t' − range, t']` (`t'` is `t` after `@`/`offset`), the
    /// window's summary, read from rollup rows of `resolution` where they are exact.
    pub(crate) fn window_summaries(
        &self,
        vs: &VectorSelector,
        range: i64,
        resolution: i64,
        t: i64,
    ) -> Result<Vec<(LabelSet, Summary)>> {
        let (series, summaries) = self.window_summaries_indexed(vs, range, resolution, t)?;
        Ok(summaries
            .into_iter()
            .map(|(i, summary)| (series[i].labels.clone(), summary))
            .collect())
    }

    /// [`Self::window_summaries`] by index into the series read (the same list for every
    /// step while the read covers them), so a caller over many steps need not copy labels.
    pub(crate) fn window_summaries_indexed(
        &self,
        vs: &VectorSelector,
        range: i64,
        resolution: i64,
        t: i64,
    ) -> Result<(Read, Vec<(usize, Summary)>)> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let lo = rt.saturating_sub(range);
        let (series, planned) = self.load_rollups(vs, range, resolution, lo, rt)?;
        let cuts = cut_parts(lo, rt, resolution);
        let mut out = Vec::new();
        let mut held = 0;
        let mut points: Vec<(i64, f64)> = Vec::new();
        for (index, s) in series.iter().enumerate() {
            points.clear();
            let is_row = |t: i64| {
                !s.rows.is_empty()
                    && s.rows
                        .binary_search_by_key(&floor(t, resolution), |r| r.t)
                        .is_ok()
            };
            // Samples outside rows.
            let a = s.raw.partition_point(|p| p.0 < lo);
            let b = s.raw.partition_point(|p| p.0 <= rt);
            points.extend(s.raw[a..b].iter().filter(|p| !is_row(p.0)));
            // Rows wholly inside the window.
            let ra = s.rows.partition_point(|r| r.t < lo);
            let rb = s
                .rows
                .partition_point(|r| r.t.saturating_add(resolution - 1) <= rt);
            let full: &[Row] = if ra < rb { &s.rows[ra..rb] } else { &[] };
            // The parts of rows the window's edges cut.
            let mut cut_points = false;
            for (ca, cb) in cuts.into_iter().flatten() {
                if !is_row(ca) {
                    continue;
                }
                cut_points = true;
                if contains(&planned, (ca, cb)) {
                    let i = s.raw.partition_point(|p| p.0 < ca);
                    let j = s.raw.partition_point(|p| p.0 <= cb);
                    points.extend_from_slice(&s.raw[i..j]);
                } else if let Some(p) = self.unplanned_cut(vs, ca, cb)?.get(&s.key) {
                    points.extend(p.iter().filter(|x| x.0 >= ca && x.0 <= cb));
                }
            }
            if cut_points {
                points.sort_unstable_by_key(|p| p.0);
            }
            if points.is_empty() && full.is_empty() {
                continue;
            }
            held += points.len() + full.len();
            let summary = if full.is_empty() {
                // No whole row: exactly as the raw path computes it.
                let vals = || points.iter().map(|p| p.1);
                Summary {
                    min: extreme(vals(), false),
                    max: extreme(vals(), true),
                    sum: vals().sum(),
                    count: points.len() as f64,
                    last: points.last().map_or(f64::NAN, |p| p.1),
                    avg: incremental_mean(vals()),
                }
            } else {
                summarize(&points, full)
            };
            out.push((index, summary));
        }
        self.budget.peek(held)?;
        Ok((series, out))
    }
}

/// Summary of samples and whole rows (disjoint in time), taken in time order.
fn summarize(points: &[(i64, f64)], rows: &[Row]) -> Summary {
    // (time, min, max, sum, count, last) in time order.
    let mut items: Vec<(i64, f64, f64, f64, u64, f64)> =
        Vec::with_capacity(points.len() + rows.len());
    let (mut i, mut j) = (0, 0);
    while i < points.len() || j < rows.len() {
        let take_point = j >= rows.len() || (i < points.len() && points[i].0 < rows[j].t);
        if take_point {
            let (t, v) = points[i];
            items.push((t, v, v, v, 1, v));
            i += 1;
        } else {
            let r = &rows[j];
            items.push((r.t, r.min, r.max, r.sum, r.count, r.last));
            j += 1;
        }
    }
    let count: u64 = items.iter().map(|x| x.4).sum();
    let sum: f64 = items.iter().map(|x| x.3).sum();
    Summary {
        min: extreme(items.iter().map(|x| x.1), false),
        max: extreme(items.iter().map(|x| x.2), true),
        sum,
        count: count as f64,
        last: items.last().map_or(f64::NAN, |x| x.5),
        avg: sum / count as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cut_rows_only_at_unaligned_edges() {
        let h = 3_600_000;
        // [1h, 3h]: the row at 1h is whole, the row at 3h holds only the sample at 3h.
        assert_eq!(cut_parts(h, 3 * h, h), [None, Some((3 * h, 3 * h))]);
        // [1h + 1, 3h + 1]
        assert_eq!(
            cut_parts(h + 1, 3 * h + 1, h),
            [Some((h + 1, 2 * h - 1)), Some((3 * h, 3 * h + 1))]
        );
        // A window inside one row.
        assert_eq!(cut_parts(h + 5, h + 10, h), [Some((h + 5, h + 10)), None]);
        // Ends on a row's last millisecond.
        assert_eq!(cut_parts(0, 2 * h - 1, h), [None, None]);
        assert_eq!(
            merge_ranges(vec![(5, 6), (1, 2), (3, 4), (10, 11)]),
            vec![(1, 6), (10, 11)]
        );
        assert!(contains(&[(1, 6), (10, 11)], (2, 5)));
        assert!(!contains(&[(1, 6), (10, 11)], (5, 10)));
    }

    #[test]
    fn summaries_take_rows_and_samples_in_time_order() {
        let row = Row {
            t: 100,
            min: -1.0,
            max: 9.0,
            sum: 12.0,
            count: 3,
            last: 2.0,
        };
        let s = summarize(&[(50, 4.0), (250, 7.0)], &[row]);
        assert_eq!(
            (s.min, s.max, s.sum, s.count, s.last),
            (-1.0, 9.0, 23.0, 5.0, 7.0)
        );
        assert_eq!(s.avg, 23.0 / 5.0);
        let s = summarize(&[(50, 4.0)], &[row]);
        assert_eq!(s.last, 2.0);
    }
}
