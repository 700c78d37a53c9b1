//! The online selector: every model forecasts h steps ahead, each is scored when the actual
//! arrives, and the forecast decisions use is whichever *candidate* — one of the models, or
//! their mix weighted by recent accuracy — has had the smallest recent relative error, naive
//! included, so a series the models cannot learn falls back to naive. The upper bound comes
//! from the selected forecast's own recent residuals against the highest value of each lead
//! window.

use super::{
    quantile::EwQuantile, Ewma, Forecaster, Holt, HoltWinters, Median, Naive, SeasonalNaive,
};

/// Number of base models in the bank.
pub const MODELS: usize = 6;

/// The base models' names, in bank order (the keys of `forecast-eval`'s report).
pub const MODEL_NAMES: [&str; MODELS] = [
    "naive",
    "seasonal_naive",
    "ewma",
    "holt",
    "holt_winters",
    "median",
];

/// Candidates the selector chooses among: every model, then the mix ([`MIX`]).
const CANDIDATES: usize = MODELS + 1;

/// The mix's index among the candidates.
const MIX: usize = MODELS;

/// The seasonal models' indices in the bank ([`MODEL_NAMES`]).
const SEASONAL_NAIVE: usize = 1;
const HOLT_WINTERS: usize = 4;

/// How a [`Selector`] forecasts and bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectorConfig {
    /// Steps ahead the decision looks (≥ 1).
    pub horizon: usize,
    /// Season length in steps for the seasonal models; 0 for none.
    pub period: usize,
    /// The quantile of residuals added to the forecast for the upper bound (default 0.95).
    pub quantile: f64,
    /// Weight of the newest error in each model's running error (default 0.05, i.e. a memory
    /// of about 20 matured forecasts).
    pub error_decay: f64,
    /// The exponent of the inverse-error weights (default 4; 2 is Bates & Granger's
    /// inverse-variance rule, higher moves the mix towards picking the single best model).
    pub sharpness: i32,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            horizon: 1,
            period: 0,
            quantile: 0.95,
            error_decay: 0.05,
            sharpness: 4,
        }
    }
}

/// Forecasts made `horizon` steps ago for the value that just arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matured {
    /// Each base model's forecast, in [`MODEL_NAMES`] order.
    pub models: [f64; MODELS],
    /// The selected forecast.
    pub selected: f64,
    /// The upper bound published with it.
    pub upper: f64,
}

/// A pending forecast: the bank's, the mix, the selection and its bound, stored as `f32`,
/// and the highest value seen since it was made (40 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    models: [f32; MODELS],
    mix: f32,
    selected: f32,
    upper: f32,
    peak: f32,
}

/// The online selector over the six base models and their mix, for one session.
///
/// Memory: the fixed part is about 350 bytes; on top, `8 × period` bytes for the two seasonal
/// models and `40 × horizon` bytes of forecasts waiting for their actuals. Each update is O(1)
/// in the series length and allocation-free; allocation happens once, in [`Selector::new`].
#[derive(Debug, Clone)]
pub struct Selector {
    naive: Naive,
    seasonal_naive: SeasonalNaive,
    ewma: Ewma,
    holt: Holt,
    holt_winters: HoltWinters,
    median: Median,
    /// Running mean absolute h-step error per model (bias-corrected during warm-up): the mix's
    /// weights.
    error: [f32; MODELS],
    /// Running mean relative (`|F − A| / (|F| + |A|)`) and absolute h-step error per
    /// candidate (models, then the mix): the choice.
    relative: [f32; CANDIDATES],
    absolute: [f32; CANDIDATES],
    /// The candidate the published forecast comes from.
    chosen: u8,
    sharpness: u8,
    scored: u32,
    residual: EwQuantile,
    decay: f32,
    pending: Box<[Pending]>,
    seen: u64,
    // Stored as f32 like the pending forecasts: a session's state stays small.
    selected: f32,
    upper: f32,
}

impl Selector {
    /// A selector with the default model parameters for `config`.
    pub fn new(config: SelectorConfig) -> Self {
        let horizon = config.horizon.max(1);
        Self {
            naive: Naive::default(),
            seasonal_naive: SeasonalNaive::new(config.period),
            ewma: Ewma::default(),
            holt: Holt::default(),
            holt_winters: HoltWinters::with_period(config.period),
            median: Median::default(),
            error: [0.0; MODELS],
            relative: [0.0; CANDIDATES],
            absolute: [0.0; CANDIDATES],
            chosen: MIX as u8,
            scored: 0,
            residual: EwQuantile::new(config.quantile, 0.1),
            decay: config.error_decay.clamp(1e-4, 1.0) as f32,
            sharpness: config.sharpness.clamp(1, 16) as u8,
            pending: vec![Pending::default(); horizon].into_boxed_slice(),
            seen: 0,
            selected: 0.0,
            upper: 0.0,
        }
    }

