//! The time-series engine's WAL on arbitrary bytes, as replay after a crash reads it: framing
//! (length, CRC32C, kind) then the record payload. Neither may panic; a record that decodes
//! encodes back to the same payload (packed samples, whose encoding is not unique: to a
//! payload that decodes to the same samples, bit for bit).
#![no_main]

use fleetmon_tsdb::record::{self, Record};
use fleetmon_tsdb::wal;
use libfuzzer_sys::fuzz_target;

fn reencode(r: &Record, kind: u8) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    match r {
        Record::Series { id, labels } => {
            record::encode_series(&mut out, *id, labels);
            (record::KIND_SERIES, out)
        }
        Record::Samples(samples) if kind == record::KIND_PACKED_SAMPLES => {
            record::encode_packed_samples(&mut out, samples);
            (record::KIND_PACKED_SAMPLES, out)
        }
        Record::Samples(samples) => {
            for &(id, t, v) in samples {
                record::encode_sample(&mut out, id, t, v);
            }
            (record::KIND_SAMPLES, out)
        }
        Record::Meta { key, value } => {
            record::encode_meta(&mut out, key, value);
            (record::KIND_META, out)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The payload decoder alone, with the first byte as the kind (no checksum in the way).
    if let Some((&kind, payload)) = data.split_first()
        && let Ok(r) = record::decode(kind, payload)
    {
        let (k, bytes) = reencode(&r, kind);
        assert_eq!(k, kind);
        // A series record may be followed by bytes it does not read; samples and meta records
        // are read to their end.
        if let Record::Samples(samples) = &r
            && kind == record::KIND_PACKED_SAMPLES
        {
            let Ok(Record::Samples(again)) = record::decode(kind, &bytes) else {
                panic!("{r:?} re-encoded undecodably");
            };
            let bits = |s: &[(u32, i64, f64)]| -> Vec<(u32, i64, u64)> {
                s.iter().map(|&(id, t, v)| (id, t, v.to_bits())).collect()
            };
            assert_eq!(bits(&again), bits(samples));
        } else if kind == record::KIND_SERIES {
            assert!(payload.starts_with(&bytes), "{r:?} re-encoded differently");
        } else {
            assert_eq!(bytes, payload, "{r:?} re-encoded differently");
        }
    }
    // A segment: framed records one after the other until the first bad one, as replay does.
    let mut rest = data;
    while let Ok((kind, payload, used)) = wal::parse_frame(rest) {
        assert!(used > 0 && used <= rest.len());
        let _ = record::decode(kind, payload);
        rest = &rest[used..];
    }
});
