//! The *profile* stage: what a session's load series looks like — level, spread, trend,
//! seasonality and burstiness — from its history. Pure: a slice in, numbers out.
//!
//! Period detection (`auto`) combines two classic views (as AUTOPERIOD, Vlachos et al. 2005,
//! does): `augurs-seasons`' Welch periodogram proposes candidate periods, and the
//! autocorrelation of the detrended series confirms one (a local maximum at least
//! [`MIN_AUTOCORRELATION`] high and as far above the trough before it), which also corrects
//! the periodogram's coarse period grid (the peak may lie anywhere between the neighbouring
//! bins). If no candidate is confirmed the autocorrelation is scanned directly. This runs on
//! the values and on their steps (a slow swell hides a short season from the values); the
//! two proposals, and then multiples of the winner (a week of days), are judged by how well
//! the season predicts the next step ([`detect_period`]).

use augurs_seasons::PeriodogramDetector;
use rustfft::{num_complex::Complex, FftPlanner};
use thiserror::Error;

/// Shortest period detected (steps).
pub const MIN_PERIOD: usize = 4;

pub use shardline_config::control::MAX_PERIOD;

/// Autocorrelation a period must reach at its lag to be accepted, and by how much it must
/// exceed the lowest autocorrelation at a shorter lag.
pub const MIN_AUTOCORRELATION: f64 = 0.3;

/// Why a series cannot be profiled.
#[derive(Debug, Error, PartialEq)]
pub enum ProfileError {
    /// No values.
    #[error("the series is empty: a profile needs at least one value")]
    Empty,
    /// A value is NaN or infinite.
    #[error("value {index} of the series is not finite ({value}); clean the input first")]
    NonFinite {
        /// Position in the series.
        index: usize,
        /// The value.
        value: f64,
    },
}

/// How to obtain the period of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSpec {
    /// Detect it ([`detect_period`]).
    Auto,
    /// Known: this many steps.
    Fixed(usize),
    /// Treat the series as non-seasonal.
    None,
}

/// A session's load profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (linear interpolation between order statistics).
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub peak: f64,
    /// Least-squares trend, in units per step.
    pub slope: f64,
    /// Season length in steps, if any.
    pub period: Option<usize>,
    /// Coefficient of variation (standard deviation / mean; 0 when the mean is 0).
    pub cv: f64,
    /// Peak / mean (0 when the mean is 0).
    pub peak_to_mean: f64,
}

impl Profile {
    /// Profiles `series`, finding its period as `period` says.
    pub fn of(series: &[f64], period: PeriodSpec) -> Result<Self, ProfileError> {
        if series.is_empty() {
            return Err(ProfileError::Empty);
        }
        if let Some((index, &value)) = series.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ProfileError::NonFinite { index, value });
        }
        let n = series.len() as f64;
        let mean = series.iter().sum::<f64>() / n;
        let variance = series.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let mut sorted = series.to_vec();
        sorted.sort_by(f64::total_cmp);
        let peak = sorted[sorted.len() - 1];
        let ratio = |x: f64| if mean == 0.0 { 0.0 } else { x / mean };
        Ok(Self {
            count: series.len(),
            mean,
            p50: percentile(&sorted, 0.50),
            p95: percentile(&sorted, 0.95),
            p99: percentile(&sorted, 0.99),
            peak,
            slope: slope(series),
            period: match period {
                PeriodSpec::Auto => detect_period(series),
                PeriodSpec::Fixed(p) => (p >= 2).then_some(p),
                PeriodSpec::None => None,
            },
            cv: ratio(variance.sqrt()),
            peak_to_mean: ratio(peak),
        })
    }
}

/// The `q` quantile (0..=1) of ascending `sorted`, interpolating linearly between ranks.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Least-squares slope of the series against its step index (0 for fewer than 2 values).
pub fn slope(series: &[f64]) -> f64 {
    let n = series.len() as f64;
    if series.len() < 2 {
        return 0.0;
    }
    let mean_t = (n - 1.0) / 2.0;
    let mean_y = series.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, y) in series.iter().enumerate() {
        let dt = t as f64 - mean_t;
        num += dt * (y - mean_y);
        den += dt * dt;
    }
    num / den
}

