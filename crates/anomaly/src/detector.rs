//! An online anomaly detector for one series.
//!
//! Each sample is turned into a handful of *features*, each a deviation measured in units of
//! the series' own recent variability:
//!
//! - **spike**: the distance of the sample from a fast-moving level;
//! - **volatility up / down**: the log ratio of short-term to long-term residual spread (noise
//!   that grows, or a signal that suddenly goes flat);
//! - **level**: the distance of a short-term mean from the long-term mean;
//! - **season**: the distance of the sample from what the same time of day looked like on
//!   previous days (a fixed number of time-of-day buckets).
//!
//! A feature's value alone means little — a noisy series has large spikes all the time — so
//! each feature is judged against its own history ([`Surprise`]): how many standard deviations
//! is it above its long-run mean? The largest of these is mapped into [0, 1]. After a score
//! crosses the alert level, scores are damped for a while, so one episode raises one alert.
//!
//! All state is a fixed number of floats: memory per series is constant and each sample costs
//! O(1). The score of a sample depends only on that sample and the ones before it.

use crate::stats::Ewm;

/// Number of time-of-day buckets (one per hour).
const SEASON_BUCKETS: usize = 24;
const DAY_MS: i64 = 86_400_000;

/// The detector's tuning. The defaults are what the NAB results were obtained with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Samples observed before any score above 0.
    pub warmup: u32,
    /// Weight of a new sample in the fast level the spike feature is measured from.
    pub fast_alpha: f64,
    /// Weight in the short-term mean and residual spread.
    pub short_alpha: f64,
    /// Weight in the long-term mean, spread and residual spread.
    pub long_alpha: f64,
    /// Weight of a visit in a time-of-day bucket's mean.
    pub season_alpha: f64,
    /// Weight in the smoothing of the season feature.
    pub smooth_alpha: f64,
    /// Weight in each feature's own history.
    pub surprise_alpha: f64,
    /// Smallest spread a feature's history is credited with (features are in σ units).
    pub surprise_floor: f64,
    /// The surprise (in σ of the feature's history) that maps to a score of 0.5.
    pub half_score: f64,
    /// A score at or above this starts a quiet period.
    pub alert_level: f64,
    /// Length of the quiet period, in samples.
    pub quiet_samples: u32,
    /// Factor applied to scores during the quiet period.
    pub quiet_factor: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            warmup: 150,
            fast_alpha: 0.3,
            short_alpha: 0.05,
            long_alpha: 0.002,
            season_alpha: 0.1,
            smooth_alpha: 0.1,
            surprise_alpha: 0.001,
            surprise_floor: 0.1,
            half_score: 6.0,
            alert_level: 0.5,
            quiet_samples: 200,
            quiet_factor: 0.5,
        }
    }
}

/// How unusual a feature's current value is against its own history, in standard deviations.
#[derive(Debug, Clone, Copy)]
struct Surprise {
    history: Ewm,
}

impl Surprise {
    fn new(alpha: f64) -> Self {
        Self {
            history: Ewm::new(alpha),
        }
    }

    /// The surprise of `f` (0 until there is some history), then `f` joins the history.
    fn assess(&mut self, f: f64, floor: f64, min_history: u64) -> f64 {
        if !f.is_finite() {
            return 0.0;
        }
        let u = if self.history.count() >= min_history {
            (f - self.history.mean()) / self.history.std().max(floor)
        } else {
            0.0
        };
        self.history.update(f);
        u.max(0.0)
    }
}

/// The features, in the order their surprises are kept.
const FEATURES: usize = 5;

/// An online anomaly detector for one series; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectorConfig,
    n: u64,
    fast: Ewm,
    short: Ewm,
    long: Ewm,
    resid_short: Ewm,
    resid_long: Ewm,
    season_mean: [f64; SEASON_BUCKETS],
    season_count: [u32; SEASON_BUCKETS],
    season_resid: Ewm,
    season_smooth: Ewm,
    surprise: [Surprise; FEATURES],
    since_alert: u32,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(DetectorConfig::default())
    }
}

