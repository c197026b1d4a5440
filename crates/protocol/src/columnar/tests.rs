//! Byte-level tests of the columnar body: the forms the encoder picks, and one malformed body
//! per error.

use super::*;
use crate::codec::{self, DecodeError, Format};

const TS: i64 = 1_700_000_000_000;

fn batch(samples: Vec<Sample>) -> Batch {
    Batch {
        device: "pi-1".into(),
        boot_id: "0c5e2a4e-8d55-4b8e-9f51-0d3c1f6a2b7e".into(),
        seq: 1234,
        sent_at_ms: TS + 3,
        dropped_before: 0,
        samples,
    }
}

fn round_trip(b: &Batch) -> Batch {
    decode(&encode(b), &Limits::default()).unwrap()
}

/// One collection as the agent makes it on a Raspberry Pi with a UPS HAT and Wi-Fi (57
/// samples, one timestamp, the agent's own names; values of the kinds it reads).
fn collection() -> Vec<Sample> {
    let s = |m: &str, v: f64| Sample::new(m, TS, v);
    let mut out = vec![
        s("cpu_usage_ratio", 0.123_456_789_012_345_67),
        s("cpu_core_usage_ratio", 0.25).with_label("core", "0"),
        s("cpu_core_usage_ratio", 0.062_5).with_label("core", "1"),
        s("cpu_core_usage_ratio", 0.010_101_010_101_010_1).with_label("core", "2"),
        s("cpu_core_usage_ratio", 0.0).with_label("core", "3"),
        s("load1", 0.52),
        s("load5", 1.42),
        s("load15", 1.84),
        s("memory_total_bytes", 3_978_678_272.0),
        s("memory_available_bytes", 3_123_456_000.0),
        s("memory_used_ratio", 0.214_946_727_316_813_6),
        s("swap_total_bytes", 104_853_504.0),
        s("swap_used_bytes", 0.0),
        s("swap_used_ratio", 0.0),
    ];
    for (m, v) in [
        ("filesystem_size_bytes", 62_742_282_240.0),
        ("filesystem_avail_bytes", 51_001_737_216.0),
        ("filesystem_used_ratio", 0.187_123_456_789),
    ] {
        out.push(
            s(m, v)
                .with_label("mountpoint", "/")
                .with_label("fstype", "ext4"),
        );
    }
    for (m, v) in [
        ("disk_read_bytes_total", 1_234_567_168.0),
        ("disk_written_bytes_total", 9_876_543_488.0),
    ] {
        out.push(s(m, v).with_label("disk", "mmcblk0"));
    }
    for iface in ["eth0", "wlan0"] {
        for (m, v) in [
            ("network_receive_bytes_total", 564_306_040.0),
            ("network_receive_packets_total", 28_937.0),
            ("network_receive_errors_total", 0.0),
            ("network_receive_drops_total", 0.0),
            ("network_transmit_bytes_total", 1_738_131.0),
            ("network_transmit_packets_total", 18_111.0),
            ("network_transmit_errors_total", 0.0),
            ("network_transmit_drops_total", 3.0),
        ] {
            out.push(s(m, v).with_label("interface", iface));
        }
    }
    out.extend([
        s("temperature_celsius", 47.236).with_label("sensor", "cpu-thermal"),
        s("battery_charge_ratio", 0.76).with_label("battery", "BAT0"),
        s("battery_voltage_volts", 4.012).with_label("battery", "BAT0"),
        s("battery_current_amperes", -0.45).with_label("battery", "BAT0"),
        s("battery_power_watts", 1.8054).with_label("battery", "BAT0"),
        s("battery_discharging", 1.0).with_label("battery", "BAT0"),
        s("power_source_mains", 0.0),
        s("uptime_seconds", 19_440.17),
        s("processes", 81.0),
        s("device_info", 1.0)
            .with_label("os", "Raspbian GNU/Linux 12 (bookworm)")
            .with_label("kernel", "6.6.31+rpt-rpi-v8")
            .with_label("firmware", "unknown")
            .with_label("agent_version", "0.1.0")
            .with_label("model", "Raspberry Pi 4 Model B Rev 1.4"),
        s("listening_ports", 2.0),
        s("listening_port", 1.0)
            .with_label("protocol", "tcp")
            .with_label("port", "22"),
        s("listening_port", 1.0)
            .with_label("protocol", "udp")
            .with_label("port", "68"),
        s("probe_rtt_seconds", 0.000_347).with_label("target", "server"),
        s("probe_jitter_seconds", 0.000_021).with_label("target", "server"),
        s("probe_loss_ratio", 0.0).with_label("target", "server"),
        s("agent_cpu_seconds_total", 1.37),
        s("agent_resident_bytes", 4_714_496.0),
        s("agent_uplink_bytes_total", 123_456.0),
        s("agent_spool_bytes", 0.0),
        s("agent_spool_dropped_batches_total", 0.0),
        s("agent_low_power", 0.0),
    ]);
    out
}

