//! `shardline replay`: the control loop in virtual time over CSV demand series, against
//! reactive, static and oracle controllers (docs/replay.md).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shardline::{
    config::control::ControlConfig,
    replay::{self, report::Report, Options, Series},
};

/// Replay demand series through the daemon's control loop and compare it with reactive,
/// static and oracle controllers.
#[derive(Args)]
pub struct ReplayArgs {
    /// A `timestamp,value` CSV file: one session's demand, one row per tick (repeatable).
    #[arg(long, required = true)]
    csv: Vec<PathBuf>,
    /// A TOML file whose `[control]` section the loop runs with: a daemon configuration, or
    /// that section alone (default: the daemon's defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds one row lasts (default: the control tick).
    #[arg(long)]
    tick_secs: Option<f64>,
    /// Scale each series so its peak needs this many shards at full per-shard capacity.
    #[arg(long, default_value_t = 8)]
    peak_shards: u32,
    /// Sessions to replay, drawn from the series with seeded random phase offsets (default:
    /// one per series, unshifted).
    #[arg(long)]
    sessions: Option<usize>,
    /// Seed of the phase offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds until a backend the autoscale hook asked for arrives.
    #[arg(long, default_value_t = 30.0)]
    provision_secs: f64,
    /// Backends at the start (default: 1.5 × the shards every session's peak needs).
    #[arg(long)]
    backends: Option<u32>,
    /// Capacity of one backend, in the series' unit after scaling (default: one shard's).
    #[arg(long)]
    backend_capacity: Option<f64>,
    /// Leading rows every controller runs on but none is scored on: history, as a running
    /// daemon has seen its sessions before (default: the first tenth of the run).
    #[arg(long)]
    warmup_ticks: Option<usize>,
    /// Rows to replay (default: the longest series'): each session reads its series from its
    /// phase offset, wrapping round, so `--ticks 288 --tick-secs 300` is a day of 5-minute rows.
    #[arg(long)]
    ticks: Option<usize>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw demand against the capacity each controller held, overloads marked.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Runs the replay and prints its report.
pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let series = a
        .csv
        .iter()
        .map(|p| Series::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let control = match &a.config {
        Some(path) => ControlConfig::load_section(path)
            .with_context(|| format!("loading [control] from {}", path.display()))?,
        None => Default::default(),
    };
    let options = Options {
        control,
        tick_secs: a.tick_secs,
        peak_shards: a.peak_shards,
        sessions: a.sessions,
        seed: a.seed,
        provision_secs: a.provision_secs,
        backends: a.backends,
        backend_capacity: a.backend_capacity,
        timeline: a.plot.is_some(),
        warmup_ticks: a.warmup_ticks,
        ticks: a.ticks,
    };
    let outcome = replay::run(&series, &options)?;
    let report = Report::of(&outcome);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let (Some(path), Some(timeline)) = (&a.plot, &outcome.timeline) {
        crate::operator::plot::replay(path, &outcome.trace, outcome.tick_secs, timeline)?;
    }
    Ok(())
}
