//! `shardline replay`: the control loop in virtual time. A deterministic closed-loop simulator
//! that drives the daemon's own [`Core`] (sample → profile → forecast → size → place, the code
//! the daemon's loop thread runs) over the fleet model of [`fleet`], once per controller, on
//! the same demand:
//!
//! - `predictive`: the daemon's loop with its `[control]` configuration;
//! - `reactive`: the same loop with `controller = "reactive"`, the Kubernetes HPA rule on the
//!   observed rate ([`crate::control::reactive`]);
//! - `static`: each session held at the smallest fixed count that carries its peak;
//! - `oracle`: each session sized for the highest demand of its next lead window (the forecast
//!   horizon), known exactly.
//!
//! The four share the loop's placement, repair and autoscale-hook code: static and oracle
//! only replace the shard count ([`Rule::Given`]). Each series row is one tick; a placement
//! decided in a tick takes effect at the next one; a backend the hook asks for arrives after
//! the provisioning delay. The first `--warmup-ticks` rows (default: a tenth of the run) are
//! history, not test: every controller runs on them, none is scored on them ([`simulate`]).
//! [`report`] turns the totals into the `--json` shape.

pub mod fleet;
mod moved;
pub mod report;
mod score;
mod sets;
mod simulate;

use std::{path::Path, time::Duration};

use shardline_common::hash::mix64;
use thiserror::Error;

use self::{fleet::Tally, simulate::simulate};
use crate::{
    config::control::{ControlConfig, HookConfig, MAX_SHARDS},
    control::forecast::eval::read_csv,
};

/// The controllers a replay compares, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The daemon's predictive loop.
    Predictive,
    /// The HPA rule on the observed rate.
    Reactive,
    /// The smallest fixed count that carries the peak.
    Static,
    /// Perfect knowledge of the next lead window.
    Oracle,
}

impl Kind {
    /// Every controller, in report order.
    pub const ALL: [Kind; 4] = [Kind::Predictive, Kind::Reactive, Kind::Static, Kind::Oracle];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Predictive => "predictive",
            Kind::Reactive => "reactive",
            Kind::Static => "static",
            Kind::Oracle => "oracle",
        }
    }
}

/// Most backend ids a replay may use (the dataplane's id space, less id 0).
pub const MAX_REPLAY_BACKENDS: u32 = 4095;

/// Most backends the default fleet starts with; larger fleets get bigger backends instead.
const DEFAULT_FLEET_LIMIT: u32 = 4000;

/// How a replay runs; [`Options::default`] is the daemon's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `[control]` section the predictive and reactive loops run with.
    pub control: ControlConfig,
    /// Seconds one row lasts (default: the control tick).
    pub tick_secs: Option<f64>,
    /// A series is scaled so its peak needs this many shards at full per-shard capacity.
    pub peak_shards: u32,
    /// Sessions replayed (default: one per series, unshifted); more are drawn from the series
    /// round-robin with seeded random phase offsets.
    pub sessions: Option<usize>,
    /// Seed of the phase offsets.
    pub seed: u64,
    /// Seconds from an autoscale-hook call to its backends' arrival.
    pub provision_secs: f64,
    /// Backends at the start (default: 1.5 × the shards every session's peak needs).
    pub backends: Option<u32>,
    /// Capacity of one backend (default: one shard's, more when the fleet would pass 4,000).
    pub backend_capacity: Option<f64>,
    /// Keep each tick's demand and held capacity, for `--plot`.
    pub timeline: bool,
    /// Leading ticks every controller runs on but none is scored on (default: a tenth of the
    /// run, [`default_warmup`]).
    pub warmup_ticks: Option<usize>,
    /// Ticks replayed (default: the longest series' rows). Each session reads its series
    /// from its phase offset on, wrapping round at the end, so a run shorter than the series
    /// (a simulated day of a month-long trace) sees a different window per session.
    pub ticks: Option<usize>,
}

/// The warm-up of a run of `ticks` ticks when none is given: its first tenth (rounded down),
/// the train part of a 10/90 train/test split. Long enough for the forecaster's bound to have
/// scored its first lead windows and for every session to be placed as a running daemon's
/// would be; short enough to leave nine tenths of the series to judge on.
pub fn default_warmup(ticks: usize) -> usize {
    ticks / 10
}

impl Default for Options {
    fn default() -> Self {
        Self {
            control: ControlConfig::default(),
            tick_secs: None,
            peak_shards: 8,
            sessions: None,
            seed: 1,
            provision_secs: 30.0,
            backends: None,
            backend_capacity: None,
            timeline: false,
            warmup_ticks: None,
            ticks: None,
        }
    }
}

