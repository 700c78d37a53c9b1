//! Typed access to the load balancer's pinned maps: writing a [`Snapshot`] (build-then-flip
//! for the Maglev table), reading the per-CPU counters, and a [`Tables`] view that replays the
//! kernel's decision against the live maps.

use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use shardline_common::{
    consts::{MAGLEV_SIZE, NO_BACKEND},
    maps::{
        Backend, Counter, FlowEntry, FlowKey, Globals, Service, ServiceKey, SessionKey, ShardSet,
    },
    route::{pick_shard, Tables},
    verdict::{Reason, REASON_COUNT},
};

use crate::{maglev_table::MaglevTable, snapshot::Snapshot};

/// Errors opening or writing the maps.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// A pinned map could not be opened.
    #[error("cannot open pinned map {path}: {source} (is the daemon's pin directory right, and bpffs mounted?)")]
    Open {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// The Maglev table could not be mapped.
    #[error(transparent)]
    Maglev(#[from] crate::maglev_table::MaglevTableError),
    /// A map operation failed.
    #[error("{op} on map {map} failed: {source}")]
    Op {
        /// What was being done.
        op: &'static str,
        /// The map's name.
        map: &'static str,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
}

/// What [`DataplaneMaps::apply`] could not write without failing the whole snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Placed sessions left out because SESSIONS is full: their packets keep routing by the
    /// default table until a later apply finds room.
    pub placements_refused: Vec<SessionKey>,
}

/// Whether a map update failed because the map is full (a hash map at `max_entries` refuses a
/// new key with E2BIG; ENOSPC and ENOMEM are what a map short of memory answers).
pub fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(
        e,
        aya::maps::MapError::SyscallError(err)
            if matches!(err.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM))
    )
}

fn op(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapsError {
    move |source| MapsError::Op { op, map, source }
}

/// The pinned maps of one load balancer.
pub struct DataplaneMaps {
    services: HashMap<MapData, ServiceKey, Service>,
    backends: Array<MapData, Backend>,
    sessions: HashMap<MapData, SessionKey, ShardSet>,
    maglev: MaglevTable,
    globals: Array<MapData, Globals>,
    reasons: PerCpuArray<MapData, u64>,
    backend_stats: PerCpuArray<MapData, Counter>,
    session_stats: PerCpuHashMap<MapData, SessionKey, Counter>,
    flows: PerCpuHashMap<MapData, FlowKey, FlowEntry>,
}

fn open(dir: &Path, name: &str) -> Result<Map, MapsError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { path, source })
}

macro_rules! typed {
    ($dir:expr, $name:literal) => {
        open($dir, $name)?.try_into().map_err(op("open", $name))?
    };
}

