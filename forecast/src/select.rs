//! The online selector: every model forecasts h steps ahead, each is scored when the actual
//! arrives, and the forecast decisions use is whichever *candidate* — one of the models, or
//! the mix of all but drift weighted by recent accuracy — has had the smallest recent
//! relative error, naive included, so a series the models cannot learn falls back to naive. A
//! guard holds the choice itself, as it was made, against naive on the same forecasts and
//! publishes naive while the choice has been losing (and until it has shown, over at least
//! one horizon of matured forecasts, that it wins). The upper bound comes from the selected
//! forecast's own recent residuals against the highest value of each lead window, widened
//! while the bound has been missing more often than its quantile allows and floored by the
//! series' own step size until the residuals are known.

use super::{
    quantile::EwQuantile, Drift, Ewma, Forecaster, Holt, HoltWinters, Median, SeasonalNaive,
};

/// Number of base models in the bank.
pub const MODELS: usize = 8;

/// The base models' names, in bank order (the keys of `forecast-eval`'s report).
pub const MODEL_NAMES: [&str; MODELS] = [
    "naive",
    "seasonal_naive",
    "ewma",
    "holt",
    "holt_winters",
    "median",
    "seasonal_step",
    "drift",
];

/// Models in the mix: every model but drift (the last). Drift extrapolates, and a mix that
/// gives it weight on a series it does not fit changes the mix's bets there; as a candidate
/// of its own it is chosen only where it wins.
const MIXED: usize = MODELS - 1;

/// Candidates the selector chooses among: every model, then the mix ([`MIX`]).
const CANDIDATES: usize = MODELS + 1;

/// The mix's index among the candidates.
const MIX: usize = MODELS;

/// The seasonal models' indices in the bank ([`MODEL_NAMES`]).
const SEASONAL_NAIVE: usize = 1;
const HOLT_WINTERS: usize = 4;
const SEASONAL_STEP: usize = 6;

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
/// and the highest value seen since it was made (52 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    models: [f32; MODELS],
    mix: f32,
    /// The chosen candidate's forecast, published or not (the guard scores it).
    choice: f32,
    selected: f32,
    upper: f32,
    peak: f32,
}

/// The online selector over the eight base models and the mix of seven of them, for one
/// session.
///
/// Memory: the fixed part is 344 bytes; on top, `16 × period + 4` bytes for the seasonal
/// models (the seasonal naive's last three seasons and one value, which the seasonal step
/// reads too, and Holt-Winters' indices) and `52 × horizon` bytes of forecasts waiting for
/// their actuals. Each update is O(1) in the series length and allocation-free; allocation
/// happens once, in [`Selector::new`].
#[derive(Debug, Clone)]
pub struct Selector {
    // No `Naive`: its forecast, the last value, is drift's (`Drift::last`), and a session's
    // state keeps it once.
    seasonal_naive: SeasonalNaive,
    ewma: Ewma,
    holt: Holt,
    holt_winters: HoltWinters,
    median: Median,
    drift: Drift,
    /// Running mean absolute h-step error per model (bias-corrected during warm-up): the mix's
    /// weights.
    error: [f32; MIXED],
    /// Running mean relative (`|F − A| / (|F| + |A|)`) and absolute h-step error per
    /// candidate (models, then the mix): the choice.
    relative: [f32; CANDIDATES],
    absolute: [f32; CANDIDATES],
    /// Running mean relative error of the chosen candidate's forecasts as they were chosen
    /// (switches included), on the choice's memory: the guard's evidence.
    choice_relative: f32,
    /// The candidate chosen by the scores.
    chosen: u8,
    /// Whether the guard publishes naive instead of `chosen` (the choice has been losing to
    /// naive).
    fallback: bool,
    sharpness: u8,
    /// Forecasts scored, saturating: only the warm-ups (the first `memory`, the guard's first
    /// horizon) need counting.
    scored: u16,
    residual: EwQuantile,
    /// The bound's coverage debt, in lead windows: misses beyond the quantile's share (5 % at
    /// the default 0.95), paid back by covered windows, never below 0 (the bound's integral
    /// term).
    debt: f32,
    /// The running errors' memory in forecasts (`1 / error_decay`).
    memory: u16,
    pending: Box<[Pending]>,
    /// The pending slot the next value's forecast goes to (the oldest pending forecast).
    next: u16,
    /// Values ingested, saturating (only the first `horizon` and the warm-ups count them).
    seen: u32,
}

