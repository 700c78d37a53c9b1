use std::time::{Duration, Instant};

use super::*;
use crate::{
    agent::{AgentReport, AppLoad},
    config::{control::Period, Config},
    state::ControlState,
};

fn state(backends: u32) -> ControlState {
    let mut text = String::from(
        "interface = \"eth0\"\n[encap]\nsource_v4 = \"10.0.0.1\"\n[[services]]\nname = \"kv\"\nvip = \"10.0.0.100\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\n",
    );
    for id in 1..=backends {
        text += &format!("[[backends]]\nid = {id}\nipv4 = \"10.0.1.{id}\"\nmac = \"02:00:00:00:00:0{id}\"\ncapacity = 1000.0\n");
    }
    ControlState::from_config(&Config::parse(&text, "test").unwrap())
}

fn config() -> ControlConfig {
    toml::from_str(
        "per_shard_capacity = 400.0\nmin_dwell_secs = 2.0\nscale_in_delay_secs = 30.0\nhorizon = 3\n[hook]\ncommand = [\"true\"]\nlead_secs = 10.0\ncooldown_secs = 60.0\n",
    )
    .unwrap()
}

fn kv(n: u64) -> SessionRef {
    SessionRef {
        service: "kv".into(),
        session: n,
    }
}

/// Applies the placements as the control would.
fn commit(state: &mut ControlState, out: &TickOutput) {
    for p in &out.placements {
        state.apply(&p.command).unwrap();
    }
}

#[test]
fn a_ramp_is_scaled_out_before_its_shards_fill() {
    let mut st = state(4);
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    let mut reasons = Vec::new();
    for step in 0..60u64 {
        let now = t0 + Duration::from_secs(step);
        let rate = 20.0 * step as f64; // ramps to 1180 pps
        let out = core.tick(now, step * 1000, t0, &[(kv(1), rate)], &st);
        commit(&mut st, &out);
        reasons.extend(out.placements.iter().map(|p| p.reason.clone()));
        // The measured load never exceeds what the placed shards carry.
        let shards = st
            .sessions
            .get(&kv(1))
            .map_or(1, |e| e.backends.len().max(1));
        assert!(
            rate <= shards as f64 * 400.0,
            "step {step}: {rate} pps on {shards} shards"
        );
    }
    assert!(st.sessions[&kv(1)].backends.len() >= 3, "{reasons:?}");
    assert!(
        reasons[0].contains("session kv/1 1 → 2 shards at t="),
        "{}",
        reasons[0]
    );
    assert!(reasons[0].contains("forecast peak"), "{}", reasons[0]);
    let insight: Vec<_> = core.insights().collect();
    assert_eq!(insight[0].session, kv(1));
    assert_eq!(insight[0].history.len(), 60);
    assert!(!insight[0].events.is_empty());
}

#[test]
fn sessions_leave_an_unhealthy_backend_and_saturated_ones_get_nothing() {
    let mut st = state(4);
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    st.apply(&Command::Place {
        session: kv(7),
        backends: vec![1, 2],
    })
    .unwrap();
    core.report(AgentReport {
        backend: 3,
        saturated: true,
        app: Some(AppLoad {
            load: 1000.0,
            capacity: 1000.0,
            saturated: true,
            ..AppLoad::default()
        }),
        ..AgentReport::default()
    });
    st.apply(&Command::SetHealth {
        id: 2,
        healthy: false,
    })
    .unwrap();
    let out = core.tick(t0, 0, t0, &[(kv(7), 300.0)], &st);
    assert_eq!(out.placements.len(), 1, "{:?}", out.placements);
    let Command::Place { backends, .. } = &out.placements[0].command else {
        panic!()
    };
    assert_eq!(backends, &vec![1, 4]);
    assert!(out.placements[0].reason.contains("unhealthy backends [2]"));
    commit(&mut st, &out);
    let out = core.tick(
        t0 + Duration::from_secs(1),
        1000,
        t0,
        &[(kv(7), 300.0)],
        &st,
    );
    assert!(out.placements.is_empty(), "{:?}", out.placements);
    // A member that saturates keeps what it holds (moving keys would not add capacity).
    core.report(AgentReport {
        backend: 1,
        saturated: true,
        ..AgentReport::default()
    });
    let out = core.tick(
        t0 + Duration::from_secs(2),
        2000,
        t0,
        &[(kv(7), 300.0)],
        &st,
    );
    assert!(out.placements.is_empty(), "{:?}", out.placements);
}