/// The autocorrelation of `series` at `lag` (its own mean removed; 0 when it is constant).
pub fn autocorrelation(series: &[f64], lag: usize) -> f64 {
    autocorrelations(series, lag)
        .get(lag)
        .copied()
        .unwrap_or(0.0)
}

/// The autocorrelations of `series` at lags `0..=max_lag` (0 beyond its length, and
/// everywhere when it is constant).
///
/// Computed through the FFT (Wiener–Khinchin: the inverse transform of the power spectrum of
/// the centred series, zero-padded so the lags do not wrap around): O(n log n) rather than the
/// direct sum's O(n × max_lag), which at a 3,600-sample history and lags up to a third of it
/// was most of a detection's cost.
pub fn autocorrelations(series: &[f64], max_lag: usize) -> Vec<f64> {
    let mut out = vec![0.0; max_lag + 1];
    if series.is_empty() {
        return out;
    }
    let mean = series.iter().sum::<f64>() / series.len() as f64;
    let centred: Vec<f64> = series.iter().map(|v| v - mean).collect();
    let denominator: f64 = centred.iter().map(|v| v * v).sum();
    if denominator == 0.0 {
        return out;
    }
    let lags = (max_lag + 1).min(series.len());
    let size = (series.len() + lags).next_power_of_two();
    let mut buffer: Vec<Complex<f64>> = centred
        .iter()
        .map(|&v| Complex::new(v, 0.0))
        .chain(std::iter::repeat(Complex::new(0.0, 0.0)))
        .take(size)
        .collect();
    let mut planner = FftPlanner::new();
    planner.plan_fft_forward(size).process(&mut buffer);
    for c in buffer.iter_mut() {
        *c = Complex::new(c.norm_sqr(), 0.0);
    }
    planner.plan_fft_inverse(size).process(&mut buffer);
    // The inverse transform is unnormalised: lag k's sum is `size` × its value.
    let scale = size as f64 * denominator;
    for (r, c) in out.iter_mut().zip(&buffer[..lags]) {
        *r = c.re / scale;
    }
    out
}

/// The dominant season length of `series` in steps, or `None` if it is not seasonal.
///
/// Periods from [`MIN_PERIOD`] up to a third of the series (three full cycles) or
/// [`MAX_PERIOD`], whichever is shorter, are considered.
///
/// Two views propose a period: the series itself ([`strongest_period`] of its detrended
/// values) and its steps `yₜ − yₜ₋₁`. A slowly wandering level (a year's swell under a daily
/// series' weekly pattern) fills the values' autocorrelation at every short lag, so the short
/// season there has no trough to stand above and the slow cycle wins; the steps drop the
/// level, and there the short season shows. Seasons are judged by the mean `|Δyₜ − Δyₜ₋ₚ|`
/// (the one-step error of "the step the season took last time", what the seasonal models use
/// a period for): the steps' period replaces the values' one only when it is significantly
/// better.
pub fn detect_period(series: &[f64]) -> Option<usize> {
    if series.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let steps: Vec<f64> = series.windows(2).map(|w| w[1] - w[0]).collect();
    let period = match (strongest_period(series), strongest_period(&steps)) {
        // Differencing doubles the noise, so the steps' period must earn its place against the
        // values' one: by predicting the steps significantly better. (Alone it is taken: the
        // seasonal step model doubles the noise too, so "better than no season" is too strict
        // a test there, where Holt-Winters' smoothed season still gains; three weeks on the
        // daily bitcoin series fail it and bring Holt-Winters' h = 3 MASE to 0.80 from 1.05.)
        (Some(a), Some(b)) if a != b => {
            if step_gain(&steps, a, b, a.max(b) + 1, 2.0).is_some() {
                b
            } else {
                a
            }
        }
        (a, b) => a.or(b)?,
    };
    Some(longer_season(&steps, period, series.len() / 3))
}

