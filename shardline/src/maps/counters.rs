//! Reading the per-CPU counters, summed over CPUs: per reason, per (service, backend) and per
//! session, in batches ([`super::batch`]): a tick's or a scrape's read is a few syscalls per
//! map, not one or two per entry.

use std::collections::HashMap as StdHashMap;

use aya::{maps::MapError, sys::SyscallError};
use shardline_common::{
    consts::{MAX_BACKENDS, MAX_SESSION_SLOTS, SERVICE_STATS_ROWS},
    maps::{backend_stats_index, stats_row, Counter, SessionKey, ShardSet, SlotCounter},
    verdict::{Reason, REASON_COUNT},
};

use super::{
    batch::{self, fd, Span},
    op, DataplaneMaps, MapsError,
};

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
    /// New flows the dataplane routed without remembering them in `FLOWS` (over the per-CPU
    /// new-flow rate: a flood), summed over CPUs since the map was created; `None` for pins
    /// made before the limiter was pinned.
    pub fn new_flows_untracked(&self) -> Result<Option<u64>, MapsError> {
        let Some(map) = &self.new_flow_rate else {
            return Ok(None);
        };
        let per_cpu = map.get(&0, 0).map_err(op("read", "NEW_FLOW_RATE"))?;
        Ok(Some(per_cpu.iter().map(|r| r.untracked).sum()))
    }

    /// Packets per reason, summed over CPUs: one batched read.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, MapsError> {
        let mut counts = vec![None; REASON_COUNT as usize];
        batch::read_per_cpu::<u32, u64>(
            fd(&self.reasons),
            possible_cpus()?,
            Span::Indices {
                first: 0,
                len: REASON_COUNT,
            },
            |i, per_cpu| {
                if let Some(c) = counts.get_mut(*i as usize) {
                    *c = Some(per_cpu.iter().sum::<u64>());
                }
            },
        )
        .map_err(batch_err("read", "REASONS"))?;
        counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let n = n.ok_or_else(|| {
                    op("read", "REASONS")(MapError::OutOfBounds {
                        index: i as u32,
                        max_entries: REASON_COUNT,
                    })
                })?;
                Ok((Reason::ALL[i], n))
            })
            .collect()
    }

    /// Forwarded packets and bytes of backend `id`, summed over CPUs and services.
    pub fn backend_counter(&self, id: u32) -> Result<Counter, MapsError> {
        Ok(self.backend_counters(id)?.total())
    }

    /// Forwarded packets and bytes of backend `id` per service row, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<BackendCounters, MapsError> {
        match self.backends_counters(&[id])?.pop() {
            Some((_, counters)) => Ok(counters),
            None => Err(op("read", "BACKEND_STATS")(MapError::OutOfBounds {
                index: id,
                max_entries: MAX_BACKENDS,
            })),
        }
    }

    /// [`Self::backend_counters`] of each backend of `ids` that can exist (below
    /// [`MAX_BACKENDS`]; the others are left out), in the order of `ids`: one batched read per
    /// service row (and per run of nearby ids), however many backends, where one lookup per
    /// row and backend would take 64 syscalls a backend.
    pub fn backends_counters(&self, ids: &[u32]) -> Result<Vec<(u32, BackendCounters)>, MapsError> {
        let mut sorted: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| *id < MAX_BACKENDS)
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut rows: StdHashMap<u32, Vec<Counter>> = sorted
            .iter()
            .map(|id| (*id, vec![Counter::default(); SERVICE_STATS_ROWS as usize]))
            .collect();
        let cpus = possible_cpus()?;
        for row in 0..SERVICE_STATS_ROWS {
            let base = row * MAX_BACKENDS;
            for (first, len) in runs(&sorted) {
                batch::read_per_cpu::<u32, Counter>(
                    fd(&self.backend_stats),
                    cpus,
                    Span::Indices {
                        first: base + first,
                        len,
                    },
                    |index, per_cpu| {
                        if let Some(counters) = rows.get_mut(&(index - base)) {
                            counters[row as usize] = sum(per_cpu.iter());
                        }
                    },
                )
                .map_err(batch_err("read", "BACKEND_STATS"))?;
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| {
                let rows = rows.get(id)?.clone();
                Some((*id, BackendCounters { rows }))
            })
            .collect())
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
    ///
    /// Batched (`BPF_MAP_LOOKUP_BATCH`): the LRU whole, then the slots in use as runs of
    /// nearby indices, a few thousand entries per syscall, where a lookup each would take two
    /// syscalls per session.
    pub fn session_counters(&self) -> Result<StdHashMap<SessionKey, Counter>, MapsError> {
        let cpus = possible_cpus()?;
        let mut out = StdHashMap::new();
        batch::read_per_cpu::<SessionKey, Counter>(
            fd(&self.session_stats),
            cpus,
            Span::All,
            |k, per_cpu| {
                out.insert(*k, sum(per_cpu.iter()));
            },
        )
        .map_err(batch_err("iterate", "SESSION_STATS"))?;
        // The slots to read, ascending, each with its owner when SESSIONS names it (the
        // handle that assigns the slots knows which are in use, not whose they are: the slot's
        // own owner field says).
        let wanted: Vec<(u32, Option<SessionKey>)> = match &self.slots {
            Some(slots) => slots.in_use().map(|slot| (slot, None)).collect(),
            None => {
                let mut named = Vec::new();
                batch::read::<SessionKey, ShardSet>(fd(&self.sessions), Span::All, |k, set| {
                    if set.stats_slot != 0 && set.stats_slot < MAX_SESSION_SLOTS {
                        named.push((set.stats_slot, Some(*k)));
                    }
                })
                .map_err(batch_err("iterate", "SESSIONS"))?;
                named.sort_unstable_by_key(|(slot, _)| *slot);
                named
            }
        };
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
        let slots: Vec<u32> = wanted.iter().map(|(slot, _)| *slot).collect();
        let mut next = 0;
        for (first, len) in runs(&slots) {
            batch::read_per_cpu::<u32, SlotCounter>(
                fd(&self.slot_stats),
                cpus,
                Span::Indices { first, len },
                |slot, per_cpu| {
                    while let Some(&(s, known)) = wanted.get(next) {
                        if s > *slot {
                            break;
                        }
                        next += 1;
                        if s < *slot {
                            continue;
                        }
                        let owner = known.or_else(|| {
                            per_cpu
                                .iter()
                                .map(|c| c.owner)
                                .find(|o| *o != SlotCounter::FREE)
                        });
                        if let Some(owner) = owner {
                            count(owner, per_cpu);
                        }
                    }
                },
            )
            .map_err(batch_err("read", "SESSION_SLOT_STATS"))?;
        }
        Ok(out)
    }
}

/// Indices closer than this share one batched read (the ones between are read and dropped):
/// fewer syscalls for a little more copying.
const RUN_GAP: u32 = 64;

/// `sorted` (ascending, distinct) as runs `(first, len)` covering every index, nearby ones
/// together.
fn runs(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &i in sorted {
        match out.last_mut() {
            Some((first, len)) if i - (*first + *len - 1) <= RUN_GAP => *len = i - *first + 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

/// Possible CPUs: how many copies a per-CPU value has.
fn possible_cpus() -> Result<usize, MapsError> {
    aya::util::nr_cpus().map_err(|(call, io_error)| {
        op("read", "possible CPUs")(MapError::SyscallError(SyscallError { call, io_error }))
    })
}

fn batch_err(what: &'static str, map: &'static str) -> impl FnOnce(std::io::Error) -> MapsError {
    move |io_error| {
        op(what, map)(MapError::SyscallError(SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        }))
    }
}

fn sum<'a>(values: impl Iterator<Item = &'a Counter>) -> Counter {
    values.fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}
