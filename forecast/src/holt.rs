//! Holt's linear trend with Gardner's damping: level plus a trend that fades with the horizon.

use super::{damped_sum, robust::Cleaner, Forecaster, Unit};

/// Damped-trend exponential smoothing. Damping (`phi < 1`) keeps long horizons from
/// extrapolating a short burst forever, which is what makes plain Holt dangerous for scaling;
/// observations are cleaned of outliers first ([`Cleaner`]).
#[derive(Debug, Clone, Copy)]
pub struct Holt {
    alpha: Unit,
    beta: Unit,
    phi: Unit,
    level: f64,
    trend: f64,
    seen: u8,
    cleaner: Cleaner,
}

impl Holt {
    /// A model with level weight `alpha`, trend weight `beta` and damping `phi` (each clamped
    /// to 0..=1).
    pub fn new(alpha: f64, beta: f64, phi: f64) -> Self {
        Self {
            alpha: Unit::new(alpha, 0.001),
            beta: Unit::new(beta, 0.0),
            phi: Unit::new(phi, 0.0),
            level: 0.0,
            trend: 0.0,
            seen: 0,
            cleaner: Cleaner::default(),
        }
    }

    fn params(&self) -> (f64, f64, f64) {
        (self.alpha.get(), self.beta.get(), self.phi.get())
    }

    /// The smoothed level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The smoothed trend, per step.
    pub fn trend(&self) -> f64 {
        self.trend
    }
}

impl Default for Holt {
    /// α = 0.3, β = 0.05, φ = 0.9: the damped-trend defaults of the forecasting literature
    /// (Gardner & McKenzie); the trend moves slowly and fades within about ten steps.
    fn default() -> Self {
        Self::new(0.3, 0.05, 0.9)
    }
}

impl Forecaster for Holt {
    fn update(&mut self, value: f64) {
        match self.seen {
            0 => {
                self.level = value;
                self.seen = 1;
            }
            1 => {
                self.trend = value - self.level;
                self.level = value;
                self.seen = 2;
            }
            _ => {
                let value = self.cleaner.clean(self.forecast(1), value);
                let previous = self.level;
                let (alpha, beta, phi) = self.params();
                self.level = alpha * value + (1.0 - alpha) * (self.level + phi * self.trend);
                self.trend = beta * (self.level - previous) + (1.0 - beta) * phi * self.trend;
            }
        }
    }

    fn forecast(&self, h: usize) -> f64 {
        self.level + damped_sum(self.phi.get(), h) * self.trend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_line_with_damping() {
        let mut m = Holt::new(0.5, 0.5, 1.0);
        for t in 0..50 {
            m.update(2.0 * f64::from(t));
        }
        // Undamped, a perfect line is extrapolated exactly.
        assert!((m.forecast(1) - 100.0).abs() < 1e-6);
        assert!((m.forecast(5) - 108.0).abs() < 1e-6);
        let mut damped = Holt::new(0.5, 0.5, 0.8);
        for t in 0..50 {
            damped.update(2.0 * f64::from(t));
        }
        // Damped, the trend's contribution is bounded by φ/(1-φ) steps.
        assert!(damped.forecast(100) < 98.0 + 2.0 * 4.0 + 1.0);
        assert!(damped.forecast(5) > damped.forecast(1));
    }
}
