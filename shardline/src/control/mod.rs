//! The predictive control loop: samples and agent reports in, placements out. Its stages, in
//! the order a tick runs them:
//!
//! 1. [`sample`]: per-session loads from the dataplane's counters; in a cluster, [`fleet`]
//!    sums every node's on the leader.
//! 2. [`profile`]: a session's load profile (level, period) from its history.
//! 3. [`forecast`]: online forecasters and the selector that picks among them.
//! 4. [`sizing`]: how many shards a session needs, with brakes against flapping; or
//!    [`reactive`], the HPA rule on the observed rate (`controller = "reactive"`).
//! 5. [`placement`]: which backends take new shards.
//! 6. [`tick`]: the per-tick driver of forecast and sizing over every session.
//! 7. [`core`]: one whole tick, pure (the stages above, placements, hook, insights).
//! 8. [`hook`]: the autoscale hook, told when the fleet cannot take the shards asked for.
//!
//! Around them: [`history`] (the redb history with downsampling tiers) and [`insight`] (the
//! per-session views the loop publishes for the API, `top` and `plot`). The `[control]`
//! section itself is [`crate::config::control`].
//!
//! Threads: the loop runs on a thread of its own pinned to one core ([`core_affinity`]),
//! blocking on crossbeam channels — [`TickInput`]s from the sampler (a tokio task reading the
//! dataplane's session counters every tick) and [`AgentReport`]s from the agents' endpoint. Its
//! placements are committed through the [`Control`] handle by a tokio task (in order, one tick
//! at a time), and only while this node is the leader; followers keep forecasting so a new
//! leader starts warm. The history store is written from the loop thread after each tick.

pub mod core;
pub mod fleet;
pub use shardline_forecast as forecast;
pub mod history;
pub mod hook;
pub mod insight;
pub mod placement;
pub mod reactive;
pub use shardline_forecast::profile;
pub mod sample;
pub mod sizing;
pub mod tick;

