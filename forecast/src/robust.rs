//! Outlier-robust updates for the smoothing models (Gelper, Fried & Croux, "Robust forecasting
//! with exponential and Holt-Winters smoothing", 2010): an observation is *cleaned* before it
//! updates a model, its innovation clipped to a few times the innovations' recent scale.
//!
//! Why: load series are spiky (a burst every few steps over a flat base). Unclipped, one burst
//! drags a smoothed level up for many steps and every forecast after it misses the base; the
//! bursts themselves are left to the residual quantile, which sets the upper bound. A genuine
//! level shift still gets through: clipped innovations keep feeding the scale, which grows
//! by up to `(CLIP - 1) × RATE` (20 %) a step until the new level fits.

/// Innovations beyond this many scales are clipped (Huber-style).
const CLIP: f64 = 3.0;
/// Weight of the newest clipped innovation in the scale.
const RATE: f64 = 0.1;
/// Innovations that only set the scale (a running mean) before clipping starts.
const WARM_UP: u32 = 10;

/// The running innovation scale of one model (8 bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cleaner {
    scale: f32,
    seen: u32,
}

impl Cleaner {
    /// The value a model should learn from, given its one-step forecast `predicted` and the
    /// observation `value`.
    pub fn clean(&mut self, predicted: f64, value: f64) -> f64 {
        let innovation = value - predicted;
        let mut scale = f64::from(self.scale);
        if self.seen < WARM_UP {
            self.seen += 1;
            scale += (innovation.abs() - scale) / f64::from(self.seen);
            self.scale = scale as f32;
            return value;
        }
        let bound = CLIP * scale;
        let clipped = innovation.clamp(-bound, bound);
        scale += RATE * (clipped.abs() - scale);
        self.scale = scale as f32;
        predicted + clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_a_spike_but_follows_a_shift() {
        let mut c = Cleaner::default();
        for i in 0..50 {
            c.clean(10.0, 10.0 + f64::from(i % 3) - 1.0);
        }
        let spike = c.clean(10.0, 1000.0);
        assert!(spike < 15.0, "{spike}");
        // A lasting shift to 100: the clip widens until it passes.
        let mut passed = 0.0;
        for _ in 0..40 {
            passed = c.clean(10.0, 100.0);
        }
        assert_eq!(passed, 100.0);
    }
}
