//! shardline-forecast: the control loop's *profile* and *forecast* stages, pure numerics with
//! no I/O, clocks or randomness (the `shardline` library re-exports them as
//! `shardline::control::{profile, forecast}`).
//!
//! - [`profile`]: what a load series looks like (level, spread, trend, period, burstiness).
//!
//! The *forecast* stage: online, per-session forecasters behind one trait.
//!
//! - [`Forecaster`]: the trait every model implements (`update` one value, `forecast` h steps).
//! - [`naive`], [`seasonal_naive`], [`ewma`], [`holt`], [`holt_winters`], [`median`],
//!   [`seasonal_step`], [`drift`]: one model per file.
//! - [`select`]: the online selector that picks, by recent h-step error, one model or the
//!   models' error-weighted mix, falls back to naive while that choice has been losing to
//!   naive, and bounds the result with a streaming residual quantile (with an integral term
//!   on its misses and a floor for new series); this is what decisions use.
//! - [`quantile`]: the O(1) exponentially weighted quantile estimator behind that bound.
//! - [`robust`]: outlier cleaning of observations before the smoothing models learn them.
//! - [`eval`]: the offline replay behind `shardline forecast-eval` (sMAPE, MASE, coverage).
//!
//! Why hand-written models rather than a crate: a shard decision is made for every session on
//! every tick, so each model must update in O(1) time and memory from one new value. The
//! maintained Rust forecasting crates (`augurs-ets`, `augurs-mstl`) fit a model to a whole
//! series and refit to add data; none offers a per-value online update, so the recursions here
//! are the textbook ones (Brown, Holt, Gardner's damped trend, Holt-Winters additive) written
//! out. Period *detection*, which runs once over a history, does use `augurs-seasons` (see
//! [`profile`]); the batch step beside it, [`Selector::fit`], fits Holt-Winters' weights by a
//! grid search over the same history (an MSTL(AutoETS) model from `augurs-mstl` refitted there
//! was tried instead: 40–120 ms a fit, and worse than the online bank at h = 3, see
//! docs/predict.md). Everything is deterministic: no clocks, no randomness.

pub mod drift;
pub mod eval;
pub mod ewma;
pub mod holt;
pub mod holt_winters;
pub mod median;
pub mod naive;
pub mod profile;
pub mod quantile;
pub mod robust;
pub mod seasonal_naive;
pub mod seasonal_step;
pub mod select;
#[cfg(test)]
mod synthetic;

pub use drift::Drift;
pub use ewma::Ewma;
pub use holt::Holt;
pub use holt_winters::HoltWinters;
pub use median::Median;
pub use naive::Naive;
pub use seasonal_naive::SeasonalNaive;
pub use seasonal_step::SeasonalStep;
pub use select::{Matured, Selector, SelectorConfig, MODELS, MODEL_NAMES};

/// An online forecaster: fed one value per step, asked for the value `h` steps ahead.
///
/// Implementations keep O(1) state (at most three seasons of values for seasonal models) and do
/// O(1) work per call, so a daemon can run one per session.
pub trait Forecaster {
    /// Ingests the next value of the series.
    fn update(&mut self, value: f64);
    /// The forecast of the value `h ≥ 1` steps after the last one ingested (`h = 0` is read as
    /// 1). Before any value was ingested it is 0.
    fn forecast(&self, h: usize) -> f64;
}

/// A model parameter in `0..=1` in 16 bits (steps of 1/65,535): the smoothing models keep
/// their fixed parameters per session, and a session's state should stay small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit(u16);

impl Unit {
    /// `x` clamped to `min..=1`.
    pub(crate) fn new(x: f64, min: f64) -> Self {
        Self((x.clamp(min, 1.0) * f64::from(u16::MAX)).round() as u16)
    }

    /// The value.
    pub(crate) fn get(self) -> f64 {
        f64::from(self.0) / f64::from(u16::MAX)
    }
}

/// `φ + φ² + … + φʰ`: how much of a damped trend accumulates over `h` steps.
pub(crate) fn damped_sum(phi: f64, h: usize) -> f64 {
    let h = h.max(1) as i32;
    if (phi - 1.0).abs() < 1e-12 {
        f64::from(h)
    } else {
        phi * (1.0 - phi.powi(h)) / (1.0 - phi)
    }
}