use std::{
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{select, Receiver};
use tracing::{info, warn};

pub use self::core::{Core, Placement, TickOutput};
use self::{forecast::SelectorConfig, sizing::SizingConfig};
use crate::{
    agent::AgentReport,
    config::control::{ControlConfig, Controller, Period},
    control::history::History,
    control::insight::Insights,
    state::{Command, Control, SessionRef},
    telemetry::{SessionLabels, SessionRow, Telemetry},
};

/// What the `[control]` section means to each stage (a trait because the section's type lives
/// in the `shardline-config` leaf crate, which knows no stage).
pub trait StageConfigs {
    /// The shard decision's knobs.
    fn sizing(&self) -> SizingConfig;
    /// The per-session forecaster's knobs.
    fn selector(&self) -> SelectorConfig;
    /// The history tiers.
    fn tiers(&self) -> Vec<history::Tier>;
}

impl StageConfigs for ControlConfig {
    fn sizing(&self) -> SizingConfig {
        SizingConfig {
            rule: match self.controller {
                Controller::Predictive => sizing::Rule::Predictive,
                Controller::Reactive => sizing::Rule::Reactive(reactive::HpaConfig::default()),
            },
            per_shard_capacity: self.per_shard_capacity,
            per_shard_bytes: self.per_shard_bytes.unwrap_or(f64::INFINITY),
            headroom: self.headroom,
            hysteresis: self.hysteresis,
            min_dwell: Duration::from_secs_f64(self.min_dwell_secs.max(0.0)),
            scale_in_delay: Duration::from_secs_f64(self.scale_in_delay_secs.max(0.0)),
            lookahead: (self.scale_in_lookahead_secs.max(0.0) / self.tick().as_secs_f64()).ceil()
                as usize,
        }
    }

    fn selector(&self) -> SelectorConfig {
        SelectorConfig {
            horizon: self.horizon,
            // `auto` starts without a season; the loop's detection sets one per session.
            period: match self.period {
                Period::Auto => 0,
                Period::Fixed(p) => p,
            },
            ..SelectorConfig::default()
        }
    }

    fn tiers(&self) -> Vec<history::Tier> {
        history::downsample::tiers(&self.history_tiers)
    }
}

/// One tick's loads, from the sampler.
#[derive(Debug, Clone)]
pub struct TickInput {
    /// When the counters were read.
    pub at: Instant,
    /// Packets per second per session since the previous reading.
    pub rates: Vec<(SessionRef, f64)>,
    /// Bytes per second of each session in `rates`, in the same order (empty: not measured).
    pub bytes: Vec<f64>,
}

/// Everything the loop thread talks to.
pub struct LoopHandles {
    /// Where placements are committed.
    pub control: Arc<dyn Control>,
    /// The runtime the commits (and hook calls) run on.
    pub runtime: tokio::runtime::Handle,
    /// Per-session views for the API.
    pub insights: Arc<Insights>,
    /// Metric families.
    pub telemetry: Arc<Telemetry>,
    /// The history store, if configured.
    pub history: Option<History>,
}

/// Unix time in ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts the loop thread; it ends when the samples channel closes.
pub fn spawn(
    config: ControlConfig,
    mut handles: LoopHandles,
    samples: Receiver<TickInput>,
    reports: Receiver<AgentReport>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shardline-control".into())
        .spawn(move || {
            pin(config.core);
            let mut core = Core::new(&config);
            let start = Instant::now();
            if let Some(history) = &handles.history {
                warm(&mut core, history, handles.control.as_ref(), start);
            }
            // The API reads the loop's memory in place: insights are a view, not a copy.
            let core = Arc::new(Mutex::new(core));
            handles.insights.attach(core.clone());
            let lock = || core.lock().unwrap_or_else(|e| e.into_inner());
            let hook_timeout = Duration::from_secs(60);
            let hook_client = crate::http::Client::new();
            let (commits, mut queue) = tokio::sync::mpsc::unbounded_channel::<Vec<Placement>>();
            let control = handles.control.clone();
            handles.runtime.spawn(async move {
                // One tick's placements travel as one log entry.
                while let Some(batch) = queue.recv().await {
                    let commands = batch.iter().map(|p| p.command.clone()).collect();
                    match control.write(Command::batch(commands)).await {
                        Ok(r) => {
                            for (p, each) in batch.iter().zip(&r.each) {
                                if let Err(e) = each {
                                    warn!("placement rejected ({}): {e}", p.reason);
                                }
                            }
                        }
                        Err(e) => warn!("{} placements not committed: {e}", batch.len()),
                    }
                }
            });
            loop {
                select! {
                    recv(reports) -> r => match r {
                        Ok(r) => lock().report(r),
                        Err(_) => return,
                    },
                    recv(samples) -> s => {
                        let Ok(input) = s else { return };
                        let at_ms = unix_ms();
                        let state = handles.control.local();
                        let out = {
                            let mut core = lock();
                            let began = Instant::now();
                            for ((session, packets), bytes) in input.rates.iter().zip(&input.bytes) {
                                core.observe_bytes(session, *packets, *bytes);
                            }
                            let out = core.tick(input.at, at_ms, start, &input.rates, &state);
                            handles.telemetry.tick_seconds.observe(began.elapsed().as_secs_f64());
                            publish(&core, &handles);
                            out
                        };
                        // Not under the lock: an API call reading insights may hold the
                        // runtime's only worker.
                        let leader = handles.runtime.block_on(handles.control.status()).role == "leader";
                        for change in &out.periods {
                            info!("{change}");
                        }
                        if leader && !out.placements.is_empty() {
                            for p in &out.placements {
                                info!("{}", p.reason);
                            }
                            let _ = commits.send(out.placements);
                        }
                        if let (true, Some(shortfall), Some(hook)) = (leader, out.shortfall, config.hook.clone()) {
                            warn!(shortfall = shortfall.shortfall, demand = shortfall.demand, capacity = shortfall.capacity,
                                "healthy backends will not carry the forecast load within {} s; calling the autoscale hook", shortfall.lead_secs);
                            let client = hook_client.clone();
                            handles.runtime.spawn(async move {
                                match crate::control::hook::fire(&client, &hook, &shortfall, hook_timeout).await {
                                    Ok(()) => info!("autoscale hook done"),
                                    Err(e) => warn!("autoscale hook failed: {e}"),
                                }
                            });
                        }
                        if let Some(history) = &mut handles.history {
                            if let Err(e) = history.record(at_ms, &input.rates) {
                                warn!("recording history: {e}");
                            }
                        }
                    }
                }
            }
        })
}

/// Pins the calling thread to `core` (default: the last one), so the loop's cache stays warm
/// and the tokio workers do not preempt it.
fn pin(core: Option<usize>) {
    let Some(ids) = core_affinity::get_core_ids() else {
        return;
    };
    let wanted = core.unwrap_or(ids.len().saturating_sub(1));
    match ids.into_iter().find(|c| c.id == wanted) {
        Some(id) if core_affinity::set_for_current(id) => {
            info!(core = wanted, "control loop pinned")
        }
        _ => warn!(
            core = wanted,
            "cannot pin the control loop to this core; running unpinned"
        ),
    }
}

fn warm(core: &mut Core, history: &History, control: &dyn Control, now: Instant) {
    match history.load(0) {
        Ok(series) => {
            let state = control.local();
            for (session, points) in &series {
                core.warm(session, points, &state, now);
            }
            info!(
                sessions = series.len(),
                "forecasters warmed from the history"
            );
        }
        Err(e) => warn!("reading the history: {e}; starting cold"),
    }
}

/// The per-session metric families from this tick's insights (the API's insights read the
/// loop's memory in place: nothing to publish for them).
fn publish(core: &Core, handles: &LoopHandles) {
    let mut rows = Vec::new();
    for (session, shards, rate, error) in core.tick_rows() {
        rows.push(SessionRow {
            labels: SessionLabels {
                service: session.service.to_string(),
                session: session.session.to_string(),
            },
            rate,
            shards,
            error,
        });
    }
    // Bounded: the top K sessions by load and one aggregate (`[api] metrics_top_sessions`).
    handles.telemetry.publish_sessions(rows);
}
