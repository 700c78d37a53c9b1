//! Publishing handoffs to the dataplane, so it marks a moved key's packets with the previous
//! owner (`shardline_common::handoff`): before the `SESSIONS` update that moves a header-mode
//! session, its previous placement goes into `HANDOFFS` and the update itself carries the
//! window flag; once the window closes, one more `SESSIONS` update clears the flag and the
//! entry is removed. Sessions never moved, and those whose window has closed, carry no flag:
//! the dataplane does not look them up.

use std::time::{Duration, Instant};

use shardline_common::{
    handoff::{Handoff, WINDOW_OPEN},
    maps::{session_mode, ShardSet},
};

use super::{home_set, moves_keys, ReshardError, Resharder, TableWriter};
use crate::{maps::monotonic_ns, snapshot::delta::TableDelta};

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
        // The moves' entries, all written before any placement that flags them (one batch).
        let (mut moved, mut entries) = (Vec::new(), Vec::new());
        for (i, (key, set)) in delta.sessions.iter_mut().enumerate() {
            if !header.contains(&key.service) {
                continue;
            }
            let previous = match self.placed.get(key) {
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
            moved.push(i);
            entries.push((*key, handoff));
        }
        if entries.is_empty() {
            return Ok(());
        }
        let written = maps.write_handoffs(&entries)?;
        let mut stale = Vec::new();
        for ((i, (key, _)), written) in moved.into_iter().zip(&entries).zip(written) {
            if written {
                delta.sessions[i].1.handoff = WINDOW_OPEN;
                self.flagged.insert(*key, until);
            } else if self.flagged.remove(key).is_some() {
                // A full map refused it: the entry of an earlier move must not stay behind
                // (the placement about to be written carries no flag).
                stale.push(*key);
            }
        }
        maps.remove_handoffs(&stale)?;
        Ok(())
    }

    /// After a delta removing `removed` placements: their entries go too.
    pub(super) fn forget_removed(
        &mut self,
        maps: &mut impl TableWriter,
        removed: &[shardline_common::maps::SessionKey],
    ) -> Result<(), ReshardError> {
        let flagged: Vec<_> = removed
            .iter()
            .filter(|key| self.flagged.remove(key).is_some())
            .copied()
            .collect();
        maps.remove_handoffs(&flagged)?;
        Ok(())
    }

    /// Closes every window that ended by `now` in the dataplane: a `SESSIONS` update per
    /// session clears its flag (in batches), then its `HANDOFFS` entry is removed. The kernel already stops
    /// marking at the window's end by its own clock; this saves the lookup and the room.
    pub fn close_windows(
        &mut self,
        maps: &mut impl TableWriter,
        now: Instant,
    ) -> Result<(), ReshardError> {
        let closed: Vec<_> = self
            .flagged
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| *key)
            .collect();
        if closed.is_empty() {
            return Ok(());
        }
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
        maps.remove_handoffs(&closed)?;
        for key in closed {
            self.flagged.remove(&key);
        }
        Ok(())
    }

    /// When the next window closes in the dataplane ([`Resharder::close_windows`]).
    pub fn next_close(&self) -> Option<Instant> {
        self.flagged.values().min().copied()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
