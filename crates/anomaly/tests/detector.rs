//! The per-series detector: scores in [0, 1], causal, deterministic, fixed-size, robust to odd
//! clocks and values, and it does notice an obvious anomaly.

use fleetmon_anomaly::Detector;

const STEP_MS: i64 = 300_000;

/// A noisy daily cycle (deterministic pseudo-noise).
fn series(n: usize) -> Vec<(i64, f64)> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            let day = (i as f64 / 288.0) * std::f64::consts::TAU;
            (i as i64 * STEP_MS, 50.0 + 20.0 * day.sin() + 4.0 * noise)
        })
        .collect()
}

fn scores(rows: &[(i64, f64)]) -> Vec<f64> {
    let mut d = Detector::default();
    rows.iter().map(|&(t, v)| d.observe(t, v)).collect()
}

#[test]
fn scores_depend_only_on_earlier_rows() {
    let rows = series(3000);
    let full = scores(&rows);
    let k = 1800;
    assert_eq!(
        scores(&rows[..k]),
        full[..k],
        "truncating the future changed the past"
    );
    let mut changed = rows.clone();
    for r in &mut changed[k..] {
        r.1 = -r.1 * 100.0;
    }
    assert_eq!(
        scores(&changed)[..k],
        full[..k],
        "changing the future changed the past"
    );
    assert_eq!(scores(&rows), full, "not deterministic");
}

#[test]
fn scores_stay_in_range_on_hostile_input() {
    let mut d = Detector::default();
    let mut t = 0i64;
    let values = [
        0.0,
        1e300,
        -1e300,
        f64::NAN,
        f64::INFINITY,
        5.0,
        5.0,
        f64::MIN_POSITIVE,
    ];
    for i in 0..20_000usize {
        // Gaps, repeats and steps backwards.
        t += match i % 97 {
            0 => 86_400_000 * 3,
            1 => 0,
            2 => -3_600_000,
            _ => STEP_MS,
        };
        let v = if i % 13 == 0 {
            values[i % values.len()]
        } else {
            (i % 50) as f64
        };
        let s = d.observe(t, v);
        assert!((0.0..=1.0).contains(&s), "row {i}: score {s}");
    }
    let mut flat = Detector::default();
    for i in 0..5000 {
        assert_eq!(
            flat.observe(i * STEP_MS, 42.0),
            0.0,
            "a constant series is never anomalous"
        );
    }
}

#[test]
fn state_is_fixed_size_and_does_not_grow() {
    // All state is inline (no heap): the size is the memory, whatever the series length.
    let size = std::mem::size_of::<Detector>();
    assert!(size < 8 * 1024, "{size} bytes per series");
    let mut d = Detector::default();
    let rows = series(10_000);
    for round in 0..100i64 {
        for &(t, v) in &rows {
            let s = d.observe(t + round * 10_000 * STEP_MS, v);
            assert!((0.0..=1.0).contains(&s));
        }
    }
    assert_eq!(std::mem::size_of_val(&d), size);
}

#[test]
fn an_obvious_spike_or_level_shift_stands_out() {
    let clean = scores(&series(4000));
    let before = clean[1000..3000].iter().copied().fold(0.0, f64::max);

    let mut rows = series(4000);
    rows[3000].1 += 200.0;
    let s = scores(&rows);
    assert_eq!(s[..3000], clean[..3000]);
    assert!(
        s[3000] > before && s[3000] > 0.9,
        "spike {} vs earlier max {before}",
        s[3000]
    );

    let mut rows = series(4000);
    for r in &mut rows[3000..] {
        r.1 += 60.0;
    }
    let s = scores(&rows);
    let shift = s[3000..3020].iter().copied().fold(0.0, f64::max);
    assert!(
        shift > before && shift > 0.9,
        "shift {shift} vs earlier max {before}"
    );
}