impl DataplaneMaps {
    /// Opens the maps pinned in `dir` (by a loaded program or an earlier daemon).
    pub fn open(dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            services: typed!(dir, "SERVICES"),
            backends: typed!(dir, "BACKENDS"),
            sessions: typed!(dir, "SESSIONS"),
            maglev: MaglevTable::open(&dir.join("MAGLEV"))?,
            globals: typed!(dir, "GLOBALS"),
            reasons: typed!(dir, "REASONS"),
            backend_stats: typed!(dir, "BACKEND_STATS"),
            session_stats: typed!(dir, "SESSION_STATS"),
            flows: typed!(dir, "FLOWS"),
        })
    }

    /// The globals entry as the dataplane sees it.
    pub fn globals(&self) -> Result<Globals, MapsError> {
        self.globals.get(&0, 0).map_err(op("read", "GLOBALS"))
    }

    /// Makes the maps hold exactly `snap`, in an order that never routes to a missing entry:
    /// new backends first, then the Maglev table (built in the idle half, flipped with one
    /// globals write), then session placements, then services (which turn routing on), and
    /// only then the removal of what `snap` no longer has. Each element update is atomic.
    ///
    /// A full SESSIONS map refuses the placements that do not fit: those sessions stay on the
    /// default table (returned in [`Applied`]) and everything else is still written.
    pub fn apply(&mut self, snap: &Snapshot) -> Result<Applied, MapsError> {
        let mut applied = Applied::default();
        let max = shardline_common::consts::MAX_BACKENDS;
        for id in 0..max {
            if let Some(want) = snap.backends.get(&id) {
                if self.backends.get(&id, 0).map_err(op("read", "BACKENDS"))? != *want {
                    self.backends
                        .set(id, want, 0)
                        .map_err(op("write", "BACKENDS"))?;
                }
            }
        }
        self.swap_maglev(&snap.maglev, &snap.globals)?;
        for (k, v) in &snap.sessions {
            // A changed placement is one update carrying the next generation; an unchanged
            // one is not rewritten.
            let mut next = *v;
            if let Ok(old) = self.sessions.get(k, 0) {
                if (ShardSet {
                    generation: old.generation,
                    ..next
                }) == old
                {
                    continue;
                }
                next.generation = next.generation.max(old.generation + 1);
            }
            match self.sessions.insert(k, next, 0) {
                Ok(()) => {}
                Err(e) if is_full(&e) => applied.placements_refused.push(*k),
                Err(e) => return Err(op("write", "SESSIONS")(e)),
            }
        }
        for (k, v) in &snap.services {
            self.services
                .insert(k, v, 0)
                .map_err(op("write", "SERVICES"))?;
        }
        let stale: Vec<ServiceKey> = self
            .services
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !snap.services.contains_key(k))
            .collect();
        for k in stale {
            self.services.remove(&k).map_err(op("delete", "SERVICES"))?;
        }
        let stale: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !snap.sessions.contains_key(k))
            .collect();
        for k in stale {
            self.sessions.remove(&k).map_err(op("delete", "SESSIONS"))?;
        }
        // Removals may have made room for placements refused above.
        if !applied.placements_refused.is_empty() {
            let mut still = Vec::new();
            for k in applied.placements_refused {
                match self.sessions.insert(k, snap.sessions[&k], 0) {
                    Ok(()) => {}
                    Err(e) if is_full(&e) => still.push(k),
                    Err(e) => return Err(op("write", "SESSIONS")(e)),
                }
            }
            applied.placements_refused = still;
        }
        for id in 0..max {
            if !snap.backends.contains_key(&id)
                && self.backends.get(&id, 0).map_err(op("read", "BACKENDS"))? != Backend::default()
            {
                self.backends
                    .set(id, Backend::default(), 0)
                    .map_err(op("write", "BACKENDS"))?;
            }
        }
        Ok(applied)
    }

    /// Build-then-flip: fills the idle half with `table`, then publishes it (and `globals`'
    /// encap sources) with one globals update. Unchanged tables are not rewritten.
    pub fn swap_maglev(&mut self, table: &[u32], globals: &Globals) -> Result<(), MapsError> {
        let current = self.globals()?;
        let live = current.maglev_active & 1;
        let mut next = *globals;
        next.maglev_active = if self.read_maglev_half(live)? == table {
            live
        } else {
            self.fill_idle_maglev(table)?
        };
        if next != current {
            self.publish_globals(&next)?;
        }
        Ok(())
    }

    /// Writes `table` into the Maglev half packets are not reading and returns its index; it
    /// goes live only when [`Self::publish_globals`] names it.
    pub fn fill_idle_maglev(&mut self, table: &[u32]) -> Result<u32, MapsError> {
        let idle = (self.globals()?.maglev_active & 1) ^ 1;
        self.maglev.write_half(idle, table);
        Ok(idle)
    }

    /// Replaces the globals entry: one atomic write, the Maglev flip.
    pub fn publish_globals(&mut self, globals: &Globals) -> Result<(), MapsError> {
        self.globals
            .set(0, globals, 0)
            .map_err(op("write", "GLOBALS"))
    }

    /// Entries in the flow table (established flows not yet evicted).
    pub fn flow_count(&self) -> Result<usize, MapsError> {
        let mut n = 0;
        for key in self.flows.keys() {
            key.map_err(op("iterate", "FLOWS"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Replaces one session's shard set: one atomic map update.
    pub fn place_session(&mut self, key: &SessionKey, set: &ShardSet) -> Result<(), MapsError> {
        self.sessions
            .insert(key, set, 0)
            .map_err(op("write", "SESSIONS"))
    }

    /// Writes backend `id`'s entry (zeroed: removed).
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapsError> {
        self.backends
            .set(id, backend, 0)
            .map_err(op("write", "BACKENDS"))
    }

    fn read_maglev_half(&self, half: u32) -> Result<Vec<u32>, MapsError> {
        Ok(self.maglev.read_half(half))
    }

    /// The routing tables the maps hold now (the live Maglev half only).
    pub fn read_snapshot(&self) -> Result<Snapshot, MapsError> {
        let globals = self.globals()?;
        let mut snap = Snapshot {
            globals,
            ..Snapshot::default()
        };
        for entry in self.services.iter() {
            let (k, v) = entry.map_err(op("iterate", "SERVICES"))?;
            snap.services.insert(k, v);
        }
        for entry in self.sessions.iter() {
            let (k, v) = entry.map_err(op("iterate", "SESSIONS"))?;
            snap.sessions.insert(k, v);
        }
        for id in 0..shardline_common::consts::MAX_BACKENDS {
            let b = self.backends.get(&id, 0).map_err(op("read", "BACKENDS"))?;
            if b != Backend::default() {
                snap.backends.insert(id, b);
            }
        }
        snap.maglev = self.read_maglev_half(globals.maglev_active & 1)?;
        snap.globals.maglev_active = 0;
        Ok(snap)
    }

    /// Packets per reason, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, MapsError> {
        (0..REASON_COUNT)
            .map(|i| {
                let per_cpu = self.reasons.get(&i, 0).map_err(op("read", "REASONS"))?;
                Ok((Reason::ALL[i as usize], per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Forwarded packets and bytes of backend `id`, summed over CPUs.
    pub fn backend_counter(&self, id: u32) -> Result<Counter, MapsError> {
        let per_cpu = self
            .backend_stats
            .get(&id, 0)
            .map_err(op("read", "BACKEND_STATS"))?;
        Ok(sum(per_cpu.iter()))
    }

    /// Forwarded packets and bytes of every session the LRU still holds, summed over CPUs.
    pub fn session_counters(&self) -> Result<StdHashMap<SessionKey, Counter>, MapsError> {
        let mut out = StdHashMap::new();
        for entry in self.session_stats.iter() {
            let (k, per_cpu) = entry.map_err(op("iterate", "SESSION_STATS"))?;
            out.insert(k, sum(per_cpu.iter()));
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

/// Replays against the live maps, one lookup syscall per table read.
impl Tables for DataplaneMaps {
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key, 0).ok()
    }

    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        pick_shard(&self.sessions.get(key, 0).ok()?, request_key)
    }

    fn maglev(&self, slot: u32) -> u32 {
        let half = self.globals().map(|g| g.maglev_active & 1).unwrap_or(0);
        if slot >= MAGLEV_SIZE {
            return NO_BACKEND;
        }
        self.maglev.slot(half, slot)
    }

    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id, 0).ok()
    }

    /// The freshest live entry of any CPU (the kernel consults only the CPU it runs on).
    fn sticky_backend(&self, flow: &FlowKey) -> Option<u32> {
        let idle_ns = u64::from(self.globals().ok()?.flow_idle_secs) * 1_000_000_000;
        let now = monotonic_ns();
        let per_cpu = self.flows.get(flow, 0).ok()?;
        per_cpu
            .iter()
            .filter(|e| e.last_seen_ns != 0 && now.saturating_sub(e.last_seen_ns) <= idle_ns)
            .max_by_key(|e| e.last_seen_ns)
            .map(|e| e.backend)
    }

    /// A replay observes; it never records flows.
    fn remember_flow(&self, _flow: &FlowKey, _backend: u32) {}
}

/// `CLOCK_MONOTONIC` in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
