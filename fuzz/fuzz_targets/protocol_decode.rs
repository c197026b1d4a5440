//! The batch decoder on arbitrary payload bytes, as MQTT and HTTP ingest call it: it must never
//! panic, and a batch it accepts must survive re-encoding: the same form decodes to the same
//! batch, and so do the other forms when the batch fits them.
#![no_main]

use fleetmon_protocol::{
    Batch, Format, Limits, decode, encode_columnar, encode_json, encode_protobuf,
};
use libfuzzer_sys::fuzz_target;

/// Equality with values compared bit for bit (a protobuf frame may carry NaN).
fn same(a: &Batch, b: &Batch) -> bool {
    a.device == b.device
        && a.boot_id == b.boot_id
        && a.seq == b.seq
        && a.sent_at_ms == b.sent_at_ms
        && a.dropped_before == b.dropped_before
        && a.samples.len() == b.samples.len()
        && a.samples.iter().zip(&b.samples).all(|(x, y)| {
            x.metric == y.metric
                && x.labels == y.labels
                && x.ts_ms == y.ts_ms
                && x.value.to_bits() == y.value.to_bits()
        })
}

fn again(bytes: &[u8], limits: &Limits, original: &Batch, what: &str) {
    match decode(bytes, limits) {
        Ok((back, _)) => assert!(
            same(&back, original),
            "{what}: {original:?} became {back:?}"
        ),
        Err(e) => panic!("{what}: a decoded batch does not decode again: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok((batch, format)) = decode(data, &limits) else {
        return;
    };
    let pb = encode_protobuf(&batch);
    let finite = batch.samples.iter().all(|s| s.value.is_finite());
    match format {
        Format::Protobuf => again(&pb, &limits, &batch, "protobuf → protobuf"),
        Format::Json => again(&encode_json(&batch), &limits, &batch, "JSON → JSON"),
        Format::Columnar => again(
            &encode_columnar(&batch),
            &limits,
            &batch,
            "columnar → columnar",
        ),
    }
    // Every batch the server accepts survives the agent's frame, bit for bit.
    let columnar = encode_columnar(&batch);
    if columnar.len() <= limits.max_payload_bytes {
        again(&columnar, &limits, &batch, "any → columnar");
    }
    if format == Format::Json && pb.len() <= limits.max_payload_bytes {
        again(&pb, &limits, &batch, "JSON → protobuf");
    }
    // JSON cannot spell NaN or infinities, and may outgrow the payload limit.
    let json = encode_json(&batch);
    if format == Format::Protobuf && finite && json.len() <= limits.max_payload_bytes {
        again(&json, &limits, &batch, "protobuf → JSON");
    }
});
