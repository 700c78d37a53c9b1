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
