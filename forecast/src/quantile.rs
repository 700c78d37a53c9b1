//! An O(1) streaming quantile that follows drift: stochastic-gradient steps on the pinball loss,
//! sized by the residuals' own recent scale.

/// Exponentially weighted quantile estimator.
///
/// Each observation `r` moves the estimate by `rate × scale × (τ − 1[r ≤ q])`, where `scale`
/// is an exponentially weighted mean of `|r|`: at equilibrium a share `τ` of observations lies
/// at or below `q`. Scaling by the residuals' own size makes one rate fit series of any unit,
/// and the steady steps let the bound follow a regime change, which P² (built for stationary
/// streams) does not. The first steps are larger, `max(rate, 2 / √n)` for the n-th
/// observation (a Robbins–Monro schedule, down to `rate` after `4 / rate²` observations), so
/// the estimate reaches the residuals' quantile within the first few dozen of them instead of
/// creeping up from the first one: a new session or a short series is covered from its start.
/// 16 bytes of state plus configuration.
#[derive(Debug, Clone, Copy)]
pub struct EwQuantile {
    tau: f32,
    rate: f32,
    q: f32,
    scale: f32,
    seen: u32,
}

impl EwQuantile {
    /// An estimator of quantile `tau` (clamped to 0.5..=0.999) with step rate `rate`.
    pub fn new(tau: f64, rate: f64) -> Self {
        Self {
            tau: tau.clamp(0.5, 0.999) as f32,
            rate: rate.clamp(1e-4, 1.0) as f32,
            q: 0.0,
            scale: 0.0,
            seen: 0,
        }
    }

    /// Feeds one observation.
    pub fn update(&mut self, r: f64) {
        if !r.is_finite() {
            return;
        }
        self.seen = self.seen.saturating_add(1);
        // The scale is a running mean for the first 20 observations, then exponential.
        let w = (1.0 / f64::from(self.seen)).max(0.05);
        let scale = f64::from(self.scale) + w * (r.abs() - f64::from(self.scale));
        self.scale = scale as f32;
        if self.seen == 1 {
            self.q = r as f32;
            return;
        }
        let q = f64::from(self.q);
        let below = if r <= q { 1.0 } else { 0.0 };
        let rate = f64::from(self.rate).max(WARM_UP / f64::from(self.seen).sqrt());
        self.q = (q + rate * scale * (f64::from(self.tau) - below)) as f32;
    }

    /// The quantile estimated.
    pub fn tau(&self) -> f64 {
        f64::from(self.tau)
    }

    /// Observations fed so far (saturating).
    pub fn seen(&self) -> u32 {
        self.seen
    }

    /// The running mean absolute observation that sizes the steps: the residuals' own scale.
    pub fn scale(&self) -> f64 {
        f64::from(self.scale)
    }

    /// The current estimate (0 before any observation).
    pub fn value(&self) -> f64 {
        f64::from(self.q)
    }
}

/// The warm-up's step numerator: the n-th observation steps by at least `WARM_UP / √n`
/// (scaled), so the first steps are of the residuals' own size.
const WARM_UP: f64 = 2.0;

impl Default for EwQuantile {
    /// The 95th percentile, rate 0.1.
    fn default() -> Self {
        Self::new(0.95, 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_requested_share_of_a_uniform_stream() {
        let mut q = EwQuantile::new(0.95, 0.05);
        // A deterministic low-discrepancy stream over [0, 1).
        let golden = 0.618_033_988_749_895;
        let mut x = 0.0f64;
        for _ in 0..20_000 {
            x = (x + golden).fract();
            q.update(x);
        }
        assert!((q.value() - 0.95).abs() < 0.05, "{}", q.value());
    }

    #[test]
    fn follows_a_shift() {
        let mut q = EwQuantile::default();
        for i in 0..2000 {
            q.update(f64::from(i % 10));
        }
        let before = q.value();
        for i in 0..2000 {
            q.update(100.0 + f64::from(i % 10));
        }
        assert!(before < 10.0 && q.value() > 100.0, "{before} {}", q.value());
    }
}
