//! Per-session counters under `BPF_PROG_TEST_RUN`: a placed session counts in its own slot of
//! `SESSION_SLOT_STATS`, an unplaced one in the `SESSION_STATS` LRU, and a session's total
//! carries on, never going backwards, as it is placed, re-placed and unplaced.

use crate::support::{
    frames::{FrameSpec, VIP4, WEB_PORT},
    Loaded, TEST_CONFIG,
};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use shardline::maps::DataplaneMaps;
use shardline_common::{
    maps::{Counter, SessionKey, ShardSet, SlotCounter},
    route::decide,
    verdict::Action,
};

/// `kv`, the first service of the test configuration (header mode).
const KV: u32 = 1;

fn kv(session: u64) -> SessionKey {
    SessionKey {
        service: KV,
        _pad: 0,
        session,
    }
}

/// BPF_PROG_TEST_RUN runs on the calling CPU and the flow table is per CPU: stay on one.
fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to CPU 0");
}

fn shard_set(backends: &[u32]) -> ShardSet {
    let mut set = ShardSet {
        generation: 1,
        count: backends.len() as u32,
        ..Default::default()
    };
    set.backends[..backends.len()].copy_from_slice(backends);
    set
}

/// Sends `n` copies of `frame`, each of which must be forwarded.
fn send(lb: &mut Loaded, frame: &[u8], n: u64) {
    for _ in 0..n {
        assert_eq!(lb.run(frame).action, Action::Tx, "packet not forwarded");
    }
}

/// The session's packets as the daemon reads them (slot and LRU together).
fn packets(lb: &Loaded, key: &SessionKey) -> u64 {
    let counters = lb.maps.session_counters().expect("read session counters");
    counters.get(key).copied().unwrap_or_default().packets
}

/// The counters slot SESSIONS names for `key` (None: not placed).
fn slot_of(lb: &Loaded, key: &SessionKey) -> Option<u32> {
    let sessions: HashMap<MapData, SessionKey, ShardSet> =
        lb.open_map("SESSIONS").expect("open SESSIONS");
    sessions.get(key, 0).ok().map(|set| set.stats_slot)
}

/// Packets the LRU counters hold for `key`, summed over CPUs (0 without an entry).
fn lru_packets(lb: &Loaded, key: &SessionKey) -> u64 {
    let lru: PerCpuHashMap<MapData, SessionKey, Counter> =
        lb.open_map("SESSION_STATS").expect("open SESSION_STATS");
    lru.get(key, 0)
        .map(|per_cpu| per_cpu.iter().map(|c| c.packets).sum())
        .unwrap_or(0)
}

/// Slot `slot`'s per-CPU values.
fn slot_values(lb: &Loaded, slot: u32) -> Vec<SlotCounter> {
    let slots: PerCpuArray<MapData, SlotCounter> = lb
        .open_map("SESSION_SLOT_STATS")
        .expect("open SESSION_SLOT_STATS");
    slots.get(&slot, 0).expect("read slot").to_vec()
}

