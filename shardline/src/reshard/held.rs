//! Maps held in memory for tests of the swap stage and its callers (the daemon's applier): each
//! delta is applied as the real writer applies it.

use std::{collections::HashMap, time::Duration};

use aya::maps::MapError;
use shardline_common::{
    consts::MAGLEV_SIZE,
    handoff::{slot_of_flag, Handoff},
    maglev::{build, Weighted},
    maps::{backend_flags, Backend, SessionKey, ShardSet},
};

use super::TableWriter;
use crate::{
    maps::{MapsError, WriteOutcome},
    snapshot::{delta::TableDelta, Snapshot},
};

/// Maps held in memory: each delta is applied as the real writer applies it, SESSIONS holding
/// at most `capacity` placements.
pub(crate) struct Held {
    /// The tables as written so far.
    pub tables: Snapshot,
    /// Placements SESSIONS holds before it refuses new ones.
    pub capacity: usize,
    /// Every write fails (a map error) while set.
    pub fail: bool,
    /// Deltas written.
    pub writes: usize,
    /// The handoff slots written, by slot (a slot never written reads as closed).
    pub slots: HashMap<u32, Handoff>,
}

impl Held {
    /// Empty maps with room for `capacity` placements.
    pub fn empty(capacity: usize) -> Self {
        Self {
            tables: Snapshot::default(),
            capacity,
            fail: false,
            writes: 0,
            slots: HashMap::new(),
        }
    }

    /// Maps with room for `capacity` placements holding backends 1 to 4 (IPv4 10.0.0.id),
    /// evenly weighted in the default table, and nothing else.
    pub fn four_backends(capacity: usize) -> Self {
        let mut maps = Self::empty(capacity);
        let t = &mut maps.tables;
        for id in 1..=4 {
            let backend = Backend {
                flags: backend_flags::PRESENT | backend_flags::HAS_V4,
                addr4: [10, 0, 0, id as u8],
                ..Backend::default()
            };
            t.backends.insert(id, backend);
        }
        let even: Vec<Weighted> = (1..=4).map(|id| Weighted { id, weight: 1 }).collect();
        t.maglev = build(&even, MAGLEV_SIZE);
        maps
    }

    /// The handoff of every placement naming a slot, by session, as the dataplane reads it.
    pub fn handoffs(&self) -> HashMap<SessionKey, Handoff> {
        self.tables
            .sessions
            .iter()
            .filter_map(|(k, set)| {
                let slot = slot_of_flag(set.handoff)?;
                Some((*k, self.slots.get(&slot).copied().unwrap_or_default()))
            })
            .collect()
    }

    /// Slots not cleared (`until_ns` not 0).
    pub fn slots_in_use(&self) -> usize {
        self.slots.values().filter(|h| h.until_ns != 0).count()
    }
}

impl TableWriter for Held {
    fn read_tables(
        &self,
        each: &mut dyn FnMut(SessionKey, ShardSet),
    ) -> Result<Snapshot, MapsError> {
        for (key, set) in &self.tables.sessions {
            each(*key, *set);
        }
        Ok(Snapshot {
            sessions: Default::default(),
            ..self.tables.clone()
        })
    }

    fn write_delta(&mut self, delta: &TableDelta) -> Result<WriteOutcome, MapsError> {
        if self.fail {
            return Err(MapsError::Op {
                op: "write",
                map: "SESSIONS",
                source: MapError::KeyNotFound,
            });
        }
        self.writes += 1;
        let t = &mut self.tables;
        let mut out = WriteOutcome::default();
        t.backends.extend(delta.backends.iter().copied());
        if let Some(table) = &delta.maglev {
            t.maglev = table.clone();
            out.maglev_flip = Some(Duration::ZERO);
        }
        if let Some(g) = delta.globals {
            t.globals = g;
        }
        for k in &delta.removed_sessions {
            t.sessions.remove(k);
        }
        for (k, set) in &delta.sessions {
            if !t.sessions.contains_key(k) && t.sessions.len() >= self.capacity {
                out.placements_refused.push(*k);
            } else {
                t.sessions.insert(*k, *set);
                out.placements_written += 1;
            }
        }
        t.services.extend(delta.services.iter().copied());
        for k in &delta.removed_services {
            t.services.remove(k);
        }
        for id in &delta.removed_backends {
            t.backends.remove(id);
        }
        Ok(out)
    }

    fn write_handoff_slots(&mut self, slots: &[u32], values: &[Handoff]) -> Result<(), MapsError> {
        if self.fail {
            return Err(MapsError::Op {
                op: "write",
                map: "HANDOFF_SLOTS",
                source: MapError::KeyNotFound,
            });
        }
        for (slot, h) in slots.iter().zip(values) {
            self.slots.insert(*slot, *h);
        }
        Ok(())
    }
}

/// The placements of `sessions` with any window flag as 1: what two writers that took other
/// slots for the same windows both hold.
pub(crate) fn flagged_as_one(
    sessions: &HashMap<SessionKey, ShardSet>,
) -> Vec<(SessionKey, ShardSet)> {
    sessions
        .iter()
        .map(|(k, s)| {
            let handoff = u32::from(s.handoff != 0);
            (*k, ShardSet { handoff, ..*s })
        })
        .collect()
}
