//! The loop's pure core: one tick turns session loads, agent reports and the control state into
//! placement commands (with their reasons), an optional hook call and per-session insights.
//! No threads, no I/O, time passed in. [`season`]: the period detection it runs on each
//! session's history (`period = "auto"`); `fleet`: the backends' loads as placement sees them
//! and the fleet-wide shortfall the autoscale hook is told of; `repair`: re-sharding placed
//! sessions that lost a backend or hold fewer shards than decided; [`classes`]: class priors
//! learned from the class's sessions; `place`: a session's new shard set and the command that
//! writes it; `insights`: each session's recorded samples, error and events.

mod backend_set;
pub mod classes;
mod fleet;
mod insights;
mod place;
mod repair;
pub mod season;
mod unplaced;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    agent::AgentReport,
    control::forecast::{Selector, SelectorConfig},
    control::hook::Shortfall,
    control::insight::{ReshardEvent, Sample, HISTORY_SAMPLES},
    control::placement::{BackendLoad, Ranked},
    control::sizing::SizingConfig,
    control::tick::{tick_with, SessionState, ShardChange},
    state::{Command, ControlState, SessionRef},
};
use rustc_hash::FxHashMap;
use season::{PeriodChange, Schedule, Seasons};

use crate::config::control::{ClassPrior, ControlConfig};
use crate::control::StageConfigs;

/// Reshard events kept per session.
const EVENTS_KEPT: usize = 64;
/// How long a placement this loop wrote may take to show in the state before it is retried.
const PENDING_FOR: Duration = Duration::from_secs(5);

/// A placement command and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The command (`Place`).
    pub command: Command,
    /// Why, for logs and insights.
    pub reason: String,
}

/// What one tick produced.
#[derive(Debug, Default)]
pub struct TickOutput {
    /// Placements to commit, in order.
    pub placements: Vec<Placement>,
    /// A hook call, if the fleet falls short.
    pub shortfall: Option<Shortfall>,
    /// Season lengths the period detection changed.
    pub periods: Vec<PeriodChange>,
}

#[derive(Debug, Default, Clone)]
struct Extra {
    /// When the session last had traffic (a positive rate), or was first heard of.
    active: Option<Instant>,
    rate: f64,
    error: f64,
    history: VecDeque<Sample>,
    events: Vec<ReshardEvent>,
    /// When `history` is next searched for a period.
    schedule: Schedule,
    /// The session's class when the loop first heard of it.
    class: Option<Arc<str>>,
}

impl Extra {
    /// Appends a sample with the forecast and bound `selector` holds after it (dropping the
    /// oldest past [`HISTORY_SAMPLES`]) and counts it towards the next period search.
    fn record(&mut self, at_ms: u64, actual: f64, selector: &Selector) {
        if self.history.len() >= HISTORY_SAMPLES {
            self.history.pop_front();
        }
        self.history.push_back(Sample {
            at_ms,
            actual,
            forecast: selector.forecast(),
            upper: selector.upper(),
        });
        self.schedule.record();
    }
}

/// The control loop's memory.
pub struct Core {
    decide: SizingConfig,
    selector: SelectorConfig,
    classes: BTreeMap<String, ClassPrior>,
    /// Each class's level, learned from its sessions' samples.
    learned: classes::ClassLevels,
    tick_len: Duration,
    /// Idle time after which a session leaves the loop (`None`: never).
    forget_after: Option<Duration>,
    hook_lead: Option<(Duration, Duration)>,
    index: FxHashMap<SessionRef, usize>,
    refs: Vec<SessionRef>,
    states: Vec<SessionState>,
    samples: Vec<f64>,
    extras: Vec<Extra>,
    reports: BTreeMap<u32, AgentReport>,
    pending: FxHashMap<SessionRef, (Vec<u32>, Instant)>,
    fleet: Option<Selector>,
    last_hook: Option<Instant>,
    decisions: Vec<ShardChange>,
    chosen: Vec<u32>,
    /// Backends passing their health checks this tick (saturated ones included: they keep
    /// what they hold, they only get nothing new).
    alive: backend_set::BackendSet,
    seasons: Seasons,
    /// Load committed this tick per (service position in the state, backend): what bounds a
    /// service's new shards on a backend whose agent reports a capacity for that service.
    service_committed: FxHashMap<(usize, u32), f64>,
    /// Per backend id (ids are below `MAX_BACKENDS`), the forecast packets and bytes of the
    /// shards it holds (scratch of [`Core::backend_loads`], kept so a tick allocates nothing
    /// for it).
    committed: Vec<(f64, f64)>,
    /// The backends a grow may pick from (scratch of `grow_or_shrink`).
    candidates: Vec<BackendLoad>,
    /// This tick's loads ranked for placement, built on the first grow that can use it.
    ranked: Ranked,
    /// Whether `ranked` is still to be built from this tick's loads.
    ranked_stale: bool,
    /// Whether some agent reports a capacity per service (then a grow ranks its service's
    /// view of each backend, not the fleet's `ranked`).
    per_service_reports: bool,
    /// Per known session (by index), whether the state places it, as of this tick's
    /// [`Core::backend_loads`].
    placed: Vec<bool>,
    /// The placed sessions whose applied set needs a repair (a member down or out of its
    /// pool, or fewer members than decided), in the state's order, as of this tick's
    /// [`Core::backend_loads`].
    broken: Vec<SessionRef>,
    /// The unplaced tables of an earlier tick, while the state still builds the same ones.
    unplaced: unplaced::UnplacedCache,
    /// The index [`Core::session`] last found or made (`usize::MAX`: none yet): the next
    /// session asked for is tried after it before hashing.
    last_found: usize,
    /// The positions this tick's forgetting removed sessions at, in order: a loop following
    /// this one ([`Core::tick_following`]) removes the same.
    forgotten: Vec<usize>,
}