/// How much better season `candidate` predicts the steps from `start` on than season `base`,
/// in the mean of the paired per-step differences of `|Δyₜ − Δyₜ₋ₚ|`, when that is more than
/// `z` standard errors above 0 (2 for one comparison, about 95 %; 3 where [`longer_season`]
/// tries up to 23 multiples against one base, Bonferroni's 5 % for them); `None` when it is
/// not, or there is no step to compare.
fn step_gain(steps: &[f64], base: usize, candidate: usize, start: usize, z: f64) -> Option<f64> {
    let error = |t: usize, p: usize| (steps[t] - steps[t - p]).abs();
    let (mut sum, mut squares, mut n) = (0.0, 0.0, 0.0);
    for t in start..steps.len() {
        let d = error(t, base) - error(t, candidate);
        sum += d;
        squares += d * d;
        n += 1.0;
    }
    if n < 2.0 {
        return None;
    }
    let mean = sum / n;
    let spread = (squares / n - mean * mean).max(0.0).sqrt();
    (mean > z * spread / f64::sqrt(n)).then_some(mean)
}

/// Cycles nest: a day of hours repeats, and so does a week of days, with a different Monday
/// and Sunday. The autocorrelation peaks highest at the day; the week shows as a seasonal
/// step error that the day's season cannot reach. So a multiple `k × period` (`k` up to
/// [`MAX_NESTING`], within `max_period` and [`MAX_PERIOD`]) replaces `period` when its
/// seasonal step error is at least [`LONGER_SEASON_GAIN`] lower, and significantly lower
/// ([`step_gain`]: on a short history a multiple can be 10 % better by chance); the smallest
/// such multiple is taken, since a longer season costs memory and a season's worth of
/// learning.
fn longer_season(steps: &[f64], period: usize, max_period: usize) -> usize {
    let max_period = max_period.min(MAX_PERIOD);
    // All candidates compared over the same steps.
    let start = max_period + 1;
    if start >= steps.len() {
        return period;
    }
    let base = seasonal_step_error(steps, period, start);
    (2..=MAX_NESTING)
        .map(|k| k * period)
        .take_while(|&p| p <= max_period)
        .find(|&p| {
            step_gain(steps, period, p, start, 3.0).is_some_and(|g| g >= LONGER_SEASON_GAIN * base)
        })
        .unwrap_or(period)
}

/// The largest multiple of a detected period tried as a longer season: 24, as many hours as a
/// day has (a week is 7 days, a day 24 hours or 288 five-minute steps of 24 × 12).
pub const MAX_NESTING: usize = 24;

/// How much lower (as a share) a multiple's seasonal step error must be for the longer season
/// to be taken. On the held-out development series, 5 % to 20 % choose the same periods on 14
/// of 15 series.
pub const LONGER_SEASON_GAIN: f64 = 0.1;

/// The mean `|Δyₜ − Δyₜ₋ₚ|` over `t ≥ start` of the steps `Δy` (infinite when there is none).
fn seasonal_step_error(steps: &[f64], period: usize, start: usize) -> f64 {
    let errors = steps
        .iter()
        .skip(start)
        .zip(steps.iter().skip(start - period))
        .map(|(now, before)| (now - before).abs());
    let (sum, n) = errors.fold((0.0, 0usize), |(s, n), e| (s + e, n + 1));
    if n == 0 {
        f64::INFINITY
    } else {
        sum / n as f64
    }
}

