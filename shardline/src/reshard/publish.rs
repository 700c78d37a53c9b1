//! Publishing handoffs to the dataplane, so it marks a moved key's packets with the previous
//! owner (`shardline_common::handoff`): before the `SESSIONS` update that moves a header-mode
//! session, its previous placement goes into a free `HANDOFF_SLOTS` slot (`super::slots`) and
//! the update itself names the slot (the window flag); once the window closes, one more
//! `SESSIONS` update clears the flag and the slot goes into quarantine, then is cleared.
//! Sessions never moved, and those whose window has closed, carry no flag: the dataplane does
//! not look them up.

use std::time::{Duration, Instant};

use shardline_common::{
    handoff::{flag_of_slot, Handoff},
    maps::{session_mode, SessionKey, ShardSet},
};

use super::{home_set, moves_keys, ReshardError, Resharder, TableWriter};
use crate::{maps::monotonic_ns, snapshot::delta::TableDelta};

/// A swap's moves as `flag_moves` writes them to `HANDOFF_SLOTS`: each one's slot and entry
/// (the batch write's two arrays). Kept by the swap stage from one swap to the next, emptied.
#[derive(Debug, Default)]
pub(super) struct Moves {
    slots: Vec<u32>,
    values: Vec<Handoff>,
}

impl Resharder {
    /// Before `delta` is written: publishes the previous placement of every header-mode
    /// session it moves and sets the window flag on its placement in `delta` (the tables in
    /// force keep sets without it). A placement rewritten without a move keeps an open window.
    pub(super) fn flag_moves(
        &mut self,
        maps: &mut impl TableWriter,
        delta: &mut TableDelta,
        now: Instant,
    ) -> Result<(), ReshardError> {
        if delta.sessions.is_empty() || self.handoff_window.is_zero() {
            return Ok(());
        }
        let header: std::collections::HashSet<u32> = self
            .tables
            .services
            .values()
            .filter(|s| s.mode == session_mode::HEADER)
            .map(|s| s.id)
            .collect();
        let until = now + self.handoff_window;
        let until_ns = monotonic_ns().saturating_add(nanos(self.handoff_window));
        // The moves' slots, all written before any placement that names them (one batch),
        // into buffers kept from the last swap (a tick's 10,000 are 2 MiB of values: glibc
        // handed such blocks back to the kernel at every free, and the next swap faulted them
        // in again).
        let Moves {
            mut slots,
            mut values,
        } = std::mem::take(&mut self.moves);
        slots.clear();
        values.clear();
        for (i, (key, set)) in delta.sessions.iter_mut().enumerate() {
            if !header.contains(&key.service) {
                continue;
            }
            // What the delta's own computation found in force, else looked up again.
            let in_force = match delta.replaced.at(i, key) {
                Some(in_force) => in_force,
                None => self.placed.get(key),
            };
            let previous = match in_force {
                Some(previous) => previous,
                None => match home_set(&self.tables, key) {
                    Some(home) => home,
                    None => continue,
                },
            };
            if !moves_keys(&previous, set) {
                if let Some(slot) = self.slots.of(key) {
                    set.handoff = flag_of_slot(slot);
                }
                continue;
            }
            let Some(slot) = self.slots.take(*key) else {
                // No slot free: this move is published by the API only, and the window of an
                // earlier move (if any) ends with the placement about to be written.
                self.flagged.remove(key);
                continue;
            };
            let handoff = Handoff {
                until_ns,
                previous: ShardSet {
                    stats_slot: 0,
                    handoff: 0,
                    ..previous
                },
            };
            set.handoff = flag_of_slot(slot);
            self.flagged.insert(*key, until, ());
            slots.push(slot);
            values.push(handoff);
        }
        // Every slot written before any placement that names it (one batch).
        let written = match slots.is_empty() {
            true => Ok(()),
            false => maps.write_handoff_slots(&slots, &values),
        };
        self.moves = Moves { slots, values };
        written.inspect_err(|_| self.stale = true)?;
        Ok(())
    }

