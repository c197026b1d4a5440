//! Query results and time-bucket aggregation. Bucket `k` of a query covers
//! `[start + k·step, start + (k+1)·step)`, clipped to `end`; empty buckets are left out. The
//! accumulator takes raw samples and rollup rows alike, which is what lets `db.rs` answer a
//! long-range query from rollups for whole blocks and from raw samples elsewhere.

use crate::rollup::Row;
use crate::series::Labels;

/// Errors in a query's parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("step must be positive, got {0} ms")]
    Step(i64),
    #[error("end {end} is before start {start}")]
    Range { start: i64, end: i64 },
    #[error("query would produce {0} buckets per series; use a larger step")]
    TooManyBuckets(i64),
}

/// Aggregation per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Min,
    Max,
    Sum,
    Count,
    Avg,
    /// The newest sample's value.
    Last,
}

/// A series and its samples, ascending by time.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoints {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// A series read for long windows: exact rollup rows where they stand in for every sample of
/// their interval, raw samples everywhere else ([`crate::Db::select_rollups`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRollups {
    pub labels: Labels,
    /// Rows ascending by interval start; each summarizes all of the series' samples in
    /// `[t, t + resolution)`, an interval inside the query range.
    pub rows: Vec<Row>,
    /// The samples in the query range outside those rows' intervals, ascending by time.
    pub raw: Vec<(i64, f64)>,
}

/// A series' last sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LastValue {
    pub labels: Labels,
    pub ts_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, Copy)]
struct Acc {
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
    last_t: i64,
    last: f64,
}

/// Accumulates samples and rollup rows into buckets.
#[derive(Debug)]
pub struct Buckets {
    start: i64,
    end: i64,
    step: i64,
    accs: Vec<Option<Acc>>,
}

/// Most buckets one series may produce.
pub const MAX_BUCKETS: i64 = 1_000_000;

impl Buckets {
    /// Buckets for `[start, end]` with `step`.
    pub fn new(start: i64, end: i64, step: i64) -> Result<Self, QueryError> {
        if step <= 0 {
            return Err(QueryError::Step(step));
        }
        if end < start {
            return Err(QueryError::Range { start, end });
        }
        let n = (end - start) / step + 1;
        if n > MAX_BUCKETS {
            return Err(QueryError::TooManyBuckets(n));
        }
        Ok(Self {
            start,
            end,
            step,
            accs: vec![None; n as usize],
        })
    }

    fn slot(&mut self, t: i64) -> Option<&mut Option<Acc>> {
        if t < self.start || t > self.end {
            return None;
        }
        let k = ((t - self.start) / self.step) as usize;
        self.accs.get_mut(k)
    }

    /// Adds one sample.
    pub fn add(&mut self, t: i64, v: f64) {
        self.add_row(
            t,
            &Row {
                t,
                min: v,
                max: v,
                sum: v,
                count: 1,
                last: v,
            },
        );
    }

    /// Adds a rollup row (which must lie within one bucket); `order_t` places its last value
    /// among other samples of the bucket.
    pub fn add_row(&mut self, order_t: i64, row: &Row) {
        let Some(slot) = self.slot(row.t) else {
            return;
        };
        match slot {
            None => {
                *slot = Some(Acc {
                    min: row.min,
                    max: row.max,
                    sum: row.sum,
                    count: row.count,
                    last_t: order_t,
                    last: row.last,
                });
            }
            Some(a) => {
                a.min = a.min.min(row.min);
                a.max = a.max.max(row.max);
                a.sum += row.sum;
                a.count += row.count;
                if order_t >= a.last_t {
                    a.last_t = order_t;
                    a.last = row.last;
                }
            }
        }
    }

    /// The non-empty buckets as `(bucket start, value)`.
    pub fn finish(&self, agg: Agg) -> Vec<(i64, f64)> {
        self.accs
            .iter()
            .enumerate()
            .filter_map(|(k, a)| {
                let a = a.as_ref()?;
                let v = match agg {
                    Agg::Min => a.min,
                    Agg::Max => a.max,
                    Agg::Sum => a.sum,
                    Agg::Count => a.count as f64,
                    Agg::Avg => a.sum / a.count as f64,
                    Agg::Last => a.last,
                };
                Some((self.start + k as i64 * self.step, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_aggregate_samples_and_rows_alike() {
        let mut b = Buckets::new(0, 99, 50).unwrap();
        for (t, v) in [(0, 1.0), (10, 5.0), (49, 3.0), (60, 7.0)] {
            b.add(t, v);
        }
        b.add(100, 99.0);
        assert_eq!(b.finish(Agg::Min), vec![(0, 1.0), (50, 7.0)]);
        assert_eq!(b.finish(Agg::Max), vec![(0, 5.0), (50, 7.0)]);
        assert_eq!(b.finish(Agg::Sum), vec![(0, 9.0), (50, 7.0)]);
        assert_eq!(b.finish(Agg::Count), vec![(0, 3.0), (50, 1.0)]);
        assert_eq!(b.finish(Agg::Avg), vec![(0, 3.0), (50, 7.0)]);
        assert_eq!(b.finish(Agg::Last), vec![(0, 3.0), (50, 7.0)]);
        let row = Row {
            t: 50,
            min: -1.0,
            max: 2.0,
            sum: 1.0,
            count: 2,
            last: 2.0,
        };
        b.add_row(55, &row);
        assert_eq!(b.finish(Agg::Last), vec![(0, 3.0), (50, 7.0)]);
        assert_eq!(b.finish(Agg::Count), vec![(0, 3.0), (50, 3.0)]);
        assert_eq!(Buckets::new(0, 1, 0).unwrap_err(), QueryError::Step(0));
    }
}
