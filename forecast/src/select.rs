//! The online selector: every model forecasts h steps ahead, each is scored when the actual
//! arrives, and the forecast decisions use is the models' mix weighted by recent accuracy, with
//! an upper bound from the mix's own recent residuals.

use super::{quantile::EwQuantile, Ewma, Forecaster, Holt, HoltWinters, Naive, SeasonalNaive};

/// Number of base models in the bank.
pub const MODELS: usize = 5;

/// The base models' names, in bank order (the keys of `forecast-eval`'s report).
pub const MODEL_NAMES: [&str; MODELS] = ["naive", "seasonal_naive", "ewma", "holt", "holt_winters"];

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
    /// The selected (weighted) forecast.
    pub selected: f64,
    /// The upper bound published with it.
    pub upper: f64,
}

/// A pending forecast: the bank's, the mix and its bound, stored as `f32` (28 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    models: [f32; MODELS],
    selected: f32,
    upper: f32,
}

/// The online ensemble over the five base models for one session.
///
/// Memory: the fixed part is about 350 bytes; on top, `8 × period` bytes for the two seasonal
/// models and `28 × horizon` bytes of forecasts waiting for their actuals. Each update is O(1)
/// in the series length and allocation-free; allocation happens once, in [`Selector::new`].
#[derive(Debug, Clone)]
pub struct Selector {
    naive: Naive,
    seasonal_naive: SeasonalNaive,
    ewma: Ewma,
    holt: Holt,
    holt_winters: HoltWinters,
    /// Running mean absolute h-step error per model (bias-corrected during warm-up).
    error: [f64; MODELS],
    scored: u32,
    residual: EwQuantile,
    decay: f64,
    sharpness: i32,
    pending: Box<[Pending]>,
    seen: u64,
    selected: f64,
    upper: f64,
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
            error: [0.0; MODELS],
            scored: 0,
            residual: EwQuantile::new(config.quantile, 0.1),
            decay: config.error_decay.clamp(1e-4, 1.0),
            sharpness: config.sharpness.clamp(1, 16),
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

    /// Ingests the next value; returns the forecasts that were made for it `horizon` steps ago
    /// (none during the first `horizon` steps). A non-finite value is ignored (a missing
    /// sample), so one bad reading cannot poison the session's state.
    pub fn update(&mut self, value: f64) -> Option<Matured> {
        if !value.is_finite() {
            return None;
        }
        let h = self.pending.len() as u64;
        let slot = (self.seen % h) as usize;
        let matured = (self.seen >= h).then(|| {
            let p = self.pending[slot];
            Matured {
                models: p.models.map(f64::from),
                selected: f64::from(p.selected),
                upper: f64::from(p.upper),
            }
        });
        if let Some(m) = &matured {
            self.score(m, value);
        }
        self.naive.update(value);
        self.seasonal_naive.update(value);
        self.ewma.update(value);
        self.holt.update(value);
        self.holt_winters.update(value);
        self.seen += 1;

        let models = self.model_forecasts();
        self.selected = self.mix(&models);
        self.upper = self.selected + self.residual.value();
        self.pending[slot] = Pending {
            models: models.map(|v| v as f32),
            selected: self.selected as f32,
            upper: self.upper as f32,
        };
        matured
    }

    /// The selected forecast for `horizon` steps after the last value.
    pub fn forecast(&self) -> f64 {
        self.selected
    }

    /// The upper bound decisions use: forecast + the residual quantile at this horizon.
    pub fn upper(&self) -> f64 {
        self.upper
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
        let worst = self.error.iter().copied().fold(0.0, f64::max);
        if !(worst > 0.0 && worst.is_finite()) {
            return [1.0 / MODELS as f64; MODELS];
        }
        let raw = self
            .error
            .map(|e| 1.0 / (e / worst + 1e-6).powi(self.sharpness));
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
        ]
    }

    fn mix(&self, models: &[f64; MODELS]) -> f64 {
        self.weights().iter().zip(models).map(|(w, f)| w * f).sum()
    }

    fn score(&mut self, matured: &Matured, actual: f64) {
        self.scored = self.scored.saturating_add(1);
        // A running mean until 1/decay forecasts were scored, then exponential.
        let w = (1.0 / f64::from(self.scored)).max(self.decay);
        for (e, f) in self.error.iter_mut().zip(matured.models) {
            *e += w * ((actual - f).abs() - *e);
        }
        self.residual.update(actual - matured.selected);
    }
}

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
}
