//! The sessions filter (`SESSION_FILTER`) under `BPF_PROG_TEST_RUN`: after the daemon's walk of
//! `SESSIONS`, a new client of a flow-mode service no placement falls near is routed without
//! the sessions lookup, exactly as the replay (which looks it up) routes it; placing one of
//! those clients clears its bit first, so the kernel follows the placement at once, and takes
//! a counters slot no placed session holds (the walk built the slot allocator too).

use std::net::{IpAddr, Ipv4Addr};

use aya::maps::{Array, HashMap, MapData};
use shardline::maps::DataplaneMaps;
use shardline_common::{
    consts::IPPROTO_TCP,
    hash::addr_hash,
    maps::{ip_addr, session_filter_position, ServiceKey, SessionKey, ShardSet},
    route::decide,
};

use crate::{
    flow_table::{kernel_backend, pin_to_cpu0},
    support::{
        frames::{net4, FrameSpec, VIP4, WEB_PORT},
        Loaded, TEST_CONFIG,
    },
};

/// New clients of `web` the test routes.
const CLIENTS: u8 = 64;

/// A TCP SYN to `web` from `client`.
fn web_syn(client: [u8; 4], sport: u16) -> Vec<u8> {
    let mut spec = FrameSpec::tcp4(VIP4, sport, WEB_PORT);
    spec.net = net4(client, VIP4);
    spec.build()
}

#[test]
fn the_sessions_filter_rules_out_only_sessions_no_placement_falls_on() {
    pin_to_cpu0();
    let mut lb = Loaded::new(TEST_CONFIG);
    let vip = IpAddr::V4(Ipv4Addr::from(VIP4));
    let web = lb.tables.services[&ServiceKey::new(vip, WEB_PORT, IPPROTO_TCP)].id;
    let session = |client: [u8; 4]| {
        SessionKey::new(web, addr_hash(&ip_addr(IpAddr::V4(Ipv4Addr::from(client)))))
    };

    // The configuration's placements are written without counters slots; placed again
    // through the loaded handle, each takes one, for the walk below to find.
    for (key, set) in lb.tables.sessions.clone() {
        lb.maps
            .place_session(&key, &set)
            .expect("re-placing a session");
    }
    // A handle of its own on the pinned maps, as the daemon opens them at its start: the walk
    // is the first thing it reads SESSIONS with.
    let mut maps = DataplaneMaps::open(&lb.pin_dir).expect("opening the pinned maps");
    let walked = maps.mark_session_filter().expect("the walk of SESSIONS");
    assert_eq!(
        walked,
        lb.tables.sessions.len(),
        "the walk saw every placement"
    );
    let filter: Array<MapData, u64> = lb.open_map("SESSION_FILTER").expect("SESSION_FILTER");
    let ruled_out = |key: &SessionKey| {
        let (word, bit) = session_filter_position(key);
        filter.get(&word, 0).expect("filter word") >> bit & 1 == 1
    };
    for key in lb.tables.sessions.keys() {
        assert!(!ruled_out(key), "placed session {key:?} ruled out");
    }

    // New clients: each ruled out unless a placed session of `web` shares its position, and
    // each routed as the replay routes it.
    let placed_positions: Vec<_> = lb
        .tables
        .sessions
        .keys()
        .filter(|k| k.service == web)
        .map(session_filter_position)
        .collect();
    for i in 0..CLIENTS {
        let client = [198, 51, 100, i];
        let key = session(client);
        let shared = placed_positions.contains(&session_filter_position(&key));
        assert_eq!(ruled_out(&key), !shared, "client {client:?}");
        let frame = web_syn(client, 40_000);
        let want = decide(&frame[..], &lb.tables).backend_id;
        assert_eq!(kernel_backend(&mut lb, &frame), want, "client {client:?}");
    }

    // Place one of them where the tables would not send it: its bit is cleared before the
    // placement is written, so its next new flow follows the placement.
    let client = [198, 51, 100, 7];
    let key = session(client);
    assert!(
        ruled_out(&key),
        "the client is ruled out before its placement"
    );
    let frame = web_syn(client, 40_001);
    let unplaced = decide(&frame[..], &lb.tables).backend_id;
    let target = (1..=4).find(|b| *b != unplaced).expect("another backend");
    let mut placement = ShardSet {
        generation: 1,
        count: 1,
        ..ShardSet::default()
    };
    placement.backends[0] = target;
    maps.place_session(&key, &placement)
        .expect("place the client");
    // The slots as SESSIONS holds them (a snapshot reads them as 0).
    let sessions: HashMap<MapData, SessionKey, ShardSet> =
        lb.open_map("SESSIONS").expect("SESSIONS");
    let placed: std::collections::HashMap<SessionKey, ShardSet> = sessions
        .iter()
        .map(|entry| entry.expect("reading SESSIONS"))
        .collect();
    let slot = placed[&key].stats_slot;
    assert!(
        placed.iter().all(|(k, s)| *k == key || s.stats_slot != 0),
        "the configuration's placements hold counters slots: {placed:?}"
    );
    assert!(
        slot != 0
            && placed
                .iter()
                .all(|(k, s)| *k == key || s.stats_slot != slot),
        "the new placement's counters slot {slot} is free: {placed:?}"
    );
    lb.tables.sessions.insert(key, placement);
    assert!(!ruled_out(&key), "placing the session clears its bit");
    assert_eq!(decide(&frame[..], &lb.tables).backend_id, target);
    assert_eq!(
        kernel_backend(&mut lb, &frame),
        target,
        "the kernel follows the new placement"
    );
}