    /// The horizon this selector forecasts at.
    pub fn horizon(&self) -> usize {
        self.pending.len()
    }

    /// The season length the seasonal models use (0: none).
    pub fn period(&self) -> usize {
        self.seasonal_naive.period()
    }

    /// Gives the seasonal models season length `period` (0 or 1: none), as the loop's period
    /// detection found it; a no-op when it is the current one.
    ///
    /// The two seasonal models are rebuilt (the only allocation: `8 × period` bytes) and fed
    /// `recent`, the series' latest values oldest first (the history the period was found
    /// in), so they forecast from the season at once rather than after one more season
    /// (without any, they start from the last value).
    /// Their running errors restart at naive's: they earn their weight and their choice from
    /// here. The other models, the bound and the forecasts in flight are kept.
    pub fn set_period(&mut self, period: usize, recent: impl IntoIterator<Item = f64>) {
        let period = if period >= 2 { period } else { 0 };
        if period == self.period() {
            return;
        }
        self.seasonal_naive = SeasonalNaive::new(period);
        self.holt_winters = HoltWinters::with_period(period);
        let mut fed = 0;
        for v in recent.into_iter().filter(|v| v.is_finite()) {
            self.seasonal_naive.update(v);
            self.holt_winters.update(v);
            fed += 1;
        }
        if fed == 0 && self.seen > 0 {
            // No history given: start from the last value, as naive does, not from 0.
            let last = self.naive.forecast(1);
            self.seasonal_naive.update(last);
            self.holt_winters.update(last);
        }
        for m in [SEASONAL_NAIVE, HOLT_WINTERS] {
            self.error[m] = self.error[0];
            self.relative[m] = self.relative[0];
            self.absolute[m] = self.absolute[0];
        }
        if matches!(usize::from(self.chosen), SEASONAL_NAIVE | HOLT_WINTERS) {
            self.chosen = MIX as u8;
        }
    }

    /// Ingests the next value; returns the forecasts that were made for it `horizon` steps ago
    /// (none during the first `horizon` steps). A non-finite value is ignored (a missing
    /// sample), so one bad reading cannot poison the session's state.
    pub fn update(&mut self, value: f64) -> Option<Matured> {
        if !value.is_finite() {
            return None;
        }
        let h = self.pending.len() as u64;
        let slot = (self.seen % h) as usize;
        // Every pending forecast's window (the steps after it up to its horizon) sees this
        // value; the one made `horizon` steps ago has seen its whole window.
        for p in self.pending.iter_mut() {
            p.peak = p.peak.max(value as f32);
        }
        let matured = (self.seen >= h).then(|| self.pending[slot]);
        if let Some(p) = &matured {
            self.score(p, value);
        }
        self.naive.update(value);
        self.seasonal_naive.update(value);
        self.ewma.update(value);
        self.holt.update(value);
        self.holt_winters.update(value);
        self.median.update(value);
        self.seen += 1;

        let models = self.model_forecasts();
        let mix = self.mix(&models);
        let selected = models.get(usize::from(self.chosen)).copied().unwrap_or(mix);
        self.selected = selected as f32;
        self.upper = (selected + self.residual.value()) as f32;
        self.pending[slot] = Pending {
            models: models.map(|v| v as f32),
            mix: mix as f32,
            selected: self.selected,
            upper: self.upper,
            peak: f32::NEG_INFINITY,
        };
        matured.map(|p| Matured {
            models: p.models.map(f64::from),
            selected: f64::from(p.selected),
            upper: f64::from(p.upper),
        })
    }

    /// The selected forecast for `horizon` steps after the last value.
    pub fn forecast(&self) -> f64 {
        f64::from(self.selected)
    }

    /// The upper bound decisions use: forecast + the residual quantile at this horizon, where
    /// a residual is the highest value of the *whole* lead window (t+1 … t+h) over the
    /// forecast, so the bound covers the peak of the window, not only its last step.
    pub fn upper(&self) -> f64 {
        f64::from(self.upper)
    }

