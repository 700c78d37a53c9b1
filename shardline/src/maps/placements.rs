//! Many placements and handoffs written at once: a tick re-places thousands of sessions, and a
//! syscall per `SESSIONS` update (and per handoff slot) made the write take hundreds of ms
//! on a million-session map. Here they go through `BPF_MAP_UPDATE_BATCH` ([`super::batch`]), a
//! few thousand entries per syscall. Each `SESSIONS` entry is still updated atomically on its
//! own, as by a single update, so no packet meets a half-written shard set; the fronts' epoch
//! is bumped after each batch returns, so the batch counts as written only then. Handoff slots
//! are array entries written in place: only slots no packet can be reading (`reshard::slots`).

use std::time::Instant;

use shardline_common::{
    handoff::Handoff,
    maps::{SessionKey, ShardSet},
};

use super::{
    batch::{self, fd},
    is_full, op, syscall_error, DataplaneMaps, MapsError, WriteOutcome,
};

impl DataplaneMaps {
    /// Writes `placements` (distinct sessions), returning those a full map refused (their
    /// packets keep routing as before). A session keeps the counters slot it holds (as this
    /// handle read the map at its first write and wrote it since: a second writer of
    /// `SESSIONS` is not seen, as the slot allocator does not see it either); one that has
    /// none while a slot is free takes the one-by-one path
    /// ([`Self::write_counted`]), which seeds the slot before the session names it. The rest
    /// (the re-placements of a tick, and every placement once the slots run out) are written
    /// in batches.
    pub(super) fn write_placements(
        &mut self,
        placements: &[(SessionKey, ShardSet)],
        out: &mut WriteOutcome,
    ) -> Result<Vec<(SessionKey, ShardSet)>, MapsError> {
        let mut refused = Vec::new();
        let (mut keys, mut values) = std::mem::take(&mut self.batch);
        keys.clear();
        values.clear();
        keys.reserve(placements.len());
        values.reserve(placements.len());
        if !placements.is_empty() {
            // Reads which session holds which slot, once per handle (see `slot_of`).
            self.free_slots().map_err(op("read", "SESSIONS"))?;
        }
        for (key, set) in placements {
            // The slot this handle knows the session holds: no lookup syscall per session
            // (10,000 of them made half of a tick's write).
            let kept = self.slot_of.get(key).copied().unwrap_or(0);
            if kept == 0 && self.free_slots().map_err(op("read", "SESSIONS"))?.free() > 0 {
                if !self.write_counted(key, set, out)? {
                    refused.push((*key, *set));
                }
                continue;
            }
            keys.push(*key);
            values.push(ShardSet {
                stats_slot: kept,
                ..*set
            });
        }
        // The dataplane must look these sessions up once they are written.
        self.clear_session_filter(&keys)
            .map_err(op("write", "SESSION_FILTER"))?;
        let start = Instant::now();
        let mut at = 0;
        while at < keys.len() {
            let written = batch::update(fd(&self.sessions), &keys[at..], &values[at..]);
            self.epoch.bump();
            out.placements_written += written.done;
            at += written.done;
            if let Some(e) = written.error {
                let e = syscall_error("bpf_map_update_batch", e);
                if !is_full(&e) {
                    return Err(op("write", "SESSIONS")(e));
                }
                // A new session the full map has no room for: the rest may still be updates.
                if let Some((key, set)) = keys.get(at).zip(values.get(at)) {
                    refused.push((
                        *key,
                        ShardSet {
                            stats_slot: 0,
                            ..*set
                        },
                    ));
                }
                at += 1;
            }
        }
        out.placement_writes += start.elapsed();
        self.batch = (keys, values);
        Ok(refused)
    }

    /// Writes `values[i]` into handoff slot `slots[i]`, in place (the swap stage writes only
    /// slots no packet can be reading: `reshard::slots`).
    pub fn write_handoff_slots(
        &mut self,
        slots: &[u32],
        values: &[Handoff],
    ) -> Result<(), MapsError> {
        let written = batch::update(fd(self.handoffs.map()), slots, values);
        match written.error {
            None => Ok(()),
            Some(e) => Err(op("write", "HANDOFF_SLOTS")(syscall_error(
                "bpf_map_update_batch",
                e,
            ))),
        }
    }

    /// How many handoff slots hold a window not yet closed by the swap stage (`until_ns` not 0;
    /// one whose end has passed still counts until it is cleared).
    pub fn handoff_slots_in_use(&self) -> Result<usize, MapsError> {
        let mut in_use = 0;
        batch::read::<u32, Handoff>(fd(self.handoffs.map()), batch::Span::All, |_, h| {
            in_use += usize::from(h.until_ns != 0);
        })
        .map_err(|e| op("read", "HANDOFF_SLOTS")(syscall_error("bpf_map_lookup_batch", e)))?;
        Ok(in_use)
    }
}
