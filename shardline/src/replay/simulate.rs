//! One controller over a whole replay: the fleet's backends and the sessions' placements in
//! virtual time, driven by the daemon's [`Core`]. The first [`Setup::warmup`] ticks run like
//! any other (every controller decides, placements take effect, backends arrive) but are not
//! scored: a running daemon has seen its sessions before, and a replay that scored its first
//! tick would score every controller on a session none of them has seen.

use std::{collections::VecDeque, time::Instant};

use super::{
    fleet::{Owners, Tally},
    moved::KeyOwners,
    Kind, Setup, MAX_REPLAY_BACKENDS, SERVICE,
};
use crate::{
    agent::AgentReport,
    config::{control::Controller, BackendConfig, Config},
    control::{sizing::Rule, Core},
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

/// One controller over the whole run: its totals over the ticks after the warm-up and, if
/// asked, its per-tick capacity and overload flags (every tick, the warm-up included).
pub(super) fn simulate(
    setup: &Setup<'_>,
    kind: Kind,
    timeline: bool,
) -> (Tally, Vec<f64>, Vec<bool>) {
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
    // Who owns each placed session's sample keys, kept through the warm-up too.
    let mut keys = KeyOwners::new(sessions);
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
                    let i = session.session as usize;
                    keys.reshard(i, owners(&placed[i], homes[i]), backends);
                    placed[i].clone_from(backends);
                }
            }
        }
    }
    for t in 0..setup.ticks {
        let now = t0 + setup.tick * t as u32;
        // The warm-up is history: what happens in it is not the controller's score.
        let scored = t >= setup.warmup;
        // What was decided last tick is in force now.
        for command in pending.drain(..) {
            let Command::Place { session, backends } = &command else {
                continue;
            };
            let i = session.session as usize;
            if state.apply(&command).is_err() || placed[i] == *backends {
                continue;
            }
            let moved = keys.reshard(i, owners(&placed[i], homes[i]), backends);
            if scored {
                tally.reshards += 1;
                tally.keys_moved += moved;
            }
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
        // During the warm-up a scratch tally only tells whether a backend overloaded.
        let mut unscored = Tally::default();
        let counted = if scored { &mut tally } else { &mut unscored };
        let overloaded_before = counted.overload_seconds;
        counted.tick(secs, &loads, &capacities);
        counted.shard_seconds += shards as f64 * secs;
        let overloaded = counted.overload_seconds > overloaded_before;
        if overloaded && trace {
            let over = loads.iter().zip(&capacities).filter(|(l, c)| l > c).count();
            eprintln!(
                "{} t={t}: {over} backends overloaded, demand {:.0} on {shards} shards",
                kind.name(),
                rates.iter().map(|r| r.1).sum::<f64>()
            );
        }
        if timeline {
            held.push(shards as f64 * setup.per_shard);
            flags.push(overloaded);
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
