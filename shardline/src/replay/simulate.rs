//! The controllers over a whole replay in lockstep, the baselines on the predictive loop's
//! forecasts: each one's fleet backends and sessions' placements in virtual time, driven by
//! the daemon's [`Core`]. The first [`Setup::warmup`] ticks run like
//! any other (every controller decides, placements take effect, backends arrive) but are not
//! scored: a running daemon has seen its sessions before, and a replay that scored its first
//! tick would score every controller on a session none of them has seen.

use std::{collections::VecDeque, time::Instant};

use super::{
    fleet::{Owners, Tally},
    moved::KeyOwners,
    sets::ShardSets,
    Kind, Setup, MAX_REPLAY_BACKENDS, SERVICE,
};
use crate::{
    agent::AgentReport,
    config::{control::Controller, BackendConfig, Config},
    control::{sizing::Rule, Core, TickOutput},
    state::{Command, ControlState, SessionRef},
};

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
        nexthop: Default::default(),
    };
    state
        .apply(&Command::UpsertBackend(config))
        .expect("replay backends are valid");
}

/// Every controller over the whole run in lockstep, in [`Kind::ALL`] order, the baselines
/// deciding on the predictive loop's forecasts ([`Core::tick_following`]: all are fed the same
/// demand, so one forecaster per session serves all four): each one's totals over the ticks
/// after the warm-up and, if asked, its per-tick capacity and overload flags (every tick, the
/// warm-up included).
pub(super) fn simulate(setup: &Setup<'_>, timeline: bool) -> [(Tally, Vec<f64>, Vec<bool>); 4] {
    let t0 = Instant::now();
    let [leader, followers @ ..] = Kind::ALL;
    let mut lead = Run::new(setup, leader, timeline, t0);
    let mut follow = followers.map(|kind| Run::new(setup, kind, timeline, t0));
    for run in &mut follow {
        run.start();
    }
    for t in 0..setup.ticks {
        lead.step(t, None);
        for run in &mut follow {
            run.step(t, Some(&lead.core));
        }
    }
    let [a, b, c] = follow.map(Run::finish);
    [lead.finish(), a, b, c]
}

/// One controller's run: the fleet, its placements and its totals so far.
struct Run<'s, 'a> {
    setup: &'s Setup<'a>,
    kind: Kind,
    core: Core,
    state: ControlState,
    next_id: u32,
    capacities: Vec<f64>,
    loads: Vec<f64>,
    refs: Vec<SessionRef>,
    rates: Vec<(SessionRef, f64)>,
    /// Each session's home while unplaced, redone when backends arrive.
    homes: Vec<Option<u32>>,
    placed: ShardSets,
    /// Who owns each placed session's sample keys, kept through the warm-up too.
    keys: KeyOwners,
    pending: Vec<Command>,
    arrivals: VecDeque<(usize, u32)>,
    tally: Tally,
    saturated: Vec<bool>,
    timeline: bool,
    held: Vec<f64>,
    flags: Vec<bool>,
    trace: bool,
    t0: Instant,
}

impl<'s, 'a> Run<'s, 'a> {
    fn new(setup: &'s Setup<'a>, kind: Kind, timeline: bool, t0: Instant) -> Self {
        let mut control = setup.control.clone();
        control.controller = match kind {
            Kind::Reactive => Controller::Reactive,
            _ => Controller::Predictive,
        };
        let mut core = Core::new(&control);
        if matches!(kind, Kind::Static | Kind::Oracle) {
            core.set_rule(Rule::Given);
        }
        let state = fleet_state(setup.backends, setup.backend_capacity);
        let sessions = setup.demands.len();
        let refs: Vec<SessionRef> = (0..sessions)
            .map(|i| SessionRef {
                service: SERVICE.into(),
                session: i as u64,
            })
            .collect();
        let rates = refs.iter().map(|r| (r.clone(), 0.0)).collect();
        let homes = homes_in(&state, &refs);
        Self {
            setup,
            kind,
            core,
            state,
            next_id: setup.backends + 1,
            capacities: vec![setup.backend_capacity; setup.backends as usize],
            loads: vec![0.0; setup.backends as usize],
            refs,
            rates,
            homes,
            placed: ShardSets::new(sessions),
            keys: KeyOwners::new(sessions),
            pending: Vec::new(),
            arrivals: VecDeque::new(),
            tally: Tally::default(),
            saturated: Vec::new(),
            timeline,
            held: Vec::new(),
            flags: Vec::new(),
            trace: std::env::var_os("SHARDLINE_REPLAY_TRACE").is_some(),
            t0,
        }
    }

