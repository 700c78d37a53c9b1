//! Reading the per-CPU counters, summed over CPUs: per reason, per (service, backend) and per
//! session.

use std::collections::HashMap as StdHashMap;

use aya::maps::MapError;
use shardline_common::{
    consts::{MAX_BACKENDS, SERVICE_STATS_ROWS},
    maps::{backend_stats_index, stats_row, Counter, SessionKey, SlotCounter},
    verdict::{Reason, REASON_COUNT},
};

use super::{op, DataplaneMaps, MapsError};

/// Forwarded packets and bytes to one backend, by the counters row of the service they
/// belonged to ([`stats_row`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// One counter per row: index = service id below [`SERVICE_STATS_ROWS`]; row 0 holds the
    /// services beyond, together.
    pub rows: Vec<Counter>,
}

impl BackendCounters {
    /// Everything forwarded to the backend, whatever the service.
    pub fn total(&self) -> Counter {
        sum(self.rows.iter())
    }

    /// What service id `service` forwarded to the backend; `None` for a service without a row
    /// of its own (id 0 or from [`SERVICE_STATS_ROWS`] on: it counts in the shared row 0).
    pub fn service(&self, service: u32) -> Option<Counter> {
        if service == 0 || stats_row(service) != service {
            return None;
        }
        self.rows.get(service as usize).copied()
    }

    /// What the services without a row of their own forwarded to the backend, together.
    pub fn shared(&self) -> Counter {
        self.rows.first().copied().unwrap_or_default()
    }
}

impl DataplaneMaps {
    /// Packets per reason, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, MapsError> {
        (0..REASON_COUNT)
            .map(|i| {
                let per_cpu = self.reasons.get(&i, 0).map_err(op("read", "REASONS"))?;
                Ok((Reason::ALL[i as usize], per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Forwarded packets and bytes of backend `id`, summed over CPUs and services.
    pub fn backend_counter(&self, id: u32) -> Result<Counter, MapsError> {
        Ok(self.backend_counters(id)?.total())
    }

    /// Forwarded packets and bytes of backend `id` per service row, summed over CPUs: one
    /// lookup per row.
    pub fn backend_counters(&self, id: u32) -> Result<BackendCounters, MapsError> {
        let rows = (0..SERVICE_STATS_ROWS)
            .map(|row| self.backend_row(row, id))
            .collect::<Result<_, MapsError>>()?;
        Ok(BackendCounters { rows })
    }

    /// Forwarded packets and bytes of backend `id` for the service ids `services` alone (the
    /// rows they count in, each read once), summed over CPUs: what a caller that knows every
    /// service the tables hold reads instead of all the rows.
    pub fn backend_counter_of(&self, id: u32, services: &[u32]) -> Result<Counter, MapsError> {
        let mut rows: Vec<u32> = services.iter().map(|s| stats_row(*s)).collect();
        rows.sort_unstable();
        rows.dedup();
        let counted = rows
            .into_iter()
            .map(|row| self.backend_row(row, id))
            .collect::<Result<Vec<_>, MapsError>>()?;
        Ok(sum(counted.iter()))
    }

    /// Row `row`'s counter of backend `id`, summed over CPUs.
    fn backend_row(&self, row: u32, id: u32) -> Result<Counter, MapsError> {
        let index = backend_stats_index(row, id).ok_or(MapError::OutOfBounds {
            index: id,
            max_entries: MAX_BACKENDS,
        });
        let per_cpu = index
            .and_then(|i| self.backend_stats.get(&i, 0))
            .map_err(op("read", "BACKEND_STATS"))?;
        Ok(sum(per_cpu.iter()))
    }

    /// Forwarded packets and bytes of every session the LRU still holds or a counters slot
    /// holds, summed over CPUs (a placed session's packets count in its slot; the ones before
    /// or after it had a slot in the LRU).
    pub fn session_counters(&self) -> Result<StdHashMap<SessionKey, Counter>, MapsError> {
        let mut out = StdHashMap::new();
        for entry in self.session_stats.iter() {
            let (k, per_cpu) = entry.map_err(op("iterate", "SESSION_STATS"))?;
            out.insert(k, sum(per_cpu.iter()));
        }
        let mut count = |owner: SessionKey, per_cpu: &[SlotCounter]| {
            let counted = sum(per_cpu
                .iter()
                .filter(|c| c.owner == owner)
                .map(|c| &c.counter));
            if counted != Counter::default() || out.contains_key(&owner) {
                let total = out.entry(owner).or_default();
                total.packets += counted.packets;
                total.bytes += counted.bytes;
            }
        };
        if let Some(slots) = &self.slots {
            // This handle assigns the slots: read the ones in use, not all of SESSIONS.
            for slot in slots.in_use() {
                let per_cpu = self
                    .slot_stats
                    .get(&slot, 0)
                    .map_err(op("read", "SESSION_SLOT_STATS"))?;
                if let Some(owner) = per_cpu
                    .iter()
                    .map(|c| c.owner)
                    .find(|o| *o != SlotCounter::FREE)
                {
                    count(owner, &per_cpu);
                }
            }
            return Ok(out);
        }
        for entry in self.sessions.iter() {
            let (k, set) = entry.map_err(op("iterate", "SESSIONS"))?;
            if set.stats_slot == 0 {
                continue;
            }
            let per_cpu = match self.slot_stats.get(&set.stats_slot, 0) {
                Ok(v) => v,
                Err(MapError::OutOfBounds { .. }) => continue,
                Err(e) => return Err(op("read", "SESSION_SLOT_STATS")(e)),
            };
            count(k, &per_cpu);
        }
        Ok(out)
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a Counter>) -> Counter {
    values.fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}
