//! One control-loop tick for 1,000,000 sessions on one core: ingest (counter deltas into
//! rates), forecast (the five-model selector) and decide (shard count with its brakes).

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use shardline::{
    control::forecast::SelectorConfig,
    control::sizing::SizingConfig,
    control::tick::{tick, SessionState},
};

/// Sessions per tick (`SHARDLINE_TICK_SESSIONS` overrides, for a smaller smoke run).
fn sessions() -> usize {
    std::env::var("SHARDLINE_TICK_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn one_tick(c: &mut Criterion) {
    let n = sessions();
    let t0 = Instant::now();
    let selector = SelectorConfig {
        horizon: 3,
        ..SelectorConfig::default()
    };
    let config = SizingConfig {
        per_shard_capacity: 1000.0,
        min_dwell: Duration::from_secs(10),
        scale_in_delay: Duration::from_secs(60),
        ..SizingConfig::default()
    };
    let mut states = vec![SessionState::new(selector, 1, t0); n];
    // Cumulative packet counters as the sampler reads them, and the rates derived from them.
    let mut counters = vec![0u64; n];
    let mut previous = vec![0u64; n];
    let mut samples = vec![0.0f64; n];
    let mut step = 0u64;
    let mut group = c.benchmark_group("control_tick");
    group.sample_size(10);
    group.bench_function(format!("{n}_sessions"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                step += 1;
                // Traffic arrives (not timed): each session's own mix of level, ramp and wave.
                for (i, c) in counters.iter_mut().enumerate() {
                    let level = 100.0 + (i % 1000) as f64;
                    let wave = 1.0 + 0.5 * ((step + i as u64) as f64 / 20.0).sin();
                    *c += (level * wave + (step % 97) as f64) as u64;
                }
                let now = t0 + Duration::from_secs(step);
                let began = Instant::now();
                // Ingest: counter deltas over a 1 s tick.
                for ((s, c), p) in samples.iter_mut().zip(&counters).zip(previous.iter_mut()) {
                    *s = c.wrapping_sub(*p) as f64;
                    *p = *c;
                }
                let changed = tick(&mut states, &samples, &config, now).count();
                black_box(changed);
                spent += began.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group! {
    name = control_tick;
    config = {
        let (warm_up, measurement, _) = shardline_bench::settings();
        Criterion::default().warm_up_time(warm_up).measurement_time(measurement)
    };
    targets = one_tick
}
criterion_main!(control_tick);