    /// The core's tick, on its own forecasts or `leader`'s.
    fn tick(&mut self, leader: Option<&Core>, now: Instant, at_ms: u64) -> TickOutput {
        let (core, rates, state, t0) = (&mut self.core, &self.rates, &self.state, self.t0);
        match leader {
            None => core.tick(now, at_ms, t0, rates, state),
            Some(leader) => core.tick_following(leader, now, at_ms, t0, rates, state),
        }
    }

    /// Static and the oracle are told the shard counts their rule gives.
    fn give(&mut self, t: usize, now: Instant) {
        let setup = self.setup;
        match self.kind {
            Kind::Static if t == 0 => {
                for (i, r) in self.refs.iter().enumerate() {
                    let peak = setup.demands[i].peak;
                    self.core.give(r, setup.shards_for(peak), &self.state, now);
                }
            }
            Kind::Oracle => {
                for (i, r) in self.refs.iter().enumerate() {
                    // The series ends where the run does: nothing is known past it.
                    let ahead = (t + 1..=t + setup.lead_ticks)
                        .filter(|&u| u < setup.ticks)
                        .map(|u| setup.demand(i, u))
                        .fold(setup.demand(i, t), f64::max);
                    self.core.give(r, setup.shards_for(ahead), &self.state, now);
                }
            }
            _ => {}
        }
    }

    /// Before the first tick: a fixed configuration, and perfect knowledge, are in force from
    /// the first tick (an unplaced session would put all its demand on its home before either
    /// could act). Decided on this run's own forecasters, fed the first demand: the leader it
    /// follows from the first tick on has none yet.
    fn start(&mut self) {
        if !matches!(self.kind, Kind::Static | Kind::Oracle) || self.setup.ticks == 0 {
            return;
        }
        for (i, rate) in self.rates.iter_mut().enumerate() {
            rate.1 = self.setup.demand(i, 0);
        }
        self.give(0, self.t0);
        for p in self.tick(None, self.t0, 0).placements {
            if let Command::Place { session, backends } = &p.command {
                if self.state.apply(&p.command).is_ok() {
                    let i = session.session as usize;
                    let from = owners(self.placed.get(i), self.homes[i]);
                    self.keys.reshard(i, from, backends);
                    self.placed.set(i, backends);
                }
            }
        }
    }

