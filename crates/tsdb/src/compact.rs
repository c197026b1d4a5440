//! Compaction: merges the blocks of one larger window (default 24 h) into a single block with
//! rollups, so queries open fewer files, late data written as extra small blocks is folded in,
//! and long-range queries can read rollups.
//!
//! Planning is pure (which blocks go together); merging applies last-write-wins by block `seq`.
//! The merged block takes the highest `seq` of its inputs: every block overlapping the window is
//! an input, so no other block can rank between them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::block::{Block, BlockWriter, SeriesInput, last_write_wins};
use crate::index::SeriesId;
use crate::rollup::floor;
use crate::series::Labels;

/// Groups of blocks to merge: every larger window holding more than one block, or holding a
/// fresh (level 0) block, provided the window has ended before `now`.
pub fn plan(blocks: &[Arc<Block>], window_ms: i64, now: i64) -> Vec<Vec<Arc<Block>>> {
    let mut by_window: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
    for b in blocks {
        let w = floor(b.min_t, window_ms);
        if floor(b.max_t, window_ms) != w {
            // Spans windows (written with other settings); left alone.
            continue;
        }
        by_window.entry(w).or_default().push(b.clone());
    }
    by_window
        .into_iter()
        .filter(|(w, group)| {
            w.saturating_add(window_ms) <= now && (group.len() > 1 || group[0].level == 0)
        })
        .map(|(_, mut group)| {
            group.sort_by_key(|b| b.seq);
            group
        })
        .collect()
}

/// Groups of level-0 blocks to merge into one level-0 block per `window_ms` window (the
/// flush window), so frequent flushes of a small head do not leave many small blocks: every
/// window ending at or before `closed_before` that holds more than one level-0 block. A group
/// is skipped when another block overlapping its window ranks between its members (the merge
/// takes the highest `seq` of its inputs, which would move data past it).
pub fn plan_level0(
    blocks: &[Arc<Block>],
    window_ms: i64,
    closed_before: i64,
) -> Vec<Vec<Arc<Block>>> {
    let mut by_window: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.level == 0) {
        let w = floor(b.min_t, window_ms);
        if floor(b.max_t, window_ms) == w && w.saturating_add(window_ms) <= closed_before {
            by_window.entry(w).or_default().push(b.clone());
        }
    }
    by_window
        .into_iter()
        .filter(|(_, group)| group.len() > 1)
        .filter(|(w, group)| {
            let lo = group.iter().map(|b| b.seq).min().unwrap_or(0);
            let hi = group.iter().map(|b| b.seq).max().unwrap_or(0);
            let end = w.saturating_add(window_ms);
            !blocks.iter().any(|o| {
                o.seq > lo
                    && o.seq < hi
                    && !group.iter().any(|g| g.seq == o.seq)
                    && o.min_t < end
                    && o.max_t >= *w
            })
        })
        .map(|(_, mut group)| {
            group.sort_by_key(|b| b.seq);
            group
        })
        .collect()
}

/// One series' samples merged across blocks (ascending `seq`): sorted by time, one per
/// timestamp, a later block winning on equal timestamps. Only this series is decoded.
pub fn merge_series(blocks: &[Arc<Block>], id: SeriesId) -> Vec<(i64, f64)> {
    let mut runs = blocks.iter().filter(|b| b.series_span(id).is_some());
    let Some(first) = runs.next() else {
        return Vec::new();
    };
    let mut samples = first.samples_of(id);
    for b in runs {
        // Each block's run is sorted: appending them in `seq` order and sorting stably merges
        // the runs and keeps, among equal timestamps, the highest `seq` last.
        samples.extend(b.samples_of(id));
    }
    last_write_wins(&mut samples);
    samples
}

/// Series whose labels a merge (or a flush) asks for at a time: the labels of every series
/// of a window at once cost ~400 bytes a series, more than the head holds per series.
pub(crate) const LABELS_SLICE: usize = 1024;

/// Streams the merge of blocks (ascending `seq`) series by series, in ascending id order:
/// calls `each` with every series' id, labels and merged samples, holding one series at a
/// time, and stops at the first error `each` returns. `labels_of` names a slice of series
/// (from the index; [`LABELS_SLICE`] at a time); series it does not know (`None`) are dropped.
pub fn merge_each<E>(
    blocks: &[Arc<Block>],
    mut labels_of: impl FnMut(&[SeriesId]) -> Vec<Option<Labels>>,
    mut each: impl FnMut(SeriesId, &Labels, &[(i64, f64)]) -> Result<(), E>,
) -> Result<(), E> {
    let ids: Vec<SeriesId> = blocks
        .iter()
        .flat_map(|b| b.series_ids())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for slice in ids.chunks(LABELS_SLICE) {
        for (&id, l) in slice.iter().zip(labels_of(slice)) {
            let Some(l) = l else { continue };
            let samples = merge_series(blocks, id);
            if !samples.is_empty() {
                each(id, &l, &samples)?;
            }
        }
    }
    Ok(())
}

/// Merges blocks (ascending `seq`) into one sample set per series, later blocks winning,
/// all in memory at once (tests and tools; compaction streams with [`merge_each`]).
pub fn merge(blocks: &[Arc<Block>], labels: &HashMap<SeriesId, Labels>) -> Vec<SeriesInput> {
    let mut out = Vec::new();
    let labels_of = |ids: &[SeriesId]| ids.iter().map(|id| labels.get(id).cloned()).collect();
    let merged: Result<(), std::convert::Infallible> =
        merge_each(blocks, labels_of, |id, l, samples| {
            out.push(SeriesInput {
                id,
                labels: l.clone(),
                samples: samples.to_vec(),
            });
            Ok(())
        });
    let Ok(()) = merged;
    out
}

/// Writes the merge of blocks (ascending `seq`) into `w`, one series at a time: peak memory
/// is the largest series plus what the writer holds (with a file, about a megabyte), not the
/// whole window. Stops at the first error appending to the writer's file (and removes it).
pub fn write_merged(
    blocks: &[Arc<Block>],
    labels_of: impl FnMut(&[SeriesId]) -> Vec<Option<Labels>>,
    mut w: BlockWriter,
) -> std::io::Result<BlockWriter> {
    match merge_each(blocks, labels_of, |id, l, samples| w.add(id, l, samples)) {
        Ok(()) => Ok(w),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::encode_block;

    fn block(seq: u64, level: u8, samples: Vec<(i64, f64)>) -> Arc<Block> {
        let input = vec![SeriesInput {
            id: 0,
            labels: Labels::from_metric("m", [("a", "b")]).unwrap(),
            samples,
        }];
        Arc::new(
            Block::decode("b", encode_block(seq, level, &input, &[]))
                .unwrap()
                .0,
        )
    }

    #[test]
    fn plans_closed_windows_and_merges_last_write_wins() {
        let a = block(1, 0, vec![(0, 1.0), (10, 1.0)]);
        let b = block(2, 0, vec![(10, 2.0), (20, 2.0)]);
        let c = block(3, 1, vec![(100, 3.0)]);
        let d = block(4, 0, vec![(250, 4.0)]);
        let plan = plan(&[a, b, c, d], 100, 200);
        assert_eq!(
            plan.len(),
            1,
            "one closed window with two blocks; a lone level-1 block stays"
        );
        assert_eq!(
            plan[0].iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let names = HashMap::from([(0, Labels::from_metric("m", [("a", "b")]).unwrap())]);
        let merged = merge(&plan[0], &names);
        assert_eq!(merged[0].samples, vec![(0, 1.0), (10, 2.0), (20, 2.0)]);
    }
}