#[test]
fn no_single_backend_placement_when_the_fleet_is_full() {
    let mut st = state(3);
    let mut core = Core::new(&config());
    for id in 1..=2 {
        core.report(AgentReport {
            backend: id,
            saturated: true,
            ..AgentReport::default()
        });
    }
    // A session whose home is backend 3, the only one with room.
    let s = homed_on(&st, 3);
    let t0 = Instant::now();
    core.tick(t0, 0, t0, &[(kv(s), 600.0)], &st);
    // Past the first dwell: the session wants two shards.
    let out = core.tick(
        t0 + Duration::from_secs(3),
        3000,
        t0,
        &[(kv(s), 600.0)],
        &st,
    );
    assert_eq!(core.insights().next().unwrap().shards, 2);
    // Two shards wanted, only backend 3 can take one: its home keeps serving it.
    assert!(out.placements.is_empty(), "{:?}", out.placements);
    core.report(AgentReport {
        backend: 2,
        ..AgentReport::default()
    });
    let out = core.tick(
        t0 + Duration::from_secs(4),
        4000,
        t0,
        &[(kv(s), 600.0)],
        &st,
    );
    commit(&mut st, &out);
    assert_eq!(st.sessions[&kv(s)].backends, [3, 2], "{:?}", out.placements);
}

/// The first session number whose home (its unplaced keys' backend) is `backend`.
fn homed_on(st: &ControlState, backend: u32) -> u64 {
    let tables = st.unplaced_tables();
    (1..)
        .find(|&s| st.home(&tables, &kv(s)) == Some(backend))
        .expect("some session lives on every backend")
}

#[test]
fn an_unplaced_session_widens_from_its_home_and_keeps_the_keys_there() {
    let mut st = state(4);
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    for home in 1..=4 {
        let s = homed_on(&st, home);
        let before = st.unplaced_tables();
        let mut out = TickOutput::default();
        for step in 0..4u64 {
            let now = t0 + Duration::from_secs(10 * u64::from(home) + step);
            out = core.tick(now, step * 1000, t0, &[(kv(s), 600.0)], &st);
            if !out.placements.is_empty() {
                break;
            }
        }
        assert_eq!(out.placements.len(), 1, "session {s}: {:?}", out.placements);
        commit(&mut st, &out);
        let set = &st.sessions[&kv(s)].backends;
        assert_eq!((set.len(), set[0]), (2, home), "session {s} on {set:?}");
        assert!(out.placements[0].reason.contains("1 → 2 shards"));
        // Every key was on the home; about half stay there, none goes anywhere but the set.
        let after = st.tables();
        let key = shardline_common::maps::SessionKey {
            service: 1,
            _pad: 0,
            session: s,
        };
        let service = *before.services.values().find(|v| v.id == 1).unwrap();
        let mut stayed = 0;
        for k in 0..1000u64 {
            let was = shardline_common::route::unplaced_backend(&before, &service, s, k);
            assert_eq!(was, home, "key {k} of unplaced session {s}");
            let owner = shardline_common::route::pick_shard(&after.sessions[&key], k);
            assert!(
                owner.is_some_and(|o| set.contains(&o)),
                "key {k}: {owner:?}"
            );
            stayed += usize::from(owner == Some(home));
        }
        assert!(
            (350..650).contains(&stayed),
            "{stayed} of 1000 keys stayed home"
        );
    }
}

#[test]
fn the_hook_fires_once_per_cooldown_when_the_fleet_falls_short() {
    let mut st = state(2);
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    let mut calls = Vec::new();
    for step in 0..40u64 {
        let now = t0 + Duration::from_secs(step);
        let rate = 60.0 * step as f64; // to 2340 pps; 2 backends carry 2000
        let out = core.tick(now, step * 1000, t0, &[(kv(1), rate)], &st);
        commit(&mut st, &out);
        if let Some(s) = out.shortfall {
            calls.push((step, s));
        }
    }
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (step, s) = &calls[0];
    // Demand 1667 pps × 1.2 passes 2000 pps around step 28: the 10 s lead calls earlier.
    assert!(*step < 28, "called at step {step}");
    assert!(s.shortfall > 0.0 && s.capacity == 2000.0);
    assert_eq!(s.healthy_backends, vec![1, 2]);
}