/// One demand series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in reports (the file's stem).
    pub name: String,
    /// One value per tick.
    pub values: Vec<f64>,
}

impl Series {
    /// Reads the `value` column of a `timestamp,value` CSV file.
    pub fn read(path: &Path) -> Result<Self, ReplayError> {
        let values = read_csv(path, "value")?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Self { name, values })
    }
}

/// Why a replay cannot run.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// A series file could not be read.
    #[error(transparent)]
    Read(#[from] crate::control::forecast::eval::EvalError),
    /// No series given.
    #[error("no series to replay: give at least one --csv FILE")]
    NoSeries,
    /// A series has fewer than two rows or no positive value.
    #[error("series {name}: {problem}")]
    Series {
        /// The series.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An option is out of range.
    #[error("{name}: {problem}")]
    Option {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

fn bad(name: &'static str, problem: impl Into<String>) -> ReplayError {
    ReplayError::Option {
        name,
        problem: problem.into(),
    }
}

/// A replay's totals.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The series' names, `+`-joined.
    pub trace: String,
    /// Ticks replayed, the warm-up included.
    pub ticks: usize,
    /// Leading ticks not scored (every tally covers the ticks after them).
    pub warmup_ticks: usize,
    /// Seconds per tick.
    pub tick_secs: f64,
    /// Sessions replayed.
    pub sessions: usize,
    /// Backends at the start and each one's capacity.
    pub fleet: (u32, f64),
    /// Each controller's totals, in [`Kind::ALL`] order.
    pub tallies: Vec<(Kind, Tally)>,
    /// With [`Options::timeline`]: per tick, the demand offered and, per controller, the
    /// capacity its shards held and whether a backend was overloaded.
    pub timeline: Option<Timeline>,
}

/// Per-tick demand and held capacity, for plotting.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Total demand per tick.
    pub demand: Vec<f64>,
    /// Per controller (in [`Kind::ALL`] order): shards held × per-shard capacity, per tick.
    pub capacity: Vec<Vec<f64>>,
    /// Per controller: whether some backend was overloaded, per tick.
    pub overloaded: Vec<Vec<bool>>,
}

/// One replayed session: which series, shifted by how many rows, scaled by how much.
#[derive(Debug, Clone, Copy)]
struct Demand {
    series: usize,
    phase: usize,
    scale: f64,
    /// Its scaled peak.
    peak: f64,
}

/// The run's fixed inputs.
struct Setup<'a> {
    series: &'a [Series],
    demands: Vec<Demand>,
    ticks: usize,
    /// Leading ticks every controller runs on but none is scored on.
    warmup: usize,
    tick: Duration,
    per_shard: f64,
    backends: u32,
    backend_capacity: f64,
    provision_ticks: usize,
    lead_ticks: usize,
    control: ControlConfig,
}

impl Setup<'_> {
    fn demand(&self, session: usize, t: usize) -> f64 {
        let d = self.demands[session];
        let values = &self.series[d.series].values;
        values[(t + d.phase) % values.len()] * d.scale
    }

    /// Shards that carry `demand` at full per-shard capacity (a peak scaled to exactly N
    /// shards needs N, rounding error aside).
    fn shards_for(&self, demand: f64) -> u8 {
        (demand / self.per_shard * (1.0 - 1e-9))
            .ceil()
            .clamp(1.0, f64::from(MAX_SHARDS)) as u8
    }
}

/// The service every replayed session belongs to.
const SERVICE: &str = "replay";

/// Replays `series` under every controller.
pub fn run(series: &[Series], options: &Options) -> Result<Outcome, ReplayError> {
    if series.is_empty() {
        return Err(ReplayError::NoSeries);
    }
    let setup = setup(series, options)?;
    let mut tallies = Vec::new();
    let mut timeline = options.timeline.then(|| Timeline {
        demand: (0..setup.ticks)
            .map(|t| (0..setup.demands.len()).map(|i| setup.demand(i, t)).sum())
            .collect(),
        ..Timeline::default()
    });
    // Every baseline is fed the demand the predictive loop is, so it decides on the predictive
    // loop's forecasts (static and the oracle, in force before the first tick, decide that
    // once on forecasters of their own).
    let runs = simulate(&setup, timeline.is_some());
    for (kind, (tally, capacity, overloaded)) in Kind::ALL.into_iter().zip(runs) {
        tallies.push((kind, tally));
        if let Some(t) = &mut timeline {
            t.capacity.push(capacity);
            t.overloaded.push(overloaded);
        }
    }
    Ok(Outcome {
        trace: series
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        ticks: setup.ticks,
        warmup_ticks: setup.warmup,
        tick_secs: setup.tick.as_secs_f64(),
        sessions: setup.demands.len(),
        fleet: (setup.backends, setup.backend_capacity),
        tallies,
        timeline,
    })
}

