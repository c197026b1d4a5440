//! Compaction: merges the blocks of one larger window (default 24 h) into a single block with
//! rollups, so queries open fewer files, late data written as extra small blocks is folded in,
//! and long-range queries can read rollups.
//!
//! Planning is pure (which blocks go together); merging applies last-write-wins by block `seq`.
//! The merged block takes the highest `seq` of its inputs: every block overlapping the window is
//! an input, so no other block can rank between them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::block::{Block, SeriesInput};
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

/// Merges blocks (ascending `seq`) into one sample set per series, later blocks winning.
/// `labels` names the series (from the index); series it does not know are dropped.
pub fn merge(blocks: &[Arc<Block>], labels: &HashMap<SeriesId, Labels>) -> Vec<SeriesInput> {
    let mut series: BTreeMap<SeriesId, BTreeMap<i64, f64>> = BTreeMap::new();
    for b in blocks {
        for id in b.series_ids() {
            b.range_into(id, i64::MIN, i64::MAX, series.entry(id).or_default());
        }
    }
    series
        .into_iter()
        .filter_map(|(id, samples)| {
            Some(SeriesInput {
                id,
                labels: labels.get(&id)?.clone(),
                samples: samples.into_iter().collect(),
            })
        })
        .collect()
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
