//! The `HANDOFF_SLOTS` array (`shardline_common::handoff`): the previous placement of each
//! session whose handoff window is open, in the slot its placement's window flag names, read by
//! the dataplane only for placements carrying the flag. The swap stage (`reshard::slots`) picks
//! the slots: one is written before the `SESSIONS` update that names it, and only while no
//! placement names it or has named it within the quarantine, so no packet reads a slot while it
//! is written.

use aya::maps::{Array, MapData, MapError};
use shardline_common::handoff::{mark_for, slot_of_flag, Handoff};

/// Typed access to the pinned `HANDOFF_SLOTS` array.
pub struct HandoffMap {
    map: Array<MapData, Handoff>,
}

impl HandoffMap {
    /// Wraps the opened array.
    pub fn new(map: Array<MapData, Handoff>) -> Self {
        Self { map }
    }

    /// The array itself, for batched writes and reads (`crate::maps`).
    pub(crate) fn map(&self) -> &Array<MapData, Handoff> {
        &self.map
    }

    /// The mark request `key` of a placement with window flag `flag`, now owned by `owner`,
    /// gets at `now_ns` (`CLOCK_MONOTONIC`): as the kernel, 0 without a flag, past the array or
    /// past the slot's window.
    pub fn mark(&self, flag: u32, key: u64, owner: u32, now_ns: u64) -> u8 {
        match slot_of_flag(flag).map(|slot| self.map.get(&slot, 0)) {
            Some(Ok(h)) if h.is_open(now_ns) => mark_for(&h, key, owner),
            _ => 0,
        }
    }

    /// The handoff in `slot` (`until_ns` 0: no window uses it).
    pub fn get(&self, slot: u32) -> Result<Handoff, MapError> {
        self.map.get(&slot, 0)
    }
}