/// The period of the highest confirmed autocorrelation peak of detrended `series` (see the
/// module header), reduced to its shortest whole fraction that peaks almost as high.
pub fn strongest_period(series: &[f64]) -> Option<usize> {
    let max_period = (series.len() / 3).min(MAX_PERIOD);
    if max_period <= MIN_PERIOD || series.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let b = slope(series);
    let detrended: Vec<f64> = series
        .iter()
        .enumerate()
        .map(|(t, v)| v - b * t as f64)
        .collect();
    let acf = autocorrelations(&detrended, max_period + 1);
    // Lowest autocorrelation at lags 1..=lag: a period must rise above what came before it.
    let trough: Vec<f64> = acf
        .iter()
        .skip(1)
        .scan(f64::INFINITY, |low, &r| {
            *low = low.min(r);
            Some(*low)
        })
        .collect();
    // A confirmed period: a local maximum of the autocorrelation, strong enough, and standing
    // that much above the trough before it (so the slow decline of a smooth series, with a
    // wiggle of noise on it, is no period).
    let confirmed = |lag: usize| {
        let r = acf[lag];
        (r >= MIN_AUTOCORRELATION
            && r >= acf[lag - 1]
            && r >= acf[lag + 1]
            && r - trough[lag - 1] >= MIN_AUTOCORRELATION)
            .then_some((lag, r))
    };
    let mut peaks: Vec<(usize, f64)> = Vec::new();
    let detector = PeriodogramDetector::builder()
        .min_period(MIN_PERIOD as u32)
        .max_period(max_period as u32)
        .threshold(0.5)
        .build();
    for peak in detector.periodogram(&detrended).peaks(0.5) {
        // The periodogram's grid is coarse at long periods (a bin at 256 steps may stand for
        // 288): look for the autocorrelation's peak anywhere between the neighbouring bins.
        let p = peak.period as usize;
        let neighbours = [peak.prev_period as usize, peak.next_period as usize];
        let lo = neighbours
            .iter()
            .copied()
            .filter(|&n| n > 0 && n < p)
            .max()
            .unwrap_or(p - p / 4)
            .max(MIN_PERIOD);
        let hi = neighbours
            .iter()
            .copied()
            .filter(|&n| n > p)
            .min()
            .unwrap_or(p + p / 4)
            .min(max_period);
        peaks.extend((lo..=hi).filter_map(confirmed));
    }
    if peaks.is_empty() {
        peaks.extend((MIN_PERIOD..=max_period).filter_map(confirmed));
    }
    let (lag, r) = peaks.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    // A multiple of the period peaks almost as high as the period itself (noise can put it a
    // hair above): prefer the shortest whole fraction of the best lag that has a confirmed
    // peak within 10 % of its height (the highest such lag near that fraction).
    for k in (2..=lag / MIN_PERIOD).rev() {
        let target = lag / k;
        let reach = (target / 10).max(1);
        let lo = target.saturating_sub(reach).max(MIN_PERIOD);
        let near = (lo..=target + reach)
            .filter_map(confirmed)
            .filter(|&(_, rk)| rk >= 0.9 * r)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((fraction, _)) = near {
            return Some(fraction);
        }
    }
    Some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: deterministic noise without the lattice structure of simpler hashes.
    fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn seasonal(n: usize, period: usize) -> Vec<f64> {
        (0..n)
            .map(|t| {
                let phase = std::f64::consts::TAU * t as f64 / period as f64;
                // A trend and a little deterministic, aperiodic noise.
                let noise = (splitmix64(t as u64) >> 11) as f64 / (1u64 << 53) as f64;
                100.0 + 20.0 * phase.sin() + 0.01 * t as f64 + 4.0 * noise
            })
            .collect()
    }

    #[test]
    fn summary_statistics() {
        let series: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Profile::of(&series, PeriodSpec::None).unwrap();
        assert_eq!(p.count, 100);
        assert!((p.mean - 50.5).abs() < 1e-12);
        assert!((p.p50 - 50.5).abs() < 1e-12);
        assert!((p.p95 - 95.05).abs() < 1e-9);
        assert!((p.p99 - 99.01).abs() < 1e-9);
        assert_eq!(p.peak, 100.0);
        assert!((p.slope - 1.0).abs() < 1e-12);
        assert!((p.peak_to_mean - 100.0 / 50.5).abs() < 1e-12);
        assert!(p.cv > 0.5 && p.cv < 0.6, "{}", p.cv);
        assert_eq!(p.period, None);
    }

    #[test]
    fn bursty_series_scores_higher() {
        let flat = vec![10.0; 100];
        let mut bursty = vec![1.0; 100];
        bursty[50] = 500.0;
        let flat = Profile::of(&flat, PeriodSpec::None).unwrap();
        let bursty = Profile::of(&bursty, PeriodSpec::None).unwrap();
        assert_eq!(flat.cv, 0.0);
        assert!(bursty.cv > 3.0 && bursty.peak_to_mean > 50.0);
    }

    #[test]
    fn detects_periods() {
        for period in [7, 12, 24, 48] {
            let series = seasonal(period * 12, period);
            assert_eq!(detect_period(&series), Some(period), "period {period}");
            let p = Profile::of(&series, PeriodSpec::Auto).unwrap();
            assert_eq!(p.period, Some(period));
        }
        // The autocorrelation is flat at a long period's peak: noise may move it a step.
        for period in [96, 288] {
            let found = detect_period(&seasonal(period * 8, period)).expect("a period");
            assert!(
                found.abs_diff(period) <= 1,
                "period {period}: found {found}"
            );
        }
    }

    /// A weekly pattern on a slow swell (daily page views, daily transactions): the swell fills
    /// the values' autocorrelation at every short lag, so the values alone miss the week; the
    /// steps find it.
    #[test]
    fn finds_a_short_season_under_a_slow_swell() {
        let week = [0.0, 3.0, 4.0, 4.0, 3.5, 1.0, -6.0];
        let series: Vec<f64> = (0..1200)
            .map(|t| {
                let swell = 40.0 * (std::f64::consts::TAU * t as f64 / 500.0).sin();
                let noise = (splitmix64(t as u64) >> 11) as f64 / (1u64 << 53) as f64;
                100.0 + swell + week[t % 7] + 2.0 * noise
            })
            .collect();
        assert_ne!(strongest_period(&series), Some(7), "the values alone");
        assert_eq!(detect_period(&series), Some(7));
    }

    /// An hourly series whose weekend days are quieter: the day peaks highest in the
    /// autocorrelation, the week predicts the steps better and is taken.
    #[test]
    fn takes_the_week_of_days_when_weekends_differ() {
        let hourly = |weekend_amplitude: f64| -> Vec<f64> {
            (0..168 * 8)
                .map(|t| {
                    let weekend = (t / 24) % 7 >= 5;
                    let amplitude = if weekend { weekend_amplitude } else { 30.0 };
                    let phase = std::f64::consts::TAU * t as f64 / 24.0;
                    let noise = (splitmix64(t as u64) >> 11) as f64 / (1u64 << 53) as f64;
                    100.0 + amplitude * phase.sin() + 4.0 * noise
                })
                .collect()
        };
        assert_eq!(strongest_period(&hourly(10.0)), Some(24));
        assert_eq!(detect_period(&hourly(10.0)), Some(168));
        assert_eq!(detect_period(&hourly(30.0)), Some(24), "every day alike");
    }

    #[test]
    fn no_period_in_a_line_or_a_constant() {
        let line: Vec<f64> = (0..500).map(f64::from).collect();
        assert_eq!(detect_period(&line), None);
        assert_eq!(detect_period(&[3.0; 500]), None);
        assert_eq!(detect_period(&[1.0, 2.0]), None);
    }

    /// The FFT's autocorrelations are the direct sums'.
    #[test]
    fn autocorrelations_match_the_direct_sums() {
        let series = seasonal(500, 24);
        let fast = autocorrelations(&series, 200);
        let mean = series.iter().sum::<f64>() / 500.0;
        let centred: Vec<f64> = series.iter().map(|v| v - mean).collect();
        let denominator: f64 = centred.iter().map(|v| v * v).sum();
        for (lag, r) in fast.iter().enumerate() {
            let direct: f64 = centred
                .iter()
                .zip(&centred[lag..])
                .map(|(a, b)| a * b)
                .sum();
            assert!((r - direct / denominator).abs() < 1e-9, "lag {lag}");
        }
        assert_eq!(
            autocorrelations(&[1.0, 2.0], 4)[3],
            0.0,
            "beyond the series"
        );
        assert_eq!(autocorrelations(&[3.0; 10], 4), vec![0.0; 5], "constant");
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(Profile::of(&[], PeriodSpec::Auto), Err(ProfileError::Empty));
        assert!(matches!(
            Profile::of(&[1.0, f64::NAN], PeriodSpec::Auto),
            Err(ProfileError::NonFinite { index: 1, .. })
        ));
    }
}