#[test]
fn a_class_prior_starts_a_session_wide() {
    let mut c = config();
    c.classes.insert(
        "bulk".into(),
        ClassPrior {
            rate: 1000.0,
            shards: 4,
        },
    );
    let mut st = state(4);
    st.apply(&Command::SetMeta {
        session: kv(3),
        meta: crate::state::SessionMeta {
            class: Some("bulk".into()),
            ..Default::default()
        },
    })
    .unwrap();
    let mut core = Core::new(&c);
    let t0 = Instant::now();
    core.tick(t0, 0, t0, &[(kv(3), 900.0)], &st);
    assert_eq!(core.insights().next().unwrap().shards, 4);
}

/// Issue 20 §3: a class's sessions teach it a level; a new session of the class starts from
/// it (no `[control.classes]` entry needed), a session of no class from its own first sample.
#[test]
fn a_new_session_starts_from_the_level_its_class_learned() {
    let mut st = state(4);
    for n in [1, 2, 3] {
        st.apply(&Command::SetMeta {
            session: kv(n),
            meta: crate::state::SessionMeta {
                class: Some("bulk".into()),
                ..Default::default()
            },
        })
        .unwrap();
    }
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    for step in 0..20u64 {
        let now = t0 + Duration::from_secs(step);
        core.tick(now, step, t0, &[(kv(1), 2000.0), (kv(2), 1800.0)], &st);
    }
    let now = t0 + Duration::from_secs(20);
    let rates = [
        (kv(1), 2000.0),
        (kv(2), 1800.0),
        (kv(3), 100.0),
        (kv(4), 100.0),
    ];
    let out = core.tick(now, 20, t0, &rates, &st);
    assert!(
        out.placements.iter().any(|p| p.reason.contains("kv/3")),
        "placed wide at once: {:?}",
        out.placements
    );
    let shards = |n: u64| {
        core.insights()
            .find(|i| i.session == kv(n))
            .map(|i| i.shards)
            .unwrap()
    };
    assert_eq!(shards(4), 1, "no class: one shard");
    // ~1900 pps at 400 a shard with 20 % headroom: 6, clamped to what the fleet can take.
    assert!(
        shards(3) >= 4,
        "the class's ~1900 pps started it wide: {}",
        shards(3)
    );
}

#[test]
fn a_pool_short_of_its_sessions_load_names_its_service_and_keeps_its_shards_inside() {
    // Four backends of 1,000 pps: the fleet has room, kv's pool (backends 1 and 2) has not.
    let mut st = state(4);
    st.apply(&Command::LeavePool {
        service: "kv".into(),
        id: 1,
    })
    .expect_err("kv has no pool yet");
    for id in [1, 2] {
        st.apply(&Command::JoinPool {
            service: "kv".into(),
            id,
            weight: None,
        })
        .unwrap();
    }
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    let mut calls = Vec::new();
    for step in 0..40u64 {
        let now = t0 + Duration::from_secs(step);
        let rate = 60.0 * step as f64; // to 2340 pps: 4,000 fleet-wide, 2,000 in the pool
        let out = core.tick(now, step * 1000, t0, &[(kv(1), rate)], &st);
        commit(&mut st, &out);
        if let Some(set) = st.sessions.get(&kv(1)) {
            assert!(
                set.backends.iter().all(|id| [1, 2].contains(id)),
                "step {step}: kv placed outside its pool on {:?}",
                set.backends
            );
        }
        if let Some(s) = out.shortfall {
            calls.push((step, s));
        }
    }
    assert_eq!(calls.len(), 1, "{calls:?}");
    let s = &calls[0].1;
    assert_eq!(s.services.len(), 1, "{s:?}");
    assert_eq!(s.services[0].service, "kv");
    assert_eq!(s.services[0].capacity, 2000.0);
    assert!(s.services[0].demand > 2000.0 && s.shortfall > 0.0, "{s:?}");
    assert!(s.capacity >= 4000.0, "the fleet as a whole has room: {s:?}");
}

/// A report from backend `id` whose application carries `capacity` of `kv` (its host 1,000).
fn kv_capacity(id: u32, capacity: f64) -> AgentReport {
    AgentReport {
        backend: id,
        app: Some(AppLoad {
            capacity: 1000.0,
            services: [("kv".to_owned(), capacity)].into(),
            ..AppLoad::default()
        }),
        ..AgentReport::default()
    }
}

