//! The swap stage's whole write ([`Resharder::apply_placements`]): at a start or restart, and
//! at any change of backends, services or globals, every placement of the target is compared
//! with the one in force. Gathered into one table, a million of them took about 470 bytes a
//! session (a `HashMap` of 208-byte shard sets, about 700 while it grew), and the delta of a
//! start from empty maps as much again. Here the target's placements are visited and written
//! [`WHOLE_WRITE_CHUNK`] at a time: the write holds one chunk's delta beside the compact
//! placements in force, whatever the session count.
//!
//! The parts keep `write_delta`'s order: the first carries the new backends, the default
//! table's flip and the globals, every part placements, the last the pools, services and
//! removals. Between two parts a packet meets what it could meet between two placement
//! batches of one write (each placement is one atomic update), and a write that fits in one
//! chunk is one delta, as before.

use std::time::Instant;

use shardline_common::maps::{SessionKey, ShardSet};

use super::{Placed, ReshardError, Resharder, Shape, Swap, TableWriter};
use crate::{
    maps::WriteOutcome,
    snapshot::{
        delta::{placement_over, TableDelta, TargetPlacements},
        Snapshot,
    },
};

/// Placements a whole write compares and writes at a time: 16,384 of them are 3.5 MiB of
/// delta (a key and a 208-byte set each) and a few batch syscalls.
pub const WHOLE_WRITE_CHUNK: usize = 16_384;

impl Resharder {
    /// Makes `maps` hold `target` with the placements `placements` names (`target.sessions`
    /// is ignored), writing only what differs from the tables in force, a chunk of sessions at
    /// a time (see the module header), and publishes the previous owners of every moved
    /// placement until `now` + the handoff window.
    pub fn apply_placements(
        &mut self,
        maps: &mut impl TableWriter,
        target: &Snapshot,
        placements: &impl TargetPlacements,
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.apply_in_parts(maps, target, placements, now, WHOLE_WRITE_CHUNK)
    }

    /// [`Resharder::apply_placements`] in parts of at most `chunk` placements.
    pub(super) fn apply_in_parts(
        &mut self,
        maps: &mut impl TableWriter,
        target: &Snapshot,
        placements: &impl TargetPlacements,
        now: Instant,
        chunk: usize,
    ) -> Result<Swap, ReshardError> {
        self.refresh(maps)?;
        let mut swap = self.begin(maps, now)?;
        let frame = TableDelta::between_tables(&self.tables, target);
        let shape = Shape {
            only_placements: frame.is_empty(),
            maglev: frame.maglev.is_some(),
        };
        let (mut head, mut tail) = frame.split_at_placements();
        let in_force = self.placed.len();
        // Target placements that were in force (changed or not): all of them, and nothing
        // is removed.
        let mut kept = 0;
        let mut written = WriteOutcome::default();
        let mut wrote = false;
        // Placements a full map refused, tried again once the last part's removals made room
        // (as one delta retries them after its removals).
        let mut refused: Vec<(SessionKey, ShardSet)> = Vec::new();
        let mut targets = placements.target_placements().peekable();
        loop {
            let mut part = std::mem::take(&mut head);
            part.sessions.reserve(chunk.min(targets.size_hint().0));
            while part.sessions.len() < chunk {
                let Some((key, set)) = targets.next() else {
                    break;
                };
                let old = self.placed.get(&key);
                kept += usize::from(old.is_some());
                if let Some(next) = placement_over(old, &set) {
                    part.sessions.push((key, next));
                }
            }
            let last = targets.peek().is_none();
            if last {
                if kept < in_force {
                    let mut removed: Vec<SessionKey> = self
                        .placed
                        .iter()
                        .map(|(key, _)| key)
                        .filter(|key| !placements.places(key))
                        .collect();
                    removed.sort_unstable();
                    tail.removed_sessions = removed;
                }
                if !tail.removed_sessions.is_empty() {
                    part.sessions.append(&mut refused);
                }
                part.extend(std::mem::take(&mut tail));
            }
            part.sessions.sort_unstable_by_key(|(key, _)| *key);
            if !part.is_empty() {
                let mut out = self.write_part(maps, &mut part, now, &mut swap, Placed::After)?;
                wrote = true;
                if !last {
                    for key in std::mem::take(&mut out.placements_refused) {
                        let at = part.sessions.binary_search_by_key(&key, |(k, _)| *k);
                        let set = part.sessions[at.expect("a refused placement was written")].1;
                        // `flag_moves` flags it again when it is retried.
                        refused.push((key, ShardSet { handoff: 0, ..set }));
                    }
                }
                add(&mut written, out);
            }
            if last {
                break;
            }
        }
        if !wrote {
            return Ok(swap);
        }
        // Not retried (no removal made room): refused for good, as one delta would leave them.
        written
            .placements_refused
            .extend(refused.into_iter().map(|(key, _)| key));
        Ok(self.finish(swap, written, shape, Some(target)))
    }
}

