//! The seasonal naive forecaster: the same point of the last season.

use super::Forecaster;

/// Forecasts the value one period earlier; holds exactly one season (as `f32`, 4 bytes a
/// step). With a period below 2, or before a full season was seen, it is the naive forecast.
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    season: Box<[f32]>,
    seen: u64,
    /// The last value, as `f32` like the season.
    last: f32,
    /// The value the last update overwrote in the season, `yₜ₋ₚ` (NaN until one was): what
    /// [`SeasonalNaive::step_forecast`] measures the season-on-season change against.
    evicted: f32,
}

impl SeasonalNaive {
    /// A model for season length `period` (steps); `0` or `1` means no seasonality.
    pub fn new(period: usize) -> Self {
        let period = if period >= 2 { period } else { 0 };
        Self {
            season: vec![0.0; period].into_boxed_slice(),
            seen: 0,
            last: 0.0,
            evicted: f32::NAN,
        }
    }

    /// The season length (0: none).
    pub fn period(&self) -> usize {
        self.season.len()
    }

    /// The seasonal step forecast ([`crate::SeasonalStep`]) from this model's season: the
    /// seasonal naive forecast shifted by `yₜ − yₜ₋ₚ`, how far this season runs above the
    /// last. The naive forecast until a season and one value were seen.
    pub fn step_forecast(&self, h: usize) -> f64 {
        if self.evicted.is_nan() {
            return f64::from(self.last);
        }
        self.forecast(h) + (f64::from(self.last) - f64::from(self.evicted))
    }
}

impl Forecaster for SeasonalNaive {
    fn update(&mut self, value: f64) {
        let p = self.season.len() as u64;
        if p > 0 {
            let slot = &mut self.season[(self.seen % p) as usize];
            if self.seen >= p {
                self.evicted = *slot;
            }
            *slot = value as f32;
        }
        self.seen += 1;
        self.last = value as f32;
    }

    fn forecast(&self, h: usize) -> f64 {
        let p = self.season.len() as u64;
        if p == 0 || self.seen < p {
            return f64::from(self.last);
        }
        let h = h.max(1) as u64;
        // The target's index is seen + h - 1; step back whole seasons into the stored one.
        let target = self.seen + h - 1;
        let source = target - h.div_ceil(p) * p;
        f64::from(self.season[(source % p) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_the_last_season() {
        let mut m = SeasonalNaive::new(3);
        m.update(1.0);
        m.update(2.0);
        assert_eq!(m.forecast(1), 2.0, "naive until a season is full");
        m.update(3.0);
        assert_eq!(m.forecast(1), 1.0);
        assert_eq!(m.forecast(2), 2.0);
        assert_eq!(m.forecast(3), 3.0);
        assert_eq!(m.forecast(4), 1.0);
        assert_eq!(m.forecast(7), 1.0);
        m.update(10.0);
        assert_eq!(m.forecast(1), 2.0);
        assert_eq!(m.forecast(3), 10.0);
    }

    #[test]
    fn without_a_period_it_is_naive() {
        let mut m = SeasonalNaive::new(0);
        m.update(4.0);
        assert_eq!(m.forecast(5), 4.0);
    }
}
