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
//! each feature is judged against its own history ([`Surprise`]): its excess over its running
//! mean in standard deviations, divided by the largest such excess seen so far (a record that
//! fades slowly). A surprise of 1 means "as unusual as the most unusual thing this series has
//! done"; the largest surprise is mapped into [0, 1] so that 1 scores 0.5. Spike and level
//! count only where the daily profile does not explain them either. After a score crosses the
//! alert level, scores are damped for a while — unless a much stronger surprise comes — so one
//! episode raises one alert, and the long-run level moves to the short-run mean, so a shift
//! that persists becomes the new normal instead of alerting again.
//!
//! All state is a fixed number of floats: memory per series is constant and each sample costs
//! O(1). The score of a sample depends only on that sample and the ones before it.

use crate::stats::Ewm;

/// Number of time-of-day buckets (one per five minutes).
const SEASON_BUCKETS: usize = 288;
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
    /// Largest step of a bucket's mean, in spreads of the seasonal residual.
    pub season_clip: f64,
    /// Visits a time-of-day bucket needs before it is trusted.
    pub season_min_visits: u32,
    /// Weight in the smoothing of the season feature.
    pub smooth_alpha: f64,
    /// Values of a feature seen before it may score.
    pub feature_warmup: u32,
    /// Weight in each feature's own history.
    pub surprise_alpha: f64,
    /// Smallest spread a feature's history is credited with (features are in σ units).
    pub surprise_floor: f64,
    /// Per-sample fading of each feature's record excess; 0 judges in σ instead.
    pub record_decay: f64,
    /// Smallest record credited, in σ.
    pub record_floor: f64,
    /// The surprise (in σ of the feature's history) that maps to a score of 0.5.
    pub half_score: f64,
    /// A score at or above this starts a quiet period.
    pub alert_level: f64,
    /// Length of the quiet period, in samples.
    pub quiet_samples: u32,
    /// A surprise this many times that of the alert breaks through the quiet period.
    pub quiet_break: f64,
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
            season_min_visits: 3,
            season_clip: 3.0,
            smooth_alpha: 0.1,
            feature_warmup: 75,
            surprise_alpha: 0.001,
            surprise_floor: 0.1,
            record_decay: 0.0001,
            record_floor: 3.0,
            half_score: 1.0,
            alert_level: 0.5,
            quiet_samples: 200,
            quiet_break: 2.0,
            quiet_factor: 0.5,
        }
    }
}

/// How unusual a feature's current value is against its own history: how far above the
/// history's mean it is, in standard deviations (`std` mode), or as a fraction of the largest
/// excess seen so far, which fades slowly (`record` mode).
#[derive(Debug, Clone, Copy)]
struct Surprise {
    history: Ewm,
    record: f64,
}

impl Surprise {
    fn new(alpha: f64) -> Self {
        Self {
            history: Ewm::new(alpha),
            record: 0.0,
        }
    }

    /// The surprise of `f` (0 until there is some history), then `f` joins the history.
    fn assess(&mut self, f: f64, cfg: &DetectorConfig, min_history: u64) -> f64 {
        if !f.is_finite() {
            return 0.0;
        }
        let excess = (f - self.history.mean()) / self.history.std().max(cfg.surprise_floor);
        let warm = self.history.count() >= min_history;
        let u = if !warm {
            0.0
        } else if cfg.record_decay > 0.0 {
            excess / self.record.max(cfg.record_floor)
        } else {
            excess
        };
        self.history.update(f);
        self.record = (self.record * (1.0 - cfg.record_decay)).max(if warm { excess } else { 0.0 });
        u.max(0.0)
    }
}

/// Samples a spread needs before features measured in it are defined.
const MIN_SCALE_HISTORY: u64 = 10;

/// The features, in the order their surprises are kept.
const FEATURES: usize = 5;

