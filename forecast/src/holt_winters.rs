//! Additive Holt-Winters: level, damped trend and one additive seasonal index per step of the
//! period.

use super::{damped_sum, robust::Cleaner, Forecaster, Unit};

/// The weights [`HoltWinters::fit`] tries: the ranges exponential smoothing's weights are
/// usually fitted in (Hyndman & Athanasopoulos, *FPP3* §8), four or three points each.
struct Grid {
    alpha: [f64; 4],
    beta: [f64; 4],
    gamma: [f64; 4],
    phi: [f64; 3],
}

const GRID: Grid = Grid {
    alpha: [0.1, 0.3, 0.6, 1.0],
    beta: [0.0, 0.01, 0.1, 0.3],
    gamma: [0.05, 0.1, 0.3, 0.5],
    phi: [0.8, 0.9, 0.98],
};

/// Additive seasonal exponential smoothing with a damped trend.
///
/// Holds one season of indices (as `f32`). The first season is stored raw in those slots and
/// turned into indices (value − season mean) when it is complete, so initialisation needs no
/// buffer beyond the season; until then the forecast is the last value. With a period below 2
/// it is the damped Holt model. Observations are cleaned of outliers first ([`Cleaner`]).
#[derive(Debug, Clone)]
pub struct HoltWinters {
    alpha: Unit,
    beta: Unit,
    gamma: Unit,
    phi: Unit,
    level: f64,
    trend: f64,
    seen: u64,
    season: Box<[f32]>,
    cleaner: Cleaner,
}

impl HoltWinters {
    /// A model for season length `period` with level, trend and season weights `alpha`,
    /// `beta`, `gamma` and trend damping `phi` (each clamped to 0..=1).
    pub fn new(period: usize, alpha: f64, beta: f64, gamma: f64, phi: f64) -> Self {
        let period = if period >= 2 { period } else { 0 };
        Self {
            alpha: Unit::new(alpha, 0.001),
            beta: Unit::new(beta, 0.0),
            gamma: Unit::new(gamma, 0.0),
            phi: Unit::new(phi, 0.0),
            level: 0.0,
            trend: 0.0,
            seen: 0,
            season: vec![0.0; period].into_boxed_slice(),
            cleaner: Cleaner::default(),
        }
    }

    /// The defaults for season length `period`: α = 0.3, β = 0.01, γ = 0.1, φ = 0.9 (a level
    /// that follows, a trend that barely moves and fades, a season learnt over ~10 cycles).
    pub fn with_period(period: usize) -> Self {
        Self::new(period, 0.3, 0.01, 0.1, 0.9)
    }

    /// Sets the level, trend and season weights and the damping to the grid point whose
    /// `horizon`-step forecasts erred least on `history` (mean absolute error, each forecast
    /// made from the values before it), keeping the model's state: a batch fit, run where the
    /// history is at hand (the loop's profile stage), while each update stays O(1).
    ///
    /// The grid spans the usual ranges of exponential smoothing's weights, α ∈ {0.1, 0.3,
    /// 0.6, 1}, β ∈ {0, 0.01, 0.1, 0.3}, γ ∈ {0.05, 0.1, 0.3, 0.5}, φ ∈ {0.8, 0.9, 0.98} (the
    /// defaults among them): 192 runs over the history, O(192 × n) updates. Fewer than two seasons (or,
    /// without a period, 20 values) plus the horizon keep the defaults: too little to score a
    /// season's weight on.
    pub fn fit(&mut self, horizon: usize, history: &[f64]) {
        let period = self.season.len();
        let horizon = horizon.max(1);
        let warm_up = (2 * period).max(20);
        if history.len() < warm_up + horizon + 1 {
            return;
        }
        let mut ahead = vec![0.0; horizon];
        let mut best = (f64::INFINITY, [self.alpha, self.beta, self.gamma, self.phi]);
        for &alpha in &GRID.alpha {
            for &beta in &GRID.beta {
                for &gamma in &GRID.gamma {
                    for &phi in &GRID.phi {
                        let mut m = Self::new(period, alpha, beta, gamma, phi);
                        let mut error = 0.0;
                        for (t, &v) in history.iter().enumerate() {
                            // The forecast made `horizon` values ago sits in the ring.
                            let slot = t % horizon;
                            if t >= warm_up + horizon {
                                error += (ahead[slot] - v).abs();
                            }
                            m.update(v);
                            ahead[slot] = m.forecast(horizon);
                        }
                        if error < best.0 {
                            best = (error, [m.alpha, m.beta, m.gamma, m.phi]);
                        }
                    }
                }
            }
        }
        [self.alpha, self.beta, self.gamma, self.phi] = best.1;
    }

    fn period(&self) -> u64 {
        self.season.len() as u64
    }