impl Selector {
    /// A selector with the default model parameters for `config`.
    pub fn new(config: SelectorConfig) -> Self {
        // A ring slot is a u16: a horizon of 65,535 steps is beyond any lead time.
        let horizon = config.horizon.clamp(1, usize::from(u16::MAX));
        Self {
            seasonal_naive: SeasonalNaive::new(config.period),
            ewma: Ewma::default(),
            holt: Holt::default(),
            holt_winters: HoltWinters::with_period(config.period),
            median: Median::default(),
            drift: Drift::default(),
            error: [0.0; MIXED],
            relative: [0.0; CANDIDATES],
            absolute: [0.0; CANDIDATES],
            choice_relative: 0.0,
            chosen: MIX as u8,
            // Naive until the choice has shown it does better: a short series is not
            // judged on a mix's warm-up.
            fallback: true,
            scored: 0,
            residual: EwQuantile::new(config.quantile, 0.1),
            debt: 0.0,
            memory: (1.0 / config.error_decay.clamp(1e-4, 1.0)).round() as u16,
            sharpness: config.sharpness.clamp(1, 16) as u8,
            pending: vec![Pending::default(); horizon].into_boxed_slice(),
            next: 0,
            seen: 0,
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
    /// The seasonal naive and Holt-Winters models are rebuilt (the only allocation: `8 ×
    /// period` bytes; the seasonal step reads the seasonal naive's season) and fed
    /// `recent`, the series' latest values oldest first (the history the period was found
    /// in), so they forecast from the season at once rather than after one more season
    /// (without any, they start from the last value).
    /// The three seasonal models' running errors restart at naive's: they earn their weight
    /// and their choice from here. The other models, the bound and the forecasts in flight
    /// are kept.
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
            let last = self.drift.last();
            self.seasonal_naive.update(last);
            self.holt_winters.update(last);
        }
        for m in [SEASONAL_NAIVE, HOLT_WINTERS, SEASONAL_STEP] {
            self.error[m] = self.error[0];
            self.relative[m] = self.relative[0];
            self.absolute[m] = self.absolute[0];
        }
        if matches!(
            usize::from(self.chosen),
            SEASONAL_NAIVE | HOLT_WINTERS | SEASONAL_STEP
        ) {
            self.chosen = MIX as u8;
        }
    }

    /// Fits Holt-Winters' weights to `history` (the series' values, oldest first) at this
    /// selector's horizon and period ([`HoltWinters::fit`]); its state, the other models and
    /// the running errors are kept. A batch step for where a history is at hand; it allocates
    /// and costs O(192 × history) model updates.
    pub fn fit(&mut self, history: &[f64]) {
        let h = self.horizon();
        self.holt_winters.fit(h, history);
    }

