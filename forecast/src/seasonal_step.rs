//! The seasonal step forecaster: the last value plus the step the last seasons took over the
//! same stretch, averaged.

use super::{Forecaster, SeasonalNaive};

/// Forecasts `yₜ + (yₜ₊ₕ₋ₚ − yₜ₋ₚ)`, the step averaged over the last three seasons (`k p`
/// back for k = 1, 2, 3; fewer while fewer were seen): the path of the recent seasons from
/// the same point on, started from today's value. With one season it is the forecast of the
/// seasonal random walk `(1 − B)(1 − Bᵖ) yₜ = εₜ` (Box & Jenkins' ARIMA(0,1,0)(0,1,0)ₚ),
/// the seasonal naive forecast shifted by how far this season runs above the last. Where the
/// seasonal naive forecast repeats last season's *level* and naive ignores the season, this
/// keeps today's level and takes the season's *shape*: a daily cycle on a level that moves
/// from day to day (temperatures, traffic, demand); averaging the shape over three seasons
/// cuts its noise (see [`SeasonalNaive::step_forecast`]). No parameter; with a period below
/// 2, or before a season and one value were seen, it is the naive forecast.
///
/// The selector does not run this type: it reads the same forecast off its seasonal naive
/// model's seasons ([`SeasonalNaive::step_forecast`]), so the model costs a session no memory
/// of its own.
#[derive(Debug, Clone)]
pub struct SeasonalStep(SeasonalNaive);

impl SeasonalStep {
    /// A model for season length `period` (steps); `0` or `1` means no seasonality.
    pub fn new(period: usize) -> Self {
        Self(SeasonalNaive::new(period))
    }
}

impl Forecaster for SeasonalStep {
    fn update(&mut self, value: f64) {
        self.0.update(value);
    }

    fn forecast(&self, h: usize) -> f64 {
        self.0.step_forecast(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_the_last_seasons_shape_from_todays_level() {
        let mut m = SeasonalStep::new(4);
        for v in [1.0, 5.0, 3.0, 2.0] {
            m.update(v);
        }
        assert_eq!(
            m.forecast(2),
            2.0,
            "naive until a season and one value were seen"
        );
        // The second season runs 10 above the first.
        m.update(11.0);
        // Last season went 1 → 5 → 3 → 2 → 11: from today's 11, +4, +2, +1.
        assert_eq!(m.forecast(1), 15.0);
        assert_eq!(m.forecast(2), 13.0);
        assert_eq!(m.forecast(3), 12.0);
        for v in [15.0, 13.0, 12.0, 21.0] {
            m.update(v);
        }
        assert_eq!(
            m.forecast(1),
            25.0,
            "a season shifted by a constant is forecast exactly"
        );
    }

    #[test]
    fn without_a_period_it_is_naive() {
        let mut m = SeasonalStep::new(0);
        for v in [3.0, 7.0, 4.0] {
            m.update(v);
        }
        assert_eq!(m.forecast(5), 4.0);
    }
}