    /// The name of the candidate the forecast comes from: a model's ([`MODEL_NAMES`]) or
    /// `"mix"`.
    pub fn chosen(&self) -> &'static str {
        MODEL_NAMES
            .get(usize::from(self.chosen))
            .copied()
            .unwrap_or("mix")
    }

    /// Each model's current weight in the mix, in [`MODEL_NAMES`] order (they sum to 1).
    pub fn weights(&self) -> [f64; MODELS] {
        if self.scored == 0 {
            return [1.0 / MODELS as f64; MODELS];
        }
        // Inverse error to the power `sharpness`. Bates & Granger's inverse-variance rule is
        // power 2 (the mean absolute error standing in for the deviation); the models' h-step
        // errors are strongly correlated (they share the recent past), and the better
        // combination for correlated errors leans further to the best model, hence the
        // default 4 — still a mix, so no model takes over on a lucky streak. Errors are taken
        // relative to the worst, and the floor keeps a perfect model from dividing by zero.
        let error = self.error.map(f64::from);
        let worst = error.iter().copied().fold(0.0, f64::max);
        if !(worst > 0.0 && worst.is_finite()) {
            return [1.0 / MODELS as f64; MODELS];
        }
        let sharpness = i32::from(self.sharpness);
        let raw = error.map(|e| 1.0 / (e / worst + 1e-6).powi(sharpness));
        let total: f64 = raw.iter().sum();
        raw.map(|w| w / total)
    }

    /// Each base model's current forecast at this horizon, in [`MODEL_NAMES`] order.
    pub fn model_forecasts(&self) -> [f64; MODELS] {
        let h = self.pending.len();
        [
            self.naive.forecast(h),
            self.seasonal_naive.forecast(h),
            self.ewma.forecast(h),
            self.holt.forecast(h),
            self.holt_winters.forecast(h),
            self.median.forecast(h),
        ]
    }

    fn mix(&self, models: &[f64; MODELS]) -> f64 {
        self.weights().iter().zip(models).map(|(w, f)| w * f).sum()
    }

    fn score(&mut self, p: &Pending, actual: f64) {
        self.scored = self.scored.saturating_add(1);
        // A running mean until 1/decay forecasts were scored, then exponential.
        let w = (1.0 / f64::from(self.scored)).max(f64::from(self.decay));
        for (e, &f) in self.error.iter_mut().zip(&p.models) {
            *e = ewm(*e, w, (actual - f64::from(f)).abs());
        }
        // The choice's memory is longer than the weights': it decides between whole models,
        // and a short one chases the lucky streaks of noisy candidates.
        let lw = (1.0 / f64::from(self.scored)).max(CHOICE_DECAY);
        for (c, &f) in p.models.iter().chain([&p.mix]).enumerate() {
            let f = f64::from(f);
            let denominator = f.abs() + actual.abs();
            let relative = if denominator > 0.0 {
                (f - actual).abs() / denominator
            } else {
                0.0
            };
            self.relative[c] = ewm(self.relative[c], lw, relative);
            self.absolute[c] = ewm(self.absolute[c], lw, (f - actual).abs());
        }
        self.chosen = self.choose() as u8;
        // The bound covers the whole lead window: its residual is the window's highest value
        // over the forecast (at horizon 1, the value itself).
        self.residual
            .update(f64::from(p.peak) - f64::from(p.selected));
    }

    /// The candidate with the smallest recent error relative to naive's, counting the
    /// relative (sMAPE-like) and the absolute (MASE-like) error equally: `rel / rel_naive +
    /// abs / abs_naive`. Naive scores 2 by definition, so a candidate is chosen over it only
    /// when it is better on balance. The mix keeps the choice (and has it before any score)
    /// unless a single model beats it by [`SWITCH_MARGIN`]: a mix that is good on both errors
    /// is not given up for a model that is slightly better on one of them for a while.
    fn choose(&self) -> usize {
        let ratio = |x: f64, naive: f64| {
            if naive > 0.0 {
                x / naive
            } else if x > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        };
        let (rel, abs) = (self.relative.map(f64::from), self.absolute.map(f64::from));
        let score = |c: usize| ratio(rel[c], rel[0]) + ratio(abs[c], abs[0]);
        let mix = score(MIX);
        let mut best = MIX;
        let mut best_score = mix - SWITCH_MARGIN;
        for c in 0..MODELS {
            let s = score(c);
            if s < best_score {
                (best, best_score) = (c, s);
            }
        }
        best
    }
}

/// One step of an exponentially weighted mean stored as `f32`: `mean + w × (x − mean)`.
fn ewm(mean: f32, w: f64, x: f64) -> f32 {
    let mean = f64::from(mean);
    (mean + w * (x - mean)) as f32
}

/// How much lower than the mix's a model's score must be to be chosen instead: 5 % of
/// naive's score (2).
const SWITCH_MARGIN: f64 = 0.1;

