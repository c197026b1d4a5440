//! Property tests of the codec: any valid batch round-trips through both forms, and no input
//! of any shape makes decoding panic.

use std::collections::BTreeMap;

use fleetmon_protocol::{Batch, DecodeError, Limits, Sample, decode, encode_json, encode_protobuf};
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

proptest! {
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