/// An online anomaly detector for one series; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectorConfig,
    n: u64,
    last_ts: Option<i64>,
    /// Typical time between samples (ms).
    interval: Ewm,
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
    alert_surprise: f64,
    last: [f64; FEATURES],
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
            last_ts: None,
            interval: Ewm::new(cfg.short_alpha),
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
            alert_surprise: 0.0,
            last: [0.0; FEATURES],
        }
    }

    /// The surprise of each feature for the last sample, in the order spike, volatility up,
    /// volatility down, level, season: which one drove the score.
    pub fn last_surprises(&self) -> [f64; FEATURES] {
        self.last
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

        // A feature is only defined once the spread it is measured in has some history.
        let ready = |e: &Ewm| e.count() >= MIN_SCALE_HISTORY;
        // Spike: distance from the fast level, in long-run residual spreads.
        let resid = if first { 0.0 } else { value - self.fast.mean() };
        let spike = ready(&self.resid_long).then(|| resid.abs() / (self.resid_long.std() + eps));
        // Volatility: short-run residual spread against the long-run one.
        let vol = ready(&self.resid_long)
            .then(|| ((self.resid_short.std() + eps) / (self.resid_long.std() + eps)).ln());
        // Level: short-run mean against the long-run mean.
        let level = ready(&self.long)
            .then(|| (self.short.mean() - self.long.mean()).abs() / (self.long.std() + eps));
        // Season: distance from the same time of day on earlier days.
        let bucket = (ts_ms.rem_euclid(DAY_MS) / (DAY_MS / SEASON_BUCKETS as i64)) as usize;
        let season_resid = value - self.season_mean[bucket];
        let season_z = (self.season_count[bucket] >= cfg.season_min_visits
            && ready(&self.season_resid))
        .then(|| season_resid.abs() / (self.season_resid.std() + eps));
        if self.season_count[bucket] >= cfg.season_min_visits {
            self.season_resid.update(season_resid);
        }
        let season = season_z.map(|z| {
            self.season_smooth.update(z);
            self.season_smooth.mean()
        });
        // Where the daily profile explains a change (a regular morning rise, say), it is no
        // spike and no level shift: those count only if unexpected by both.
        let spike = match (spike, season_z) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, _) => a,
        };
        let level = match (level, season) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, _) => a,
        };

        let min_history = u64::from(cfg.feature_warmup);
        // The season feature judges itself against at least a day of its own values.
        let per_day = (DAY_MS as f64 / self.interval.mean().max(1.0)).min(1e6) as u64;
        let season_history = min_history.max(per_day);
        let mut surprises = [0.0; FEATURES];
        for (k, f) in [spike, vol, vol.map(|v| -v), level, season]
            .into_iter()
            .enumerate()
        {
            if let Some(f) = f {
                let mh = if k == 4 { season_history } else { min_history };
                surprises[k] = self.surprise[k].assess(f, &cfg, mh);
            }
        }

        // Learn from the sample only after it has been scored.
        if let Some(prev) = self.last_ts
            && ts_ms > prev
        {
            self.interval.update((ts_ms - prev) as f64);
        }
        self.last_ts = Some(ts_ms);
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
        // Clipped, so that one odd day does not become the expectation for the next.
        let limit = cfg.season_clip * self.season_resid.std();
        let step = if ready(&self.season_resid) && limit > 0.0 {
            season_resid.clamp(-limit, limit)
        } else {
            season_resid
        };
        self.season_mean[bucket] += a * step;

        self.last = surprises;
        if self.n <= u64::from(cfg.warmup) {
            return 0.0;
        }
        let u = surprises.into_iter().fold(0.0, f64::max);
        let mut score = u * u / (u * u + cfg.half_score * cfg.half_score);
        self.since_alert = self.since_alert.saturating_add(1);
        let quiet = self.since_alert <= cfg.quiet_samples;
        if quiet && u < cfg.quiet_break * self.alert_surprise {
            score *= cfg.quiet_factor;
        } else if score >= cfg.alert_level {
            // A new episode, or one far stronger than the alert that started the quiet period.
            self.since_alert = 0;
            self.alert_surprise = u;
            // Re-baseline: a level that persists is the new normal, not a string of alerts.
            self.long.rebase(self.short.mean());
        }
        score.clamp(0.0, 1.0)
    }
}