/// Adds one part's outcome to the swap's.
fn add(total: &mut WriteOutcome, part: WriteOutcome) {
    total.placements_refused.extend(part.placements_refused);
    total.placements_written += part.placements_written;
    total.placement_writes += part.placement_writes;
    total.maglev_build += part.maglev_build;
    total.maglev_flip = total.maglev_flip.or(part.maglev_flip);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardline_common::{
        consts::MAGLEV_SIZE,
        maglev::{build, Weighted},
        maps::{backend_flags, scheme, session_mode, Backend, Service, ServiceKey},
        partition::shard_set,
    };

    use super::*;
    use crate::reshard::{
        board::HandoffBoard,
        held::{flagged_as_one, Held},
        SwapKind,
    };

    const WINDOW: Duration = Duration::from_secs(2);

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    /// Placements in the order given (a target's order decides what falls in which part).
    struct Listed(Vec<(SessionKey, ShardSet)>);

    impl TargetPlacements for Listed {
        fn target_placements(&self) -> Box<dyn Iterator<Item = (SessionKey, ShardSet)> + '_> {
            Box::new(self.0.iter().copied())
        }

        fn places(&self, key: &SessionKey) -> bool {
            self.0.iter().any(|(k, _)| k == key)
        }
    }

    /// Tables over backends `ids` with header service 1 and no placements.
    fn tables(ids: &[u32]) -> Snapshot {
        let mut t = Snapshot::default();
        for id in ids {
            let backend = Backend {
                flags: backend_flags::PRESENT | backend_flags::HAS_V4,
                addr4: [10, 0, 0, *id as u8],
                ..Backend::default()
            };
            t.backends.insert(*id, backend);
        }
        let weighted: Vec<Weighted> = ids
            .iter()
            .map(|id| Weighted { id: *id, weight: 1 })
            .collect();
        t.maglev = build(&weighted, MAGLEV_SIZE);
        let header = Service {
            id: 1,
            mode: session_mode::HEADER,
            ..Service::default()
        };
        t.services.insert(
            ServiceKey::new("10.100.0.1".parse().unwrap(), 7000, 17),
            header,
        );
        t
    }

    /// Maps holding sessions 0..40 on one of backends 1 to 4 (generation 3), and a target
    /// with backend 5 added (the default table flips) that keeps 0..20, moves 20..30, drops
    /// 30..40 and places 40..100, new sessions first.
    fn change(capacity: usize) -> (Held, Snapshot, Listed) {
        let mut maps = Held::empty(capacity);
        maps.tables = tables(&[1, 2, 3, 4]);
        let on = |s: u64, ids: &[u32]| (key(s), shard_set(ids, scheme::HASH, 3));
        for s in 0..40 {
            let (k, set) = on(s, &[1 + (s % 4) as u32]);
            maps.tables.sessions.insert(k, set);
        }
        let target = tables(&[1, 2, 3, 4, 5]);
        let mut listed: Vec<_> = (40..100).map(|s| on(s, &[5, 1 + (s % 4) as u32])).collect();
        listed.extend((0..20).map(|s| on(s, &[1 + (s % 4) as u32])));
        listed.extend((20..30).map(|s| on(s, &[5])));
        (maps, target, Listed(listed))
    }

    /// What a write left: the maps (placements without the window's end, which is a clock
    /// reading) and the stage's tables, and the swap's record sorted.
    fn outcome(maps: &Held, r: &Resharder, swap: &Swap) -> impl PartialEq + std::fmt::Debug {
        fn by_key<T>(mut v: Vec<(SessionKey, T)>) -> Vec<(SessionKey, T)> {
            v.sort_unstable_by_key(|(k, _)| *k);
            v
        }
        let sorted = |mut v: Vec<SessionKey>| {
            v.sort_unstable();
            v
        };
        let t = &maps.tables;
        let handoffs: Vec<_> = maps
            .handoffs()
            .iter()
            .map(|(k, h)| (*k, h.previous))
            .collect();
        let moves: Vec<_> = swap
            .handoffs
            .iter()
            .map(|h| (h.session, (h.previous(), h.current(), h.until)))
            .collect();
        let mut backends: Vec<u32> = t.backends.keys().copied().collect();
        backends.sort_unstable();
        (
            (
                // Whether a window is open, not which slot it took (the parts move the
                // sessions in another order).
                by_key(flagged_as_one(&t.sessions)),
                by_key(handoffs),
            ),
            (backends, t.maglev.clone()),
            by_key(r.placed().iter().collect()),
            (swap.kind, swap.generation, sorted(swap.placed.clone())),
            (by_key(moves), sorted(swap.placements_refused.clone())),
            swap.maglev_moves.clone(),
        )
    }

    #[test]
    fn a_whole_write_in_parts_leaves_what_one_delta_leaves() {
        let now = Instant::now();
        let (mut one, target, listed) = change(1000);
        let mut r_one = Resharder::adopt(&one, WINDOW).expect("adopt");
        let swap_one = r_one
            .apply_in_parts(&mut one, &target, &listed, now, usize::MAX)
            .expect("one delta");
        assert_eq!(one.writes, 1);
        let (mut parts, _, _) = change(1000);
        let mut r_parts = Resharder::adopt(&parts, WINDOW).expect("adopt");
        let swap_parts = r_parts
            .apply_in_parts(&mut parts, &target, &listed, now, 7)
            .expect("in parts");
        assert_eq!(parts.writes, 70_usize.div_ceil(7), "a part per 7 changes");
        assert_eq!(swap_parts.kind, SwapKind::Maglev);
        assert_eq!(swap_parts.placed.len(), 60);
        assert_eq!(
            swap_parts.handoffs.len(),
            70,
            "60 leave their home, 10 move"
        );
        assert_eq!(
            parts.tables.sessions.len(),
            90,
            "30..40 went back to the default table"
        );
        assert_eq!(
            outcome(&parts, &r_parts, &swap_parts),
            outcome(&one, &r_one, &swap_one)
        );
        // The stage's next whole write from either finds nothing to do.
        let again = r_parts
            .apply_in_parts(&mut parts, &target, &listed, now, 7)
            .expect("again");
        assert_eq!((again.kind, parts.writes), (SwapKind::Unchanged, 10));
    }

    /// Maps holding the tables over backends 1 to 4 but no placement (the placements' map
    /// emptied, the rest kept), and a target placing sessions 0..100 on one or two of them.
    fn no_placements() -> (Held, Snapshot, Listed) {
        let mut maps = Held::empty(1000);
        maps.tables = tables(&[1, 2, 3, 4]);
        let on = |s: u64| {
            let first = 1 + (s % 4) as u32;
            let ids: &[u32] = if s.is_multiple_of(3) {
                &[first]
            } else {
                &[first, 1 + first % 4]
            };
            (key(s), shard_set(ids, scheme::HASH, 1))
        };
        let target = maps.tables.clone();
        (maps, target, Listed((0..100).map(on).collect()))
    }

    #[test]
    fn a_whole_write_in_parts_on_maps_without_placements_opens_the_handoffs_one_delta_opens() {
        let now = Instant::now();
        let (mut one, target, listed) = no_placements();
        let mut r_one = Resharder::adopt(&one, WINDOW).expect("adopt");
        let swap_one = r_one
            .apply_in_parts(&mut one, &target, &listed, now, usize::MAX)
            .expect("one delta");
        assert_eq!(one.writes, 1);
        let (mut parts, _, _) = no_placements();
        let mut r_parts = Resharder::adopt(&parts, WINDOW).expect("adopt");
        let swap_parts = r_parts
            .apply_in_parts(&mut parts, &target, &listed, now, 7)
            .expect("in parts");
        assert_eq!(parts.writes, 100_usize.div_ceil(7));
        assert_eq!(swap_parts.kind, SwapKind::Session);
        // Every header session's first placement moves keys off its home, unless its one
        // member is the home.
        let home = |s: &SessionKey| {
            crate::reshard::home_set(&target, s)
                .expect("a header session's home")
                .backends[0]
        };
        let moved: Vec<_> = listed
            .0
            .iter()
            .filter(|(k, set)| set.count > 1 || set.backends[0] != home(k))
            .map(|(k, _)| *k)
            .collect();
        assert!(moved.len() > 60, "{}", moved.len());
        let mut sessions: Vec<_> = swap_parts.handoffs.iter().map(|h| h.session).collect();
        sessions.sort_unstable();
        assert_eq!(sessions, moved);
        for h in &swap_parts.handoffs {
            let h = h.handoff();
            assert_eq!(
                (h.previous.count, h.previous.backends[0]),
                (1, home(&h.session))
            );
            assert_eq!(h.until, now + WINDOW);
        }
        assert_eq!(
            outcome(&parts, &r_parts, &swap_parts),
            outcome(&one, &r_one, &swap_one)
        );
        // The same kept open by the stage, and the same on a board.
        let open = |r: &Resharder| {
            let mut v: Vec<_> = r
                .handoffs(now)
                .map(|h| (h.session, h.previous, h.current, h.plan, h.until))
                .collect();
            v.sort_unstable_by_key(|h| h.0);
            v
        };
        assert_eq!(open(&r_parts), open(&r_one));
        assert_eq!(open(&r_parts).len(), moved.len());
        let (board_one, board_parts) = (HandoffBoard::default(), HandoffBoard::default());
        board_one.publish(&swap_one.handoffs, now);
        board_parts.publish(&swap_parts.handoffs, now);
        for k in &moved {
            let (a, b) = (board_parts.get(k, now), board_one.get(k, now));
            assert_eq!(
                a.map(|p| (p.previous, p.until)),
                b.map(|p| (p.previous, p.until))
            );
            assert!(a.is_some());
        }
        assert_eq!(board_parts.len(), moved.len());
    }

    #[test]
    fn placements_a_full_map_refused_in_a_part_are_retried_after_the_removals() {
        let now = Instant::now();
        // Room for the 40 in force only: the new ones, first in the target, fit once 30..40
        // are gone, which the last part does.
        let (mut one, target, listed) = change(90);
        let mut r_one = Resharder::adopt(&one, WINDOW).expect("adopt");
        let swap_one = r_one
            .apply_in_parts(&mut one, &target, &listed, now, usize::MAX)
            .expect("one delta");
        let (mut parts, _, _) = change(90);
        parts.capacity = 40;
        let mut r_parts = Resharder::adopt(&parts, WINDOW).expect("adopt");
        // The first part meets a full map.
        let swap_parts = r_parts
            .apply_in_parts(&mut parts, &target, &listed, now, 7)
            .expect("in parts");
        assert_eq!(
            swap_parts.placements_refused.len(),
            60 - 10,
            "10 found room"
        );
        assert_eq!(parts.tables.sessions.len(), 40);
        // With room for all, the parts leave what one delta leaves.
        let (mut parts, _, _) = change(90);
        let mut r_parts = Resharder::adopt(&parts, WINDOW).expect("adopt");
        parts.capacity = 40;
        let mut first = Listed(listed.0[..7].to_vec());
        first.0.extend(listed.0[60..].iter().copied());
        let swap = r_parts
            .apply_in_parts(&mut parts, &target, &first, now, 7)
            .expect("the first 7 refused, then room");
        assert!(swap.placements_refused.is_empty(), "{swap:?}");
        assert_eq!(parts.tables.sessions.len(), 37);
        assert!(swap_one.placements_refused.is_empty());
    }
}