#[test]
fn a_backend_with_little_capacity_for_the_service_gets_none_of_its_shards() {
    let mut st = state(4);
    let mut core = Core::new(&config());
    let t0 = Instant::now();
    st.apply(&Command::Place {
        session: kv(7),
        backends: vec![1, 2],
    })
    .unwrap();
    // Backend 3 ranks first on host capacity (ties by id) but carries 50 pps of kv at most.
    core.report(kv_capacity(3, 50.0));
    st.apply(&Command::SetHealth {
        id: 2,
        healthy: false,
    })
    .unwrap();
    let out = core.tick(t0, 0, t0, &[(kv(7), 300.0)], &st);
    let Command::Place { backends, .. } = &out.placements[0].command else {
        panic!("{:?}", out.placements)
    };
    assert_eq!(backends, &vec![1, 4]);
}

#[test]
fn a_pool_counts_its_members_capacity_for_the_service() {
    let mut st = state(4);
    for id in [1, 2] {
        st.apply(&Command::JoinPool {
            service: "kv".into(),
            id,
            weight: None,
        })
        .unwrap();
    }
    let mut core = Core::new(&config());
    core.report(kv_capacity(1, 300.0));
    core.report(kv_capacity(3, 10.0)); // outside the pool: not counted
    let t0 = Instant::now();
    let mut calls = Vec::new();
    for step in 0..40u64 {
        let now = t0 + Duration::from_secs(step);
        let out = core.tick(now, step * 1000, t0, &[(kv(1), 40.0 * step as f64)], &st);
        commit(&mut st, &out);
        calls.extend(out.shortfall);
    }
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].services[0].service, "kv");
    assert_eq!(calls[0].services[0].capacity, 1300.0, "{:?}", calls[0]);
}

#[test]
fn idle_sessions_leave_the_loop_and_come_back_with_their_placement() {
    let mut st = state(4);
    let cfg: ControlConfig = toml::from_str(
        "per_shard_capacity = 400.0\nmin_dwell_secs = 2.0\nscale_in_delay_secs = 3600.0\nforget_after_secs = 30.0\n",
    )
    .unwrap();
    let mut core = Core::new(&cfg);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    // kv/1 grows to be placed, kv/2..=kv/100 send a little once, kv/101 keeps sending.
    for step in 0..20u64 {
        let mut rates = vec![(kv(1), 100.0 * step as f64), (kv(101), 10.0)];
        if step == 0 {
            rates.extend((2..=100).map(|n| (kv(n), 5.0)));
        }
        let out = core.tick(at(step), step * 1000, t0, &rates, &st);
        commit(&mut st, &out);
    }
    assert_eq!(core.sessions(), 101);
    let placed = st.sessions[&kv(1)].backends.clone();
    assert!(placed.len() >= 2, "kv/1 placed on {placed:?}");
    // Silence from everyone but kv/101 (kv/1 reported at zero, the others not at all).
    let mut alive = Vec::new();
    for step in 20..=49u64 {
        let rates = [(kv(101), 10.0), (kv(1), 0.0)];
        let out = core.tick(at(step), step * 1000, t0, &rates, &st);
        commit(&mut st, &out);
        alive.push((step, core.sessions()));
    }
    // kv/2..=100 were last active at 0 s and go at 30 s; kv/1, last active at 19 s, at 49 s.
    let expected: Vec<(u64, usize)> = (20..=49u64)
        .map(|s| {
            (
                s,
                if s < 30 {
                    101
                } else if s < 49 {
                    2
                } else {
                    1
                },
            )
        })
        .collect();
    assert_eq!(alive, expected);
    assert_eq!(core.insights().next().map(|i| i.session), Some(kv(101)));
    // The placement stays, and traffic brings the session back at its placed width.
    assert_eq!(st.sessions[&kv(1)].backends, placed);
    let out = core.tick(at(51), 51_000, t0, &[(kv(1), 500.0), (kv(101), 10.0)], &st);
    commit(&mut st, &out);
    assert_eq!(core.sessions(), 2);
    let back = core.insights().find(|i| i.session == kv(1)).unwrap();
    assert_eq!(back.shards as usize, placed.len());
}

#[test]
fn forget_after_zero_keeps_every_session() {
    let st = state(2);
    let cfg: ControlConfig = toml::from_str("forget_after_secs = 0.0\n").unwrap();
    let mut core = Core::new(&cfg);
    let t0 = Instant::now();
    core.tick(t0, 0, t0, &[(kv(1), 5.0)], &st);
    let later = t0 + Duration::from_secs(86_400);
    core.tick(later, 86_400_000, t0, &[], &st);
    assert_eq!(core.sessions(), 1);
}

