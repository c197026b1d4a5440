//! Building blocks that make simulated values look like measurements instead of white noise:
//! mean-reverting random walks, a daily cycle, bursts that start at random and last a while,
//! first-order lag (thermal inertia, load averages) and monotone counters.
//!
//! Every block advances by an explicit time step `dt` (seconds) and draws from a caller-owned
//! seeded [`fastrand::Rng`], so a device's values depend only on its seed and the timestamps it
//! is stepped at, never on wall-clock reads hidden in here.

use fastrand::Rng;

/// Mixes two numbers into a well-spread seed (splitmix64 finalizer), so streams seeded from
/// `(seed, device index, purpose)` do not overlap.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw (Box–Muller).
pub(crate) fn gaussian(rng: &mut Rng) -> f64 {
    // 1 - f64() is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A uniform draw in `[lo, hi)`.
pub(crate) fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.f64()
}

/// True with the probability that an event of `rate_per_s` happens within `dt` seconds.
pub(crate) fn happens(rng: &mut Rng, rate_per_s: f64, dt: f64) -> bool {
    rng.f64() < 1.0 - (-rate_per_s * dt).exp()
}

/// How many events of a Poisson process with mean `lambda` happened.
pub(crate) fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        // Normal approximation; rounding keeps counts whole.
        let x = lambda + lambda.sqrt() * gaussian(rng);
        return x.round().max(0.0) as u64;
    }
    // Knuth: multiply uniforms until the product drops below e^-lambda.
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.f64();
    while p > limit && k < 1_000 {
        k += 1;
        p *= rng.f64();
    }
    k
}

/// The daily cycle at `ts_ms` for a place `utc_offset_h` hours from UTC: +1 at `peak_hour`
/// local time, -1 twelve hours later.
pub(crate) fn diurnal(ts_ms: i64, utc_offset_h: f64, peak_hour: f64) -> f64 {
    let hours = ts_ms as f64 / 3_600_000.0 + utc_offset_h;
    let hour_of_day = hours.rem_euclid(24.0);
    (std::f64::consts::TAU * (hour_of_day - peak_hour) / 24.0).cos()
}

/// An Ornstein–Uhlenbeck process: a random walk pulled back towards a (moving) mean, kept
/// inside `[min, max]`.
#[derive(Debug, Clone)]
pub(crate) struct MeanReverting {
    pub value: f64,
    /// Pull towards the mean, per second: after `1/theta` seconds most of a deviation is gone.
    theta: f64,
    /// Noise strength: the stationary standard deviation is `sigma / sqrt(2 theta)`.
    sigma: f64,
    min: f64,
    max: f64,
}

impl MeanReverting {
    pub fn new(start: f64, theta: f64, sigma: f64, min: f64, max: f64) -> Self {
        Self {
            value: start.clamp(min, max),
            theta,
            sigma,
            min,
            max,
        }
    }

    /// Advances by `dt` seconds towards `mean`; uses the exact discretization, so the result
    /// does not depend on how finely time is stepped.
    pub fn step(&mut self, rng: &mut Rng, dt: f64, mean: f64) -> f64 {
        let decay = (-self.theta * dt).exp();
        let spread = self.sigma * ((1.0 - decay * decay) / (2.0 * self.theta)).sqrt();
        let next = mean + (self.value - mean) * decay + spread * gaussian(rng);
        self.value = next.clamp(self.min, self.max);
        self.value
    }
}

/// Episodes that start at random (`rate_per_s`), last a random time, and have a random level:
/// a backup job, a firmware download, a congested uplink.
#[derive(Debug, Clone)]
pub(crate) struct Bursts {
    rate_per_s: f64,
    min_s: f64,
    max_s: f64,
    remaining_s: f64,
    level: f64,
}

impl Bursts {
    pub fn new(rate_per_s: f64, min_s: f64, max_s: f64) -> Self {
        Self {
            rate_per_s,
            min_s,
            max_s,
            remaining_s: 0.0,
            level: 0.0,
        }
    }