impl Core {
    /// A core configured by `[control]`.
    pub fn new(config: &ControlConfig) -> Self {
        let tick_len = config.tick();
        let hook_lead = config.hook.as_ref().map(|h| {
            (
                Duration::from_secs_f64(h.lead_secs),
                Duration::from_secs_f64(h.cooldown_secs),
            )
        });
        let fleet = hook_lead.map(|(lead, _)| {
            let steps = (lead.as_secs_f64() / tick_len.as_secs_f64())
                .ceil()
                .max(1.0) as usize;
            Selector::new(SelectorConfig {
                horizon: steps,
                ..config.selector()
            })
        });
        Self {
            decide: config.sizing(),
            selector: config.selector(),
            classes: config.classes.clone(),
            learned: classes::ClassLevels::default(),
            tick_len,
            forget_after: (config.forget_after_secs > 0.0)
                .then(|| Duration::from_secs_f64(config.forget_after_secs)),
            hook_lead,
            index: FxHashMap::default(),
            refs: Vec::new(),
            states: Vec::new(),
            samples: Vec::new(),
            extras: Vec::new(),
            reports: BTreeMap::new(),
            pending: FxHashMap::default(),
            fleet,
            last_hook: None,
            decisions: Vec::new(),
            chosen: Vec::new(),
            alive: backend_set::BackendSet::default(),
            seasons: Seasons::new(config.period),
            service_committed: FxHashMap::default(),
            committed: Vec::new(),
            candidates: Vec::new(),
            ranked: Ranked::default(),
            ranked_stale: true,
            per_service_reports: false,
            placed: Vec::new(),
            broken: Vec::new(),
            unplaced: unplaced::UnplacedCache::default(),
            last_found: usize::MAX,
            forgotten: Vec::new(),
        }
    }

    /// Replaces the rule that decides shard counts (the replay's baselines use
    /// [`crate::control::sizing::Rule::Given`]).
    pub fn set_rule(&mut self, rule: crate::control::sizing::Rule) {
        self.decide.rule = rule;
    }

    /// Takes a backend's latest report.
    pub fn report(&mut self, report: AgentReport) {
        self.reports.insert(report.backend, report);
    }

    /// Warms a session's forecaster with past loads, `(Unix ms, load)` oldest first (a
    /// restart reading its history); they join its recent history, where the period
    /// detection looks.
    pub fn warm(
        &mut self,
        session: &SessionRef,
        points: &[(u64, f64)],
        state: &ControlState,
        now: Instant,
    ) {
        let i = self.session(session, state, now);
        for &(at_ms, actual) in points.iter().filter(|p| p.1.is_finite()) {
            self.states[i].warm(actual);
            self.extras[i].record(at_ms, actual, self.states[i].selector());
        }
    }

    /// Gives a session the shard count it takes at the next tick under
    /// [`crate::control::sizing::Rule::Given`] (the replay's static and oracle baselines).
    pub fn give(&mut self, session: &SessionRef, shards: u8, state: &ControlState, now: Instant) {
        let i = self.session(session, state, now);
        self.states[i].give(shards);
    }

    /// Takes a known session's measured packets and bytes per second of this tick into its
    /// mean packet size, which turns its packet forecast into bytes when `per_shard_bytes`
    /// is set (call before [`Core::tick`]; a session the loop does not know yet is skipped).
    pub fn observe_bytes(&mut self, session: &SessionRef, packets: f64, bytes: f64) {
        if let Some(&i) = self.index.get(session) {
            self.states[i].observe_bytes(packets, bytes);
        }
    }