#[test]
fn a_collection_round_trips_within_16_bytes_a_sample() {
    let b = batch(collection());
    assert_eq!(b.samples.len(), 57);
    let frame = codec::encode_columnar(&b);
    let (back, format) = codec::decode(&frame, &Limits::default()).unwrap();
    assert_eq!(format, Format::Columnar);
    assert_eq!(back, b);
    let per_sample = frame.len() as f64 / b.samples.len() as f64;
    eprintln!(
        "v2 {} bytes, v1 {} bytes, {per_sample:.1} bytes a sample",
        frame.len(),
        codec::encode_protobuf(&b).len()
    );
    assert!(
        per_sample <= 16.0,
        "{} bytes for {} samples: {per_sample:.1} a sample",
        frame.len(),
        b.samples.len()
    );
    // The same batch in frame version 1, for scale: v2 is well under half of it.
    assert!(frame.len() * 2 < codec::encode_protobuf(&b).len());
}

#[test]
fn the_worked_example_of_the_docs_is_these_bytes() {
    // docs/protocol.md, "Example".
    let b = Batch {
        device: "d1".into(),
        boot_id: "b".into(),
        seq: 7,
        sent_at_ms: 1_700_000_000_002,
        dropped_before: 0,
        samples: vec![
            Sample::new("load1", 1_700_000_000_000, 0.52),
            Sample::new("temperature_celsius", 1_700_000_000_000, 21.0)
                .with_label("sensor", "probe"),
        ],
    };
    let hex: Vec<String> = encode(&b).iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "02 64 31 01 62 07 84 a0 ab fe f9 62 00 34 01 05 70 72 6f 62 65 02 02 18 01 02 33 34 01 02 03 15 68 2a"
    );
    assert_eq!(round_trip(&b), b);
}

/// The value column of a one-sample body: (kind, payload bytes).
fn value_form(v: f64) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    let kind = put_value(&mut out, v);
    (kind, out)
}

#[test]
fn values_take_their_shortest_exact_form() {
    assert_eq!(value_form(0.0), (KIND_ZERO, vec![]));
    assert_eq!(value_form(1.0), (KIND_INT, vec![2]));
    assert_eq!(value_form(-1.0), (KIND_INT, vec![1]));
    assert_eq!(value_form(81.0).0, KIND_INT);
    assert_eq!(value_form(0.5), (DECIMAL_0 + 1, vec![10]));
    assert_eq!(value_form(0.52), (DECIMAL_0 + 2, vec![104]));
    assert_eq!(value_form(19_440.17).0, DECIMAL_0 + 2);
    assert_eq!(value_form(0.000_347).0, DECIMAL_0 + 6);
    // -0.0 is not the integer 0; f32 keeps its sign.
    assert_eq!(value_form(-0.0).0, KIND_F32);
    assert_eq!(value_form(f64::INFINITY).0, KIND_F32);
    assert_eq!(value_form(f64::NEG_INFINITY).0, KIND_F32);
    // Four decimals: two bytes. Sixteen decimals (2^-16) are past the decimal kinds: f32.
    assert_eq!(value_form(0.062_5), (DECIMAL_0 + 4, vec![0xe2, 0x09]));
    assert_eq!(value_form(1.0 / 65_536.0).0, KIND_F32);
    // NaN always goes whole.
    assert_eq!(value_form(f64::NAN).0, KIND_F64);
    assert_eq!(value_form(0.123_456_789_012_345_67).0, KIND_F64);
    assert_eq!(value_form(1e300).0, KIND_F64);
    // Integral but beyond 2^53: not every such integer is exact, so it goes as a float.
    assert_eq!(value_form(2f64.powi(60)).0, KIND_F32);
    assert_eq!(value_form(2f64.powi(60) + 2f64.powi(20)).0, KIND_F64);
}

