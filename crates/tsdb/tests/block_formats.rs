//! Blocks written by earlier versions still open and read the same: `fixtures/block-v1.blk`
//! was written by the first block format (full labels in every series entry) from
//! [`fixture_series`], and must decode to exactly those series.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use fleetmon_tsdb::Labels;
use fleetmon_tsdb::block::{Block, SeriesInput, encode_block};

const HOUR_MS: i64 = 3_600_000;

/// Three series: one long enough for pco, one short (Gorilla), one with 1 h rollups worth
/// storing.
fn fixture_series() -> Vec<SeriesInput> {
    let labels = |metric: &str, device: &str| {
        Labels::from_metric(metric, [("device", device), ("site", "s1")]).unwrap()
    };
    let t0 = 1_767_225_600_000;
    vec![
        SeriesInput {
            id: 0,
            labels: labels("cpu_usage_ratio", "d1"),
            samples: (0..720)
                .map(|i| (t0 + i * 10_000 + i % 7, (i as f64 * 0.37).sin().abs()))
                .collect(),
        },
        SeriesInput {
            id: 5,
            labels: labels("temperature_celsius", "d1"),
            samples: vec![(t0, 21.5), (t0 + 10_000, 21.75), (t0 + 20_000, f64::NAN)],
        },
        SeriesInput {
            id: 9,
            labels: labels("uptime_seconds", "d2"),
            samples: (0..720)
                .map(|i| (t0 + i * 10_000, 1000.0 + i as f64 * 10.0))
                .collect(),
        },
    ]
}

fn fixture_block() -> Vec<u8> {
    encode_block(7, 1, &fixture_series(), &[HOUR_MS])
}

/// What a block must give back: every series' labels, samples (bit for bit) and rollups.
fn assert_holds_the_fixture(block: &Block, table: &[(u32, Labels)]) {
    let want = fixture_series();
    assert_eq!(block.seq, 7);
    assert_eq!(block.level, 1);
    assert_eq!(table.len(), want.len());
    for (s, (id, labels)) in want.iter().zip(table) {
        assert_eq!((s.id, &s.labels), (*id, labels));
        let got = block.samples_of(s.id);
        let bits = |v: &[(i64, f64)]| -> Vec<(i64, u64)> {
            v.iter().map(|&(t, v)| (t, v.to_bits())).collect()
        };
        assert_eq!(bits(&got), bits(&s.samples), "series {}", s.id);
        assert_eq!(
            block.last(s.id).map(|(t, _)| t),
            s.samples.last().map(|&(t, _)| t)
        );
    }
    let rows = block.rollup(9, HOUR_MS).expect("hourly rollups of uptime");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].count, 360);
}

#[test]
fn a_first_format_block_still_reads_the_same() {
    let v1 = include_bytes!("fixtures/block-v1.blk").to_vec();
    assert_eq!(&v1[..8], b"FMTSBLK1");
    let (block, table) = Block::decode("block-v1.blk", v1).unwrap();
    assert_holds_the_fixture(&block, &table);
}

#[test]
fn the_packed_format_reads_back() {
    let v2 = fixture_block();
    assert_eq!(&v2[..8], b"FMTSBLK2");
    let (block, table) = Block::decode("block-v2.blk", v2.clone()).unwrap();
    assert_holds_the_fixture(&block, &table);
    // Damage past the header is caught by the checksum; a bad string reference inside an
    // otherwise valid block is a decode error, not a panic.
    let mut bad = v2;
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    assert!(Block::decode("bad.blk", bad).is_err());
}
