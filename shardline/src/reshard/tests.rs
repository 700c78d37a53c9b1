//! The swap stage against maps held in memory: what it writes, what it keeps in force, and the
//! handoffs it publishes.

use std::time::{Duration, Instant};

use shardline_common::{
    consts::MAGLEV_SIZE,
    maglev::{build, Weighted},
    maps::{scheme, SessionKey},
    partition::{shard_set, ShardSetError},
    plan::{session_plan, SessionPlan},
};

use super::{held::Held, slots::QUARANTINE, *};

const WINDOW: Duration = Duration::from_secs(2);

fn key(session: u64) -> SessionKey {
    SessionKey {
        service: 1,
        _pad: 0,
        session,
    }
}

fn even(ids: &[u32]) -> Vec<u32> {
    let w: Vec<Weighted> = ids
        .iter()
        .map(|id| Weighted { id: *id, weight: 1 })
        .collect();
    build(&w, MAGLEV_SIZE)
}

/// Backends 1 to 4, session 1 on [1, 2] (generation 3).
fn held(capacity: usize) -> Held {
    let mut maps = Held::four_backends(capacity);
    maps.tables
        .sessions
        .insert(key(1), shard_set(&[1, 2], scheme::HASH, 3));
    maps
}

#[test]
fn a_moved_placement_publishes_its_previous_owners_for_the_window() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    assert_eq!(r.generation(), 3, "starts above the placements it found");
    let t0 = Instant::now();
    let mut target = r.tables();
    target
        .sessions
        .insert(key(1), shard_set(&[2, 3], scheme::HASH, 1));
    let swap = r.apply(&mut maps, &target, t0).expect("apply");
    assert_eq!(swap.kind, SwapKind::Session);
    assert_eq!(swap.generation, 4);
    assert_eq!(swap.handoffs.len(), 1);
    let h = &swap.handoffs[0].handoff();
    assert_eq!(h.previous.backends[..2], [1, 2]);
    assert_eq!(h.current.backends[..2], [2, 3]);
    assert!(h.previous.generation < h.current.generation);
    assert_eq!(maps.tables.sessions[&key(1)], h.current, "the maps got it");
    assert_eq!(
        r.tables().sessions[&key(1)],
        h.current,
        "and it is in force"
    );
    // Kept compact, it reads back as the swap's own.
    let open: Vec<_> = r.handoffs(t0 + WINDOW / 2).collect();
    assert_eq!(open.len(), 1);
    let o = &open[0];
    assert_eq!(
        (o.session, o.previous, o.current),
        (h.session, h.previous, h.current)
    );
    assert_eq!((&o.plan, o.until), (&h.plan, h.until));
    assert_eq!(r.handoffs(t0 + WINDOW).count(), 0, "the window closed");
}

#[test]
fn unchanged_tables_write_nothing() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let target = maps.tables.clone();
    let swap = r.apply(&mut maps, &target, Instant::now()).expect("apply");
    assert_eq!(swap.kind, SwapKind::Unchanged);
    assert_eq!((maps.writes, swap.generation), (0, 3));
}

#[test]
fn refused_placements_stay_out_of_the_tables_in_force_and_are_tried_again() {
    let mut maps = held(2);
    let mut r = Resharder::new(WINDOW);
    let mut target = maps.tables.clone();
    for s in 2..=4 {
        target
            .sessions
            .insert(key(s), shard_set(&[3], scheme::HASH, 1));
    }
    let swap = r.apply(&mut maps, &target, Instant::now()).expect("apply");
    assert_eq!(swap.placed, [key(2)]);
    assert_eq!(swap.placements_refused, [key(3), key(4)]);
    assert_eq!(r.tables().sessions.len(), 2, "what the maps hold");
    let again = r.apply(&mut maps, &target, Instant::now()).expect("again");
    assert_eq!(again.placements_refused, [key(3), key(4)], "tried again");
    assert_eq!(maps.writes, 2);
}

#[test]
fn a_failed_write_reads_the_maps_back_before_the_next() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let mut target = r.tables();
    target.backends.remove(&4);
    maps.fail = true;
    assert!(r.apply(&mut maps, &target, Instant::now()).is_err());
    // Meanwhile the maps changed in a way the stage did not see.
    maps.fail = false;
    maps.tables.sessions.remove(&key(1));
    let swap = r.apply(&mut maps, &target, Instant::now()).expect("apply");
    assert_eq!(
        swap.placed,
        [key(1)],
        "the delta is from what the maps hold"
    );
    assert_eq!(maps.tables.sessions.len(), 1);
    assert!(!maps.tables.backends.contains_key(&4));
}

