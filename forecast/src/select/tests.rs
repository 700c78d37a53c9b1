//! The selector's tests: choice, guard, bound.

use super::*;

#[test]
fn matures_forecasts_after_the_horizon() {
    let mut s = Selector::new(SelectorConfig {
        horizon: 3,
        ..SelectorConfig::default()
    });
    for t in 0..3 {
        assert!(s.update(f64::from(t)).is_none());
    }
    let m = s.update(3.0).expect("matured");
    // Made after seeing the value 0: naive said 0.
    assert_eq!(m.models[0], 0.0);
}

#[test]
fn prefers_the_model_that_fits() {
    let mut s = Selector::new(SelectorConfig {
        horizon: 2,
        period: 6,
        ..SelectorConfig::default()
    });
    for t in 0..600 {
        s.update(wave(t));
    }
    assert_the_seasonal_models_lead(&s, "from the start");
}

/// A wave of period 6 the seasonal models fit exactly.
fn wave(t: usize) -> f64 {
    [1.0, 9.0, 3.0, 7.0, 2.0, 8.0][t % 6] * 10.0
}

/// After [`wave`]'s first 600 samples: the seasonal models carry the weight and the
/// forecast of the next-but-one sample is right.
fn assert_the_seasonal_models_lead(s: &Selector, when: &str) {
    let w = s.weights();
    assert!(
        w[SEASONAL_NAIVE] + w[HOLT_WINTERS] + w[SEASONAL_STEP] > 0.9,
        "seasonal models should lead ({when}): {w:?}"
    );
    assert!((s.forecast() - wave(601)).abs() < 3.0, "{}", s.forecast());
}

#[test]
fn ignores_missing_samples() {
    let mut s = Selector::new(SelectorConfig::default());
    for _ in 0..50 {
        s.update(10.0);
    }
    assert!(s.update(f64::NAN).is_none());
    assert!(s.update(f64::INFINITY).is_none());
    assert!((s.forecast() - 10.0).abs() < 1e-9 && s.upper().is_finite());
}

#[test]
fn upper_bound_covers_noise() {
    let mut s = Selector::new(SelectorConfig::default());
    let mut covered = 0;
    let mut x = 0.0f64;
    for t in 0..5000 {
        x = (x + 0.618_033_988_749_895).fract();
        let v = 100.0 + 10.0 * x;
        if let Some(m) = s.update(v) {
            if t > 500 && v <= m.upper {
                covered += 1;
            }
        }
    }
    let share = f64::from(covered) / 4499.0;
    assert!(share > 0.9, "{share}");
}

/// The loop's detection switches the seasons on mid-stream: warmed with the recent
/// history, the seasonal models lead at once; switched off, they are naive and Holt again.
/// The selector stays as small as it was (344 bytes on x86_64: the seasonal step model's
/// running errors are paid for by reading the naive forecast off drift's last value).
#[test]
fn a_period_set_mid_stream_turns_the_seasonal_models_on_and_off() {
    assert!(
        std::mem::size_of::<Selector>() <= 344,
        "{}",
        std::mem::size_of::<Selector>()
    );
    let mut s = Selector::new(SelectorConfig {
        horizon: 2,
        ..SelectorConfig::default()
    });
    let series: Vec<f64> = (0..300).map(wave).collect();
    for &v in &series {
        s.update(v);
    }
    assert_eq!(s.period(), 0);
    let before = s.weights();
    s.set_period(6, series.iter().copied());
    assert_eq!(s.period(), 6);
    // The seasonal forecasts are right at once (the history warmed them).
    let models = s.model_forecasts();
    assert_eq!(models[SEASONAL_NAIVE], wave(301));
    assert!((models[HOLT_WINTERS] - wave(301)).abs() < 3.0, "{models:?}");
    for t in 300..600 {
        s.update(wave(t));
    }
    assert_the_seasonal_models_lead(&s, &format!("after the period was set; before {before:?}"));
    // The same period again changes nothing; none turns them off.
    let kept = s.weights();
    s.set_period(6, std::iter::empty());
    assert_eq!(s.weights(), kept);
    s.set_period(0, std::iter::empty());
    assert_eq!(s.period(), 0);
    assert_eq!(s.model_forecasts()[SEASONAL_NAIVE], wave(599));
}

/// Issue 20 §2: where the models lose to naive, the selector notices and publishes naive.
/// On quiet and busy stretches in turn, the mix wins the busy ones on the absolute error
/// and loses the quiet ones on the relative error, so its score stays near naive's and a
/// selector without the guard keeps it: 1.12–1.25 × naive's sMAPE at horizon 1 on these
/// seeds. With the guard it is within 1.05 ×.
#[test]
fn falls_back_to_naive_where_the_models_lose_to_it() {
    use crate::eval::{evaluate, PeriodChoice};
    for seed in 1..=3 {
        let series = crate::synthetic::quiet_and_busy(3000, seed);
        let r = evaluate("quiet and busy", &series, 1, PeriodChoice::Fixed(0)).unwrap();
        let ratio = r.models.selected.smape / r.models.naive.smape;
        assert!(ratio <= 1.05, "seed {seed}: {ratio:.3} × naive's sMAPE");
    }
    // The guard is the choice's own record: on a series the models do fit, it stays off.
    let mut s = Selector::new(SelectorConfig {
        horizon: 2,
        period: 6,
        ..SelectorConfig::default()
    });
    for t in 0..600 {
        s.update(wave(t));
    }
    assert_ne!(s.chosen(), "naive");
}