    /// Number of sessions known.
    pub fn sessions(&self) -> usize {
        self.refs.len()
    }

    /// `session`'s index, if the loop knows it: the index after `after` is tried before hashing
    /// (`usize::MAX`: index 0), since callers mostly name the sessions in the order the loop
    /// learned them (a tick's rates, the replay's given counts, the state's placed sessions).
    fn find_after(&self, session: &SessionRef, after: usize) -> Option<usize> {
        let next = after.wrapping_add(1);
        if self.refs.get(next) == Some(session) {
            return Some(next);
        }
        self.index.get(session).copied()
    }

    fn session(&mut self, session: &SessionRef, state: &ControlState, now: Instant) -> usize {
        if let Some(i) = self.find_after(session, self.last_found) {
            self.last_found = i;
            return i;
        }
        let entry = state.sessions.get(session);
        let class = entry.and_then(|e| e.meta.class.as_deref());
        let prior = class.and_then(|c| self.classes.get(c)).copied();
        let learned = class.and_then(|c| self.learned.level(c));
        // What the class's sessions carried stands in for the first sample; the configured
        // rate only until the class has history.
        let level = learned.or(prior.map(|p| p.rate)).filter(|r| *r > 0.0);
        let placed = entry.map(|e| e.backends.len()).unwrap_or(0) as u8;
        let shards = if placed > 0 {
            placed
        } else {
            // As wide as the class's typical session needs, at least as configured.
            let configured = prior.map_or(1, |p| p.shards);
            learned.map_or(configured, |l| configured.max(self.decide.shards_for(l)))
        };
        let mut s = SessionState::new(self.selector, shards, now);
        if let Some(level) = level {
            s.warm(level);
        }
        let class = class.map(Arc::from);
        let i = self.refs.len();
        self.last_found = i;
        self.index.insert(session.clone(), i);
        self.refs.push(session.clone());
        self.states.push(s);
        self.samples.push(f64::NAN);
        self.extras.push(Extra {
            // Idle time counts from when the loop first heard of the session.
            active: Some(now),
            class,
            ..Extra::default()
        });
        i
    }

    /// Drops the sessions without traffic for `forget_after` (and no placement of this loop
    /// still in flight), so memory follows the live sessions, not every session ever seen.
    /// A forgotten session's placement stays in the state; traffic brings it back, warmed by
    /// nothing but its class prior and its placed shard count.
    fn forget_idle(&mut self, now: Instant) {
        self.forgotten.clear();
        let Some(after) = self.forget_after else {
            return;
        };
        let mut i = 0;
        while i < self.refs.len() {
            let idle = self.extras[i]
                .active
                .is_some_and(|t| now.saturating_duration_since(t) >= after);
            if !idle || self.pending.contains_key(&self.refs[i]) {
                i += 1;
                continue;
            }
            self.forget_at(i);
            self.forgotten.push(i);
        }
    }

    /// Drops the session at position `i` (the last one takes its place).
    fn forget_at(&mut self, i: usize) {
        let gone = self.refs.swap_remove(i);
        self.index.remove(&gone);
        self.states.swap_remove(i);
        self.samples.swap_remove(i);
        self.extras.swap_remove(i);
        if let Some(moved) = self.refs.get(i) {
            self.index.insert(moved.clone(), i);
        }
    }

    /// One tick at `now` (`at_ms` is the same instant in Unix ms, `start` the loop's start for
    /// messages): `rates` are this tick's loads, `state` the control state as applied.
    pub fn tick(
        &mut self,
        now: Instant,
        at_ms: u64,
        start: Instant,
        rates: &[(SessionRef, f64)],
        state: &ControlState,
    ) -> TickOutput {
        self.tick_with(None, now, at_ms, start, rates, state)
    }

    /// [`Core::tick`] for a loop that decides by another rule on `leader`'s forecasts:
    /// `leader` has just ticked at the same instant on the same `rates`, and has been fed
    /// exactly what this loop was since both began (the same sessions, rates and warm-ups, in
    /// the same order), so its forecasters are the ones this loop's own would be. Ticks this
    /// loop ran on its own before `leader`'s first (the replay's static and oracle are put in
    /// force before the first tick) are the exception: from the first followed tick on, only
    /// `leader`'s forecasters are read. This loop then runs none of its own: it forgets the
    /// sessions `leader` forgot, records no insights and searches no session's period (its
    /// forecasters are `leader`'s); it keeps its own shard counts, placements, reports,
    /// events and fleet forecaster (whose period it searches as usual). The replay's three
    /// baselines follow the predictive loop, so a day of 100,000 sessions forecasts each
    /// session once a tick, not once per controller.
    ///
    /// A follower deciding by the predictive rule would see a season `leader` found this tick
    /// one tick early (its decision comes after `leader`'s period search), so it is refused.
    ///
    /// # Panics
    /// If this loop decides by the predictive rule, or its sessions are not `leader`'s.
    pub fn tick_following(
        &mut self,
        leader: &Core,
        now: Instant,
        at_ms: u64,
        start: Instant,
        rates: &[(SessionRef, f64)],
        state: &ControlState,
    ) -> TickOutput {
        assert!(
            !matches!(self.decide.rule, crate::control::sizing::Rule::Predictive),
            "a loop following another's forecasts decides by another rule"
        );
        self.tick_with(Some(leader), now, at_ms, start, rates, state)
    }