    /// Ingests the next value; returns the forecasts that were made for it `horizon` steps ago
    /// (none during the first `horizon` steps). A non-finite value is ignored (a missing
    /// sample), so one bad reading cannot poison the session's state.
    pub fn update(&mut self, value: f64) -> Option<Matured> {
        if !value.is_finite() {
            return None;
        }
        let h = self.pending.len();
        let slot = usize::from(self.next);
        // Every pending forecast's window (the steps after it up to its horizon) sees this
        // value; the one made `horizon` steps ago has seen its whole window.
        for p in self.pending.iter_mut() {
            p.peak = p.peak.max(value as f32);
        }
        let matured = (self.seen as usize >= h).then(|| self.pending[slot]);
        if let Some(p) = &matured {
            self.score(p, value);
        }
        self.seasonal_naive.update(value);
        self.ewma.update(value);
        self.holt.update(value);
        self.holt_winters.update(value);
        self.median.update(value);
        self.drift.update(value);
        self.seen = self.seen.saturating_add(1);

        let models = self.model_forecasts();
        let mix = self.mix(&models);
        let choice = models.get(usize::from(self.chosen)).copied().unwrap_or(mix);
        let selected = if self.fallback { models[0] } else { choice };
        self.pending[slot] = Pending {
            models: models.map(|v| v as f32),
            mix: mix as f32,
            choice: choice as f32,
            selected: selected as f32,
            upper: (selected + self.width()) as f32,
            peak: f32::NEG_INFINITY,
        };
        // The ring's next slot, without a division (this runs per session per tick).
        self.next = if slot + 1 == h { 0 } else { slot as u16 + 1 };
        matured.map(|p| Matured {
            models: p.models.map(f64::from),
            selected: f64::from(p.selected),
            upper: f64::from(p.upper),
        })
    }

    /// The selected forecast for `horizon` steps after the last value.
    pub fn forecast(&self) -> f64 {
        f64::from(self.latest().selected)
    }

    /// The upper bound decisions use: forecast + the residual quantile at this horizon, where
    /// a residual is the highest value of the *whole* lead window (t+1 … t+h) over the
    /// forecast, so the bound covers the peak of the window, not only its last step.
    pub fn upper(&self) -> f64 {
        f64::from(self.latest().upper)
    }

    /// How far the season's shape rises beyond the lead window within the next `window`
    /// steps ([`SeasonalNaive::shape_rise`] from this selector's horizon): what a bound over
    /// that longer window needs on top of [`Self::upper`] for the ramps the season repeats.
    /// `None` without a season (or before one was seen): the selector knows of no shape to
    /// look ahead with.
    pub fn season_rise(&self, window: usize) -> Option<f64> {
        self.seasonal_naive.shape_rise(self.horizon(), window)
    }

    /// How far the bound lies above the forecast: the residual quantile, plus the coverage
    /// debt in units of the residuals' own scale (while the bound has been missing more often
    /// than its quantile allows), and, until the quantile has seen `1 / (1 − quantile)` lead
    /// windows (20 at the default 0.95, the fewest in which one miss is expected), at least
    /// `(h + 2√h)` × the series' mean absolute step: a new session's first windows have no
    /// residuals yet (at horizon 12 the first 12 bounds are published before any), and in a
    /// window of h steps a trend moves by up to h mean steps and a random walk by about 2√h
    /// of them (95 %).
    fn width(&self) -> f64 {
        let q = self.residual.value() + f64::from(self.debt) * self.residual.scale();
        let evidence = f64::from(self.residual.seen()) * (1.0 - self.residual.tau());
        if evidence < 1.0 {
            let h = self.pending.len() as f64;
            q.max((h + 2.0 * h.sqrt()) * self.drift.spread())
        } else {
            q
        }
    }

    /// The forecast made after the last value (all zeros before any): the published forecast
    /// and bound live there only, so a session's state does not hold them twice.
    fn latest(&self) -> &Pending {
        let h = self.pending.len();
        let next = usize::from(self.next);
        // The slot before `next` on the ring, without a division (read several times a tick).
        &self.pending[if next == 0 { h - 1 } else { next - 1 }]
    }

