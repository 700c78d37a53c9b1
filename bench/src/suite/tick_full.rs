//! `control.tick_1m_full_ms`: one control-loop tick over 1,000,000 sessions as the daemon runs
//! it, not only the pure stages: the counter read from the BPF maps
//! (`DataplaneMaps::session_counters`), the rates (`Sampler`), naming the sessions, the loop's
//! `Core::tick`, and the apply of what it decided (the placements applied to the control state,
//! then written into the maps by the daemon's applier: the incremental path).
//!
//! The counters are real map entries: a private balancer whose `SESSION_STATS` is sized to hold
//! every session (the production size holds 262,144; a larger fleet's counters are the ones
//! the LRU keeps), written from userspace between ticks (not timed) as the dataplane would
//! count the traffic. Time is simulated: each tick is one second after the last. Raft is not in
//! this figure (`raft.reshard_10k_ms` is the decision's way through the cluster).

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use serde_json::{json, Value};
use shardline::{
    config::{control::ControlConfig, Config},
    control::{core::Core, sample::Sampler},
    daemon::applier,
    maps::DataplaneMaps,
    private::PrivateDataplane,
    reshard::{Resharder, DEFAULT_HANDOFF_WINDOW},
    snapshot::Snapshot,
    state::{Command, ControlState, SessionRef},
    telemetry::Telemetry,
};
use shardline_common::maps::{Counter, SessionKey};
use tracing::dispatcher::with_default;

use super::{median, round, BenchError};

/// Ticks before the measured ones: the sampler needs two readings, the forecasters a few.
const WARM: usize = 3;

/// Of every this many sessions, one turns hot (2,500 packets/s, three shards' worth) at the
/// first measured tick: the decisions the apply writes.
const HOT_EVERY: u64 = 100;

/// One header-mode service over 8 backends.
const CONFIG: &str = "interface = \"lo\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n";

fn config() -> Result<Config, BenchError> {
    let mut text = CONFIG.to_owned();
    for id in 1..=8 {
        text += &format!(
            "[[backends]]\nid = {id}\nipv4 = \"10.0.1.{id}\"\nmac = \"02:00:00:00:01:{id:02x}\"\n"
        );
    }
    Config::parse(&text, "tick bench").map_err(|e| BenchError::Check(format!("tick config: {e}")))
}

/// Packets per second of session `i` at tick `t`.
fn rate(i: u64, t: usize) -> u64 {
    if t >= WARM && i.is_multiple_of(HOT_EVERY) {
        2_500
    } else {
        100 + i % 500
    }
}