impl Detector {
    /// A detector with the given tuning.
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            cfg,
            n: 0,
            fast: Ewm::new(cfg.fast_alpha),
            short: Ewm::new(cfg.short_alpha),
            long: Ewm::new(cfg.long_alpha),
            resid_short: Ewm::new(cfg.short_alpha),
            resid_long: Ewm::new(cfg.long_alpha),
            season_mean: [0.0; SEASON_BUCKETS],
            season_count: [0; SEASON_BUCKETS],
            season_resid: Ewm::new(cfg.long_alpha),
            season_smooth: Ewm::new(cfg.smooth_alpha),
            surprise: [Surprise::new(cfg.surprise_alpha); FEATURES],
            since_alert: u32::MAX,
        }
    }

    /// The tuning in use.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Observes the sample `value` at `ts_ms` (milliseconds since the epoch) and returns its
    /// anomaly score in [0, 1]. Non-finite values score 0 and leave the state untouched.
    /// Timestamps may repeat, jump or step backwards.
    pub fn observe(&mut self, ts_ms: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let cfg = self.cfg;
        let first = self.n == 0;
        self.n += 1;
        // A tiny absolute spread keeps ratios finite on constant series.
        let eps = 1e-9 * (1.0 + self.long.mean().abs());

        // Spike: distance from the fast level, in long-run residual spreads.
        let resid = if first { 0.0 } else { value - self.fast.mean() };
        let spike = resid.abs() / (self.resid_long.std() + eps);
        // Volatility: short-run residual spread against the long-run one.
        let vol = ((self.resid_short.std() + eps) / (self.resid_long.std() + eps)).ln();
        // Level: short-run mean against the long-run mean.
        let level = (self.short.mean() - self.long.mean()).abs() / (self.long.std() + eps);
        // Season: distance from the same hour on earlier days, smoothed.
        let bucket = (ts_ms.rem_euclid(DAY_MS) / (DAY_MS / SEASON_BUCKETS as i64)) as usize;
        let season = if self.season_count[bucket] >= 3 {
            let r = value - self.season_mean[bucket];
            let z = r.abs() / (self.season_resid.std() + eps);
            self.season_resid.update(r);
            self.season_smooth.update(z);
            Some(self.season_smooth.mean())
        } else {
            None
        };

        let floor = cfg.surprise_floor;
        let min_history = u64::from(cfg.warmup / 2);
        let surprises = [
            self.surprise[0].assess(spike, floor, min_history),
            self.surprise[1].assess(vol, floor, min_history),
            self.surprise[2].assess(-vol, floor, min_history),
            self.surprise[3].assess(level, floor, min_history),
            season.map_or(0.0, |s| self.surprise[4].assess(s, floor, min_history)),
        ];

        // Learn from the sample only after it has been scored.
        self.fast.update(value);
        self.short.update(value);
        self.long.update(value);
        if !first {
            self.resid_short.update(resid);
            self.resid_long.update(resid);
        }
        let count = &mut self.season_count[bucket];
        *count = count.saturating_add(1);
        let a = cfg.season_alpha.max(1.0 / f64::from(*count));
        self.season_mean[bucket] += a * (value - self.season_mean[bucket]);

        if self.n <= u64::from(cfg.warmup) {
            return 0.0;
        }
        let u = surprises.into_iter().fold(0.0, f64::max);
        let mut score = u * u / (u * u + cfg.half_score * cfg.half_score);
        self.since_alert = self.since_alert.saturating_add(1);
        if self.since_alert <= cfg.quiet_samples {
            score *= cfg.quiet_factor;
        } else if score >= cfg.alert_level {
            self.since_alert = 0;
        }
        score.clamp(0.0, 1.0)
    }
}
