//! shardline's control-plane benchmarks (criterion), run by `cargo xtask bench`:
//!
//! - `benches/control.rs`: Maglev table build for 10 / 100 / 1,000 backends, the hashes
//!   (`mix64`, `flow_hash`) and `route::decide` in userspace against a `Snapshot`.
//! - `benches/tick.rs`: one control-loop tick (ingest + forecast + decide) for 1,000,000
//!   sessions on one core (`SHARDLINE_TICK_SESSIONS` overrides the count); see docs/predict.md.
//!
//! `SHARDLINE_BENCH_QUICK=1` shortens warm-up and measurement for a smoke run. The kernel-side
//! benchmarks are `shardline-bench` ([`suite`]), a binary of this crate.

pub mod suite;

use std::time::Duration;

/// Criterion settings: the defaults, or short ones when `SHARDLINE_BENCH_QUICK=1`.
pub fn settings() -> (Duration, Duration, usize) {
    if std::env::var_os("SHARDLINE_BENCH_QUICK").is_some_and(|v| v == "1") {
        (Duration::from_millis(300), Duration::from_secs(1), 10)
    } else {
        (Duration::from_secs(3), Duration::from_secs(5), 100)
    }
}
