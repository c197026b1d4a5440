//! Fault tolerance: the WAL corruption matrix, crashes after the k-th failed write or fsync
//! (once and persistently, with a simulated power cut), and a full disk. The expected outcome
//! is always exact: the acknowledged appends, nothing more, nothing less.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetmon_tsdb::wal::{RECORD_HEADER_LEN, SEGMENT_MAGIC, parse_frame, segment_name};
use fleetmon_tsdb::{
    Backend, Db, DbError, Fault, FaultBackend, FaultOp, Labels, MemBackend, Meta, Options, Sample,
};

const T0: i64 = 1_767_225_600_000;

type Model = BTreeMap<String, BTreeMap<i64, f64>>;

fn labels(device: &str) -> Labels {
    Labels::from_metric("cpu_usage_ratio", [("device", device)]).unwrap()
}

fn contents(db: &Db) -> Model {
    db.select(&[], i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            (
                s.labels.get("device").unwrap().to_owned(),
                s.points.into_iter().collect(),
            )
        })
        .collect()
}

type Metas = Vec<(Vec<u8>, Vec<u8>)>;

fn open(backend: Arc<dyn Backend>) -> (Db, Metas) {
    let mut metas = Vec::new();
    let db = Db::open(backend, Options::default(), &mut |k, v| {
        metas.push((k.to_vec(), v.to_vec()))
    })
    .unwrap();
    (db, metas)
}

/// Append `i` of the matrix workload: one sample of device `d{i % 2}`, and a meta record on
/// even appends.
fn matrix_append(db: &Db, i: usize) -> Result<(), DbError> {
    let l = labels(&format!("d{}", i % 2));
    let s = [Sample {
        labels: &l,
        ts_ms: T0 + i as i64 * 1000,
        value: i as f64,
    }];
    let meta = Meta {
        key: b"batch".to_vec(),
        value: vec![i as u8],
    };
    db.append(&s, i.is_multiple_of(2).then_some(&meta))
        .map(|_| ())
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    BadHeader,
    BadType,
    BadLength,
    HugeLength,
    BadCrc,
    BadPayload,
    TruncateHeader,
    TruncatePayload,
}

const DAMAGES: [Damage; 8] = [
    Damage::BadHeader,
    Damage::BadType,
    Damage::BadLength,
    Damage::HugeLength,
    Damage::BadCrc,
    Damage::BadPayload,
    Damage::TruncateHeader,
    Damage::TruncatePayload,
];

fn damage(bytes: &[u8], at: usize, len: usize, kind: Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match kind {
        Damage::BadHeader => b[at..at + RECORD_HEADER_LEN].fill(0xA5),
        Damage::BadType => {
            // A kind this version does not know, with a checksum that matches it.
            let payload = b[at + RECORD_HEADER_LEN..at + len].to_vec();
            let crc = crc32c::crc32c_append(crc32c::crc32c(&[0x7F]), &payload);
            b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            b[at + 8] = 0x7F;
        }
        Damage::BadLength => {
            let l = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) + 1;
            b[at..at + 4].copy_from_slice(&l.to_le_bytes());
        }
        Damage::HugeLength => b[at + 3] = 0xFF,
        Damage::BadCrc => b[at + 5] ^= 0x10,
        Damage::BadPayload => b[at + len - 1] ^= 0x01,
        Damage::TruncateHeader => b.truncate(at + 4),
        Damage::TruncatePayload => b.truncate(at + len - 1),
    }
    b
}

