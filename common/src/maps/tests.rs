//! Unit tests of `maps`.

use core::mem::size_of;

#[test]
fn addr_words_round_trip_and_map_ipv4() {
    let b: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
    assert_eq!(addr_bytes(&addr_words(b)), b);
    let mapped = addr_bytes(&v4_mapped([10, 1, 2, 3]));
    assert_eq!(
        mapped,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
    );
}

use super::*;

#[test]
fn a_flow_is_pinned_by_its_freshest_live_entry_on_any_cpu() {
    let entry = |backend, last_seen_ns| FlowEntry {
        backend,
        stats_slot: 0,
        last_seen_ns,
    };
    let s = 1_000_000_000;
    let cpus = [entry(0, 0), entry(2, 10 * s), entry(3, 12 * s)];
    assert_eq!(FlowEntry::freshest_live(&cpus, 20 * s, 10), Some(3));
    // Backend 3's entry went idle past 10 s at 23 s; backend 2's at 21 s.
    assert_eq!(FlowEntry::freshest_live(&cpus, 22 * s, 10), Some(3));
    assert_eq!(FlowEntry::freshest_live(&cpus, 23 * s, 10), None);
    assert_eq!(FlowEntry::freshest_live(&cpus[..2], 20 * s, 10), Some(2));
    assert_eq!(
        FlowEntry::freshest_live(&cpus, 20 * s, 0),
        None,
        "stickiness off"
    );
    assert_eq!(
        FlowEntry::freshest_live(&cpus[..1], 20 * s, 10),
        None,
        "never written"
    );
}

#[test]
fn maglev_halves_are_disjoint_and_flip() {
    let g = Globals::default();
    assert_eq!((g.live_half(), g.idle_half()), (0, 1));
    let flipped = g.with_live_half(g.idle_half());
    assert_eq!((flipped.live_half(), flipped.idle_half()), (1, 0));
    assert_eq!(flipped.with_live_half(3).maglev_active, 1);
    assert_eq!(maglev_index(0, 0), Some(0));
    assert_eq!(maglev_index(0, MAGLEV_SIZE - 1), Some(MAGLEV_SIZE - 1));
    assert_eq!(maglev_index(1, 0), Some(MAGLEV_SIZE));
    assert_eq!(
        maglev_index(1, MAGLEV_SIZE - 1),
        Some(crate::consts::DEFAULT_RING_ENTRIES - 1)
    );
    assert_eq!(maglev_index(0, MAGLEV_SIZE), None);
    assert_eq!(maglev_index(1, u32::MAX), None);
}

#[test]
fn flow_idle_secs_zero_disables_stickiness() {
    let e = FlowEntry {
        backend: 3,
        stats_slot: 0,
        last_seen_ns: 5_000_000_000,
    };
    assert!(!flows_stick(0));
    assert!(
        !e.is_live(e.last_seen_ns, 0),
        "not even in the same nanosecond"
    );
    assert!(
        !e.is_live(e.last_seen_ns - 1, 0),
        "nor for a clock behind the entry"
    );
    assert!(e.is_live(e.last_seen_ns, 1));
}

#[test]
fn flows_stay_live_up_to_and_including_idle_secs() {
    let e = FlowEntry {
        backend: 3,
        stats_slot: 0,
        last_seen_ns: 5_000_000_000,
    };
    let idle = 30u32;
    let limit = e.last_seen_ns + u64::from(idle) * 1_000_000_000;
    assert!(e.is_live(limit, idle), "idle exactly idle_secs: still live");
    assert!(!e.is_live(limit + 1, idle), "one ns more: expired");
    assert!(
        e.is_live(e.last_seen_ns - 1, idle),
        "a clock behind the entry"
    );
    let longest = e.last_seen_ns + u64::from(u32::MAX) * 1_000_000_000;
    assert!(
        e.is_live(longest, u32::MAX),
        "the longest window does not overflow"
    );
    let never = FlowEntry::default();
    assert!(
        !never.is_live(1, idle),
        "a never-written per-CPU slot is no flow"
    );
}

