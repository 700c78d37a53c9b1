//! Naive with drift: the last value plus the recent mean step, for series that trend.

use super::Forecaster;

/// Weight of the newest step in the mean step and the mean absolute step: about the last ten
/// steps, the memory of the other models' defaults (not fitted to any series).
const RATE: f64 = 0.1;

/// Forecasts the last value plus `h` times the series' recent mean step `yₜ − yₜ₋₁` (an
/// exponentially weighted mean; a running mean over the first `1 / RATE` steps, so a short
/// series' first steps count alike).
///
/// Naive follows a trend one horizon late at every step; this model extrapolates it, which is
/// what trending monthly and yearly series need beyond one step (the textbook random walk
/// with drift, with a recent rather than a whole-history drift). The mean step telescopes, so
/// an isolated spike moves it by `RATE` × the spike and takes that back on the next step. It
/// also keeps the mean absolute step, the series' own step size (the selector's bound starts
/// from it). It is a candidate of the selector's choice but not part of its mix (see
/// [`crate::select`]). 16 bytes of state, values as `f32` like the selector's stored forecasts.
#[derive(Debug, Clone, Copy)]
pub struct Drift {
    /// The last value; NaN before any.
    last: f32,
    slope: f32,
    spread: f32,
    /// Steps seen, saturating (only the warm-up counts them).
    steps: u32,
}

impl Default for Drift {
    fn default() -> Self {
        Self {
            last: f32::NAN,
            slope: 0.0,
            spread: 0.0,
            steps: 0,
        }
    }
}

impl Drift {
    /// The last value (as `f32`), 0 before any: the naive forecast, which the selector reads
    /// here rather than keeping a [`crate::Naive`] of its own.
    pub fn last(&self) -> f64 {
        if self.last.is_nan() {
            0.0
        } else {
            f64::from(self.last)
        }
    }

    /// The mean step, per step.
    pub fn slope(&self) -> f64 {
        f64::from(self.slope)
    }

    /// The mean absolute step `|yₜ − yₜ₋₁|`, once there are two steps to average (0 before):
    /// a series' first value may be a prior rather than its own (the loop warms a new session
    /// with its class's level), so its first step may be no step of the series.
    pub fn spread(&self) -> f64 {
        if self.steps >= 2 {
            f64::from(self.spread)
        } else {
            0.0
        }
    }
}

impl Forecaster for Drift {
    fn update(&mut self, value: f64) {
        if !self.last.is_nan() {
            let step = value - f64::from(self.last);
            self.steps = self.steps.saturating_add(1);
            let w = (1.0 / f64::from(self.steps)).max(RATE);
            let (slope, spread) = (f64::from(self.slope), f64::from(self.spread));
            self.slope = (slope + w * (step - slope)) as f32;
            self.spread = (spread + w * (step.abs() - spread)) as f32;
        }
        self.last = value as f32;
    }

    fn forecast(&self, h: usize) -> f64 {
        if self.last.is_nan() {
            return 0.0;
        }
        f64::from(self.last) + h.max(1) as f64 * f64::from(self.slope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolates_a_line_and_shrugs_off_a_spike() {
        let mut m = Drift::default();
        assert_eq!(m.forecast(3), 0.0);
        for t in 0..100 {
            m.update(10.0 + 2.0 * f64::from(t));
        }
        assert!((m.forecast(1) - 210.0).abs() < 1e-3, "{}", m.forecast(1));
        assert!((m.forecast(12) - 232.0).abs() < 1e-2, "{}", m.forecast(12));
        assert!((m.spread() - 2.0).abs() < 1e-3, "{}", m.spread());
        // A flat series with one spike: the mean step is back near 0 one step later.
        let mut m = Drift::default();
        for v in [5.0; 30].into_iter().chain([500.0, 5.0, 5.0]) {
            m.update(v);
        }
        assert!(m.slope().abs() < 0.1 * 495.0 * 0.1 + 1e-3, "{}", m.slope());
        assert!((m.forecast(3) - 5.0).abs() < 15.0, "{}", m.forecast(3));
    }
}
