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
//! the provisioning delay. [`report`] turns the totals into the `--json` shape.

pub mod fleet;
pub mod report;

use std::{
    collections::VecDeque,
    path::Path,
    time::{Duration, Instant},
};

use shardline_common::hash::mix64;
use thiserror::Error;

use self::fleet::{moved_fraction, Owners, Tally};
use crate::{
    agent::AgentReport,
    config::{
        control::{ControlConfig, Controller, HookConfig, MAX_SHARDS},
        BackendConfig, Config,
    },
    control::{forecast::eval::read_csv, sizing::Rule, Core},
    state::{Command, ControlState, SessionRef},
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
    /// Ticks replayed.
    pub ticks: usize,
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
    for kind in Kind::ALL {
        let (tally, capacity, overloaded) = simulate(&setup, kind, timeline.is_some());
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
    Ok(Setup {
        series,
        ticks: series.iter().map(|s| s.values.len()).max().unwrap_or(0),
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

/// The control state a replay starts from: one header-mode service and `backends` backends.
fn fleet_state(backends: u32, capacity: f64) -> ControlState {
    let text = format!(
        "interface = \"replay0\"\n[encap]\nsource_v4 = \"10.0.0.1\"\n[[services]]\nname = \"{SERVICE}\"\nvip = \"10.0.0.100\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\n"
    );
    let config = Config::parse(&text, "replay").expect("the replay's service is valid");
    let mut state = ControlState::from_config(&config);
    for id in 1..=backends {
        add_backend(&mut state, id, capacity);
    }
    state
}

fn add_backend(state: &mut ControlState, id: u32, capacity: f64) {
    let config = BackendConfig {
        id,
        ipv4: Some(std::net::Ipv4Addr::from(0x0a01_0000 | id)),
        ipv6: None,
        mac: format!("02:00:00:00:{:02x}:{:02x}", id >> 8, id & 0xff),
        weight: 1,
        agent: None,
        capacity: Some(capacity),
    };
    state
        .apply(&Command::UpsertBackend(config))
        .expect("replay backends are valid");
}

/// One controller over the whole run: its totals and, if asked, its per-tick capacity and
/// overload flags.
fn simulate(setup: &Setup<'_>, kind: Kind, timeline: bool) -> (Tally, Vec<f64>, Vec<bool>) {
    let mut control = setup.control.clone();
    control.controller = match kind {
        Kind::Reactive => Controller::Reactive,
        _ => Controller::Predictive,
    };
    let mut core = Core::new(&control);
    if matches!(kind, Kind::Static | Kind::Oracle) {
        core.set_rule(Rule::Given);
    }
    let mut state = fleet_state(setup.backends, setup.backend_capacity);
    let mut next_id = setup.backends + 1;
    let mut capacities = vec![setup.backend_capacity; setup.backends as usize];
    let mut loads = vec![0.0; setup.backends as usize];
    let sessions = setup.demands.len();
    let refs: Vec<SessionRef> = (0..sessions)
        .map(|i| SessionRef {
            service: SERVICE.into(),
            session: i as u64,
        })
        .collect();
    let mut rates: Vec<(SessionRef, f64)> = refs.iter().map(|r| (r.clone(), 0.0)).collect();
    // Each session's home while unplaced, redone when backends arrive.
    let homes_in = |state: &ControlState| -> Vec<Option<u32>> {
        let tables = state.unplaced_tables();
        refs.iter().map(|r| state.home(&tables, r)).collect()
    };
    let mut homes = homes_in(&state);
    let mut placed: Vec<Vec<u32>> = vec![Vec::new(); sessions];
    let mut pending: Vec<Command> = Vec::new();
    let mut arrivals: VecDeque<(usize, u32)> = VecDeque::new();
    let mut tally = Tally::default();
    let mut saturated: Vec<bool> = Vec::new();
    let (mut held, mut flags) = (Vec::new(), Vec::new());
    let secs = setup.tick.as_secs_f64();
    let trace = std::env::var_os("SHARDLINE_REPLAY_TRACE").is_some();
    let t0 = Instant::now();
    // Static and the oracle are told the shard counts their rule gives.
    let give = |core: &mut Core, state: &ControlState, t: usize, now: Instant| match kind {
        Kind::Static if t == 0 => {
            for (i, r) in refs.iter().enumerate() {
                let peak = setup.demands[i].peak;
                core.give(r, setup.shards_for(peak), state, now);
            }
        }
        Kind::Oracle => {
            for (i, r) in refs.iter().enumerate() {
                // The series ends where the run does: nothing is known past it.
                let ahead = (t + 1..=t + setup.lead_ticks)
                    .filter(|&u| u < setup.ticks)
                    .map(|u| setup.demand(i, u))
                    .fold(setup.demand(i, t), f64::max);
                core.give(r, setup.shards_for(ahead), state, now);
            }
        }
        _ => {}
    };
    if matches!(kind, Kind::Static | Kind::Oracle) && setup.ticks > 0 {
        // A fixed configuration, and perfect knowledge, are in force from the first tick: an
        // unplaced session would put all its demand on its home before either could act.
        for (i, rate) in rates.iter_mut().enumerate() {
            rate.1 = setup.demand(i, 0);
        }
        give(&mut core, &state, 0, t0);
        for p in core.tick(t0, 0, t0, &rates, &state).placements {
            if let Command::Place { session, backends } = &p.command {
                if state.apply(&p.command).is_ok() {
                    placed[session.session as usize].clone_from(backends);
                }
            }
        }
    }
    for t in 0..setup.ticks {
        let now = t0 + setup.tick * t as u32;
        // What was decided last tick is in force now.
        for command in pending.drain(..) {
            let Command::Place { session, backends } = &command else {
                continue;
            };
            let i = session.session as usize;
            if state.apply(&command).is_err() || placed[i] == *backends {
                continue;
            }
            let before = owners(&placed[i], homes[i]);
            tally.reshards += 1;
            tally.keys_moved += moved_fraction(before, Owners::Set(backends));
            placed[i].clone_from(backends);
        }
        while arrivals.front().is_some_and(|(at, _)| *at <= t) {
            let (_, count) = arrivals.pop_front().expect("just checked");
            for _ in 0..count {
                add_backend(&mut state, next_id, setup.backend_capacity);
                capacities.push(setup.backend_capacity);
                loads.push(0.0);
                next_id += 1;
            }
            homes = homes_in(&state);
        }
        // Demand onto the backends.
        loads.fill(0.0);
        let mut shards = 0usize;
        for (i, rate) in rates.iter_mut().enumerate() {
            let d = setup.demand(i, t);
            rate.1 = d;
            let set = &placed[i];
            if set.is_empty() {
                // Unplaced: all of it on its home.
                shards += 1;
                if let Some(home) = homes[i] {
                    loads[home as usize - 1] += d;
                }
            } else {
                shards += set.len();
                for id in set {
                    loads[*id as usize - 1] += d / set.len() as f64;
                }
            }
        }
        let overloaded_before = tally.overload_seconds;
        tally.tick(secs, &loads, &capacities);
        if tally.overload_seconds > overloaded_before && trace {
            let over = loads.iter().zip(&capacities).filter(|(l, c)| l > c).count();
            eprintln!(
                "{} t={t}: {over} backends overloaded, demand {:.0} on {shards} shards",
                kind.name(),
                rates.iter().map(|r| r.1).sum::<f64>()
            );
        }
        tally.shard_seconds += shards as f64 * secs;
        if timeline {
            held.push(shards as f64 * setup.per_shard);
            flags.push(tally.overload_seconds > overloaded_before);
        }
        // The agents report saturation (not their load: the placement then counts the
        // forecasts of the shards each backend holds, as a daemon whose applications report
        // no load does).
        // Only changes are sent: a report replaces the previous one.
        for (index, load) in loads.iter().enumerate() {
            let now_saturated = *load > capacities[index];
            if saturated.get(index) == Some(&now_saturated) {
                continue;
            }
            if index >= saturated.len() {
                saturated.resize(index + 1, false);
            }
            saturated[index] = now_saturated;
            core.report(AgentReport {
                backend: index as u32 + 1,
                saturated: now_saturated,
                ..AgentReport::default()
            });
        }
        give(&mut core, &state, t, now);
        let at_ms = (t as f64 * secs * 1000.0) as u64;
        let out = core.tick(now, at_ms, t0, &rates, &state);
        if trace {
            for p in &out.placements {
                eprintln!("{} t={t}: {}", kind.name(), p.reason);
            }
        }
        pending.extend(out.placements.into_iter().map(|p| p.command));
        if let Some(short) = out.shortfall {
            let wanted = (short.shortfall / setup.backend_capacity).ceil().max(1.0) as u32;
            let room = MAX_REPLAY_BACKENDS.saturating_sub(next_id - 1 + queued(&arrivals));
            if room > 0 {
                arrivals.push_back((t + setup.provision_ticks.max(1), wanted.min(room)));
            }
        }
    }
    (tally, held, flags)
}

fn queued(arrivals: &VecDeque<(usize, u32)>) -> u32 {
    arrivals.iter().map(|(_, n)| n).sum()
}

fn owners(set: &[u32], home: Option<u32>) -> Owners<'_> {
    if set.is_empty() {
        Owners::Home(home)
    } else {
        Owners::Set(set)
    }
}

#[cfg(test)]
mod tests;