#[test]
fn a_pooled_service_reads_its_live_ring_and_pools_index_by_service() {
    let none = Service::default();
    assert!(!none.has_pool());
    assert_eq!(none.ring_index(7), None);
    let pooled = Service {
        ring_size: 13,
        ring_live: 1_000,
        ring_idle: 1_013,
        ..Service::default()
    };
    assert_eq!(pooled.ring_index(0), Some(1_000));
    assert_eq!(pooled.ring_index(12), Some(1_012));
    assert_eq!(pooled.ring_index(13), Some(1_000));
    assert_eq!(pooled.unplaced().ring_live, 0);
    assert_eq!(pooled.unplaced().ring_size, 13);
    assert_eq!(pool_word(0, 0), Some(0));
    assert_eq!(pool_word(2, 130), Some(2 * POOL_WORDS + 2));
    assert_eq!(
        pool_word(crate::consts::MAX_SERVICES, crate::consts::MAX_BACKENDS - 1),
        Some(crate::consts::POOL_MEMBER_WORDS - 1)
    );
    assert_eq!(pool_word(crate::consts::MAX_SERVICES + 1, 0), None);
    assert_eq!(pool_word(1, crate::consts::MAX_BACKENDS), None);
}

#[test]
fn every_service_backend_pair_has_a_counter_and_the_services_beyond_share_row_0() {
    use crate::consts::{BACKEND_STATS_ENTRIES, MAX_BACKENDS, SERVICE_STATS_ROWS as ROWS};
    assert_eq!(backend_stats_index(1, 0), Some(MAX_BACKENDS));
    assert_eq!(backend_stats_index(2, 7), Some(2 * MAX_BACKENDS + 7));
    let last = backend_stats_index(ROWS - 1, MAX_BACKENDS - 1);
    assert_eq!(last, Some(BACKEND_STATS_ENTRIES - 1));
    assert_eq!(backend_stats_index(ROWS, 7), Some(7));
    assert_eq!(backend_stats_index(u32::MAX, 7), Some(7));
    assert_eq!(backend_stats_index(1, MAX_BACKENDS), None);
}

#[test]
fn layouts_have_no_implicit_padding() {
    assert_eq!(size_of::<ServiceKey>(), 20);
    assert_eq!(size_of::<Service>(), 20);
    assert_eq!(core::mem::offset_of!(Service, server_id_len), 6);
    assert_eq!(core::mem::offset_of!(Service, rotation), 7);
    assert_eq!(core::mem::offset_of!(Service, ring_size), 8);
    assert_eq!(core::mem::offset_of!(Service, ring_idle), 16);
    assert_eq!(size_of::<Backend>(), 32);
    assert_eq!(size_of::<SessionKey>(), 16);
    assert_eq!(size_of::<ShardSet>(), 16 + 4 * MAX_SHARDS + 8 * MAX_SHARDS);
    assert_eq!(size_of::<FlowKey>(), 40);
    assert_eq!(size_of::<FlowEntry>(), 16);
    assert_eq!(size_of::<Globals>(), 48);
    assert_eq!(size_of::<Counter>(), 16);
    assert_eq!(size_of::<SlotCounter>(), 32);
}

#[test]
fn session_filter_positions_stay_in_their_service_block() {
    use crate::consts::{MAX_SERVICES, SESSION_FILTER_ENTRIES, SESSION_FILTER_WORDS};
    for service in [0, 1, 2, 63, 64, MAX_SERVICES - 1, MAX_SERVICES] {
        let mut seen = std::collections::HashSet::new();
        for session in (0..20_000u64).chain([u64::MAX, 1 << 63]) {
            let (word, bit) = session_filter_position(&SessionKey::new(service, session));
            assert!(word < SESSION_FILTER_ENTRIES && bit < 64);
            assert_eq!(word / SESSION_FILTER_WORDS, service, "service {service}");
            seen.insert((word, bit));
        }
        // Sequential ids (header mode) spread over the block's 4,096 positions.
        assert!(
            seen.len() > 4_000,
            "service {service}: {} positions",
            seen.len()
        );
    }
}