    /// The name of the candidate the forecast comes from: a model's ([`MODEL_NAMES`]) or
    /// `"mix"`; `"naive"` while the guard has fallen back to it.
    pub fn chosen(&self) -> &'static str {
        if self.fallback {
            return MODEL_NAMES[0];
        }
        MODEL_NAMES
            .get(usize::from(self.chosen))
            .copied()
            .unwrap_or("mix")
    }

    /// Each model's current weight in the mix, in [`MODEL_NAMES`] order (they sum to 1; drift's
    /// is 0).
    pub fn weights(&self) -> [f64; MODELS] {
        let mut even = [1.0 / MIXED as f64; MODELS];
        even[MIXED..].fill(0.0);
        if self.scored == 0 {
            return even;
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
            return even;
        }
        let sharpness = i32::from(self.sharpness);
        let raw = error.map(|e| 1.0 / (e / worst + 1e-6).powi(sharpness));
        let total: f64 = raw.iter().sum();
        let mut weights = [0.0; MODELS];
        for (w, r) in weights.iter_mut().zip(raw) {
            *w = r / total;
        }
        weights
    }

    /// Each base model's current forecast at this horizon, in [`MODEL_NAMES`] order.
    pub fn model_forecasts(&self) -> [f64; MODELS] {
        let h = self.pending.len();
        [
            self.drift.last(),
            self.seasonal_naive.forecast(h),
            self.ewma.forecast(h),
            self.holt.forecast(h),
            self.holt_winters.forecast(h),
            self.median.forecast(h),
            self.seasonal_naive.step_forecast(h),
            self.drift.forecast(h),
        ]
    }

    fn mix(&self, models: &[f64; MODELS]) -> f64 {
        self.weights().iter().zip(models).map(|(w, f)| w * f).sum()
    }

    fn score(&mut self, p: &Pending, actual: f64) {
        self.scored = self.scored.saturating_add(1);
        // A running mean until `memory` forecasts were scored, then exponential.
        let w = 1.0 / f64::from(self.scored.min(self.memory));
        for (e, &f) in self.error.iter_mut().zip(&p.models) {
            *e = ewm(*e, w, (actual - f64::from(f)).abs());
        }
        // The choice's memory is longer than the weights': it decides between whole models,
        // and a short one chases the lucky streaks of noisy candidates.
        let lw = (1.0 / f64::from(self.scored)).max(CHOICE_DECAY);
        let relative = |f: f32| {
            let (f, denominator) = (f64::from(f), f64::from(f).abs() + actual.abs());
            if denominator > 0.0 {
                (f - actual).abs() / denominator
            } else {
                0.0
            }
        };
        for (c, &f) in p.models.iter().chain([&p.mix]).enumerate() {
            self.relative[c] = ewm(self.relative[c], lw, relative(f));
            self.absolute[c] = ewm(self.absolute[c], lw, (f64::from(f) - actual).abs());
        }
        self.choice_relative = ewm(self.choice_relative, lw, relative(p.choice));
        self.chosen = self.choose() as u8;
        // The guard: the choice, as it was actually made (its switches and their timing
        // included), is held against naive on the same forecasts. Scores of single candidates
        // can each look better than naive while the sequence of choices is not; when the
        // choices have been losing to naive it publishes naive, until they win again. (A
        // hysteresis margin was tried: it did no better on the development series.)
        let (choice, naive) = (f64::from(self.choice_relative), f64::from(self.relative[0]));
        // Not before one horizon of the choice's forecasts has matured: at horizon h the
        // guard hears of a bad choice h steps late, and a short series' first few scores
        // (a trend's start, say) are no evidence for a model that extrapolates.
        let evidence = usize::from(self.scored) >= self.pending.len();
        self.fallback = choice > naive || !evidence;
        // The bound covers the whole lead window: its residual is the window's highest value
        // over the forecast (at horizon 1, the value itself).
        self.residual
            .update(f64::from(p.peak) - f64::from(p.selected));
        // Its integral term (the I of Angelopoulos et al.'s conformal PID control, 2023): a
        // window that escaped the bound adds its excess over the floor's allowance, a covered
        // one pays the allowance back. Counted per lead window (÷ h), since at horizon h one
        // miss is followed by up to h − 1 more published before it was seen.
        let miss = if p.peak > p.upper { 1.0 } else { 0.0 };
        let step = (miss - (1.0 - self.residual.tau())) / self.pending.len() as f64;
        self.debt = (f64::from(self.debt) + step).max(0.0) as f32;
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
mod tests;