/// Deterministic noise in [0, 1) (SplitMix64).
fn noise(t: u64) -> f64 {
    let mut z = t
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Issue 20 §3: with no `period` configured, a session whose load repeats every 24 ticks gets
/// its seasonal models on (and the fleet's forecaster too); a session of noise does not; and a
/// fixed `period = 0` keeps them off.
#[test]
fn a_periodic_session_turns_the_seasonal_models_on_without_configuration() {
    let periodic = |t: u64| {
        let phase = std::f64::consts::TAU * t as f64 / 24.0;
        300.0 + 200.0 * phase.sin() + 20.0 * noise(t)
    };
    let flat = |t: u64| 200.0 + 60.0 * noise(t + 1_000_000);
    let run = |cfg: &ControlConfig, ticks: u64| {
        let mut st = state(4);
        let mut core = Core::new(cfg);
        let t0 = Instant::now();
        let mut changes = Vec::new();
        for t in 0..ticks {
            let rates = [(kv(1), periodic(t)), (kv(2), flat(t))];
            let out = core.tick(t0 + Duration::from_secs(t), t * 1000, t0, &rates, &st);
            commit(&mut st, &out);
            changes.extend(out.periods);
        }
        (core, changes)
    };
    assert_eq!(config().period, Period::Auto, "the default");
    let (core, changes) = run(&config(), 600);
    assert_eq!(core.period(&kv(1)), Some(24), "{changes:?}");
    assert_eq!(core.period(&kv(2)), Some(0), "{changes:?}");
    assert_eq!(core.fleet_period(), Some(24), "{changes:?}");
    let found = changes
        .iter()
        .find(|c| c.session == Some(kv(1)))
        .expect("a change for kv/1");
    // Not before a few seasons were seen (64 samples hold only 2.7 of them).
    assert!(found.samples >= 72, "{found:?}");
    assert!(found.to_string().contains("seasonal models on"), "{found}");
    // The selector uses them: the seasonal models carry most of the mix's weight.
    let weights = core.states[core.index[&kv(1)]].selector().weights();
    assert!(weights[1] + weights[4] > 0.5, "{weights:?}");

    let fixed: ControlConfig = toml::from_str("period = 0\n").unwrap();
    let (core, changes) = run(&fixed, 600);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(core.period(&kv(1)), Some(0));
}

/// Issue 20 §3: bandwidth counts. Two sessions at the same packet rate, one of 64-byte and one
/// of 1,400-byte packets: with `per_shard_bytes` the byte-heavy one is spread wider, and the
/// placement says why.
#[test]
fn a_byte_heavy_packet_light_session_is_placed_on_more_shards() {
    let mut st = state(4);
    let cfg: ControlConfig =
        toml::from_str("per_shard_capacity = 400.0\nper_shard_bytes = 125000.0\n").unwrap();
    let mut core = Core::new(&cfg);
    let t0 = Instant::now();
    let mut reasons = Vec::new();
    for t in 0..20u64 {
        for (session, size) in [(kv(1), 64.0), (kv(2), 1400.0)] {
            core.observe_bytes(&session, 200.0, 200.0 * size);
        }
        let rates = [(kv(1), 200.0), (kv(2), 200.0)];
        let out = core.tick(t0 + Duration::from_secs(t), t * 1000, t0, &rates, &st);
        commit(&mut st, &out);
        reasons.extend(out.placements.into_iter().map(|p| p.reason));
    }
    // 200 pps need one shard (0.6 with the headroom); 280 kB/s need three (2.7).
    assert!(st
        .sessions
        .get(&kv(1))
        .is_none_or(|e| e.backends.len() <= 1));
    assert_eq!(st.sessions[&kv(2)].backends.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("sized by its bytes: 280000 B/s"),
        "{reasons:?}"
    );
}

/// Bandwidth counts in the placement too: a backend whose agent reports its network nearly
/// full gets none of a byte-heavy session's shards, however much CPU it has free.
#[test]
fn a_backend_with_a_full_network_gets_no_byte_heavy_shard() {
    let mut st = state(4);
    let cfg: ControlConfig =
        toml::from_str("per_shard_capacity = 400.0\nper_shard_bytes = 125000.0\n").unwrap();
    let mut core = Core::new(&cfg);
    let network = |backend: u32, rx_bps: f64| AgentReport {
        backend,
        resources: crate::agent::Resources {
            rx_bps,
            net_capacity: 1.25e6,
            ..Default::default()
        },
        ..AgentReport::default()
    };
    // Backend 1 carries 1.2 MB/s of its 1.25: 50 kB/s free, less than one shard's 93 kB/s.
    core.report(network(1, 1.2e6));
    for id in 2..=4 {
        core.report(network(id, 0.0));
    }
    let t0 = Instant::now();
    for t in 0..5u64 {
        core.observe_bytes(&kv(2), 200.0, 200.0 * 1400.0);
        let out = core.tick(
            t0 + Duration::from_secs(t),
            t * 1000,
            t0,
            &[(kv(2), 200.0)],
            &st,
        );
        commit(&mut st, &out);
    }
    let mut set = st.sessions[&kv(2)].backends.clone();
    set.sort_unstable();
    assert_eq!(set, vec![2, 3, 4]);
}

/// The replay's lockstep: a reactive loop deciding on a predictive loop's forecasts
/// ([`Core::tick_following`]) writes, tick by tick, exactly what a reactive loop with its own
/// forecasters writes on the same rates: the forecasts it reads (the committed loads that pick
/// its backends, the hook's shortfall) are the ones its own would have made. Sessions come and
/// go idle (some forgotten, some back), and two backends are few enough for placements to
/// depend on the forecasts.
#[test]
fn a_loop_following_anothers_forecasts_decides_as_it_would_alone() {
    let text = |controller: &str| {
        format!(
            "controller = \"{controller}\"\nper_shard_capacity = 400.0\nmin_dwell_secs = 2.0\nscale_in_delay_secs = 10.0\nforget_after_secs = 6.0\nhorizon = 3\n[hook]\ncommand = [\"true\"]\nlead_secs = 10.0\ncooldown_secs = 20.0\n"
        )
    };
    let cfg = |controller: &str| -> ControlConfig { toml::from_str(&text(controller)).unwrap() };
    let mut leader = Core::new(&cfg("predictive"));
    let mut follower = Core::new(&cfg("reactive"));
    let mut alone = Core::new(&cfg("reactive"));
    let (mut lead_state, mut follow_state, mut alone_state) = (state(6), state(6), state(6));
    let t0 = Instant::now();
    let (mut placements, mut fewest) = (0, usize::MAX);
    for step in 0..240u64 {
        let now = t0 + Duration::from_secs(step);
        // Session n ramps and falls on its own phase; odd sessions fall silent (rate 0) for
        // 20 s of every 80, long enough to be forgotten; session 9 is only sometimes sent.
        let mut rates: Vec<(SessionRef, f64)> = (1..=8u64)
            .map(|n| {
                let phase = (step + 13 * n) % 80;
                let silent = n % 2 == 1 && phase >= 60;
                let rate = if silent {
                    0.0
                } else {
                    40.0 * phase as f64 * (1.0 + 0.3 * noise(step * 31 + n))
                };
                (kv(n), rate)
            })
            .collect();
        if step % 50 < 25 {
            rates.push((kv(9), 300.0 + 200.0 * noise(step)));
        }
        let lead = leader.tick(now, step * 1000, t0, &rates, &lead_state);
        commit(&mut lead_state, &lead);
        let follow = follower.tick_following(&leader, now, step * 1000, t0, &rates, &follow_state);
        let own = alone.tick(now, step * 1000, t0, &rates, &alone_state);
        assert_eq!(follow.placements, own.placements, "step {step}");
        assert_eq!(follow.shortfall, own.shortfall, "step {step}");
        assert_eq!(follower.sessions(), alone.sessions(), "step {step}");
        placements += own.placements.len();
        if step > 100 {
            fewest = fewest.min(follower.sessions());
        }
        commit(&mut follow_state, &follow);
        commit(&mut alone_state, &own);
    }
    assert!(
        placements > 10,
        "only {placements} placements: nothing was compared"
    );
    assert!(fewest < 9, "no session was ever forgotten");
    // It recorded no insights of its own: its leader's forecasters carry them.
    assert!(follower.summaries().next().is_none());
    assert!(leader.summaries().next().is_some());
}

#[test]
#[should_panic(expected = "decides by another rule")]
fn a_loop_deciding_by_the_predictive_rule_cannot_follow_another() {
    let st = state(2);
    let (mut leader, mut follower) = (Core::new(&config()), Core::new(&config()));
    let t0 = Instant::now();
    leader.tick(t0, 0, t0, &[(kv(1), 5.0)], &st);
    follower.tick_following(&leader, t0, 0, t0, &[(kv(1), 5.0)], &st);
}