#[test]
fn every_f64_comes_back_bit_for_bit() {
    let quiet_nan_with_payload = f64::from_bits(0x7ff8_0000_dead_beef);
    let signalling_nan = f64::from_bits(0x7ff0_0000_0000_0001);
    let values = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        quiet_nan_with_payload,
        signalling_nan,
        f64::MIN_POSITIVE,
        f64::MIN_POSITIVE / 4.0,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        9_007_199_254_740_993.0,
        -9_007_199_254_740_992.0,
        0.1 + 0.2,
        123.456,
        -5e-324,
    ];
    let b = batch(values.iter().map(|&v| Sample::new("m", TS, v)).collect());
    let back = decode(&encode(&b), &Limits::default()).unwrap();
    for (a, b) in values.iter().zip(&back.samples) {
        assert_eq!(
            a.to_bits(),
            b.value.to_bits(),
            "{a} came back as {}",
            b.value
        );
    }
}

#[test]
fn one_timestamp_is_one_run_and_changes_start_new_runs() {
    let same = batch(vec![Sample::new("m", TS, 1.0); 50]);
    let mut times: Vec<i64> = vec![TS, TS, TS + 1000, 0, i64::MAX, i64::MAX, TS];
    let varied = batch(times.iter().map(|&t| Sample::new("m", t, 1.0)).collect());
    assert_eq!(round_trip(&same), same);
    assert_eq!(round_trip(&varied), varied);
    // Fifty samples at one time: the runs column is 3 bytes (count, length, delta -3).
    let body = encode(&same);
    let one = encode(&batch(vec![Sample::new("m", TS, 1.0)]));
    // Each extra sample costs a metric index, a labels byte, half a kind byte and its value.
    assert_eq!(body.len() - one.len(), 49 * 3 + 24);
    times.reverse();
    let reversed = batch(times.iter().map(|&t| Sample::new("m", t, 1.0)).collect());
    assert_eq!(round_trip(&reversed), reversed);
}

#[test]
fn strings_not_in_the_table_go_in_the_batch_after_the_well_known_ones() {
    let b = batch(vec![
        Sample::new("cpu_usage_ratio", TS, 0.5),
        Sample::new("my_sensor_reading", TS, 2.0).with_label("zone", "attic"),
        Sample::new("my_sensor_reading", TS, 3.0).with_label("zone", "cellar"),
    ]);
    let body = encode(&b);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("my_sensor_reading").count(), 1);
    assert!(!text.contains("cpu_usage_ratio"));
    assert_eq!(round_trip(&b), b);
    let no_known = batch(vec![Sample::new("x", TS, 1.0).with_label("y", "z")]);
    assert_eq!(round_trip(&no_known), no_known);
}

#[test]
fn labels_repeat_in_one_byte() {
    let eth = |m: &str| Sample::new(m, TS, 0.0).with_label("interface", "eth0");
    let b = batch(vec![
        eth("network_receive_bytes_total"),
        eth("network_receive_packets_total"),
        eth("network_receive_errors_total"),
        Sample::new("load1", TS, 0.0),
    ]);
    let body = encode(&b);
    assert_eq!(round_trip(&b), b);
    let distinct = batch(vec![eth("network_receive_bytes_total")]);
    // Two more samples each add a metric byte and a "same labels" byte (zeros add no value).
    let grown = encode(&batch(b.samples[..3].to_vec()));
    assert_eq!(grown.len() - encode(&distinct).len(), 2 * 2 + 1);
    assert!(body.len() > grown.len());
}