#[test]
fn place_checks_the_shard_set_and_its_backends() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let now = Instant::now();
    match r.place(&mut maps, key(9), &[1, 3, 1], scheme::RANGE, now) {
        Err(ReshardError::BadShardSet { problem, .. }) => {
            assert_eq!(problem, ShardSetError::Duplicate { id: 1 })
        }
        other => panic!("a duplicate was accepted: {other:?}"),
    }
    assert!(matches!(
        r.place(&mut maps, key(9), &[1, 7], scheme::HASH, now),
        Err(ReshardError::UnknownBackend(7))
    ));
    assert_eq!(maps.writes, 0);
    let swap = r
        .place(&mut maps, key(9), &[1, 3], scheme::RANGE, now)
        .expect("place");
    assert_eq!(
        (swap.kind, swap.placed.as_slice()),
        (SwapKind::Session, &[key(9)][..])
    );
    assert_eq!(maps.tables.sessions[&key(9)].scheme, scheme::RANGE);
}

#[test]
fn new_default_weights_flip_the_table() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let swap = r
        .set_default_weights(&mut maps, &[(1, 1), (2, 1), (3, 1), (4, 0)], Instant::now())
        .expect("weights");
    assert_eq!(swap.kind, SwapKind::Maglev);
    assert_eq!(maps.tables.maglev, even(&[1, 2, 3]));
    assert!(swap.maglev_moves.iter().any(|m| m.from == 4), "4 drained");
    assert!(swap.maglev_moves.iter().all(|m| m.to != 4));
    assert_eq!(r.last_maglev_plan(), swap.maglev_moves);
}

#[test]
fn applying_only_the_changed_sessions_writes_what_a_whole_apply_writes() {
    let changes = vec![
        (key(1), Some(shard_set(&[3, 4], scheme::HASH, 1))),
        (key(2), Some(shard_set(&[1], scheme::HASH, 1))),
        (key(9), None),
    ];
    let t0 = Instant::now();
    let (mut whole_maps, mut part_maps) = (held(10), held(10));
    let mut whole = Resharder::adopt(&whole_maps, WINDOW).expect("adopt");
    let mut part = Resharder::adopt(&part_maps, WINDOW).expect("adopt");
    let mut target = whole.tables();
    target
        .sessions
        .insert(key(1), shard_set(&[3, 4], scheme::HASH, 1));
    target
        .sessions
        .insert(key(2), shard_set(&[1], scheme::HASH, 1));
    let a = whole.apply(&mut whole_maps, &target, t0).expect("apply");
    let b = part
        .apply_sessions(&mut part_maps, &changes, t0)
        .expect("apply_sessions");
    assert_eq!(whole_maps.tables.sessions, part_maps.tables.sessions);
    assert_eq!(whole.tables().sessions, part.tables().sessions);
    assert_eq!(whole_maps.writes, part_maps.writes);
    assert_eq!((a.kind, a.generation), (b.kind, b.generation));
    assert_eq!(a.placed, b.placed);
    assert_eq!(b.handoffs.len(), 1, "session 1 moved");
    assert_eq!(b.handoffs[0].previous().backends[..2], [1, 2]);
    // Back to the default table.
    let b = part
        .apply_sessions(&mut part_maps, &[(key(1), None)], t0)
        .expect("unplace");
    assert_eq!(b.kind, SwapKind::Session);
    assert!(!part_maps.tables.sessions.contains_key(&key(1)));
    assert!(!part.tables().sessions.contains_key(&key(1)));
}

/// A tick's delta updates the placements in force as it is computed: what a full map refused
/// is put back, and a failed write reads the maps again, so the stage keeps what the maps
/// hold either way.
#[test]
fn a_tick_refused_or_failed_leaves_in_force_what_the_maps_hold() {
    let t0 = Instant::now();
    let mut maps = held(2);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let set = |backends: &[u32]| Some(shard_set(backends, scheme::HASH, 1));
    let changes = [
        (key(1), set(&[3])),
        (key(2), set(&[3, 4])),
        (key(3), set(&[4])),
    ];
    let swap = r
        .apply_sessions(&mut maps, &changes, t0)
        .expect("apply_sessions");
    assert_eq!(swap.placements_refused, [key(3)]);
    assert_eq!(swap.placed, [key(2)]);
    let members = |sessions: &HashMap<SessionKey, ShardSet>| {
        let mut m: Vec<_> = sessions
            .iter()
            .map(|(k, s)| (k.session, s.members().to_vec()))
            .collect();
        m.sort_unstable();
        m
    };
    assert_eq!(
        members(&r.tables().sessions),
        members(&maps.tables.sessions)
    );
    assert_eq!(
        members(&maps.tables.sessions),
        [(1, vec![3]), (2, vec![3, 4])]
    );
    // A write that fails: the next one starts from the maps, which did not change.
    let changes = [(key(1), set(&[4])), (key(2), None)];
    maps.fail = true;
    assert!(r.apply_sessions(&mut maps, &changes, t0).is_err());
    maps.fail = false;
    let swap = r
        .apply_sessions(&mut maps, &changes, t0)
        .expect("apply_sessions");
    assert_eq!(swap.kind, SwapKind::Session);
    assert_eq!(members(&maps.tables.sessions), [(1, vec![4])]);
    assert_eq!(
        members(&r.tables().sessions),
        members(&maps.tables.sessions)
    );
}