fn setup<'a>(series: &'a [Series], options: &Options) -> Result<Setup<'a>, ReplayError> {
    let control = &options.control;
    control
        .validate()
        .map_err(|e| bad("control", e.to_string()))?;
    let tick_secs = options
        .tick_secs
        .unwrap_or_else(|| control.tick().as_secs_f64());
    if !(tick_secs.is_finite() && (0.01..=3600.0).contains(&tick_secs)) {
        return Err(bad(
            "--tick-secs",
            format!("must be 0.01 to 3600, got {tick_secs}"),
        ));
    }
    if !(1..=u32::from(MAX_SHARDS)).contains(&options.peak_shards) {
        return Err(bad("--peak-shards", format!("must be 1 to {MAX_SHARDS}")));
    }
    if !(options.provision_secs.is_finite() && options.provision_secs >= 0.0) {
        return Err(bad(
            "--provision-secs",
            "must be a non-negative number of seconds",
        ));
    }
    for s in series {
        if s.values.len() < 2 {
            return Err(ReplayError::Series {
                name: s.name.clone(),
                problem: format!("needs at least 2 rows, has {}", s.values.len()),
            });
        }
        if !s.values.iter().any(|v| *v > 0.0) || s.values.iter().any(|v| *v < 0.0) {
            return Err(ReplayError::Series {
                name: s.name.clone(),
                problem: "demand must be non-negative with a positive peak".into(),
            });
        }
    }
    let sessions = options.sessions.unwrap_or(series.len());
    if sessions == 0 {
        return Err(bad("--sessions", "must be at least 1"));
    }
    let per_shard = control.per_shard_capacity;
    let demands: Vec<Demand> = (0..sessions)
        .map(|i| {
            let s = i % series.len();
            let values = &series[s].values;
            let peak = values.iter().copied().fold(0.0, f64::max);
            let scale = f64::from(options.peak_shards) * per_shard / peak;
            let phase = match options.sessions {
                None => 0,
                Some(_) => {
                    (mix64(options.seed ^ mix64(i as u64 + 1)) % values.len() as u64) as usize
                }
            };
            Demand {
                series: s,
                phase,
                scale,
                peak: peak * scale,
            }
        })
        .collect();
    let shards: f64 = demands
        .iter()
        .map(|d| (d.peak / per_shard).ceil())
        .sum::<f64>()
        * 1.5;
    let (backends, backend_capacity) = match (options.backends, options.backend_capacity) {
        (Some(b), Some(c)) => (b, c),
        (Some(b), None) => (
            b,
            (shards / f64::from(b.max(1))).ceil().max(1.0) * per_shard,
        ),
        (None, Some(c)) => ((shards * per_shard / c).ceil() as u32, c),
        (None, None) if shards <= f64::from(DEFAULT_FLEET_LIMIT) => {
            (shards.ceil().max(2.0) as u32, per_shard)
        }
        (None, None) => {
            let each = (shards / f64::from(DEFAULT_FLEET_LIMIT)).ceil();
            ((shards / each).ceil() as u32, each * per_shard)
        }
    };
    if !(1..=MAX_REPLAY_BACKENDS).contains(&backends) {
        return Err(bad(
            "--backends",
            format!("must be 1 to {MAX_REPLAY_BACKENDS}, got {backends}"),
        ));
    }
    if !(backend_capacity.is_finite() && backend_capacity > 0.0) {
        return Err(bad("--backend-capacity", "must be positive"));
    }
    let tick = Duration::from_secs_f64(tick_secs);
    let mut control = control.clone();
    control.tick_ms = (tick_secs * 1000.0).round() as u64;
    control.hook = Some(HookConfig {
        command: Some(vec!["true".into()]),
        webhook: None,
        lead_secs: options.provision_secs,
        cooldown_secs: options.provision_secs,
    });
    let ticks = match options.ticks {
        Some(0) => return Err(bad("--ticks", "must be at least 1")),
        Some(n) => n,
        None => series.iter().map(|s| s.values.len()).max().unwrap_or(0),
    };
    let warmup = options
        .warmup_ticks
        .unwrap_or_else(|| default_warmup(ticks));
    if warmup >= ticks {
        return Err(bad(
            "--warmup-ticks",
            format!("must leave a tick to score: {warmup} of a {ticks}-tick run"),
        ));
    }
    Ok(Setup {
        series,
        ticks,
        warmup,
        tick,
        per_shard,
        backends,
        backend_capacity,
        provision_ticks: (options.provision_secs / tick_secs).ceil() as usize,
        lead_ticks: control.horizon.max(1),
        demands,
        control,
    })
}

#[cfg(test)]
mod tests;
