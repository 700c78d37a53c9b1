//! The `HANDOFFS` map (`shardline_common::handoff`): the previous placement of each session
//! whose handoff window is open, read by the dataplane only for placements carrying the window
//! flag. The swap stage writes an entry before the `SESSIONS` update that sets the flag and
//! removes it after the one that clears it.

use aya::maps::{HashMap, MapData, MapError};
use shardline_common::{
    handoff::{mark_for, Handoff},
    maps::SessionKey,
};

/// Typed access to the pinned `HANDOFFS` map.
pub struct HandoffMap {
    map: HashMap<MapData, SessionKey, Handoff>,
}

impl HandoffMap {
    /// Wraps the opened map.
    pub fn new(map: HashMap<MapData, SessionKey, Handoff>) -> Self {
        Self { map }
    }

    /// The map itself, for batched writes (`crate::maps`).
    pub(crate) fn map(&self) -> &HashMap<MapData, SessionKey, Handoff> {
        &self.map
    }

    /// The mark request `key` of `session`, now owned by `owner`, gets at `now_ns`
    /// (`CLOCK_MONOTONIC`): as the kernel, 0 without an entry or past its window.
    pub fn mark(&self, session: &SessionKey, key: u64, owner: u32, now_ns: u64) -> u8 {
        match self.map.get(session, 0) {
            Ok(h) if h.is_open(now_ns) => mark_for(&h, key, owner),
            _ => 0,
        }
    }

    /// Writes `session`'s handoff (one atomic update; a full map refuses a new session with
    /// E2BIG, and that move is then published by the API only).
    pub fn publish(&mut self, session: &SessionKey, handoff: &Handoff) -> Result<(), MapError> {
        self.map.insert(session, handoff, 0)
    }

    /// Removes `session`'s handoff; removing none does nothing.
    pub fn remove(&mut self, session: &SessionKey) -> Result<(), MapError> {
        match self.map.remove(session) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