    /// After a delta removing `removed` placements: their windows end and their slots retire.
    pub(super) fn forget_removed(&mut self, removed: &[SessionKey]) {
        for key in removed {
            self.flagged.remove(key);
            self.slots.release(key);
        }
    }

    /// Closes every window that ended by `now` in the dataplane: a `SESSIONS` update per
    /// session clears its flag (in batches), and its slot goes into quarantine; slots whose
    /// quarantine ended are cleared. The kernel already stops marking at the window's end by
    /// its own clock; this saves the lookup and frees the slot.
    pub fn close_windows(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
    ) -> Result<(), ReshardError> {
        self.close_due(maps, now, usize::MAX).map(drop)
    }

    /// [`Resharder::close_windows`] for at most `limit` sessions and `limit` slots, the
    /// earliest ends first; whether windows that ended by `now` are left open or slots left
    /// to clear (the caller closes them next, once what waits on the maps is written: a burst
    /// of placements ends its windows together).
    pub fn close_due(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
        limit: usize,
    ) -> Result<bool, ReshardError> {
        self.clear_quarantined(maps, now, limit)?;
        let closed = self.flagged.take_due(now, limit);
        let left = |r: &Self| r.next_close().is_some_and(|at| at <= now);
        if closed.is_empty() {
            return Ok(left(self));
        }
        let written = self.write_closed(maps, &closed, now);
        if written.is_err() {
            // Flagged again, due at once: the next close writes them again.
            for key in &closed {
                self.flagged.insert(*key, now, ());
            }
        }
        written?;
        Ok(left(self))
    }

    /// The writes closing the windows of `closed`: flags cleared, then their slots retire.
    fn write_closed(
        &mut self,
        maps: &mut impl TableWriter,
        closed: &[SessionKey],
        now: Instant,
    ) -> Result<(), ReshardError> {
        self.refresh(maps)?;
        let sessions = closed
            .iter()
            .filter_map(|key| self.placed.get(key).map(|set| (*key, set)))
            .collect();
        let clear = TableDelta {
            sessions,
            ..TableDelta::default()
        };
        maps.write_delta(&clear)
            .inspect_err(|_| self.stale = true)?;
        for key in closed {
            self.slots.release(key);
        }
        self.slots.retired(Instant::now().max(now));
        Ok(())
    }

    /// Clears up to `limit` slots whose quarantine ended by `now`, which are then free.
    fn clear_quarantined(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
        limit: usize,
    ) -> Result<(), ReshardError> {
        let due = self.slots.due(now, limit);
        if due.is_empty() {
            return Ok(());
        }
        // On failure the maps are read again, and every slot no placement names waits a
        // quarantine once more before it is cleared.
        maps.clear_handoff_slots(&due)
            .inspect_err(|_| self.stale = true)?;
        self.slots.cleared(due);
        Ok(())
    }

