//! The naive forecaster: tomorrow looks like today.

use super::Forecaster;

/// Forecasts the last value seen, at every horizon (the baseline every model must beat).
#[derive(Debug, Clone, Copy, Default)]
pub struct Naive {
    last: f64,
}

impl Forecaster for Naive {
    fn update(&mut self, value: f64) {
        self.last = value;
    }

    fn forecast(&self, _h: usize) -> f64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_the_last_value() {
        let mut m = Naive::default();
        assert_eq!(m.forecast(1), 0.0);
        m.update(3.0);
        m.update(5.0);
        assert_eq!(m.forecast(1), 5.0);
        assert_eq!(m.forecast(12), 5.0);
    }
}
