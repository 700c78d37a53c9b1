//! `SESSION_FILTER`: per service, 4,096 bits of which a session's
//! ([`session_filter_position`]) is set while no placed session of the service falls there, so
//! a sessions-front miss answers "not placed" without the `SESSIONS` lookup (for a flood of new
//! clients, a helper call and a cold bucket each). A set bit is a promise to the dataplane, so
//! bits are set only from a walk of `SESSIONS` ([`DataplaneMaps::mark_session_filter`], at the
//! daemon's start), and a session's bit is cleared before the `SESSIONS` write that places it
//! ([`DataplaneMaps::clear_session_filter`]). Removing sessions sets nothing until the next
//! walk: their bits stay clear (looked up, finding nothing).

use aya::maps::MapError;
use shardline_common::{
    consts::SESSION_FILTER_ENTRIES,
    maps::{session_filter_position, SessionKey, ShardSet},
};

use super::{
    batch::{self, Span},
    op, syscall_error, DataplaneMaps, MapsError, SlotsSeen,
};

impl DataplaneMaps {
    /// Sets every bit of the sessions filter no session in `SESSIONS` falls on and clears the
    /// rest, from one walk of `SESSIONS`, which also builds the counters-slot allocator if this
    /// handle has not yet; returns the sessions walked. Pins made before `SESSION_FILTER`
    /// existed have no filter: nothing is done (0). From here on this handle
    /// must be the only writer of `SESSIONS`, as the counters slots assume: a session another
    /// writer places on a set bit is not looked up.
    pub fn mark_session_filter(&mut self) -> Result<usize, MapsError> {
        let Some(map) = self.session_filter.as_ref() else {
            return Ok(0);
        };
        let mut words = vec![u64::MAX; SESSION_FILTER_ENTRIES as usize];
        let mut sessions = 0;
        // The counters-slot allocator is built from the same walk, if not built yet: at a
        // million sessions the start then reads SESSIONS once, not twice.
        let mut slots = self.slots.is_none().then(SlotsSeen::default);
        batch::read::<SessionKey, ShardSet>(batch::fd(&self.sessions), Span::All, |key, set| {
            sessions += 1;
            let (word, bit) = session_filter_position(key);
            words[word as usize] &= !(1 << bit);
            if let Some(slots) = slots.as_mut() {
                slots.see(key, set);
            }
        })
        .map_err(|e| op("iterate", "SESSIONS")(syscall_error("bpf_map_lookup_batch", e)))?;
        let indices: Vec<u32> = (0..SESSION_FILTER_ENTRIES).collect();
        let written = batch::update(batch::fd(map), &indices, &words);
        if let Some(e) = written.error {
            return Err(op("write", "SESSION_FILTER")(syscall_error(
                "bpf_map_update_batch",
                e,
            )));
        }
        self.filter = Some(words);
        if let Some(slots) = slots {
            self.install_slots(slots);
        }
        Ok(sessions)
    }

    /// Clears the filter bits of `keys` that are set, before those sessions are written: from
    /// then on the dataplane looks them up. The filter is read from the map on this handle's
    /// first call (one batch read), then kept as this handle writes it; one map write per word
    /// that changes.
    pub(super) fn clear_session_filter<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k SessionKey>,
    ) -> Result<(), MapError> {
        let Some(map) = self.session_filter.as_mut() else {
            return Ok(());
        };
        let words = match &mut self.filter {
            Some(words) => words,
            None => {
                let mut words = vec![0; SESSION_FILTER_ENTRIES as usize];
                batch::read::<u32, u64>(batch::fd(map), Span::All, |word, value| {
                    if let Some(w) = words.get_mut(*word as usize) {
                        *w = *value;
                    }
                })
                .map_err(|e| syscall_error("bpf_map_lookup_batch", e))?;
                self.filter.insert(words)
            }
        };
        for key in keys {
            let (word, bit) = session_filter_position(key);
            let bit = 1 << bit;
            let w = &mut words[word as usize];
            if *w & bit != 0 {
                *w &= !bit;
                map.set(word, *w, 0)?;
            }
        }
        Ok(())
    }
}
