//! Publishing handoffs to the dataplane, so it marks a moved key's packets with the previous
//! owner (`shardline_common::handoff`): before the `SESSIONS` update that moves a header-mode
//! session, its previous placement goes into `HANDOFFS` and the update itself carries the
//! window flag; once the window closes, one more `SESSIONS` update clears the flag and the
//! entry is removed. Sessions never moved, and those whose window has closed, carry no flag:
//! the dataplane does not look them up.

use std::time::{Duration, Instant};

use shardline_common::{
    handoff::{Handoff, WINDOW_OPEN},
    maps::{session_mode, SessionKey, ShardSet},
};

use super::{home_set, moves_keys, ReshardError, Resharder, TableWriter};
use crate::{maps::monotonic_ns, snapshot::delta::TableDelta};

/// A swap's moves as `flag_moves` writes them to `HANDOFFS`: each one's index in the delta,
/// its session and its entry, in three lists (the keys and the entries are the batch write's
/// two arrays). Kept by the swap stage from one swap to the next, emptied.
#[derive(Debug, Default)]
pub(super) struct Moves {
    at: Vec<usize>,
    keys: Vec<SessionKey>,
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
        // The moves' entries, all written before any placement that flags them (one batch),
        // into buffers kept from the last swap (a tick's 10,000 are 2 MiB of values: glibc
        // handed such blocks back to the kernel at every free, and the next swap faulted them
        // in again).
        let Moves {
            mut at,
            mut keys,
            mut values,
        } = std::mem::take(&mut self.moves);
        at.clear();
        keys.clear();
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
                if self.flagged.contains_key(key) {
                    set.handoff = WINDOW_OPEN;
                }
                continue;
            }
            let handoff = Handoff {
                until_ns,
                previous: ShardSet {
                    stats_slot: 0,
                    handoff: 0,
                    ..previous
                },
            };
            at.push(i);
            keys.push(*key);
            values.push(handoff);
        }
        let written = match keys.is_empty() {
            true => Vec::new(),
            false => maps.write_handoffs(&keys, &values)?,
        };
        let mut stale = Vec::new();
        for ((i, key), written) in at.iter().zip(&keys).zip(written) {
            if written {
                delta.sessions[*i].1.handoff = WINDOW_OPEN;
                self.flagged.insert(*key, until, ());
            } else if self.flagged.remove(key) {
                // A full map refused it: the entry of an earlier move must not stay behind
                // (the placement about to be written carries no flag).
                stale.push(*key);
            }
        }
        self.moves = Moves { at, keys, values };
        maps.remove_handoffs(&stale)?;
        Ok(())
    }

    /// After a delta removing `removed` placements: their entries go too.
    pub(super) fn forget_removed(
        &mut self,
        maps: &mut impl TableWriter,
        removed: &[SessionKey],
    ) -> Result<(), ReshardError> {
        let flagged: Vec<_> = removed
            .iter()
            .filter(|key| self.flagged.remove(key))
            .copied()
            .collect();
        maps.remove_handoffs(&flagged)?;
        Ok(())
    }

    /// Closes every window that ended by `now` in the dataplane: a `SESSIONS` update per
    /// session clears its flag (in batches), then its `HANDOFFS` entry is removed. The kernel
    /// already stops marking at the window's end by its own clock; this saves the lookup and
    /// the room.
    pub fn close_windows(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
    ) -> Result<(), ReshardError> {
        self.close_due(maps, now, usize::MAX).map(drop)
    }

    /// [`Resharder::close_windows`] for at most `limit` sessions, the earliest ends first;
    /// whether windows that ended by `now` are left open (the caller closes them next, once
    /// what waits on the maps is written: a burst of placements ends its windows together).
    pub fn close_due(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
        limit: usize,
    ) -> Result<bool, ReshardError> {
        let closed = self.flagged.take_due(now, limit);
        if closed.is_empty() {
            return Ok(false);
        }
        let written = self.write_closed(maps, &closed);
        if written.is_err() {
            // Flagged again, due at once: the next close writes them again.
            for key in &closed {
                self.flagged.insert(*key, now, ());
            }
        }
        written?;
        Ok(self.flagged.next_end().is_some_and(|end| end <= now))
    }

    /// The writes closing the windows of `closed`: flags cleared, then entries removed.
    fn write_closed(
        &mut self,
        maps: &mut impl TableWriter,
        closed: &[SessionKey],
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
        maps.remove_handoffs(closed)?;
        Ok(())
    }

    /// When the next window closes in the dataplane ([`Resharder::close_windows`]); a past
    /// instant while windows due are left open.
    pub fn next_close(&self) -> Option<Instant> {
        self.flagged.next_end()
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
    use crate::reshard::{held::Held, Swap};

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

    /// The `HANDOFFS` entries by session, their end aside (each write reads the clock).
    fn published(maps: &Held) -> HashMap<SessionKey, ShardSet> {
        let h = &maps.tables.handoffs;
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
            assert_eq!(
                tick_maps.tables.sessions, whole_maps.tables.sessions,
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
            assert_eq!(tick.next_close(), whole.next_close(), "tick {n}");
        }
        let flags = |maps: &Held| -> Vec<_> {
            let mut f: Vec<_> = maps
                .tables
                .sessions
                .iter()
                .filter(|(_, s)| s.handoff == WINDOW_OPEN)
                .map(|(k, _)| k.session)
                .collect();
            f.sort_unstable();
            f
        };
        // 1 (moved, then rewritten in its window) and 3 (moved twice); 2 never changed.
        assert_eq!(flags(&tick_maps), [1, 3]);
        assert_eq!(published(&tick_maps)[&key(3)].backends[..2], [3, 4]);
    }

    /// Windows due close a chunk at a time, each session's flag cleared and its entry
    /// removed; the rest stay due, and a session moved again closes at its later end.
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
        let open = |maps: &Held| {
            let flagged = maps.tables.sessions.values();
            let flagged = flagged.filter(|s| s.handoff == WINDOW_OPEN).count();
            (flagged, maps.tables.handoffs.len())
        };
        assert_eq!(open(&maps), (3, 3));
        let end = t0 + WINDOW;
        assert!(
            r.close_due(&mut maps, end, 1).expect("close"),
            "one more due"
        );
        assert_eq!(open(&maps), (2, 2));
        assert_eq!(r.next_close(), Some(end));
        assert!(!r.close_due(&mut maps, end, 1).expect("close"), "none due");
        assert_eq!(open(&maps), (1, 1));
        assert!(maps.tables.handoffs.contains_key(&key(3)));
        assert_eq!(r.next_close(), Some(t0 + WINDOW / 2 + WINDOW));
        r.close_windows(&mut maps, t0 + 2 * WINDOW).expect("close");
        assert_eq!((open(&maps), r.next_close()), ((0, 0), None));
        assert_eq!(maps.tables.sessions.len(), 3, "the placements stay");
    }
}