    /// When the next window closes in the dataplane, or the next slot leaves its quarantine
    /// ([`Resharder::close_windows`]); a past instant while windows due are left open.
    pub fn next_close(&self) -> Option<Instant> {
        [self.flagged.next_end(), self.slots.next_due()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Windows closed per write: a swap closes at most this many before its own writes, and the
/// daemon's applier closes the rest this many at a time, writing any newer state in between
/// (a burst of placements ends tens of thousands of windows at once, 2 µs of kernel work
/// each).
pub const CLOSE_CHUNK: usize = 2_048;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shardline_common::{
        maps::{scheme, session_mode, Service, ServiceKey, SessionKey},
        partition::shard_set,
    };

    use super::*;
    use crate::reshard::{
        held::{flagged_as_one, Held},
        slots::QUARANTINE,
        Swap,
    };

    const WINDOW: Duration = Duration::from_secs(2);

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    /// Backends 1 to 4 and a header service (id 1) with sessions 1 to 3 placed on [1, 2].
    fn header_maps() -> Held {
        let mut maps = Held::four_backends(100);
        let t = &mut maps.tables;
        let kv = ServiceKey::new("10.100.0.1".parse().unwrap(), 7000, 17);
        let header = Service {
            id: 1,
            mode: session_mode::HEADER,
            ..Service::default()
        };
        t.services.insert(kv, header);
        for session in 1..=3 {
            t.sessions
                .insert(key(session), shard_set(&[1, 2], scheme::HASH, 3));
        }
        maps
    }

    /// The handoffs the flagged placements name, by session, their end aside (each write
    /// reads the clock).
    fn published(maps: &Held) -> HashMap<SessionKey, ShardSet> {
        let h = maps.handoffs();
        h.iter().map(|(k, h)| (*k, h.previous)).collect()
    }

    /// A tick's delta carries what was in force (`TableDelta::replaced`); a whole write's
    /// parts do not, and `flag_moves` looks each session up. Both must flag and publish alike:
    /// moved, first placed (its home is the previous owner), rewritten without a move while
    /// its window is open, and unchanged, named in no order and one twice.
    #[test]
    fn a_tick_flags_and_publishes_the_moves_a_whole_write_does() {
        let t0 = Instant::now();
        let (mut tick_maps, mut whole_maps) = (header_maps(), header_maps());
        let mut tick = Resharder::adopt(&tick_maps, WINDOW).expect("adopt");
        let mut whole = Resharder::adopt(&whole_maps, WINDOW).expect("adopt");
        let set = |backends: &[u32]| Some(shard_set(backends, scheme::HASH, 1));
        let ticks = [
            vec![
                (key(3), set(&[3, 4])),
                (key(9), set(&[2, 3])),
                (key(1), set(&[1, 3])),
                (key(3), set(&[3, 4])),
                (key(2), set(&[1, 2])),
            ],
            // Session 1 again in other order (no key moves, its window is open), 3 moved
            // back, 9 unplaced.
            vec![
                (key(1), set(&[3, 1])),
                (key(9), None),
                (key(3), set(&[1, 2])),
            ],
        ];
        for (n, changes) in ticks.iter().enumerate() {
            let delta = TableDelta::of_sessions(tick.placed(), changes);
            assert_eq!(delta.replaced.0.len(), delta.sessions.len(), "tick {n}");
            let a = tick
                .apply_sessions(&mut tick_maps, changes, t0)
                .expect("apply_sessions");
            let mut target = whole.tables();
            for (k, set) in changes {
                match set {
                    Some(set) => target.sessions.insert(*k, *set),
                    None => target.sessions.remove(k),
                };
            }
            let b = whole
                .apply(&mut whole_maps, &target, t0)
                .expect("whole apply");
            let mut placements =
                [&tick_maps, &whole_maps].map(|m| flagged_as_one(&m.tables.sessions));
            placements
                .iter_mut()
                .for_each(|p| p.sort_unstable_by_key(|(k, _)| *k));
            assert_eq!(
                placements[0], placements[1],
                "tick {n}: placements and their window flags"
            );
            assert_eq!(published(&tick_maps), published(&whole_maps), "tick {n}");
            let moves = |s: &Swap| -> Vec<_> {
                let mut m: Vec<_> = s
                    .handoffs
                    .iter()
                    .map(|h| (h.session, h.previous()))
                    .collect();
                m.sort_unstable_by_key(|(k, _)| *k);
                m
            };
            assert_eq!(moves(&a), moves(&b), "tick {n}");
            assert_eq!(
                tick.flagged.next_end(),
                whole.flagged.next_end(),
                "tick {n}"
            );
        }
        let flags = |maps: &Held| -> Vec<_> {
            let mut f: Vec<_> = maps
                .tables
                .sessions
                .iter()
                .filter(|(_, s)| s.handoff != 0)
                .map(|(k, _)| k.session)
                .collect();
            f.sort_unstable();
            f
        };
        // 1 (moved, then rewritten in its window) and 3 (moved twice); 2 never changed.
        assert_eq!(flags(&tick_maps), [1, 3]);
        assert_eq!(published(&tick_maps)[&key(3)].backends[..2], [3, 4]);
    }

    /// Windows due close a chunk at a time, each session's flag cleared and its slot put in
    /// quarantine, then cleared; the rest stay due, and a session moved again closes at its
    /// later end, its first slot cleared a quarantine after the second move.
    #[test]
    fn windows_due_close_a_chunk_at_a_time_each_at_its_latest_end() {
        let t0 = Instant::now();
        let mut maps = header_maps();
        let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
        let set = |backends: &[u32]| Some(shard_set(backends, scheme::HASH, 1));
        let moves: Vec<_> = (1..=3).map(|s| (key(s), set(&[3, 4]))).collect();
        r.apply_sessions(&mut maps, &moves, t0).expect("move");
        let again = [(key(3), set(&[1, 4]))];
        r.apply_sessions(&mut maps, &again, t0 + WINDOW / 2)
            .expect("move again");
        // Placements flagged, their handoffs, and slots written but not cleared.
        let open = |maps: &Held| {
            let flagged = maps.tables.sessions.values();
            let flagged = flagged.filter(|s| s.handoff != 0).count();
            (flagged, maps.handoffs().len(), maps.slots_in_use())
        };
        assert_eq!(open(&maps), (3, 3, 4), "session 3's first slot waits");
        let end = t0 + WINDOW;
        assert!(
            r.close_due(&mut maps, end, 1).expect("close"),
            "one more due"
        );
        assert_eq!(open(&maps), (2, 2, 3), "the first slot cleared");
        assert_eq!(r.next_close(), Some(end));
        assert!(!r.close_due(&mut maps, end, 1).expect("close"), "none due");
        assert_eq!(open(&maps), (1, 1, 3));
        assert!(maps.handoffs().contains_key(&key(3)));
        // Session 3's window ends at t0 + 3/2 WINDOW, and so do the quarantines begun at end.
        assert_eq!(r.next_close(), Some(t0 + WINDOW / 2 + WINDOW));
        r.close_windows(&mut maps, t0 + 2 * WINDOW).expect("close");
        assert_eq!(open(&maps), (0, 0, 1));
        assert_eq!(r.next_close(), Some(t0 + 2 * WINDOW + QUARANTINE));
        r.close_windows(&mut maps, t0 + 2 * WINDOW + QUARANTINE)
            .expect("clear");
        assert_eq!((open(&maps), r.next_close()), ((0, 0, 0), None));
        assert_eq!(maps.tables.sessions.len(), 3, "the placements stay");
    }

    /// A move finds no free slot once every slot is named or in quarantine: it is published
    /// by the API only, its placement unflagged, and a slot freed by a closed window is used
    /// again only a quarantine after the close.
    #[test]
    fn moves_beyond_the_slots_go_unflagged_and_a_slot_is_reused_only_after_its_quarantine() {
        let t0 = Instant::now();
        let mut maps = header_maps();
        let mut r = Resharder::adopt(&maps, WINDOW).expect("adopt");
        r.slots = crate::reshard::slots::Slots::with_capacity(2);
        let set = |backends: &[u32]| Some(shard_set(backends, scheme::HASH, 1));
        let moves: Vec<_> = (1..=3).map(|s| (key(s), set(&[3, 4]))).collect();
        let swap = r.apply_sessions(&mut maps, &moves, t0).expect("move");
        assert_eq!(swap.handoffs.len(), 3, "every move is published to the API");
        let flags: Vec<u32> = (1..=3)
            .map(|s| maps.tables.sessions[&key(s)].handoff)
            .collect();
        assert_eq!(flags, [1, 2, 0], "slots 0 and 1, then none");
        r.close_windows(&mut maps, t0 + WINDOW).expect("close");
        let again = [(key(3), set(&[1, 2]))];
        r.apply_sessions(&mut maps, &again, t0 + WINDOW + QUARANTINE / 2)
            .expect("move in quarantine");
        assert_eq!(maps.tables.sessions[&key(3)].handoff, 0, "both slots wait");
        r.apply_sessions(
            &mut maps,
            &[(key(3), set(&[3, 4]))],
            t0 + WINDOW + QUARANTINE,
        )
        .expect("move after it");
        let flag = maps.tables.sessions[&key(3)].handoff;
        assert!(flag == 1 || flag == 2, "a slot again, not {flag}");
        assert_eq!(maps.handoffs()[&key(3)].previous.members(), [1, 2]);
    }
}
