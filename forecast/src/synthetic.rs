//! Test series with the shapes real load has and the forecasters find hard: isolated spikes on
//! a flat base (disk writes), bursts on a noisy base, level steps, heavy tails. Deterministic
//! (a seeded SplitMix64), test-only.

/// SplitMix64: a tiny, well-mixed deterministic generator.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// A disk-write-like series: 0 most of the time, an isolated write of 10⁴–10⁶ bytes on 3 % of
/// steps.
pub fn isolated_spikes(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            if r.uniform() < 0.03 {
                10f64.powf(4.0 + 2.0 * r.uniform())
            } else {
                0.0
            }
        })
        .collect()
}

/// Bursts of 1–4 steps, 20–100 × the base, on a noisy base of about 100.
pub fn bursts_on_a_base(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if r.uniform() < 0.02 {
            let height = 100.0 * (20.0 + 80.0 * r.uniform());
            let len = 1 + (r.uniform() * 4.0) as usize;
            out.extend((0..len).map(|_| height + 5.0 * r.normal()));
        } else {
            out.push((100.0 + 5.0 * r.normal()).max(0.0));
        }
    }
    out.truncate(n);
    out
}

/// A level that jumps to a new value in 50..500 every 200 steps, with noise of 10.
pub fn steps(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    let mut level = 0.0;
    (0..n)
        .map(|t| {
            if t % 200 == 0 {
                level = 50.0 + 450.0 * r.uniform();
            }
            (level + 10.0 * r.normal()).max(0.0)
        })
        .collect()
}

/// 200 plus Pareto(α = 1.5) noise of scale 20: no finite variance.
pub fn heavy_tailed(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| 200.0 + 20.0 * ((1.0 - r.uniform()).powf(-1.0 / 1.5) - 1.0))
        .collect()
}

/// Quiet and busy stretches of 60 steps in turn: a slow random walk between 1 and 20, then
/// noise of 50 around 1000. Smoothing wins the busy stretches on the absolute error (naive
/// carries each step's noise), naive the quiet ones on the relative error (smoothing lags the
/// walk, and there a small error is a large share of the value).
pub fn quiet_and_busy(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    let mut walk = 5.0f64;
    (0..n)
        .map(|t| {
            if (t / 60) % 2 == 0 {
                walk = (walk + 0.5 * r.normal()).clamp(1.0, 20.0);
                walk
            } else {
                1000.0 + 50.0 * r.normal()
            }
        })
        .collect()
}

/// A growing session: a level rising 1 % a step with a 12-step cycle of ±20 % of it and 3 %
/// noise (the shape of a growing service's daily traffic, or of the classic airline series):
/// residuals grow with the level, so a bound learnt from the past falls behind.
pub fn growing_cycle(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|t| {
            let level = 100.0 * 1.01f64.powi(t as i32);
            let cycle = 1.0 + 0.2 * (std::f64::consts::TAU * t as f64 / 12.0).sin();
            level * cycle * (1.0 + 0.03 * r.normal())
        })
        .collect()
}

/// A steady ramp: 1,000 plus 5 a step with noise of 1 (a session whose load grows at a constant
/// rate). Naive is a horizon behind at every step.
pub fn ramp(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|t| 1000.0 + 5.0 * t as f64 + r.normal())
        .collect()
}