    /// Advances by `dt` seconds; returns the current level in `[0, 1]` (0 outside a burst).
    pub fn step(&mut self, rng: &mut Rng, dt: f64) -> f64 {
        if self.remaining_s > 0.0 {
            self.remaining_s -= dt;
        } else if happens(rng, self.rate_per_s, dt) {
            self.remaining_s = uniform(rng, self.min_s, self.max_s);
            self.level = uniform(rng, 0.4, 1.0);
        }
        if self.remaining_s > 0.0 {
            self.level
        } else {
            0.0
        }
    }
}

/// First-order lag: follows its target with time constant `tau_s` (thermal mass, load average).
#[derive(Debug, Clone)]
pub(crate) struct Lag {
    pub value: f64,
    tau_s: f64,
}

impl Lag {
    pub fn new(start: f64, tau_s: f64) -> Self {
        Self {
            value: start,
            tau_s,
        }
    }

    pub fn step(&mut self, dt: f64, target: f64) -> f64 {
        let keep = (-dt / self.tau_s).exp();
        self.value = target + (self.value - target) * keep;
        self.value
    }
}

/// A monotone counter of whole units (bytes, packets, errors) fed with fractional amounts.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    value: f64,
    carry: f64,
}

impl Counter {
    pub fn new(start: f64) -> Self {
        Self {
            value: start.max(0.0).floor(),
            carry: 0.0,
        }
    }

    /// Adds `amount` (negative or non-finite amounts are ignored); returns the new total.
    pub fn add(&mut self, amount: f64) -> f64 {
        if amount.is_finite() && amount > 0.0 {
            self.carry += amount;
            let whole = self.carry.floor();
            self.value += whole;
            self.carry -= whole;
        }
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_reverting_stays_in_bounds_and_near_its_mean() {
        let mut rng = Rng::with_seed(7);
        let mut walk = MeanReverting::new(0.9, 0.01, 0.02, 0.0, 1.0);
        let mut sum = 0.0;
        let steps = 20_000;
        for _ in 0..steps {
            let v = walk.step(&mut rng, 10.0, 0.3);
            assert!((0.0..=1.0).contains(&v));
            sum += v;
        }
        let mean = sum / steps as f64;
        assert!((mean - 0.3).abs() < 0.05, "long-run mean {mean}");
    }

    #[test]
    fn counters_only_grow_by_whole_units() {
        let mut c = Counter::new(10.7);
        assert_eq!(c.add(0.0), 10.0);
        let mut last = c.add(0.0);
        for amount in [0.4, 0.4, 0.4, -5.0, f64::NAN, 2.5] {
            let v = c.add(amount);
            assert!(v >= last);
            assert_eq!(v, v.floor());
            last = v;
        }
        assert_eq!(c.add(0.0), 13.0);
    }

    #[test]
    fn diurnal_peaks_at_the_local_peak_hour() {
        // 14:00 UTC is 15:00 at UTC+1.
        let ts = 14 * 3_600_000;
        assert!((diurnal(ts, 1.0, 15.0) - 1.0).abs() < 1e-9);
        assert!((diurnal(ts, 1.0, 3.0) + 1.0).abs() < 1e-9);
    }

    #[test]
    fn poisson_has_the_right_mean() {
        let mut rng = Rng::with_seed(3);
        for lambda in [0.0, 0.05, 2.0, 100.0] {
            let n = 5_000;
            let total: u64 = (0..n).map(|_| poisson(&mut rng, lambda)).sum();
            let mean = total as f64 / n as f64;
            assert!(
                (mean - lambda).abs() <= 0.1 * lambda + 0.02,
                "{lambda}: {mean}"
            );
        }
    }

    #[test]
    fn lag_approaches_its_target() {
        let mut lag = Lag::new(20.0, 60.0);
        let v = lag.step(60.0, 80.0);
        assert!((v - (80.0 - 60.0 * (-1.0f64).exp())).abs() < 1e-9);
        for _ in 0..100 {
            lag.step(60.0, 80.0);
        }
        assert!((lag.value - 80.0).abs() < 1e-6);
    }
}