/// Issue 20 §2: on spiky and heavy-tailed load the bound covers at least 90 % of the
/// values it is published for (as `forecast-eval` counts coverage: the value at t + h)
/// from its first forecasts on, not only once the residual quantile has settled: short
/// series and new sessions are judged on their first few hundred steps. Without the
/// quantile's warm-up steps, 4 of these 36 runs cover 86–89 % (all at horizon 1). The peak
/// of the whole window is harder this early: at horizon 12 it is covered 78–89 % here;
/// [`upper_bound_covers_the_whole_lead_window`] checks it once warmed up.
#[test]
fn upper_bound_covers_spiky_load_from_the_start() {
    use crate::synthetic;
    const N: usize = 300;
    let mut failures = Vec::new();
    for seed in 1..=4 {
        let series: [(&str, Vec<f64>); 3] = [
            ("isolated spikes", synthetic::isolated_spikes(N, seed)),
            ("bursts on a base", synthetic::bursts_on_a_base(N, seed)),
            ("heavy tailed", synthetic::heavy_tailed(N, seed)),
        ];
        for (name, values) in &series {
            for h in [1, 3, 12] {
                let mut s = Selector::new(SelectorConfig {
                    horizon: h,
                    ..SelectorConfig::default()
                });
                let (mut covered, mut windows) = (0, 0);
                for (t, &v) in values.iter().enumerate() {
                    s.update(v);
                    if t + h < values.len() {
                        covered += usize::from(values[t + h] <= s.upper());
                        windows += 1;
                    }
                }
                let share = covered as f64 / windows as f64;
                if share < 0.9 {
                    failures.push(format!("{name} seed {seed} h={h}: {share:.3}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 20 §3: the bound covers the whole lead window (the maximum over t+1 … t+h), not
/// only t+h, on bursty load where the window's peak is often before its last step.
#[test]
fn upper_bound_covers_the_whole_lead_window() {
    let series = crate::synthetic::bursts_on_a_base(4000, 5);
    let h = 12;
    let mut s = Selector::new(SelectorConfig {
        horizon: h,
        ..SelectorConfig::default()
    });
    let (mut covered, mut windows) = (0, 0);
    for (t, &v) in series.iter().enumerate() {
        s.update(v);
        if t >= 200 && t + h < series.len() {
            let peak = series[t + 1..=t + h]
                .iter()
                .copied()
                .fold(f64::MIN, f64::max);
            covered += usize::from(peak <= s.upper());
            windows += 1;
        }
    }
    let share = covered as f64 / windows as f64;
    assert!(share >= 0.9, "{share}");
}

/// Issue 20 §2: on short series that grow (a ramp, a cycle whose amplitude grows with its
/// level) the bound covers at least 90 % of the values it is published for, and of the
/// lead windows' peaks, from the first forecast on, at horizons 1, 3 and 12. The bound
/// before the integral term and the step-size floor failed 11 of these 18 runs (80–91 %
/// of the values, 72–88 % of the peaks): its first `horizon` bounds had no residual at
/// all, and its quantile lagged the growth.
#[test]
fn upper_bound_covers_short_growing_series_from_the_start() {
    use crate::synthetic;
    let mut failures = Vec::new();
    for seed in 1..=3 {
        let series: [(&str, Vec<f64>); 2] = [
            ("growing cycle", synthetic::growing_cycle(144, seed)),
            ("ramp", synthetic::ramp(90, seed)),
        ];
        for (name, values) in &series {
            for h in [1, 3, 12] {
                let mut s = Selector::new(SelectorConfig {
                    horizon: h,
                    ..SelectorConfig::default()
                });
                let (mut covered, mut peaks, mut windows) = (0, 0, 0);
                for (t, &v) in values.iter().enumerate() {
                    s.update(v);
                    if t + h < values.len() {
                        let peak = values[t + 1..=t + h]
                            .iter()
                            .copied()
                            .fold(f64::MIN, f64::max);
                        covered += usize::from(values[t + h] <= s.upper());
                        peaks += usize::from(peak <= s.upper());
                        windows += 1;
                    }
                }
                let (share, peak_share) = (
                    covered as f64 / windows as f64,
                    peaks as f64 / windows as f64,
                );
                if share < 0.9 || peak_share < 0.9 {
                    failures.push(format!(
                        "{name} seed {seed} h={h}: {share:.3} of values, {peak_share:.3} of peaks"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 20 §2: on a random walk (the household-power and wind series of the held-out set
/// move like one) no model beats naive, and the selector publishes naive most of the time:
/// its sMAPE stays within 1.05 × naive's at horizons 1, 3 and 12, with a period the walk
/// does not have switched on too (so the seasonal models are in the bank and lose). Without
/// the guard, seed 1 reaches 1.060 × at h = 12 and publishes naive 68 % of the time at h = 3.
#[test]
fn publishes_naive_on_a_random_walk() {
    use crate::eval::{evaluate, PeriodChoice};
    for seed in 1..=3 {
        let mut rng = crate::synthetic::Rng::new(seed);
        let mut level = 1000.0;
        let series: Vec<f64> = (0..3000)
            .map(|_| {
                level += 10.0 * rng.normal();
                level
            })
            .collect();
        for h in [1, 3, 12] {
            let r = evaluate("walk", &series, h, PeriodChoice::Fixed(24)).unwrap();
            let ratio = r.models.selected.smape / r.models.naive.smape;
            assert!(
                ratio <= 1.05,
                "seed {seed} h={h}: {ratio:.3} × naive's sMAPE"
            );
            let mut s = Selector::new(SelectorConfig {
                horizon: h,
                period: 24,
                ..SelectorConfig::default()
            });
            let mut naive = 0;
            for &v in &series {
                s.update(v);
                naive += usize::from(s.chosen() == "naive");
            }
            let share = naive as f64 / series.len() as f64;
            assert!(
                share >= 0.75,
                "seed {seed} h={h}: naive published {share:.2} of the time"
            );
        }
    }
}