    /// Tick `t`: last tick's decisions take effect, backends arrive, the demand lands on the
    /// backends and is scored, the agents report, and the controller decides.
    fn step(&mut self, t: usize, leader: Option<&Core>) {
        let setup = self.setup;
        let now = self.t0 + setup.tick * t as u32;
        // The warm-up is history: what happens in it is not the controller's score.
        let scored = t >= setup.warmup;
        // What was decided last tick is in force now.
        for command in self.pending.drain(..) {
            let Command::Place { session, backends } = &command else {
                continue;
            };
            let i = session.session as usize;
            if self.state.apply(&command).is_err() || self.placed.get(i) == backends {
                continue;
            }
            let moved = self
                .keys
                .reshard(i, owners(self.placed.get(i), self.homes[i]), backends);
            if scored {
                self.tally.reshards += 1;
                self.tally.keys_moved += moved;
            }
            self.placed.set(i, backends);
        }
        while self.arrivals.front().is_some_and(|(at, _)| *at <= t) {
            let (_, count) = self.arrivals.pop_front().expect("just checked");
            for _ in 0..count {
                add_backend(&mut self.state, self.next_id, setup.backend_capacity);
                self.capacities.push(setup.backend_capacity);
                self.loads.push(0.0);
                self.next_id += 1;
            }
            self.homes = homes_in(&self.state, &self.refs);
        }
        // Demand onto the backends.
        self.loads.fill(0.0);
        let mut shards = 0usize;
        for (i, rate) in self.rates.iter_mut().enumerate() {
            let d = setup.demand(i, t);
            rate.1 = d;
            let set = self.placed.get(i);
            if set.is_empty() {
                // Unplaced: all of it on its home.
                shards += 1;
                if let Some(home) = self.homes[i] {
                    self.loads[home as usize - 1] += d;
                }
            } else {
                shards += set.len();
                let share = d / set.len() as f64;
                for id in set {
                    self.loads[*id as usize - 1] += share;
                }
            }
        }
        let secs = setup.tick.as_secs_f64();
        // During the warm-up a scratch tally only tells whether a backend overloaded.
        let mut unscored = Tally::default();
        let counted = if scored {
            &mut self.tally
        } else {
            &mut unscored
        };
        let overloaded_before = counted.overload_seconds;
        counted.tick(secs, &self.loads, &self.capacities);
        counted.shard_seconds += shards as f64 * secs;
        let overloaded = counted.overload_seconds > overloaded_before;
        if overloaded && self.trace {
            let over = self
                .loads
                .iter()
                .zip(&self.capacities)
                .filter(|(l, c)| l > c)
                .count();
            eprintln!(
                "{} t={t}: {over} backends overloaded, demand {:.0} on {shards} shards",
                self.kind.name(),
                self.rates.iter().map(|r| r.1).sum::<f64>()
            );
        }
        if self.timeline {
            self.held.push(shards as f64 * setup.per_shard);
            self.flags.push(overloaded);
        }
        // The agents report saturation (not their load: the placement then counts the
        // forecasts of the shards each backend holds, as a daemon whose applications report
        // no load does).
        // Only changes are sent: a report replaces the previous one.
        for (index, load) in self.loads.iter().enumerate() {
            let now_saturated = *load > self.capacities[index];
            if self.saturated.get(index) == Some(&now_saturated) {
                continue;
            }
            if index >= self.saturated.len() {
                self.saturated.resize(index + 1, false);
            }
            self.saturated[index] = now_saturated;
            self.core.report(AgentReport {
                backend: index as u32 + 1,
                saturated: now_saturated,
                ..AgentReport::default()
            });
        }
        self.give(t, now);
        let at_ms = (t as f64 * secs * 1000.0) as u64;
        let out = self.tick(leader, now, at_ms);
        if self.trace {
            for p in &out.placements {
                eprintln!("{} t={t}: {}", self.kind.name(), p.reason);
            }
        }
        self.pending
            .extend(out.placements.into_iter().map(|p| p.command));
        if let Some(short) = out.shortfall {
            let wanted = (short.shortfall / setup.backend_capacity).ceil().max(1.0) as u32;
            let room =
                MAX_REPLAY_BACKENDS.saturating_sub(self.next_id - 1 + queued(&self.arrivals));
            if room > 0 {
                self.arrivals
                    .push_back((t + setup.provision_ticks.max(1), wanted.min(room)));
            }
        }
    }

    fn finish(self) -> (Tally, Vec<f64>, Vec<bool>) {
        (self.tally, self.held, self.flags)
    }
}

/// Each session's home while unplaced under `state`'s tables.
fn homes_in(state: &ControlState, refs: &[SessionRef]) -> Vec<Option<u32>> {
    let tables = state.unplaced_tables();
    refs.iter().map(|r| state.home(&tables, r)).collect()
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
