//! Which `HANDOFF_SLOTS` slot each open handoff window uses, and which slots may be written.
//!
//! The dataplane reads a slot in place, and the daemon writes one in place: a slot is safe to
//! write only while no packet can be reading it. A packet reads the slot its placement names,
//! for the few microseconds its run takes, and a placement stops naming a slot with one atomic
//! `SESSIONS` update (a window closed, the session moved again or unplaced). So a slot is
//! written only if it is free: never named since the maps were read, or named last at least
//! [`QUARANTINE`] ago (from the return of the write that replaced the last placement naming
//! it), which is far longer than any packet's run. A slot leaving quarantine is cleared
//! (`until_ns` 0), so the array shows which windows are open.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;
use shardline_common::{consts::MAX_HANDOFFS, maps::SessionKey};

/// How long a slot no placement names any more stays unwritten.
pub const QUARANTINE: Duration = Duration::from_secs(1);

/// The slots, by session and by state (see the module header).
#[derive(Debug)]
pub(super) struct Slots {
    /// Free slots, the lowest on top.
    free: Vec<u32>,
    /// Slots named by no placement since the instant each holds, oldest first.
    quarantined: VecDeque<(Instant, u32)>,
    /// Slots whose last naming placement is being replaced by the write under way: they
    /// enter quarantine once it returns ([`Slots::retired`]).
    retiring: Vec<u32>,
    /// Each flagged session's slot.
    of: FxHashMap<SessionKey, u32>,
    /// Placements naming each slot: 0 or 1 (more only in maps an earlier writer left so).
    refs: Vec<u32>,
}

impl Default for Slots {
    fn default() -> Self {
        Self::with_capacity(MAX_HANDOFFS)
    }
}

impl Slots {
    /// `capacity` slots, all free.
    pub(super) fn with_capacity(capacity: u32) -> Self {
        Self {
            free: (0..capacity).rev().collect(),
            quarantined: VecDeque::new(),
            retiring: Vec::new(),
            of: FxHashMap::default(),
            refs: vec![0; capacity as usize],
        }
    }

    /// The slot `key`'s placement names.
    pub(super) fn of(&self, key: &SessionKey) -> Option<u32> {
        self.of.get(key).copied()
    }

    /// A free slot for a new window of `key`, or `None` when none is free. Either way the
    /// slot of `key`'s earlier window retires: the placement about to be written names the
    /// new slot or none.
    pub(super) fn take(&mut self, key: SessionKey) -> Option<u32> {
        let Some(slot) = self.free.pop() else {
            self.release(&key);
            return None;
        };
        self.refs[slot as usize] += 1;
        if let Some(earlier) = self.of.insert(key, slot) {
            self.unref(earlier);
        }
        Some(slot)
    }

    /// `key`'s placement is about to stop naming its slot (its window closes, or it is
    /// unplaced): the slot retires.
    pub(super) fn release(&mut self, key: &SessionKey) {
        if let Some(slot) = self.of.remove(key) {
            self.unref(slot);
        }
    }