#[test]
fn a_placed_session_counts_in_its_slot_and_its_total_carries_on() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);

    // Session 42 is placed by the configuration: it has a slot and the LRU never sees it.
    let placed = kv(42);
    let slot = slot_of(&lb, &placed).expect("session 42 is placed");
    assert_ne!(slot, 0, "a placed session gets a counters slot");
    send(&mut lb, &FrameSpec::kv4(42, 1).build(), 5);
    assert_eq!(packets(&lb, &placed), 5);
    assert_eq!(
        lru_packets(&lb, &placed),
        0,
        "counted in the slot, not the LRU"
    );
    assert!(slot_values(&lb, slot).iter().all(|c| c.owner == placed));

    // Session 99 is not placed: the default table routes it and the LRU counts it.
    let key = kv(99);
    let frame = FrameSpec::kv4(99, 1).build();
    assert_eq!(slot_of(&lb, &key), None);
    send(&mut lb, &frame, 3);
    assert_eq!(packets(&lb, &key), 3);
    assert_eq!(lru_packets(&lb, &key), 3);

    // Placing it moves its count into a fresh slot; nothing is lost or counted twice.
    lb.maps
        .place_session(&key, &shard_set(&[2, 3]))
        .expect("place session 99");
    let own = slot_of(&lb, &key).expect("placed");
    assert!(
        own != 0 && own != slot,
        "its own slot: {own} (42 has {slot})"
    );
    assert_eq!(packets(&lb, &key), 3, "the LRU count moved into the slot");
    assert_eq!(lru_packets(&lb, &key), 0);
    send(&mut lb, &frame, 2);
    assert_eq!(packets(&lb, &key), 5);
    assert_eq!(
        lru_packets(&lb, &key),
        0,
        "placed packets count in the slot"
    );

    // Re-placing keeps the slot and the count.
    lb.maps
        .place_session(&key, &shard_set(&[1]))
        .expect("re-place session 99");
    assert_eq!(slot_of(&lb, &key), Some(own));
    send(&mut lb, &frame, 1);
    assert_eq!(packets(&lb, &key), 6);

    // Unplacing folds the slot back into the LRU and frees the slot.
    lb.maps.unplace_session(&key).expect("unplace session 99");
    assert_eq!(slot_of(&lb, &key), None);
    assert_eq!(
        packets(&lb, &key),
        6,
        "the slot's count moved back to the LRU"
    );
    assert!(slot_values(&lb, own)
        .iter()
        .all(|c| c.owner == SlotCounter::FREE && c.counter == Counter::default()));
    send(&mut lb, &frame, 1);
    assert_eq!(packets(&lb, &key), 7);

    // The other session never moved.
    assert_eq!(packets(&lb, &placed), 5);

    // A handle that assigns no slots (the CLI's) reads them through SESSIONS: same totals.
    let fresh = DataplaneMaps::open(&lb.pin_dir).expect("reopen the pins");
    assert_eq!(
        fresh.session_counters().expect("read through SESSIONS"),
        lb.maps.session_counters().expect("read the slots in use"),
    );
}

#[test]
fn a_flow_hit_counts_in_its_slot_only_while_the_session_owns_it() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let frame = FrameSpec::tcp4(VIP4, 41_000, WEB_PORT).build();
    let key = decide(frame.as_slice(), &lb.tables).session;

    lb.maps
        .place_session(&key, &shard_set(&[3]))
        .expect("place the flow's session");
    let slot = slot_of(&lb, &key).expect("placed");
    send(&mut lb, &frame, 4); // one miss that remembers the flow, then hits
    assert_eq!(packets(&lb, &key), 4);
    assert_eq!(lru_packets(&lb, &key), 0, "flow hits count in the slot");

    // Unplaced: the flow entry still names the slot, but the slot is free now, so the
    // dataplane falls back to the LRU instead of counting for a slot it does not own.
    lb.maps.unplace_session(&key).expect("unplace");
    send(&mut lb, &frame, 2);
    assert_eq!(packets(&lb, &key), 6);
    assert_eq!(lru_packets(&lb, &key), 6);

    // The allocator hands freed slots out last (FIFO), but once it has cycled the slot
    // belongs to another session: stand that in by writing the owner as the daemon does.
    let other = kv(1_000);
    let mut slots: PerCpuArray<MapData, SlotCounter> = lb
        .open_map("SESSION_SLOT_STATS")
        .expect("open SESSION_SLOT_STATS");
    let cpus = slot_values(&lb, slot).len();
    let owned = PerCpuValues::try_from(vec![
        SlotCounter {
            owner: other,
            counter: Counter::default(),
        };
        cpus
    ])
    .expect("per-CPU values");
    slots
        .set(slot, owned, 0)
        .expect("hand the slot to another session");
    send(&mut lb, &frame, 1);
    assert_eq!(packets(&lb, &key), 7);
    assert!(
        slot_values(&lb, slot)
            .iter()
            .all(|c| c.owner == other && c.counter == Counter::default()),
        "a stale flow entry never counts for another session"
    );
}

