//! The free slots of the per-CPU session counters array (`SESSION_SLOT_STATS`): a placed
//! session gets one when the daemon writes its shard set, and gives it back when it is unplaced.
//! Freed slots are reused last (first in, first out), so a flow entry still naming a freed slot
//! rarely meets a new owner; when it does, the dataplane's owner check sends its counts to the
//! LRU counters rather than to the wrong session.

use std::collections::VecDeque;

use shardline_common::consts::MAX_SESSION_SLOTS;

/// Slots `1..MAX_SESSION_SLOTS`, each either free or in use (slot 0 means "none").
#[derive(Debug)]
pub struct StatsSlots {
    free: VecDeque<u32>,
    in_use: Vec<bool>,
}

impl StatsSlots {
    /// Every slot free except `used` (the slots the SESSIONS map already names).
    pub fn new(used: impl IntoIterator<Item = u32>) -> Self {
        let mut in_use = vec![false; MAX_SESSION_SLOTS as usize];
        in_use[0] = true;
        for slot in used {
            if let Some(u) = in_use.get_mut(slot as usize) {
                *u = true;
            }
        }
        let free = (1..MAX_SESSION_SLOTS)
            .filter(|&s| !in_use[s as usize])
            .collect();
        Self { free, in_use }
    }

    /// A free slot, now in use; `None` when all are taken.
    pub fn take(&mut self) -> Option<u32> {
        let slot = self.free.pop_front()?;
        self.in_use[slot as usize] = true;
        Some(slot)
    }

    /// Returns `slot` to the free ones; slot 0, unknown slots and free slots are ignored.
    pub fn release(&mut self, slot: u32) {
        match self.in_use.get_mut(slot as usize) {
            Some(u) if *u && slot != 0 => {
                *u = false;
                self.free.push_back(slot);
            }
            _ => {}
        }
    }

    /// The slots in use, ascending.
    pub fn in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.in_use
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, u)| **u)
            .map(|(slot, _)| slot as u32)
    }

    /// How many slots are free.
    pub fn free(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_slot_zero_or_a_used_slot() {
        let mut slots = StatsSlots::new([1, 3]);
        assert_eq!(slots.take(), Some(2));
        assert_eq!(slots.take(), Some(4));
        assert_eq!(slots.free(), MAX_SESSION_SLOTS as usize - 5);
    }

    #[test]
    fn in_use_lists_the_taken_slots_not_the_freed_ones() {
        let mut slots = StatsSlots::new([5]);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        slots.release(a);
        assert_eq!(slots.in_use().collect::<Vec<_>>(), vec![b, 5]);
    }

    #[test]
    fn freed_slots_are_reused_last() {
        let mut slots = StatsSlots::new([]);
        let a = slots.take().unwrap();
        slots.release(a);
        assert_ne!(slots.take(), Some(a));
    }

    #[test]
    fn releasing_twice_or_slot_zero_changes_nothing() {
        let mut slots = StatsSlots::new([]);
        let a = slots.take().unwrap();
        let before = slots.free();
        slots.release(a);
        slots.release(a);
        slots.release(0);
        slots.release(u32::MAX);
        assert_eq!(slots.free(), before + 1);
    }

    #[test]
    fn runs_out_then_recovers() {
        let mut slots = StatsSlots::new([]);
        let taken: Vec<u32> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken.len(), MAX_SESSION_SLOTS as usize - 1);
        assert_eq!(slots.take(), None);
        slots.release(taken[7]);
        assert_eq!(slots.take(), Some(taken[7]));
    }
}