    fn tick_with(
        &mut self,
        leader: Option<&Core>,
        now: Instant,
        at_ms: u64,
        start: Instant,
        rates: &[(SessionRef, f64)],
        state: &ControlState,
    ) -> TickOutput {
        let mut out = TickOutput::default();
        self.samples.fill(f64::NAN);
        for (session, rate) in rates {
            let i = self.session(session, state, now);
            self.samples[i] = *rate;
            if let Some(class) = &self.extras[i].class {
                self.learned.observe(class, *rate);
            }
            if *rate > 0.0 {
                self.extras[i].active = Some(now);
            }
        }
        match leader {
            None => self.forget_idle(now),
            Some(leader) => {
                self.forgotten.clear();
                for &i in &leader.forgotten {
                    self.forget_at(i);
                }
                assert!(
                    self.refs.len() == leader.refs.len() && self.refs.last() == leader.refs.last(),
                    "a following loop holds the sessions its leader holds"
                );
                debug_assert!(self.refs == leader.refs, "the sessions in the same order");
            }
        }
        let forecasts = leader.map(|l| l.states.as_slice());
        self.decisions.clear();
        self.decisions.extend(tick_with(
            &mut self.states,
            forecasts,
            &self.samples,
            &self.decide,
            now,
        ));
        if leader.is_none() {
            self.record_insights(at_ms);
            self.detect_periods(&mut out.periods);
        } else {
            self.detect_fleet_period(&mut out.periods);
        }
        self.alive.clear();
        self.alive.extend(
            state
                .backends
                .iter()
                .filter(|(_, b)| b.healthy)
                .map(|(id, _)| *id),
        );
        let mut loads = self.backend_loads(state, forecasts);
        let t = now.saturating_duration_since(start).as_secs_f64();
        let horizon = self.tick_len.as_secs_f64() * self.selector.horizon as f64;
        let decisions = std::mem::take(&mut self.decisions);
        // Kept from an earlier tick, or built on the first scale-out of an unplaced session
        // this tick, if any.
        let mut unplaced_tables = self.unplaced.take(state);
        for d in &decisions {
            let session = self.refs[d.session].clone();
            if d.to <= 1 && self.current(&session, state, now).is_empty() {
                continue; // One shard: the default table serves it.
            }
            let (current, unplaced) =
                self.current_or_home(&session, state, now, &mut unplaced_tables);
            let set = self.grow_or_shrink(
                &session,
                state,
                &current,
                d.to as usize,
                (d.upper, d.bytes),
                &mut loads,
            );
            // One backend is no better than the default table or the home: wait for room.
            if set == current || set.len() < 2 && unplaced {
                continue;
            }
            let mut reason = format!(
                "session {session} {} → {} shards at t={t:.0}s, forecast peak {:.0} pps at t+{horizon:.0}s ({} pps per shard, {:.0}% headroom)",
                current.len().max(1),
                set.len(),
                d.upper,
                self.decide.per_shard_capacity,
                self.decide.headroom * 100.0
            );
            let bytes_per_shard = self.decide.per_shard_bytes;
            if d.bytes / bytes_per_shard > d.upper / self.decide.per_shard_capacity {
                reason += &format!(
                    "; sized by its bytes: {:.0} B/s ({bytes_per_shard} B/s per shard)",
                    d.bytes
                );
            }
            self.emit(
                &mut out,
                d.session,
                session,
                current.len(),
                set,
                reason,
                at_ms,
                now,
            );
        }
        self.decisions = decisions;
        self.repair(
            &mut out,
            state,
            &mut loads,
            &mut unplaced_tables,
            forecasts,
            at_ms,
            now,
        );
        out.shortfall = self.fleet_check(now, at_ms, rates, &loads, state, forecasts);
        if let Some(tables) = unplaced_tables {
            self.unplaced.keep(state, tables);
        }
        out
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