/// Session 1 moved from [1, 2] to [2, 3] at `t0` by a stage with `window`; its handoffs and
/// the board they were published on.
fn moved_with(window: Duration, t0: Instant) -> (Resharder, board::HandoffBoard) {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, window).expect("adopt");
    let mut target = r.tables();
    target
        .sessions
        .insert(key(1), shard_set(&[2, 3], scheme::HASH, 1));
    let swap = r.apply(&mut maps, &target, t0).expect("apply");
    assert_eq!(swap.handoffs.len(), 1, "the move is in the swap either way");
    let board = board::HandoffBoard::default();
    board.publish(&swap.handoffs, t0);
    (r, board)
}

#[test]
fn a_shorter_handoff_window_closes_earlier_and_zero_keeps_no_record() {
    let t0 = Instant::now();
    let (long, long_board) = moved_with(Duration::from_secs(10), t0);
    let (short, short_board) = moved_with(Duration::from_secs(2), t0);
    let at = t0 + Duration::from_secs(3);
    assert_eq!(
        long.handoffs(at).count(),
        1,
        "the 10 s window is open at 3 s"
    );
    assert!(long_board.get(&key(1), at).is_some());
    assert_eq!(short.handoffs(at).count(), 0, "the 2 s window closed");
    assert_eq!(short_board.get(&key(1), at), None);
    let (none, none_board) = moved_with(Duration::ZERO, t0);
    assert_eq!(none.handoffs(t0).count(), 0, "no record with a zero window");
    assert!(none_board.is_empty(), "nothing published");
    // A new window applies to later moves only.
    let mut r = short;
    r.set_handoff_window(Duration::from_secs(10));
    assert_eq!(r.handoffs(at).count(), 0, "the earlier move kept its end");
}

