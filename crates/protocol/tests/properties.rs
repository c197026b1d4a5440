//! Property tests of the codec: any valid batch round-trips through every form (frame
//! version 2 bit for bit, whatever the values), and no input of any shape makes decoding
//! panic.

use std::collections::BTreeMap;

use fleetmon_protocol::validate::{is_valid_label_name, is_valid_metric_name};
use fleetmon_protocol::well_known::WELL_KNOWN;
use fleetmon_protocol::{
    Batch, DecodeError, Format, Limits, Sample, decode, encode_columnar, encode_json,
    encode_protobuf,
};
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = Sample> {
    (
        "[a-z_:][a-z0-9_:]{0,20}",
        proptest::collection::btree_map("[a-z_][a-z0-9_]{0,10}", ".{0,16}", 0..5),
        0..i64::MAX / 2,
        proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
    )
        .prop_map(|(metric, labels, ts_ms, value)| Sample {
            metric,
            labels: labels
                .into_iter()
                .filter(|(k, _)| !k.starts_with("__") && k != "device")
                .collect::<BTreeMap<_, _>>(),
            ts_ms,
            value,
        })
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        "[A-Za-z0-9._:-]{1,40}",
        "[a-f0-9-]{0,36}",
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        proptest::collection::vec(sample(), 1..40),
    )
        .prop_map(
            |(device, boot_id, seq, sent_at_ms, dropped_before, samples)| Batch {
                device,
                boot_id,
                seq,
                sent_at_ms,
                dropped_before,
                samples,
            },
        )
}

/// Any f64 at all: every bit pattern (NaNs with payloads, subnormals, -0.0, ±∞), and the
/// kinds of values agents send (integers, short decimals, f32s).
fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|i| i as f64),
        (-1_000_000i64..1_000_000, 1..13u32).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        any::<f32>().prop_map(f64::from),
    ]
}

/// A name from the well-known table or any other.
fn name(other: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WELL_KNOWN).prop_map(str::to_owned),
        other,
    ]
}

/// Batches shaped like v2's sweet spot and its edges: well-known and other strings, shared
/// and scattered timestamps, repeated label sets, any value.
fn v2_batch() -> impl Strategy<Value = (Batch, Vec<u64>)> {
    let sample = (
        name("[a-z_:][a-z0-9_:]{0,20}"),
        proptest::collection::btree_map(name("[a-z_][a-z0-9_]{0,10}"), name(".{0,16}"), 0..4),
        prop_oneof![Just(1_700_000_000_000i64), Just(0), 0..i64::MAX / 2],
        any_value(),
    );
    (
        "[A-Za-z0-9._:-]{1,40}",
        "[a-f0-9-]{0,36}",
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        proptest::collection::vec(sample, 1..60),
    )
        .prop_map(
            |(device, boot_id, seq, sent_at_ms, dropped_before, samples)| {
                let bits = samples.iter().map(|s| s.3.to_bits()).collect();
                let samples = samples
                    .into_iter()
                    .map(|(metric, labels, ts_ms, value)| Sample {
                        metric: if is_valid_metric_name(&metric) {
                            metric
                        } else {
                            format!("m_{}", metric.len())
                        },
                        labels: labels
                            .into_iter()
                            .filter(|(k, _)| is_valid_label_name(k) && k != "device")
                            .collect::<BTreeMap<_, _>>(),
                        ts_ms,
                        value,
                    })
                    .collect();
                (
                    Batch {
                        device,
                        boot_id,
                        seq,
                        sent_at_ms,
                        dropped_before,
                        samples,
                    },
                    bits,
                )
            },
        )
}

/// The frame version 2 header in front of `body`, with the right checksum.
fn v2_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = b"FMB\x02".to_vec();
    frame.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

proptest! {
    #[test]
    fn columnar_round_trips_bit_for_bit((b, bits) in v2_batch()) {
        let (back, format) = decode(&encode_columnar(&b), &Limits::default()).unwrap();
        prop_assert_eq!(format, Format::Columnar);
        let back_bits: Vec<u64> = back.samples.iter().map(|s| s.value.to_bits()).collect();
        prop_assert_eq!(back_bits, bits);
        // Everything else compares equal (values compared as bits above; NaN != NaN).
        let strip = |b: &Batch| {
            let mut b = b.clone();
            b.samples.iter_mut().for_each(|s| s.value = 0.0);
            b
        };
        prop_assert_eq!(strip(&back), strip(&b));
    }

    #[test]
    fn columnar_agrees_with_protobuf(b in batch()) {
        let (v1, _) = decode(&encode_protobuf(&b), &Limits::default()).unwrap();
        let (v2, _) = decode(&encode_columnar(&b), &Limits::default()).unwrap();
        prop_assert_eq!(v1, v2);
    }

    #[test]
    fn any_bytes_after_a_v2_header_are_a_typed_error(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        match decode(&v2_frame(&body), &Limits::default()) {
            Ok(_) | Err(DecodeError::Columnar(_)) | Err(DecodeError::Invalid(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn a_damaged_v2_body_with_a_fixed_checksum_never_panics(
        (b, _) in v2_batch(),
        cut in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        // Damage the checksum cannot see (a sender's bug, not the network's): cut the body
        // anywhere and overwrite a few bytes, then frame it with a correct checksum.
        let frame = encode_columnar(&b);
        let mut body = frame[8..].to_vec();
        body.truncate(cut.index(body.len() + 1));
        for (at, byte) in edits {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] = byte;
            }
        }
        match decode(&v2_frame(&body), &Limits::default()) {
            Ok(_) | Err(DecodeError::Columnar(_)) | Err(DecodeError::Invalid(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn any_single_bit_flip_in_a_v2_frame_is_caught((b, _) in v2_batch(), bit in any::<prop::sample::Index>()) {
        let mut frame = encode_columnar(&b);
        let i = bit.index(frame.len() * 8);
        frame[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode(&frame, &Limits::default()).is_err(), "bit {} flipped unnoticed", i);
    }

    #[test]
    fn protobuf_round_trips(b in batch()) {
        let (back, _) = decode(&encode_protobuf(&b), &Limits::default()).unwrap();
        prop_assert_eq!(back, b);
    }

    #[test]
    fn json_round_trips(b in batch()) {
        let (back, _) = decode(&encode_json(&b), &Limits::default()).unwrap();
        prop_assert_eq!(back, b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &Limits::default());
    }

    #[test]
    fn framed_garbage_is_a_typed_error(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        // A frame whose checksum is right but whose body is noise: it must fail as protobuf or
        // as an invalid batch, never panic and never pass as something it is not.
        let mut frame = b"FMB\x01".to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        match decode(&frame, &Limits::default()) {
            Ok(_) | Err(DecodeError::Protobuf(_)) | Err(DecodeError::Table(_)) | Err(DecodeError::Invalid(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn any_single_bit_flip_in_a_frame_is_caught(b in batch(), bit in any::<prop::sample::Index>()) {
        let mut frame = encode_protobuf(&b);
        let i = bit.index(frame.len() * 8);
        frame[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode(&frame, &Limits::default()).is_err(), "bit {} flipped unnoticed", i);
    }
}
