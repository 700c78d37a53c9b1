//! The moving median: the middle of the last few values, a level that one spike cannot move.

use super::Forecaster;

/// Values the median is taken over (odd, so the median is one of them).
pub const WINDOW: usize = 5;

/// Forecasts the median of the last [`WINDOW`] values at every horizon (of all values seen
/// while fewer). On a flat base with isolated bursts it stays on the base, where the naive
/// forecast repeats each burst once and the smoothing models carry a trace of it; a lasting
/// shift passes after `WINDOW / 2 + 1` steps. 24 bytes of state; the forecast sorts the
/// window, O(`WINDOW`²) with `WINDOW` = 5.
#[derive(Debug, Clone, Copy, Default)]
pub struct Median {
    recent: [f32; WINDOW],
    /// Where the next value goes.
    next: u8,
    /// Values held (up to `WINDOW`).
    held: u8,
}

impl Forecaster for Median {
    fn update(&mut self, value: f64) {
        self.recent[usize::from(self.next)] = value as f32;
        self.next = (self.next + 1) % WINDOW as u8;
        self.held = (self.held + 1).min(WINDOW as u8);
    }

    fn forecast(&self, _h: usize) -> f64 {
        let n = usize::from(self.held);
        if n == 0 {
            return 0.0;
        }
        let mut sorted = self.recent;
        sorted[..n].sort_unstable_by(f32::total_cmp);
        if n % 2 == 1 {
            f64::from(sorted[n / 2])
        } else {
            (f64::from(sorted[n / 2 - 1]) + f64::from(sorted[n / 2])) / 2.0
        }
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