#[test]
fn wal_corruption_matrix_keeps_exactly_the_intact_prefix() {
    const APPENDS: usize = 6;
    let mem = MemBackend::new();
    let (db, _) = open(Arc::new(mem.clone()));
    // Record positions and the append each belongs to.
    let mut owners = Vec::new();
    let segment = segment_name(1);
    for i in 0..APPENDS {
        let before = mem.read(&segment).unwrap().len();
        matrix_append(&db, i).unwrap();
        let after = mem.read(&segment).unwrap();
        let mut off = before;
        while off < after.len() {
            let (kind, _, used) = parse_frame(&after[off..]).unwrap();
            owners.push((off, used, kind, i));
            off += used;
        }
    }
    drop(db);
    let pristine = mem.read(&segment).unwrap();
    assert!(owners.len() > APPENDS, "series, samples and meta records");
    for (pos, &(at, len, _, _)) in owners.iter().enumerate() {
        for kind in DAMAGES {
            let bad = damage(&pristine, at, len, kind);
            let case = MemBackend::new();
            case.put(&segment, bad);
            let (db, metas) = open(Arc::new(case.clone()));
            // Expected: every sample and meta record before `pos`.
            let mut want = Model::new();
            let mut want_metas = Vec::new();
            for &(_, _, k, i) in &owners[..pos] {
                if k == fleetmon_tsdb::record::KIND_PACKED_SAMPLES {
                    want.entry(format!("d{}", i % 2))
                        .or_default()
                        .insert(T0 + i as i64 * 1000, i as f64);
                }
                if k == fleetmon_tsdb::record::KIND_META {
                    want_metas.push((b"batch".to_vec(), vec![i as u8]));
                }
            }
            let ctx = format!("record {pos}, {kind:?}");
            assert_eq!(contents(&db), want, "{ctx}");
            assert_eq!(metas, want_metas, "{ctx}");
            let stats = db.stats();
            assert_eq!(stats.wal_corruptions, 1, "{ctx}");
            assert_eq!(
                case.read(&segment).unwrap().len(),
                at,
                "{ctx}: tail cut at the damage"
            );
            // Appends continue, and everything survives another restart.
            matrix_append(&db, 100).unwrap();
            want.entry("d0".to_owned())
                .or_default()
                .insert(T0 + 100_000, 100.0);
            drop(db);
            let (db, _) = open(Arc::new(case.clone()));
            assert_eq!(contents(&db), want, "{ctx} after append");
            assert_eq!(
                db.stats().wal_corruptions,
                0,
                "{ctx}: repaired log is clean"
            );
        }
    }
    // A damaged segment header: the segment is set aside, counted, and a fresh one used.
    let case = MemBackend::new();
    let mut bad = pristine.clone();
    bad[..SEGMENT_MAGIC.len()].fill(b'X');
    case.put(&segment, bad);
    let (db, _) = open(Arc::new(case.clone()));
    assert!(contents(&db).is_empty());
    assert_eq!(db.stats().wal_corruptions, 1);
    matrix_append(&db, 7).unwrap();
    drop(db);
    assert_eq!(contents(&open(Arc::new(case)).0).len(), 1);
}

/// A workload of appends, rewrites, late samples and flushes; returns the model of what was
/// acknowledged.
fn crash_workload(db: &Db) -> Model {
    let mut model = Model::new();
    for step in 0..24i64 {
        let device = format!("d{}", step % 3);
        let l = labels(&device);
        // In order, then a late one and a rewrite every few steps.
        let mut batch = vec![(T0 + step * 60_000, step as f64)];
        if step % 4 == 3 {
            batch.push((T0 + (step - 2) * 60_000 + 7, -1.0));
            batch.push((T0 + step * 60_000, 100.0 + step as f64));
        }
        let samples: Vec<Sample<'_>> = batch
            .iter()
            .map(|&(ts_ms, value)| Sample {
                labels: &l,
                ts_ms,
                value,
            })
            .collect();
        if db.append(&samples, None).is_ok() {
            let m = model.entry(device).or_default();
            for (t, v) in batch {
                m.insert(t, v);
            }
        }
        if step % 8 == 5 {
            let _ = db.flush();
        }
        if step == 20 {
            let _ = db.compact(T0 + 100 * 86_400_000);
        }
    }
    model
}

