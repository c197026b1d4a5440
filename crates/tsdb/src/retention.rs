//! Retention: which blocks to delete so the data stays within a maximum age and a maximum
//! total size. Whole blocks go, oldest first; the head is never touched.

use std::sync::Arc;

use crate::block::Block;

/// Limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Blocks whose newest sample is older than `now - max_age_ms` are deleted.
    pub max_age_ms: Option<i64>,
    /// Oldest blocks are deleted while all blocks together are larger than this.
    pub max_bytes: Option<u64>,
}

/// The blocks to delete.
pub fn plan(blocks: &[Arc<Block>], limits: Retention, now: i64) -> Vec<Arc<Block>> {
    let mut keep: Vec<Arc<Block>> = Vec::new();
    let mut drop = Vec::new();
    for b in blocks {
        match limits.max_age_ms {
            Some(age) if b.max_t < now.saturating_sub(age) => drop.push(b.clone()),
            _ => keep.push(b.clone()),
        }
    }
    if let Some(max) = limits.max_bytes {
        keep.sort_by_key(|b| (b.min_t, b.seq));
        let mut total: u64 = keep.iter().map(|b| b.bytes).sum();
        for b in keep {
            if total <= max {
                break;
            }
            total -= b.bytes;
            drop.push(b);
        }
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{SeriesInput, encode_block};
    use crate::series::Labels;

    fn block(seq: u64, t: i64) -> Arc<Block> {
        let input = vec![SeriesInput {
            id: 0,
            labels: Labels::from_metric("m", [("a", "b")]).unwrap(),
            samples: vec![(t, 1.0)],
        }];
        Arc::new(
            Block::decode("b", encode_block(seq, 0, &input, &[]))
                .unwrap()
                .0,
        )
    }

    #[test]
    fn deletes_by_age_then_oldest_first_by_size() {
        let blocks = [block(1, 0), block(2, 100), block(3, 200)];
        let by_age = plan(
            &blocks,
            Retention {
                max_age_ms: Some(150),
                max_bytes: None,
            },
            300,
        );
        assert_eq!(by_age.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1, 2]);
        let newer = blocks[1].bytes + blocks[2].bytes;
        let by_size = plan(
            &blocks,
            Retention {
                max_age_ms: None,
                max_bytes: Some(newer),
            },
            300,
        );
        assert_eq!(by_size.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1]);
        assert!(plan(&blocks, Retention::default(), 300).is_empty());
    }
}
