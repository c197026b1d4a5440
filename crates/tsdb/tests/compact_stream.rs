//! Compaction streams one series at a time: many series, several overlapping blocks per window
//! (rewrites, late samples, a series that only appears later), compacted and compared with
//! what the engine answered before compaction, with a `BTreeMap` model, and — rollups — with a
//! straightforward recomputation from the samples.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetmon_tsdb::block::{Block, is_block_name};
use fleetmon_tsdb::rollup::{self, Row};
use fleetmon_tsdb::{Backend, Db, Labels, MemBackend, Options, Sample};

const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

type Model = BTreeMap<Labels, BTreeMap<i64, f64>>;

fn labels(kind: &str, i: usize) -> Labels {
    Labels::from_metric(kind, [("series", format!("s{i:03}"))]).unwrap()
}

fn append(db: &Db, model: &mut Model, points: &[(Labels, i64, f64)]) {
    for batch in points.chunks(20_000) {
        let samples: Vec<Sample<'_>> = batch
            .iter()
            .map(|(labels, ts_ms, value)| Sample {
                labels,
                ts_ms: *ts_ms,
                value: *value,
            })
            .collect();
        let r = db.append(&samples, None).unwrap();
        assert_eq!(r.accepted, samples.len());
    }
    for (l, t, v) in points {
        model.entry(l.clone()).or_default().insert(*t, *v);
    }
}

/// Rollup rows the obvious way: group by interval start, then fold each group.
fn naive_rows(samples: &[(i64, f64)], resolution: i64) -> Vec<Row> {
    let mut groups: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for &(t, v) in samples {
        groups
            .entry(t.div_euclid(resolution) * resolution)
            .or_default()
            .push(v);
    }
    groups
        .into_iter()
        .map(|(t, vs)| Row {
            t,
            min: vs.iter().copied().fold(f64::INFINITY, f64::min),
            max: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            sum: vs.iter().sum(),
            count: vs.len() as u64,
            last: vs[vs.len() - 1],
        })
        .collect()
}

fn all(db: &Db) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let mut out: Vec<_> = db
        .select(&[], i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| (s.labels, s.points))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn model_all(model: &Model) -> Vec<(Labels, Vec<(i64, f64)>)> {
    model
        .iter()
        .map(|(l, p)| (l.clone(), p.iter().map(|(t, v)| (*t, *v)).collect()))
        .collect()
}

#[test]
fn streamed_compaction_keeps_every_sample_and_the_rollups() {
    let mem = MemBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(mem.clone());
    let open = || Db::open(backend.clone(), Options::default(), &mut |_, _| {}).unwrap();
    let db = open();
    let mut model = Model::new();

    // Day 0 and the first hours of day 1: 120 series every 30 s (hourly rollups only), and 12
    // dense series every 2 s for 3 hours (1-minute rollups too).
    let mut points = Vec::new();
    for step in 0..(DAY + 6 * HOUR) / 30_000 {
        for i in 0..120 {
            let v = ((step * 7 + i as i64 * 13) % 1000) as f64 / 8.0 - 20.0;
            points.push((labels("slow", i), T0 + step * 30_000 + (i as i64 % 5), v));
        }
    }
    for step in 0..3 * HOUR / 2_000 {
        for i in 0..12 {
            let v = (step % (50 + i as i64)) as f64 * 0.25;
            points.push((labels("dense", i), T0 + 5 * HOUR + step * 2_000, v));
        }
    }
    append(&db, &mut model, &points);
    db.flush().unwrap();

    // Rewrites of flushed timestamps (a later block must win), late samples between them, and
    // series that appear only now: a second, overlapping set of blocks.
    let mut points = Vec::new();
    for i in (0..120).step_by(3) {
        for step in (0..DAY / 30_000).step_by(97) {
            let t = T0 + step * 30_000 + (i as i64 % 5);
            points.push((labels("slow", i), t, -1000.0 - step as f64));
            points.push((labels("slow", i), t + 15_000, 0.5 * step as f64));
        }
    }
    // Newest first, and each timestamp twice: out of order in the head, the second write wins.
    points.reverse();
    let dup: Vec<_> = points
        .iter()
        .step_by(5)
        .map(|(l, t, v)| (l.clone(), *t, v + 0.125))
        .collect();
    points.extend(dup);
    for i in 0..30 {
        for step in 0..DAY / 60_000 {
            points.push((
                labels("late", i),
                T0 + step * 60_000,
                (step * i as i64) as f64,
            ));
        }
    }
    append(&db, &mut model, &points);
    db.flush().unwrap();
    // And a third flush rewriting a few of the second one's samples.
    let points: Vec<_> = (0..30)
        .map(|i| (labels("late", i), T0 + 7 * 60_000, 42.0 + i as f64))
        .collect();
    append(&db, &mut model, &points);
    db.flush().unwrap();

    let before = all(&db);
    assert_eq!(before, model_all(&model), "before compaction");
    let blocks_before = db.stats().blocks;
    assert!(blocks_before > 12, "{blocks_before} blocks");

    let merges = db.compact(T0 + 10 * DAY).unwrap();
    assert_eq!(merges, 2, "day 0 and day 1");
    assert_eq!(db.stats().blocks, 2);
    assert_eq!(all(&db), before, "after compaction");
    drop(db);
    let db = open();
    assert_eq!(all(&db), before, "after reopening");

    // Each compacted block, series by series: its samples are the model's within the block's
    // day, and its rollups are what the obvious computation gives on them (present exactly
    // when worth storing).
    let mut series_checked = 0;
    let mut rollups_checked = BTreeMap::new();
    for name in backend.list().unwrap() {
        if !is_block_name(&name) {
            continue;
        }
        assert!(name.contains("-c"), "{name} is compacted");
        let (block, table) = Block::load(backend.clone(), &name).unwrap();
        assert_eq!(block.level, 1);
        let day = block.min_t.div_euclid(DAY) * DAY;
        for (id, l) in table {
            let want: Vec<(i64, f64)> = model[&l]
                .range(day..day + DAY)
                .map(|(t, v)| (*t, *v))
                .collect();
            assert_eq!(block.samples_of(id), want, "{l:?} in {name}");
            for res in rollup::RESOLUTIONS_MS {
                let rows = naive_rows(&want, res);
                let stored = block.rollup(id, res);
                if rows.len() * rollup::MIN_REDUCTION <= want.len() {
                    assert_eq!(stored.as_ref(), Some(&rows), "{l:?} at {res} in {name}");
                    *rollups_checked.entry(res).or_insert(0) += 1;
                } else {
                    assert_eq!(stored, None, "{l:?} at {res} in {name}");
                }
            }
            series_checked += 1;
        }
    }
    assert_eq!(series_checked, 120 * 2 + 12 + 30);
    assert!(rollups_checked[&60_000] >= 12, "{rollups_checked:?}");
    assert!(rollups_checked[&HOUR] >= 150, "{rollups_checked:?}");
}