/// Times of one tick's stages, ms.
#[derive(Default)]
struct Stages {
    read: Vec<f64>,
    rates: Vec<f64>,
    name: Vec<f64>,
    tick: Vec<f64>,
    apply: Vec<f64>,
    total: Vec<f64>,
    placements: Vec<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `ticks` measured ticks over `sessions` sessions.
pub fn run(sessions: u64, ticks: usize) -> Result<Value, BenchError> {
    let config = config()?;
    let cpus =
        aya::util::nr_cpus().map_err(|(call, e)| BenchError::Check(format!("{call}: {e}")))?;
    // Twice the sessions: the LRU's per-CPU free lists must not evict any of them.
    let room = u32::try_from(2 * sessions)
        .map_err(|_| BenchError::Check(format!("{sessions} sessions do not fit a map")))?;
    let lb = PrivateDataplane::sized(
        "tickfull",
        Snapshot::from_config(&config),
        &[("SESSION_STATS", room)],
    )
    .map_err(|e| BenchError::Check(format!("loading the tick bench's balancer: {e}")))?;
    let mut stats: PerCpuHashMap<MapData, SessionKey, Counter> =
        super::open_pinned(&lb.pin_dir, "SESSION_STATS")?;
    let maps = Mutex::new(DataplaneMaps::open(&lb.pin_dir)?);
    let mut state = ControlState::from_config(&config);
    // The daemon's first write of the configured tables, so later ones take the delta path.
    let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
    let telemetry = Telemetry::default();
    // The applier's log lines (one per placed session), formatted and thrown away.
    let sink = super::log_sink();
    with_default(&sink, || {
        applier::write(&maps, &mut resharder, &state, None, &telemetry)
            .map_err(|e| BenchError::Check(format!("writing the tables: {e:#}")))
    })?;
    let control = ControlConfig::default();
    let mut core = Core::new(&control);
    let mut sampler = Sampler::new();
    let mut rates = Vec::new();
    let mut counters = vec![0u64; sessions as usize];
    let t0 = Instant::now();
    let mut stages = Stages::default();
    let started = Instant::now();
    for t in 0..WARM + ticks {
        // The traffic of the last second, counted as the dataplane would (not timed).
        for (i, c) in counters.iter_mut().enumerate() {
            *c += rate(i as u64, t);
            let mut per_cpu = vec![Counter::default(); cpus];
            per_cpu[0] = Counter {
                packets: *c,
                bytes: *c * 64,
            };
            let key = SessionKey {
                service: 1,
                _pad: 0,
                session: i as u64,
            };
            let values = PerCpuValues::try_from(per_cpu)
                .map_err(|e| BenchError::Check(format!("per-CPU values: {e}")))?;
            stats
                .insert(key, values, 0)
                .map_err(|source| BenchError::Map {
                    what: "counting into SESSION_STATS".into(),
                    source,
                })?;
        }
        let now = t0 + Duration::from_secs(t as u64 + 1);
        let began = Instant::now();
        let read = maps.lock().expect("maps lock").session_counters()?;
        let after_read = Instant::now();
        sampler.rates(&read, Duration::from_secs(1), &mut rates);
        let after_rates = Instant::now();
        // As the daemon's sampler thread names them.
        let (named, bytes): (Vec<(SessionRef, f64)>, Vec<f64>) = rates
            .iter()
            .filter_map(|(k, rate)| {
                let service = state.services.get((k.service as usize).checked_sub(1)?)?;
                Some((
                    (
                        SessionRef {
                            service: service.name.as_str().into(),
                            session: k.session,
                        },
                        rate.packets,
                    ),
                    rate.bytes,
                ))
            })
            .unzip();
        // As the loop thread feeds them before its tick.
        for ((session, packets), bytes) in named.iter().zip(&bytes) {
            core.observe_bytes(session, *packets, *bytes);
        }
        let after_name = Instant::now();
        let at_ms = shardline::control::unix_ms();
        let out = core.tick(now, at_ms, started, &named, &state);
        let after_tick = Instant::now();
        let placements = out.placements.len();
        if placements > 0 {
            let commands = out.placements.into_iter().map(|p| p.command).collect();
            let mut next = state.clone();
            next.apply(&Command::batch(commands))
                .map_err(|e| BenchError::Check(format!("applying the tick's placements: {e}")))?;
            with_default(&sink, || {
                applier::write(&maps, &mut resharder, &next, Some(&state), &telemetry)
            })
            .map_err(|e| BenchError::Check(format!("writing the tick's placements: {e:#}")))?;
            state = next;
        }
        let done = Instant::now();
        println!(
            "bench:   tick {t}: {} counters read in {:.0} ms, tick {:.0} ms, {placements} placements applied in {:.0} ms, {:.0} ms in all",
            read.len(),
            ms(after_read - began),
            ms(after_tick - after_name),
            ms(done - after_tick),
            ms(done - began)
        );
        if t < WARM {
            continue;
        }
        if (read.len() as u64) < sessions {
            return Err(BenchError::Check(format!(
                "tick {t} read {} sessions' counters, not {sessions}: it would time a smaller tick",
                read.len()
            )));
        }
        stages.read.push(ms(after_read - began));
        stages.rates.push(ms(after_rates - after_read));
        stages.name.push(ms(after_name - after_rates));
        stages.tick.push(ms(after_tick - after_name));
        stages.apply.push(ms(done - after_tick));
        stages.total.push(ms(done - began));
        stages.placements.push(placements);
    }
    let placed = resharder.placed().len();
    let mut by_stage = BTreeMap::new();
    for (name, values) in [
        ("read_counters", &mut stages.read),
        ("rates", &mut stages.rates),
        ("name_sessions", &mut stages.name),
        ("core_tick", &mut stages.tick),
        ("apply", &mut stages.apply),
    ] {
        by_stage.insert(name, round(median(values), 1));
    }
    Ok(json!({
        "tick_1m_full_ms": round(median(&mut stages.total), 1),
        "tick_1m_full": {
            "sessions": sessions,
            "ticks": ticks,
            "median_ms_by_stage": by_stage,
            "total_ms_by_tick": stages.total.iter().map(|v| round(*v, 1)).collect::<Vec<_>>(),
            "placements_by_tick": stages.placements,
            "sessions_placed_at_end": placed,
            "session_stats_entries": room,
            "setup": "one core; counters in a private balancer's SESSION_STATS (per-CPU LRU hash, sized to hold every session; written from userspace between ticks), read by DataplaneMaps::session_counters; Sampler, naming, Core::tick with the default [control]; the placements applied to the control state and written by the daemon's applier (daemon::applier::write, the incremental path) into the same maps. One session in 100 turns hot at the first measured tick. No raft (see raft.reshard_10k_ms).",
        },
    }))
}
