//! Full BPF maps (issue 8): more placed sessions than SESSIONS holds, and more flows than FLOWS
//! holds. Nothing crashes, a session that does not fit routes by the default table (and the
//! replay agrees), the refusal is counted, and flows beyond capacity still route (the flow table
//! evicts its least recently used entries).
//!
//! The maps are created small (`PrivateDataplane::sized`) so that "full" takes a few hundred
//! entries instead of the production capacities (1,048,576 sessions, 262,144 flows per CPU):
//! the kernel's behaviour at `max_entries` does not depend on the number.

use std::sync::Mutex;

use crate::support::{
    expect,
    frames::{FrameSpec, VIP4, WEB_PORT},
    require_root, Loaded, TEST_CONFIG,
};
use shardline::{
    config::Config,
    daemon::applier,
    maps::DataplaneMaps,
    private::PrivateDataplane,
    reshard::{Resharder, DEFAULT_HANDOFF_WINDOW},
    snapshot::Snapshot,
    state::{Command, ControlState, SessionRef},
    telemetry::Telemetry,
};
use shardline_common::{
    hash::maglev_slot,
    maps::{scheme, SessionKey},
    partition::shard_set,
    route::decide,
    verdict::Reason,
};

/// SESSIONS capacity in these tests.
const SESSIONS_CAP: u32 = 64;
/// FLOWS capacity (per CPU) in these tests.
const FLOWS_CAP: u32 = 128;
/// Sessions placed beyond the configuration's own, for service `kv` (id 1).
const EXTRA_SESSIONS: u64 = 100;

fn kv(session: u64) -> SessionKey {
    SessionKey {
        service: 1,
        _pad: 0,
        session,
    }
}

/// TEST_CONFIG's tables plus [`EXTRA_SESSIONS`] placed `kv` sessions, more than SESSIONS holds.
fn overfull_snapshot() -> Snapshot {
    let config = Config::parse(TEST_CONFIG, "test config").expect("test config is valid");
    let mut snap = Snapshot::from_config(&config);
    for s in 0..EXTRA_SESSIONS {
        let backends = [1 + (s % 3) as u32, 1 + ((s + 1) % 3) as u32];
        snap.sessions
            .insert(kv(1_000 + s), shard_set(&backends, scheme::HASH, 1));
    }
    assert!(snap.sessions.len() > SESSIONS_CAP as usize);
    snap
}

fn sized(snapshot: Snapshot) -> Loaded {
    require_root();
    Loaded::from(
        PrivateDataplane::sized(
            "mapsfull",
            snapshot,
            &[("SESSIONS", SESSIONS_CAP), ("FLOWS", FLOWS_CAP)],
        )
        .unwrap_or_else(|e| panic!("loading the program: {e:?}")),
    )
}

#[test]
fn sessions_beyond_capacity_stay_on_the_default_table() {
    let full = overfull_snapshot();
    let mut lb = sized(full.clone());
    let in_map = lb.maps.read_snapshot().expect("read maps").sessions;
    assert_eq!(
        in_map.len(),
        SESSIONS_CAP as usize,
        "SESSIONS filled to capacity"
    );
    assert_eq!(
        in_map.len(),
        lb.tables.sessions.len(),
        "the replay's tables are what the maps hold"
    );
    let refused: Vec<SessionKey> = full
        .sessions
        .keys()
        .filter(|k| !in_map.contains_key(k))
        .copied()
        .collect();
    assert_eq!(refused.len(), full.sessions.len() - SESSIONS_CAP as usize);

    // Every session still routes, placed or not, and kernel and replay agree on where.
    for (i, key) in full.sessions.keys().filter(|k| k.service == 1).enumerate() {
        let request = 0x5eed_0000 + i as u64;
        let frame = FrameSpec::kv4(key.session, request).build();
        let (_, d) = expect(
            &mut lb,
            &format!("kv session {}", key.session),
            &frame,
            Reason::Forwarded,
        );
        if refused.contains(key) {
            // By its session id alone: all its keys on its home.
            let slot = maglev_slot(key.session, 0) as usize;
            assert_eq!(
                d.backend_id, lb.tables.maglev[slot],
                "a refused session routes to its home in the default table"
            );
        }
    }

    // Applying the same tables again (the daemon does on every commit) refuses the same number
    // and fails nothing else.
    let again = lb.maps.apply(&full).expect("apply to a full map");
    assert_eq!(again.placements_refused.len(), refused.len());

    // Room made (placements dropped): the next apply places sessions refused before.
    let mut smaller = full.clone();
    let dropped: Vec<SessionKey> = in_map
        .keys()
        .filter(|k| k.session >= 1_000)
        .take(10)
        .copied()
        .collect();
    for k in &dropped {
        smaller.sessions.remove(k);
    }
    // The removals come after the inserts (nothing routes to a missing entry meanwhile); the
    // room they make is used in the same apply.
    let after = lb.maps.apply(&smaller).expect("apply after making room");
    assert_eq!(
        after.placements_refused.len(),
        refused.len() - dropped.len(),
        "freed slots are filled by sessions refused before"
    );
    let placed = lb.maps.read_snapshot().expect("read maps").sessions;
    assert_eq!(placed.len(), SESSIONS_CAP as usize);
    assert!(refused.iter().any(|k| placed.contains_key(k)));
}

