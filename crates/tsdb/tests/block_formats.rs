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

#[test]
fn a_block_written_through_a_file_is_the_same_block() {
    use std::sync::Arc;

    use fleetmon_tsdb::block::BlockWriter;
    use fleetmon_tsdb::{Backend, MemBackend};

    // Enough series of noisy values to pass the writer's in-memory limit (1 MiB).
    let mut rng = fastrand::Rng::with_seed(11);
    let series: Vec<SeriesInput> = (0..120u32)
        .map(|id| SeriesInput {
            id: id * 3,
            labels: Labels::from_metric("noise", [("device", format!("d{}", id % 40).as_str())])
                .unwrap(),
            samples: (0..2_000)
                .map(|i| (i * 10_000 + rng.i64(0..20), rng.f64()))
                .collect(),
        })
        .collect();
    let in_memory = fleetmon_tsdb::block::encode_block(9, 1, &series, &[HOUR_MS]);
    assert!(in_memory.len() > 1 << 20, "{} bytes", in_memory.len());
    let mem = MemBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(mem.clone());
    let mut w = BlockWriter::new(1, &[HOUR_MS])
        .spill_to(backend.clone(), "b.tmp")
        .unwrap();
    for s in &series {
        w.add(s.id, &s.labels, &s.samples).unwrap();
    }
    let written = w.finish_file(9, "b.blk").unwrap();
    assert_eq!(
        mem.read("b.blk").unwrap(),
        in_memory,
        "same bytes as written in memory"
    );
    assert!(mem.read("b.tmp").is_err(), "the temporary file was renamed");
    let (loaded, table) = Block::load(backend, "b.blk").unwrap();
    assert_eq!(table.len(), series.len());
    for b in [&written, &loaded] {
        assert_eq!((b.seq, b.level, b.bytes), (9, 1, in_memory.len() as u64));
        for s in &series {
            assert_eq!(b.samples_of(s.id), s.samples);
            assert_eq!(b.rollup(s.id, HOUR_MS), loaded.rollup(s.id, HOUR_MS));
        }
    }
}