/// Weight of the newest error in each candidate's running errors for the choice (a memory of
/// about 100 matured forecasts).
const CHOICE_DECAY: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matures_forecasts_after_the_horizon() {
        let mut s = Selector::new(SelectorConfig {
            horizon: 3,
            ..SelectorConfig::default()
        });
        for t in 0..3 {
            assert!(s.update(f64::from(t)).is_none());
        }
        let m = s.update(3.0).expect("matured");
        // Made after seeing the value 0: naive said 0.
        assert_eq!(m.models[0], 0.0);
    }

    #[test]
    fn prefers_the_model_that_fits() {
        let mut s = Selector::new(SelectorConfig {
            horizon: 2,
            period: 6,
            ..SelectorConfig::default()
        });
        let wave = |t: usize| [1.0, 9.0, 3.0, 7.0, 2.0, 8.0][t % 6] * 10.0;
        for t in 0..600 {
            s.update(wave(t));
        }
        let w = s.weights();
        assert!(w[1] + w[4] > 0.9, "seasonal models should lead: {w:?}");
        assert!((s.forecast() - wave(601)).abs() < 3.0, "{}", s.forecast());
    }

    #[test]
    fn ignores_missing_samples() {
        let mut s = Selector::new(SelectorConfig::default());
        for _ in 0..50 {
            s.update(10.0);
        }
        assert!(s.update(f64::NAN).is_none());
        assert!(s.update(f64::INFINITY).is_none());
        assert!((s.forecast() - 10.0).abs() < 1e-9 && s.upper().is_finite());
    }

    #[test]
    fn upper_bound_covers_noise() {
        let mut s = Selector::new(SelectorConfig::default());
        let mut covered = 0;
        let mut x = 0.0f64;
        for t in 0..5000 {
            x = (x + 0.618_033_988_749_895).fract();
            let v = 100.0 + 10.0 * x;
            if let Some(m) = s.update(v) {
                if t > 500 && v <= m.upper {
                    covered += 1;
                }
            }
        }
        let share = f64::from(covered) / 4499.0;
        assert!(share > 0.9, "{share}");
    }

    /// The loop's detection switches the seasons on mid-stream: warmed with the recent
    /// history, the seasonal models lead at once; switched off, they are naive and Holt again.
    /// The selector stays as small as it was (344 bytes on x86_64).
    #[test]
    fn a_period_set_mid_stream_turns_the_seasonal_models_on_and_off() {
        assert!(
            std::mem::size_of::<Selector>() <= 344,
            "{}",
            std::mem::size_of::<Selector>()
        );
        let wave = |t: usize| [1.0, 9.0, 3.0, 7.0, 2.0, 8.0][t % 6] * 10.0;
        let mut s = Selector::new(SelectorConfig {
            horizon: 2,
            ..SelectorConfig::default()
        });
        let series: Vec<f64> = (0..300).map(wave).collect();
        for &v in &series {
            s.update(v);
        }
        assert_eq!(s.period(), 0);
        let before = s.weights();
        s.set_period(6, series.iter().copied());
        assert_eq!(s.period(), 6);
        // The seasonal forecasts are right at once (the history warmed them).
        let models = s.model_forecasts();
        assert_eq!(models[SEASONAL_NAIVE], wave(301));
        assert!((models[HOLT_WINTERS] - wave(301)).abs() < 3.0, "{models:?}");
        for t in 300..600 {
            s.update(wave(t));
        }
        let w = s.weights();
        assert!(
            w[SEASONAL_NAIVE] + w[HOLT_WINTERS] > 0.9,
            "before {before:?}, after {w:?}"
        );
        assert!((s.forecast() - wave(601)).abs() < 3.0, "{}", s.forecast());
        // The same period again changes nothing; none turns them off.
        let kept = s.weights();
        s.set_period(6, std::iter::empty());
        assert_eq!(s.weights(), kept);
        s.set_period(0, std::iter::empty());
        assert_eq!(s.period(), 0);
        assert_eq!(s.model_forecasts()[SEASONAL_NAIVE], wave(599));
    }

    /// Issue 20 §3: the bound covers the whole lead window (the maximum over t+1 … t+h), not
    /// only t+h, on bursty load where the window's peak is often before its last step.
    #[test]
    fn upper_bound_covers_the_whole_lead_window() {
        let series = crate::synthetic::bursts_on_a_base(4000, 5);
        let h = 12;
        let mut s = Selector::new(SelectorConfig {
            horizon: h,
            ..SelectorConfig::default()
        });
        let (mut covered, mut windows) = (0, 0);
        for (t, &v) in series.iter().enumerate() {
            s.update(v);
            if t >= 200 && t + h < series.len() {
                let peak = series[t + 1..=t + h]
                    .iter()
                    .copied()
                    .fold(f64::MIN, f64::max);
                covered += usize::from(peak <= s.upper());
                windows += 1;
            }
        }
        let share = covered as f64 / windows as f64;
        assert!(share >= 0.9, "{share}");
    }
}