#[test]
fn a_restarted_daemon_does_not_hand_out_slots_that_are_in_use() {
    let lb = Loaded::new(TEST_CONFIG);
    let in_use: Vec<u32> = [kv(42)].iter().filter_map(|k| slot_of(&lb, k)).collect();
    assert!(!in_use.is_empty());

    // A second handle on the same pins, as a restarted daemon opens them.
    let mut again = DataplaneMaps::open(&lb.pin_dir).expect("reopen the pins");
    for session in 500..510 {
        again
            .place_session(&kv(session), &shard_set(&[1, 2]))
            .expect("place");
    }
    let mut given: Vec<u32> = (500..510)
        .map(|s| slot_of(&lb, &kv(s)).expect("placed"))
        .collect();
    assert!(
        given.iter().all(|s| *s != 0 && !in_use.contains(s)),
        "{given:?} vs {in_use:?}"
    );
    given.sort_unstable();
    given.dedup();
    assert_eq!(given.len(), 10, "every session its own slot");
}

#[test]
fn a_batch_of_re_placements_keeps_every_slot_without_reading_each_one() {
    let lb = Loaded::new(TEST_CONFIG);
    let mut first = DataplaneMaps::open(&lb.pin_dir).expect("open the pins");
    for session in 600..605 {
        first
            .place_session(&kv(session), &shard_set(&[1]))
            .expect("place");
    }
    let held = slots_of(&lb, 600..605);
    assert!(held.iter().all(|s| *s != 0), "{held:?}");

    // A restarted daemon's handle re-places them in one delta (the batched path), with a new
    // session among them: each placed one keeps its slot, the new one gets a free slot.
    let mut again = DataplaneMaps::open(&lb.pin_dir).expect("reopen the pins");
    again
        .write_delta(&replace(600..606, &[2, 3], 2))
        .expect("write the re-placements");
    let kept = slots_of(&lb, 600..605);
    assert_eq!(kept, held, "re-placed sessions keep their slots");
    let new = slot_of(&lb, &kv(605)).expect("placed");
    assert!(new != 0 && !held.contains(&new), "{new} vs {held:?}");

    // The same handle again (what it wrote, not a read): the slots still hold.
    again
        .write_delta(&replace(600..606, &[1, 3], 3))
        .expect("write the re-placements again");
    let after = slots_of(&lb, 600..606);
    assert_eq!(after[..5], held[..], "kept through a second batch");
    assert_eq!(after[5], new, "the new session keeps the slot it was given");
}

/// The counters slots `sessions` hold, in order; panics naming one that is not placed.
fn slots_of(lb: &Loaded, sessions: std::ops::Range<u64>) -> Vec<u32> {
    sessions
        .map(|s| slot_of(lb, &kv(s)).unwrap_or_else(|| panic!("session {s} is not placed")))
        .collect()
}

/// Placements of `sessions` on `backends` at `generation`, as one delta.
fn replace(
    sessions: std::ops::Range<u64>,
    backends: &[u32],
    generation: u64,
) -> shardline::snapshot::delta::TableDelta {
    shardline::snapshot::delta::TableDelta {
        sessions: sessions
            .map(|s| {
                (
                    kv(s),
                    ShardSet {
                        generation,
                        ..shard_set(backends)
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn with_no_slot_free_a_restarted_handle_re_places_sessions_on_the_slots_they_hold() {
    let lb = Loaded::new(TEST_CONFIG);
    // Every slot taken (the configuration's session holds one, so the last of these has none).
    let all = u64::from(shardline_common::consts::MAX_SESSION_SLOTS);
    let mut first = DataplaneMaps::open(&lb.pin_dir).expect("open the pins");
    first
        .write_delta(&replace(1000..1000 + all, &[1], 1))
        .expect("take every slot");
    let held = slots_of(&lb, 1000..1010);
    assert!(held.iter().all(|s| *s != 0), "{held:?}");

    // Nothing is free, so these go out in one batch, each with the slot the handle read.
    let mut again = DataplaneMaps::open(&lb.pin_dir).expect("reopen the pins");
    again
        .write_delta(&replace(1000..1010, &[2, 3], 2))
        .expect("re-place");
    let kept = slots_of(&lb, 1000..1010);
    assert_eq!(kept, held, "re-placed sessions keep their slots");
}