    fn smooth(&mut self, value: f64, index: f64) -> f64 {
        let previous = self.level;
        let (alpha, beta, phi) = (self.alpha.get(), self.beta.get(), self.phi.get());
        self.level = alpha * (value - index) + (1.0 - alpha) * (self.level + phi * self.trend);
        self.trend = beta * (self.level - previous) + (1.0 - beta) * phi * self.trend;
        self.level
    }
}

impl Forecaster for HoltWinters {
    fn update(&mut self, value: f64) {
        let p = self.period();
        let t = self.seen;
        let predicted = self.forecast(1);
        self.seen += 1;
        if p == 0 {
            if t == 0 {
                self.level = value;
            } else {
                let value = self.cleaner.clean(predicted, value);
                self.smooth(value, 0.0);
            }
            return;
        }
        let slot = (t % p) as usize;
        if t < p {
            // First season: keep the raw values; at its end, level = mean, indices = deviations.
            self.season[slot] = value as f32;
            if t + 1 == p {
                let mean = self.season.iter().map(|&v| f64::from(v)).sum::<f64>() / p as f64;
                for s in self.season.iter_mut() {
                    *s = (f64::from(*s) - mean) as f32;
                }
                self.level = mean;
                self.trend = 0.0;
            }
            return;
        }
        // Cleaned against the forecast made before this value counted as seen.
        let value = self.cleaner.clean(predicted, value);
        let index = f64::from(self.season[slot]);
        let level = self.smooth(value, index);
        let gamma = self.gamma.get();
        self.season[slot] = (gamma * (value - level) + (1.0 - gamma) * index) as f32;
    }

    fn forecast(&self, h: usize) -> f64 {
        let p = self.period();
        let h = h.max(1);
        if self.seen == 0 {
            return 0.0;
        }
        if p == 0 {
            return if self.seen == 1 {
                self.level
            } else {
                self.level + damped_sum(self.phi.get(), h) * self.trend
            };
        }
        if self.seen < p {
            // The first season's slots still hold its raw values: the last one is the last
            // value (no separate copy is kept).
            return f64::from(self.season[(self.seen - 1) as usize]);
        }
        let slot = ((self.seen + h as u64 - 1) % p) as usize;
        self.level + damped_sum(self.phi.get(), h) * self.trend + f64::from(self.season[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(t: usize) -> f64 {
        [10.0, 20.0, 30.0, 20.0][t % 4] + 100.0
    }

    #[test]
    fn learns_a_pure_season() {
        let mut m = HoltWinters::with_period(4);
        for t in 0..200 {
            m.update(wave(t));
        }
        for h in 1..=8 {
            assert!((m.forecast(h) - wave(200 + h - 1)).abs() < 0.5, "h = {h}");
        }
    }

    #[test]
    fn is_naive_during_the_first_season() {
        let mut m = HoltWinters::with_period(10);
        m.update(1.0);
        m.update(4.0);
        assert_eq!(m.forecast(3), 4.0);
    }

    /// A season on a level that jumps now and then: the defaults' level weight (0.3) lags each
    /// jump for several steps; the fit, on the first half, picks weights that follow it, and
    /// they forecast the second half better at horizon 3.
    #[test]
    fn a_fit_on_the_history_forecasts_better_than_the_defaults() {
        let series: Vec<f64> = (0..2000)
            .map(|t| wave(t) + 40.0 * ((t / 37) % 3) as f64 + ((t * 7919) % 11) as f64 * 0.1)
            .collect();
        let (history, rest) = series.split_at(1000);
        let error = |m: &mut HoltWinters| {
            for &v in history {
                m.update(v);
            }
            let mut ahead = [0.0; 3];
            let mut total = 0.0;
            for (t, &v) in rest.iter().enumerate() {
                if t >= 3 {
                    total += (ahead[t % 3] - v).abs();
                }
                m.update(v);
                ahead[t % 3] = m.forecast(3);
            }
            total / (rest.len() - 3) as f64
        };
        let default = error(&mut HoltWinters::with_period(4));
        let mut fitted = HoltWinters::with_period(4);
        fitted.fit(3, history);
        let fitted = error(&mut fitted);
        assert!(
            fitted < 0.8 * default,
            "fitted {fitted:.3}, default {default:.3}"
        );
    }

    #[test]
    fn a_fit_on_too_short_a_history_keeps_the_defaults() {
        let mut m = HoltWinters::with_period(10);
        m.fit(3, &[1.0, 5.0, 2.0, 8.0]);
        let d = HoltWinters::with_period(10);
        assert_eq!(
            [m.alpha, m.beta, m.gamma, m.phi],
            [d.alpha, d.beta, d.gamma, d.phi]
        );
    }

    #[test]
    fn without_a_period_it_tracks_the_level() {
        let mut m = HoltWinters::with_period(0);
        for _ in 0..100 {
            m.update(5.0);
        }
        assert!((m.forecast(4) - 5.0).abs() < 1e-9);
    }
}
