//! The moving median: the middle of the last few values, a level that one spike cannot move.

use super::Forecaster;

/// Values the median is taken over (odd, so the median is one of them).
pub const WINDOW: usize = 5;

/// Forecasts the median of the last [`WINDOW`] values at every horizon (of all values seen
/// while fewer). On a flat base with isolated bursts it stays on the base, where the naive
/// forecast repeats each burst once and the smoothing models carry a trace of it; a lasting
/// shift passes after `WINDOW / 2 + 1` steps. 24 bytes of state, O(`WINDOW`) per update.
#[derive(Debug, Clone, Copy, Default)]
pub struct Median {
    recent: [f32; WINDOW],
    seen: u64,
    median: f64,
}

impl Forecaster for Median {
    fn update(&mut self, value: f64) {
        self.recent[(self.seen % WINDOW as u64) as usize] = value as f32;
        self.seen += 1;
        let n = (self.seen as usize).min(WINDOW);
        let mut sorted = [0f32; WINDOW];
        sorted[..n].copy_from_slice(&self.recent[..n]);
        sorted[..n].sort_unstable_by(f32::total_cmp);
        self.median = if n % 2 == 1 {
            f64::from(sorted[n / 2])
        } else {
            (f64::from(sorted[n / 2 - 1]) + f64::from(sorted[n / 2])) / 2.0
        };
    }

    fn forecast(&self, _h: usize) -> f64 {
        self.median
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_a_spike_and_follows_a_shift() {
        let mut m = Median::default();
        assert_eq!(m.forecast(1), 0.0);
        m.update(4.0);
        m.update(6.0);
        assert_eq!(m.forecast(1), 5.0, "the mean of two");
        for _ in 0..10 {
            m.update(10.0);
        }
        m.update(1000.0);
        assert_eq!(m.forecast(3), 10.0, "one spike does not move it");
        for _ in 0..WINDOW {
            m.update(10.0);
        }
        for _ in 0..WINDOW / 2 {
            m.update(50.0);
        }
        assert_eq!(m.forecast(1), 10.0);
        m.update(50.0);
        assert_eq!(m.forecast(1), 50.0, "a lasting shift does");
    }
}