    fn unref(&mut self, slot: u32) {
        let refs = &mut self.refs[slot as usize];
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            self.retiring.push(slot);
        }
    }

    /// The write replacing the placements that named the retiring slots returned at `now`:
    /// their quarantine starts.
    pub(super) fn retired(&mut self, now: Instant) {
        self.quarantined
            .extend(self.retiring.drain(..).map(|slot| (now, slot)));
    }

    /// Takes up to `limit` slots whose quarantine ended by `now`, the oldest first, for the
    /// caller to clear and then give back ([`Slots::cleared`]).
    pub(super) fn due(&mut self, now: Instant, limit: usize) -> Vec<u32> {
        let mut due = Vec::new();
        while let Some(&(since, slot)) = self.quarantined.front() {
            if since + QUARANTINE > now || due.len() >= limit {
                break;
            }
            self.quarantined.pop_front();
            due.push(slot);
        }
        due
    }

    /// Slots taken by [`Slots::due`] and cleared in the map: free again.
    pub(super) fn cleared(&mut self, slots: Vec<u32>) {
        self.free.extend(slots);
    }

    /// When the next quarantine ends.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.quarantined
            .front()
            .map(|(since, _)| *since + QUARANTINE)
    }

    /// Sessions with a slot.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.of.len()
    }

    /// Starts over from the slots the maps' placements name (`named`, read back at `now`):
    /// those are in use; a slot free before stays free; every other one (in quarantine, in
    /// use or being written before) is in quarantine, from `now` if it was not already.
    pub(super) fn rebuild(
        &mut self,
        named: impl IntoIterator<Item = (SessionKey, u32)>,
        now: Instant,
    ) {
        let capacity = self.refs.len();
        let mut was_free = vec![false; capacity];
        for slot in &self.free {
            was_free[*slot as usize] = true;
        }
        self.of.clear();
        self.refs.iter_mut().for_each(|r| *r = 0);
        for (key, slot) in named {
            // A flag past the array names no slot the dataplane can read.
            if let Some(refs) = self.refs.get_mut(slot as usize) {
                *refs += 1;
                self.of.insert(key, slot);
            }
        }
        let refs = &self.refs;
        // The quarantined slots no placement names keep waiting, from when they began.
        let mut waiting = vec![false; capacity];
        let mut quarantined: VecDeque<(Instant, u32)> = self
            .quarantined
            .drain(..)
            .filter(|(_, slot)| refs[*slot as usize] == 0)
            .inspect(|(_, slot)| waiting[*slot as usize] = true)
            .collect();
        self.retiring.clear();
        self.free.clear();
        for slot in (0..capacity as u32).rev() {
            let i = slot as usize;
            if refs[i] > 0 || waiting[i] {
                continue;
            }
            match was_free[i] {
                true => self.free.push(slot),
                false => quarantined.push_back((now, slot)),
            }
        }
        self.quarantined = quarantined;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: u64) -> SessionKey {
        SessionKey::new(1, session)
    }

    #[test]
    fn a_slot_is_written_again_only_a_quarantine_after_its_placement_stopped_naming_it() {
        let t0 = Instant::now();
        let mut slots = Slots::with_capacity(2);
        let a = slots.take(key(1)).expect("a free slot");
        let b = slots.take(key(2)).expect("another");
        assert_ne!(a, b);
        assert_eq!(slots.take(key(3)), None, "two slots, both named");
        // Session 1 moves again: no slot is free, so it loses its window, and its slot waits.
        assert_eq!(slots.take(key(1)), None);
        assert_eq!(slots.of(&key(1)), None);
        slots.retired(t0);
        assert_eq!(slots.due(t0 + QUARANTINE / 2, 8), Vec::<u32>::new());
        assert_eq!(slots.next_due(), Some(t0 + QUARANTINE));
        let due = slots.due(t0 + QUARANTINE, 8);
        assert_eq!(due, [a]);
        slots.cleared(due);
        // Session 2 moves again: the freed slot, and its own one waits in turn.
        assert_eq!(slots.take(key(2)), Some(a));
        slots.retired(t0 + QUARANTINE);
        assert_eq!(slots.take(key(4)), None, "b is in quarantine");
        assert_eq!(slots.due(t0 + 2 * QUARANTINE, 1), [b]);
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn a_rebuild_keeps_named_slots_in_use_and_holds_back_every_slot_that_may_be_read() {
        let t0 = Instant::now();
        let mut slots = Slots::with_capacity(4);
        let first = slots.take(key(1)).unwrap();
        let second = slots.take(key(2)).unwrap();
        slots.release(&key(1));
        slots.retired(t0);
        // A write failed half way: the maps say session 2 names its slot and session 9 (an
        // earlier writer's) names slot 3; slot 0 (released) stays in quarantine from t0.
        let later = t0 + QUARANTINE / 2;
        slots.rebuild([(key(2), second), (key(9), 3), (key(8), 99)], later);
        assert_eq!(
            (slots.of(&key(2)), slots.of(&key(9))),
            (Some(second), Some(3))
        );
        assert_eq!(slots.of(&key(8)), None, "past the array");
        assert_eq!(slots.take(key(5)), Some(2), "the one slot never used");
        assert_eq!(slots.take(key(6)), None);
        assert!(slots.due(t0 + QUARANTINE, 0).is_empty(), "a limit of 0");
        assert_eq!(slots.due(t0 + QUARANTINE, 8), [first]);
    }
}