/// The header fields and the well-known count of a hand-written body.
fn header(known: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put_str(&mut out, "d1");
    varint::put_str(&mut out, "");
    varint::put_u64(&mut out, 1);
    varint::put_i64(&mut out, TS);
    varint::put_u64(&mut out, 0);
    varint::put_u64(&mut out, known);
    out
}

/// A body by hand: header, well-known count and own strings, then `rest`.
fn body(known: u64, strings: &[&str], rest: &[u8]) -> Vec<u8> {
    let mut out = header(known);
    varint::put_u64(&mut out, strings.len() as u64);
    for s in strings {
        varint::put_str(&mut out, s);
    }
    out.extend_from_slice(rest);
    out
}

fn err(body: &[u8]) -> ColumnarError {
    decode(body, &Limits::default()).unwrap_err()
}

#[test]
fn a_hand_written_body_decodes() {
    // One sample: metric "m" (own string 0 after 0 well-known), no labels, one run of 1 at
    // delta 0, kind integer, value 7.
    let b = decode(
        &body(0, &["m"], &[1, 0, 1, 1, 1, 0, 0x01, 14]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(b.samples, vec![Sample::new("m", TS, 7.0)]);
    // The same with the well-known "load1" (index 2) and a decimal 0.52 (kind 5).
    let b = decode(
        &body(3, &[], &[1, 2, 1, 1, 1, 0, 0x05, 104]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(b.samples, vec![Sample::new("load1", TS, 0.52)]);
}

#[test]
fn every_malformed_body_is_a_typed_error() {
    // Header fields.
    assert!(matches!(
        err(&[0x80, 0x80]),
        ColumnarError::Read(ReadError::Truncated { what: "device", .. })
    ));
    assert!(matches!(
        err(&[5, b'a']),
        ColumnarError::Read(ReadError::Truncated { what: "device", .. })
    ));
    let mut bad_seq = vec![1, b'd', 0];
    bad_seq.extend_from_slice(&[0xff; 11]);
    assert!(matches!(
        err(&bad_seq),
        ColumnarError::Read(ReadError::BadVarint { what: "seq", .. })
    ));
    assert_eq!(
        err(&body(101, &[], &[])),
        ColumnarError::NewerTable {
            known: 101,
            have: WELL_KNOWN.len()
        }
    );
    // Counts past what the bytes could hold are refused before any allocation.
    let mut huge = header(0);
    varint::put_u64(&mut huge, u64::MAX >> 1);
    huge.extend_from_slice(&[1, b'm']);
    assert_eq!(
        err(&huge),
        ColumnarError::TooMany {
            what: "strings",
            count: (u64::MAX >> 1) as usize,
            max: 2
        }
    );
    let mut many = body(0, &["m"], &[]);
    varint::put_u64(&mut many, 1_000_000);
    assert!(matches!(
        err(&many),
        ColumnarError::TooMany {
            what: "samples",
            count: 1_000_000,
            ..
        }
    ));
    let small = Limits {
        max_samples: 2,
        ..Limits::default()
    };
    let three = body(0, &["m"], &[3, 0, 0, 0, 1, 1, 1, 0, 1, 3, 0, 0, 0, 0]);
    assert!(matches!(
        decode(&three, &small),
        Err(ColumnarError::TooMany {
            what: "samples",
            count: 3,
            max: 2
        })
    ));
    // Indices.
    assert_eq!(
        err(&body(0, &["m"], &[1, 1, 1, 1, 1, 0, 0, 0])),
        ColumnarError::IndexOutOfRange {
            sample: 0,
            index: 1,
            len: 1
        }
    );
    assert_eq!(
        err(&body(2, &[], &[1, 2, 1, 1, 1, 0, 0])),
        ColumnarError::IndexOutOfRange {
            sample: 0,
            index: 2,
            len: 2
        }
    );
    // Labels.
    assert_eq!(
        err(&body(0, &["m"], &[1, 0, 0, 1, 1, 0, 0])),
        ColumnarError::NoPreviousLabels
    );
    assert_eq!(
        err(&body(0, &["m", "a"], &[1, 0, 3, 1, 0, 1, 0, 1, 1, 0, 0])),
        ColumnarError::DuplicateLabel {
            sample: 0,
            name: "a".into()
        }
    );
    let mut too_many_labels = body(0, &["m"], &[1, 0, 34]);
    too_many_labels.extend_from_slice(&[0; 66]);
    assert!(matches!(
        err(&too_many_labels),
        ColumnarError::TooMany {
            what: "labels",
            count: 33,
            ..
        }
    ));
    // Timestamp runs.
    assert_eq!(
        err(&body(0, &["m"], &[1, 0, 1, 1, 0, 0, 0])),
        ColumnarError::EmptyRun { run: 0 }
    );
    assert_eq!(
        err(&body(0, &["m"], &[2, 0, 0, 1, 1, 1, 1, 0, 0])),
        ColumnarError::RunsMismatch {
            covered: 1,
            samples: 2
        }
    );
    assert_eq!(
        err(&body(0, &["m"], &[1, 0, 1, 1, 2, 0, 0])),
        ColumnarError::RunsMismatch {
            covered: 2,
            samples: 1
        }
    );
    // A delta that wraps is arithmetic modulo 2^64, as the encoder writes it.
    let mut wraps = body(0, &["m"], &[1, 0, 1, 1, 1]);
    varint::put_i64(&mut wraps, i64::MAX);
    wraps.extend_from_slice(&[0]);
    let b = decode(&wraps, &Limits::default()).unwrap();
    assert_eq!(b.samples[0].ts_ms, TS.wrapping_add(i64::MAX));
    // Values.
    assert_eq!(
        err(&body(0, &["m"], &[1, 0, 1, 1, 1, 0, 0x10])),
        ColumnarError::KindPadding { nibble: 1 }
    );
    assert!(matches!(
        err(&body(0, &["m"], &[1, 0, 1, 1, 1, 0, 0x03, 1, 2, 3])),
        ColumnarError::Read(ReadError::Truncated {
            what: "f64 value",
            needed: 5,
            ..
        })
    ));
    assert!(matches!(
        err(&body(0, &["m"], &[1, 0, 1, 1, 1, 0])),
        ColumnarError::Read(ReadError::Truncated {
            what: "value kinds",
            ..
        })
    ));
    let trailing = body(0, &["m"], &[1, 0, 1, 1, 1, 0, 0, 9, 9]);
    assert_eq!(
        err(&trailing),
        ColumnarError::TrailingBytes {
            offset: trailing.len() - 2,
            count: 2
        }
    );
}

#[test]
fn short_references_cannot_blow_up_into_unbounded_text() {
    // One 1000-byte label value, then samples that each repeat it in two bytes.
    let limits = Limits {
        max_payload_bytes: 1000,
        max_samples: 10_000,
        ..Limits::default()
    };
    let long = "v".repeat(1000);
    let n = 2000u64;
    let mut rest = Vec::new();
    varint::put_u64(&mut rest, n);
    rest.extend(std::iter::repeat_n(0u8, n as usize));
    rest.extend_from_slice(&[2, 1, 2]);
    rest.extend(std::iter::repeat_n(0u8, n as usize - 1));
    rest.extend_from_slice(&[1]);
    varint::put_u64(&mut rest, n);
    rest.push(0);
    rest.extend(std::iter::repeat_n(0u8, n as usize / 2));
    let b = body(0, &["m", "a", &long], &rest);
    assert!(matches!(
        decode(&b, &limits),
        Err(ColumnarError::TooMuchText { .. })
    ));
}

#[test]
fn decode_errors_name_the_v2_body() {
    let mut frame = codec::encode_columnar(&batch(vec![Sample::new("m", TS, 1.0)]));
    frame.push(0);
    let body = frame[codec::HEADER_LEN..].to_vec();
    frame[4..8].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let e = codec::decode(&frame, &Limits::default()).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::Columnar(ColumnarError::TrailingBytes { .. })
    ));
    assert_eq!(e.kind(), "columnar");
    assert!(
        e.to_string()
            .starts_with("columnar (v2) body: 1 bytes left over"),
        "{e}"
    );
}