#[test]
fn a_session_moved_again_publishes_only_its_last_move_and_ended_records_leave() {
    let mut maps = held(10);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let t0 = Instant::now();
    // Sessions 2 and 3 placed first: off no home (not header mode), so nothing is published.
    for (session, members) in [(2, [1, 2]), (3, [3, 4])] {
        let swap = r
            .place(&mut maps, key(session), &members, scheme::HASH, t0)
            .expect("place");
        assert!(swap.handoffs.is_empty(), "{swap:?}");
    }
    let step = WINDOW / 4;
    let moves: [&[u32]; 3] = [&[2, 3], &[3, 4], &[1, 4]];
    for (i, members) in moves.into_iter().enumerate() {
        let at = t0 + step * i as u32;
        let swap = r
            .place(&mut maps, key(1), members, scheme::HASH, at)
            .expect("place");
        assert_eq!(swap.handoffs.len(), 1, "move {i}");
        let open: Vec<_> = r.handoffs(at).collect();
        assert_eq!(
            open.len(),
            1,
            "one record answers for the session after move {i}"
        );
        assert_eq!(open[0].current.members(), members, "the last move's");
        assert_eq!(open[0].until, at + WINDOW);
    }
    // Another session moved later: session 1's last window ends first.
    let later = t0 + WINDOW;
    r.place(&mut maps, key(2), &[2, 3], scheme::HASH, later)
        .expect("place");
    let last_end = t0 + step * 2 + WINDOW;
    let open = |r: &Resharder, at| {
        let mut v: Vec<_> = r.handoffs(at).map(|h| h.session.session).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(open(&r, last_end - step / 2), [1, 2]);
    assert_eq!(open(&r, last_end), [2], "session 1's last window ended");
    // The next swap drops the ended records, the hidden ones included, and keeps the open one.
    r.place(&mut maps, key(3), &[1, 2], scheme::HASH, last_end)
        .expect("place");
    let kept: Vec<_> = r.handoffs.iter().map(|h| h.session.session).collect();
    assert_eq!(kept, [2, 3], "session 1's three records left, oldest first");
    // Turned off: a move drops the session's earlier record and keeps none.
    r.set_handoff_window(Duration::ZERO);
    r.place(&mut maps, key(2), &[3], scheme::HASH, last_end)
        .expect("place");
    assert_eq!(open(&r, last_end), [3]);
}

#[test]
fn a_header_session_s_first_placement_publishes_its_home_as_the_previous_owner() {
    let mut maps = held(10);
    maps.tables.services.insert(
        shardline_common::maps::ServiceKey::default(),
        shardline_common::maps::Service {
            id: 1,
            mode: shardline_common::maps::session_mode::HEADER,
            ..Default::default()
        },
    );
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let t0 = Instant::now();
    let home = r.tables().maglev[shardline_common::hash::maglev_slot(7, 0) as usize];
    let other = if home == 4 { 3 } else { 4 };
    let swap = r
        .place(&mut maps, key(7), &[home, other], scheme::HASH, t0)
        .expect("place");
    assert_eq!(swap.placed, [key(7)], "still counted as newly placed");
    assert_eq!(swap.handoffs.len(), 1, "{swap:?}");
    let h = &swap.handoffs[0].handoff();
    assert_eq!((h.previous.count, h.previous.backends[0]), (1, home));
    assert_eq!(h.current.backends[..2], [home, other]);
    assert_eq!(r.handoffs(t0 + WINDOW / 2).count(), 1);
    // A flow-mode session's keys were spread, not on one home: nothing to publish.
    maps.tables.services.values_mut().for_each(|s| {
        s.mode = shardline_common::maps::session_mode::FLOW;
    });
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let swap = r
        .place(&mut maps, key(8), &[1, 2], scheme::HASH, t0)
        .expect("place");
    assert_eq!((swap.placed.len(), swap.handoffs.len()), (1, 0));
}

#[test]
fn a_moved_header_session_is_flagged_in_the_maps_until_its_window_closes() {
    use shardline_common::{
        handoff::slot_of_flag,
        maps::{session_mode, Service, ServiceKey},
    };
    let mut maps = held(10);
    let kv = ServiceKey::new("10.100.0.1".parse().unwrap(), 7000, 17);
    let header = Service {
        id: 1,
        mode: session_mode::HEADER,
        ..Service::default()
    };
    maps.tables.services.insert(kv, header);
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    let t0 = Instant::now();
    r.place(&mut maps, key(1), &[1, 2, 3], scheme::HASH, t0)
        .expect("grow");
    assert_eq!(slot_of_flag(maps.tables.sessions[&key(1)].handoff), Some(0));
    let published = maps.handoffs()[&key(1)];
    assert_eq!(published.previous.backends[..2], [1, 2]);
    assert_eq!(published.previous.count, 2);
    assert_eq!(
        r.tables().sessions[&key(1)].handoff,
        0,
        "the tables carry no flag"
    );
    assert_eq!(r.next_close(), Some(t0 + WINDOW));

    r.close_windows(&mut maps, t0 + WINDOW / 2)
        .expect("nothing closes");
    assert_eq!(slot_of_flag(maps.tables.sessions[&key(1)].handoff), Some(0));
    r.close_windows(&mut maps, t0 + WINDOW).expect("close");
    assert_eq!(maps.tables.sessions[&key(1)].handoff, 0);
    assert_eq!(
        maps.tables.sessions[&key(1)].count,
        3,
        "the placement stays"
    );
    assert!(maps.handoffs().is_empty());
    assert_eq!(maps.slots_in_use(), 1, "the slot waits out its quarantine");
    r.close_windows(&mut maps, t0 + WINDOW + QUARANTINE)
        .expect("clear");
    assert_eq!(maps.slots_in_use(), 0);
    assert_eq!(r.next_close(), None);

    // Only header mode is marked: a flow service's move publishes nothing in the maps.
    maps.tables.services.insert(
        kv,
        Service {
            mode: session_mode::FLOW,
            ..header
        },
    );
    let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
    r.place(&mut maps, key(1), &[1], scheme::HASH, t0)
        .expect("shrink");
    assert_eq!(maps.tables.sessions[&key(1)].handoff, 0);
    assert!(maps.handoffs().is_empty());
    assert_eq!(maps.slots_in_use(), 0);
}

#[test]
fn whether_keys_move_is_what_the_plan_says() {
    // Every ordered pair of sets of 1 to 3 of 4 backends, under each scheme and across a
    // scheme change: the cheap answer is the plan's, set by set.
    let mut sets = Vec::new();
    for mask in 1u32..16 {
        let ids: Vec<u32> = (1..=4).filter(|id| mask & (1 << (id - 1)) != 0).collect();
        if ids.len() > 3 {
            continue;
        }
        let mut reversed = ids.clone();
        reversed.reverse();
        for members in [ids, reversed] {
            for s in [scheme::HASH, scheme::RANGE] {
                sets.push(ShardSet::from_members(&members, s, 1).unwrap());
            }
        }
    }
    let mut moving = 0;
    for previous in &sets {
        for current in &sets {
            let planned = session_plan(Some(previous), current) != SessionPlan::Unchanged;
            assert_eq!(
                moves_keys(previous, current),
                planned,
                "{previous:?} -> {current:?}"
            );
            moving += usize::from(planned);
        }
    }
    // Both answers occur (the same members in another order move nothing under hashing).
    assert!(moving > 0 && moving < sets.len() * sets.len());
}