#[test]
fn the_daemon_counts_refused_placements_and_keeps_applying() {
    require_root();
    let config = Config::parse(TEST_CONFIG, "test config").expect("test config is valid");
    let mut state = ControlState::from_config(&config);
    for s in 0..EXTRA_SESSIONS {
        state
            .apply(&Command::Place {
                session: SessionRef {
                    service: "kv".into(),
                    session: 1_000 + s,
                },
                backends: vec![1, 2],
            })
            .expect("place");
    }
    let lb = sized(Snapshot::from_config(&config));
    let maps = Mutex::new(DataplaneMaps::open(&lb.pin_dir).expect("open maps"));
    // The daemon's swap stage, reading the tables in force from the maps at its first write.
    let mut resharder = Resharder::new(DEFAULT_HANDOFF_WINDOW);
    let telemetry = Telemetry::default();
    let want = state.tables().sessions.len() as u64 - u64::from(SESSIONS_CAP);
    applier::write(&maps, &mut resharder, &state, None, &telemetry)
        .expect("a full map is not an error");
    assert_eq!(telemetry.placements_refused.get(), want);
    applier::write(&maps, &mut resharder, &state, None, &telemetry).expect("nor the second time");
    assert_eq!(telemetry.placements_refused.get(), 2 * want);
    // Every applied state is a swap, and `shardline_swap_seconds` counts each one.
    let mut registry = prometheus_client::registry::Registry::default();
    telemetry.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("shardline_swap_seconds_count "))
        .unwrap_or_else(|| panic!("no shardline_swap_seconds_count in:\n{text}"));
    assert_eq!(count.trim(), "2", "two writes, two swaps observed:\n{text}");
}

#[test]
fn flows_beyond_capacity_still_route() {
    // BPF_PROG_TEST_RUN runs on the calling CPU and the flow table is per CPU: stay on one, so
    // every flow below lands in the same per-CPU table.
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to CPU 0");

    let mut lb = sized(overfull_snapshot());
    let flows = 4 * FLOWS_CAP;
    for i in 0..flows {
        let frame = FrameSpec::tcp4(VIP4, 20_000 + i as u16, WEB_PORT).build();
        expect(&mut lb, &format!("flow {i}"), &frame, Reason::Forwarded);
    }
    let held = lb.maps.flow_count().expect("count flows");
    assert!(
        held > 0 && held <= FLOWS_CAP as usize,
        "the LRU flow table holds at most its capacity: {held}"
    );
    // The earliest flows were evicted; they route afresh by the tables, as the replay says.
    let first = FrameSpec::tcp4(VIP4, 20_000, WEB_PORT).build();
    let (_, d) = expect(&mut lb, "evicted flow", &first, Reason::Forwarded);
    assert_eq!(d.backend_id, decide(&first[..], &lb.tables).backend_id);
}
