//! Simple exponential smoothing (Brown): a level that forgets geometrically.

use super::{robust::Cleaner, Forecaster};

/// Exponentially weighted moving average; the forecast is the smoothed level at every horizon.
/// Observations are cleaned of outliers first ([`Cleaner`]).
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    alpha: f32,
    level: f64,
    seen: bool,
    cleaner: Cleaner,
}

impl Ewma {
    /// A smoother with weight `alpha` (clamped to 0.001..=1) on the newest value.
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha: alpha.clamp(0.001, 1.0) as f32,
            level: 0.0,
            seen: false,
            cleaner: Cleaner::default(),
        }
    }
}

impl Default for Ewma {
    /// α = 0.3: an effective memory of about six steps, a common default for noisy load.
    fn default() -> Self {
        Self::new(0.3)
    }
}

impl Forecaster for Ewma {
    fn update(&mut self, value: f64) {
        if self.seen {
            let value = self.cleaner.clean(self.level, value);
            self.level += f64::from(self.alpha) * (value - self.level);
        } else {
            self.level = value;
            self.seen = true;
        }
    }

    fn forecast(&self, _h: usize) -> f64 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_first_value_and_smooths() {
        let mut m = Ewma::new(0.5);
        m.update(10.0);
        assert_eq!(m.forecast(1), 10.0);
        m.update(20.0);
        assert_eq!(m.forecast(3), 15.0);
    }

    #[test]
    fn converges_to_a_constant() {
        let mut m = Ewma::default();
        for _ in 0..200 {
            m.update(7.0);
        }
        assert!((m.forecast(1) - 7.0).abs() < 1e-9);
    }
}