#[test]
fn crash_after_the_kth_failure_loses_nothing_acknowledged_and_invents_nothing() {
    let mut cases = 0;
    let mut hit = 0;
    for op in [FaultOp::Write, FaultOp::Fsync, FaultOp::Any] {
        for persistent in [false, true] {
            for short_write in [false, true] {
                if short_write && op == FaultOp::Fsync {
                    continue;
                }
                for k in 1..=40u64 {
                    let mem = MemBackend::new();
                    let fault = Arc::new(FaultBackend::new(mem.clone()));
                    let (db, _) = open(fault.clone());
                    fault.set(Fault {
                        op,
                        nth: k,
                        persistent,
                        short_write,
                    });
                    let model = crash_workload(&db);
                    drop(db);
                    mem.crash();
                    let (db, _) = open(Arc::new(mem.clone()));
                    let ctx = format!("{op:?} k={k} persistent={persistent} short={short_write}");
                    assert_eq!(contents(&db), model, "{ctx}");
                    if fault.failures() > 0 {
                        hit += 1;
                    }
                    if fault.failures() > 0 && !persistent {
                        // The failure hit something and the store kept going.
                        assert!(!model.is_empty(), "{ctx}");
                    }
                    cases += 1;
                }
            }
        }
    }
    println!("{cases} crash cases, {hit} with an injected failure");
    assert!(cases >= 160);
    assert!(
        hit >= 150,
        "most cases must actually inject a failure: {hit}"
    );
}

#[test]
fn a_full_disk_gives_backpressure_not_corruption_and_ingest_resumes() {
    let mem = MemBackend::new();
    let fault = Arc::new(FaultBackend::new(mem.clone()));
    let (db, _) = open(fault.clone());
    let l = labels("full");
    let put = |t: i64| {
        db.append(
            &[Sample {
                labels: &l,
                ts_ms: T0 + t,
                value: t as f64,
            }],
            None,
        )
    };
    put(0).unwrap();
    fault.set(Fault {
        op: FaultOp::Write,
        nth: 1,
        persistent: true,
        short_write: true,
    });
    for t in 1..10 {
        let err = put(t).unwrap_err();
        assert!(matches!(err, DbError::NotDurable(_)), "{err}");
        assert!(err.to_string().contains("not durable"), "{err}");
    }
    assert!(db.flush().is_err(), "no blocks can be written either");
    assert_eq!(
        contents(&db)["full"].len(),
        1,
        "failed appends are not visible"
    );
    assert_eq!(db.stats().appends_failed_total, 9);
    fault.clear();
    put(10).unwrap();
    db.flush().unwrap();
    put(11).unwrap();
    drop(db);
    mem.crash();
    let (db, _) = open(Arc::new(mem));
    let got: Vec<i64> = contents(&db)["full"].keys().map(|t| t - T0).collect();
    assert_eq!(got, vec![0, 10, 11]);
    assert_eq!(db.stats().wal_corruptions, 0);
}

#[test]
fn a_wal_of_unpacked_samples_records_still_replays() {
    // What earlier versions wrote: samples as kind-2 records of 20 bytes each.
    use fleetmon_tsdb::record::{self, KIND_SAMPLES, KIND_SERIES};
    use fleetmon_tsdb::wal::frame;
    let mut segment = SEGMENT_MAGIC.to_vec();
    let mut payload = Vec::new();
    for (id, device) in [(0, "d0"), (1, "d1")] {
        payload.clear();
        record::encode_series(&mut payload, id, &labels(device));
        frame(&mut segment, KIND_SERIES, &payload);
    }
    payload.clear();
    record::encode_sample(&mut payload, 0, T0, 1.5);
    record::encode_sample(&mut payload, 1, T0 + 10, f64::NAN);
    record::encode_sample(&mut payload, 0, T0 + 1000, -0.0);
    frame(&mut segment, KIND_SAMPLES, &payload);
    let mem = MemBackend::new();
    mem.put(&segment_name(1), segment);
    let (db, _) = open(Arc::new(mem.clone()));
    assert_eq!(db.stats().wal_corruptions, 0);
    let got = contents(&db);
    assert_eq!(got["d0"][&T0], 1.5);
    assert_eq!(got["d0"][&(T0 + 1000)].to_bits(), (-0.0f64).to_bits());
    assert!(got["d1"][&(T0 + 10)].is_nan());
    // New appends go on in the packed form, and both replay together.
    matrix_append(&db, 2).unwrap();
    drop(db);
    let (db, _) = open(Arc::new(mem));
    let got = contents(&db);
    assert_eq!(got["d0"].len(), 3);
    assert_eq!(got["d0"][&(T0 + 2000)], 2.0);
}
