//! Rollups: per-series summaries over fixed resolutions (1 minute, 1 hour) with min, max, sum,
//! count and last, written into compacted blocks so a 30-day bucketed query reads hundreds of
//! rows instead of hundreds of thousands of samples.
//!
//! A row covers `[t, t + resolution)`, `t` a multiple of the resolution. Rows are stored as five
//! columns of `(t, field)` (min, max, sum, count, last), each with the smaller codec of
//! [`crate::codec`]; the repeated, regular `t` costs almost nothing.

use crate::codec::{decode_samples, encode_samples};
use crate::record::{Reader, RecordError};

/// Resolutions written at compaction: 1 minute and 1 hour.
pub const RESOLUTIONS_MS: [i64; 2] = [60_000, 3_600_000];

/// A rollup is stored only when it has at least this many times fewer rows than the raw
/// samples: a row holds five values, so a smaller reduction costs more disk than it saves
/// reading (on 10-second data the 1-minute rollup would add ~75% to the block; it is skipped,
/// the 1-hour one is kept).
pub const MIN_REDUCTION: usize = 20;

/// Whether `rows` rollup rows summarizing `samples` samples are worth writing.
pub fn worth_storing(rows: usize, samples: usize) -> bool {
    rows.saturating_mul(MIN_REDUCTION) <= samples
}

/// One summary row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Start of the row's interval.
    pub t: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    /// Value of the newest sample in the interval.
    pub last: f64,
}

/// Start of the interval of `resolution` that holds `t` (`i64::MIN` for the first, partial
/// interval of time, so query times at the ends of the range never overflow).
pub fn floor(t: i64, resolution: i64) -> i64 {
    t.div_euclid(resolution).saturating_mul(resolution)
}

/// Summarizes sorted, deduplicated samples.
pub fn compute(samples: &[(i64, f64)], resolution: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for &(t, v) in samples {
        let start = floor(t, resolution);
        match rows.last_mut() {
            Some(r) if r.t == start => {
                r.min = r.min.min(v);
                r.max = r.max.max(v);
                r.sum += v;
                r.count += 1;
                r.last = v;
            }
            _ => rows.push(Row {
                t: start,
                min: v,
                max: v,
                sum: v,
                count: 1,
                last: v,
            }),
        }
    }
    rows
}

/// Appends encoded rows to `out`.
pub fn encode_rows(out: &mut Vec<u8>, rows: &[Row]) {
    let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    let fields: [fn(&Row) -> f64; 5] = [
        |r| r.min,
        |r| r.max,
        |r| r.sum,
        |r| r.count as f64,
        |r| r.last,
    ];
    for f in fields {
        let col: Vec<(i64, f64)> = rows.iter().map(|r| (r.t, f(r))).collect();
        let (encoding, bytes) = encode_samples(&col);
        out.push(encoding);
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
}

/// Decodes rows written by [`encode_rows`].
pub fn decode_rows(bytes: &[u8]) -> Result<Vec<Row>, RecordError> {
    let mut r = Reader { bytes };
    let n = r.u32()?;
    let mut cols: Vec<Vec<(i64, f64)>> = Vec::with_capacity(5);
    for _ in 0..5 {
        let encoding = r.take(1)?[0];
        let len = r.u32()? as usize;
        let col = decode_samples(encoding, r.take(len)?, n).map_err(|_| RecordError::Short)?;
        cols.push(col);
    }
    Ok((0..n as usize)
        .map(|i| Row {
            t: cols[0][i].0,
            min: cols[0][i].1,
            max: cols[1][i].1,
            sum: cols[2][i].1,
            count: cols[3][i].1 as u64,
            last: cols[4][i].1,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_summarize_and_round_trip() {
        let samples: Vec<(i64, f64)> = (0..300).map(|i| (i * 1000, (i % 90) as f64)).collect();
        let rows = compute(&samples, 60_000);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[1].t, 60_000);
        assert_eq!(rows[1].count, 60);
        assert_eq!(rows[1].min, 0.0);
        assert_eq!(rows[1].max, 89.0);
        assert_eq!(rows[1].last, (119 % 90) as f64);
        let sum: f64 = samples[60..120].iter().map(|s| s.1).sum();
        assert_eq!(rows[1].sum, sum);
        let mut bytes = Vec::new();
        encode_rows(&mut bytes, &rows);
        assert_eq!(decode_rows(&bytes).unwrap(), rows);
        assert!(decode_rows(&bytes[..bytes.len() - 3]).is_err());
        assert_eq!(floor(-1, 60_000), -60_000);
    }
}
