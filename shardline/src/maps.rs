//! Typed access to the load balancer's pinned maps: writing a [`TableDelta`] (build-then-flip
//! for the Maglev table, placements in batches of atomic updates), reading the per-CPU counters, and a
//! [`Tables`] view that replays the kernel's decision against the live maps.
//!
//! - `counters`: the per-CPU counters read back, summed over CPUs.
//! - `batch`: `BPF_MAP_LOOKUP_BATCH` reads (many entries per syscall).
//! - `front`: the fronts' epoch, bumped after every `SERVICES` / `SESSIONS` write.
//! - `placements`: a delta's placements and the handoffs, written in batches.
//! - `nexthop`: the `TX_PORTS` devmap of egress interfaces and the `NEXTHOPS` counters.
//! - `session_filter`: the bits that let a session no placement falls near skip `SESSIONS`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues};
use shardline_common::{
    consts::{DEFAULT_RING_ENTRIES, MAGLEV_ENTRIES},
    maps::{
        pool_word, Backend, Counter, FlowEntry, FlowKey, Globals, NewFlowRate, Service, ServiceKey,
        SessionKey, ShardSet, SlotCounter, POOL_WORDS,
    },
    route::{pick_shard, Tables},
};

mod batch;
mod counters;
mod front;
mod nexthop;
mod placements;
mod session_filter;

pub use self::{
    counters::BackendCounters,
    front::{FrontEpoch, FrontEpochError},
    nexthop::{fill_tx_ports, ifindex, TxPortsError},
};
use crate::{
    handoff_map::HandoffMap,
    maglev_table::MaglevTable,
    snapshot::{delta::TableDelta, Snapshot},
    stats_slots::StatsSlots,
};

/// What the counters-slot allocator learns from a walk of `SESSIONS`: every slot named (0
/// included, as [`StatsSlots::new`] takes them) and the slot each placed session holds.
#[derive(Default)]
struct SlotsSeen {
    used: Vec<u32>,
    held: rustc_hash::FxHashMap<SessionKey, u32>,
}

impl SlotsSeen {
    /// Notes one entry of the walk.
    fn see(&mut self, key: &SessionKey, set: &ShardSet) {
        self.used.push(set.stats_slot);
        if set.stats_slot != 0 {
            self.held.insert(*key, set.stats_slot);
        }
    }
}

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
    /// The fronts' epoch could not be mapped.
    #[error(transparent)]
    FrontEpoch(#[from] FrontEpochError),
    /// No room is left in the pools' ring space for a service's ring.
    #[error("no room in the MAGLEV array for the {size}-slot ring of service {service} (fewer or smaller pools)")]
    RingSpace {
        /// Service id.
        service: u32,
        /// Ring slots.
        size: u32,
    },
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

/// What [`DataplaneMaps::write_delta`] did: the placements it could not write without failing
/// the whole change, and how long the routing-visible writes took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Placed sessions left out because SESSIONS is full: their packets keep routing as before
    /// (by the default table for a new placement) until a later write finds room.
    pub placements_refused: Vec<SessionKey>,
    /// Placements written (one SESSIONS entry each, most of them in batches).
    pub placements_written: usize,
    /// Time of those updates, together.
    pub placement_writes: Duration,
    /// Time filling the idle Maglev half; zero when the default table did not change.
    pub maglev_build: Duration,
    /// Time of the globals write that made the new default table live, if one did.
    pub maglev_flip: Option<Duration>,
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
    pool_members: Array<MapData, u64>,
    globals: Array<MapData, Globals>,
    reasons: PerCpuArray<MapData, u64>,
    backend_stats: PerCpuArray<MapData, Counter>,
    session_stats: PerCpuHashMap<MapData, SessionKey, Counter>,
    slot_stats: PerCpuArray<MapData, SlotCounter>,
    flows: PerCpuHashMap<MapData, FlowKey, FlowEntry>,
    /// The new-flow rate limiter, `None` in pins made before it was pinned.
    new_flow_rate: Option<PerCpuArray<MapData, NewFlowRate>>,
    /// Packets of FIB-routed backends per next-hop outcome, `None` in pins made before it.
    nexthops: Option<PerCpuArray<MapData, u64>>,
    /// Bumped after every SERVICES / SESSIONS write (the dataplane's fronts).
    epoch: FrontEpoch,
    /// The previous placements of sessions in a handoff window.
    handoffs: HandoffMap,
    /// The sessions filter (`SESSION_FILTER`), `None` in pins made before it.
    session_filter: Option<Array<MapData, u64>>,
    /// The sessions filter's words as this handle last read or wrote them.
    filter: Option<Vec<u64>>,
    /// Free counters slots, built from SESSIONS on first use.
    slots: Option<StatsSlots>,
    /// The counters slot each placed session holds, read with `slots` and kept as this handle
    /// writes: a batch of re-placements keeps every session's slot without a lookup syscall
    /// per session. At most `MAX_SESSION_SLOTS` entries.
    slot_of: rustc_hash::FxHashMap<SessionKey, u32>,
    /// The keys and values of the last placements batch, kept for the next (a tick's 10,000
    /// values are 2 MiB, which glibc gave back to the kernel at every free).
    batch: (Vec<SessionKey>, Vec<ShardSet>),
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
            pool_members: typed!(dir, "POOL_MEMBERS"),
            globals: typed!(dir, "GLOBALS"),
            reasons: typed!(dir, "REASONS"),
            backend_stats: typed!(dir, "BACKEND_STATS"),
            session_stats: typed!(dir, "SESSION_STATS"),
            slot_stats: typed!(dir, "SESSION_SLOT_STATS"),
            flows: typed!(dir, "FLOWS"),
            new_flow_rate: match dir.join("NEW_FLOW_RATE").exists() {
                true => Some(typed!(dir, "NEW_FLOW_RATE")),
                false => None,
            },
            nexthops: match dir.join("NEXTHOPS").exists() {
                true => Some(typed!(dir, "NEXTHOPS")),
                false => None,
            },
            epoch: FrontEpoch::open(dir)?,
            handoffs: HandoffMap::new(typed!(dir, "HANDOFF_SLOTS")),
            session_filter: match dir.join("SESSION_FILTER").exists() {
                true => Some(typed!(dir, "SESSION_FILTER")),
                false => None,
            },
            filter: None,
            slots: None,
            slot_of: rustc_hash::FxHashMap::default(),
            batch: (Vec::new(), Vec::new()),
        })
    }

    /// Records the attached interface's MTU for the too-big check (one globals write; the
    /// tables in force are kept).
    pub fn set_egress_mtu(&mut self, mtu: u32) -> Result<(), MapsError> {
        let globals = self.globals()?.with_egress_mtu(mtu);
        self.publish_globals(&globals)
    }

    /// The globals entry as the dataplane sees it.
    pub fn globals(&self) -> Result<Globals, MapsError> {
        self.globals.get(&0, 0).map_err(op("read", "GLOBALS"))
    }

    /// Makes the maps hold exactly `snap`: [`Self::write_delta`] of the change from what they
    /// hold now (read back whole, so this is for a start from unknown maps; the daemon's swap
    /// stage keeps the tables in force and writes only the delta).
    pub fn apply(&mut self, snap: &Snapshot) -> Result<WriteOutcome, MapsError> {
        let before = self.read_snapshot()?;
        self.write_delta(&TableDelta::between(&before, snap))
    }

    /// Writes `delta` in its order, which never routes to a missing entry: new backends first,
    /// then the default table (built in the idle half, flipped with one globals write), then
    /// session placements, then services (which turn routing on), and only then the removals.
    /// Each element update is atomic (placements go in batches, each entry of a batch updated
    /// as a single update would), and each `SERVICES` write, `SESSIONS` batch or single
    /// `SESSIONS` write is followed by a bump of the fronts' epoch ([`FrontEpoch`]) before
    /// the next.
    ///
    /// A full SESSIONS map refuses the placements that do not fit: those sessions keep routing
    /// as before (returned in [`WriteOutcome`]), everything else is still written, and the room
    /// the removals make is used before returning.
    pub fn write_delta(&mut self, delta: &TableDelta) -> Result<WriteOutcome, MapsError> {
        let mut out = WriteOutcome::default();
        for (id, backend) in &delta.backends {
            self.set_backend(*id, backend)?;
        }
        let current = self.globals()?;
        // The egress MTU is the interface's, written at attach ([`Self::set_egress_mtu`]):
        // tables never change it.
        let mut next = delta
            .globals
            .unwrap_or(current)
            .with_live_half(current.live_half())
            .with_egress_mtu(current.egress_mtu);
        if let Some(table) = &delta.maglev {
            let start = Instant::now();
            self.maglev.write_half(current.idle_half(), table);
            out.maglev_build = start.elapsed();
            next = next.with_live_half(current.idle_half());
        }
        if next != current {
            let start = Instant::now();
            self.publish_globals(&next)?;
            if delta.maglev.is_some() {
                out.maglev_flip = Some(start.elapsed());
            }
        }
        let refused = self.write_placements(&delta.sessions, &mut out)?;
        for (id, pool) in &delta.pools {
            self.write_pool(*id, pool)?;
        }
        self.write_services(delta)?;
        for k in &delta.removed_services {
            let removed = self.services.remove(k);
            self.epoch.bump();
            match removed {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op("delete", "SERVICES")(e)),
            }
        }
        for k in &delta.removed_sessions {
            self.remove_placement(k)?;
        }
        // Removals may have made room for placements refused above.
        for (key, set) in refused {
            if !self.write_counted(&key, &set, &mut out)? {
                out.placements_refused.push(key);
            }
        }
        for id in &delta.removed_backends {
            self.set_backend(*id, &Backend::default())?;
        }
        Ok(out)
    }

    /// Writes a delta's services. A pooled service's ring goes into its idle half (a fresh
    /// region of the ring space when it is new or changed size) and the service write that
    /// names it live is the flip: one update, per service.
    fn write_services(&mut self, delta: &TableDelta) -> Result<(), MapsError> {
        let mut used = self.ring_regions()?;
        for (k, v) in &delta.services {
            let mut next = *v;
            if let Some((_, ring)) = delta.rings.iter().find(|(id, _)| *id == v.id) {
                let current = self.services.get(k, 0).ok();
                let (live, idle) = match current {
                    Some(c) if c.has_pool() && c.ring_size == v.ring_size => {
                        (c.ring_idle, c.ring_live)
                    }
                    _ => {
                        let start =
                            free_region(&used, 2 * v.ring_size).ok_or(MapsError::RingSpace {
                                service: v.id,
                                size: v.ring_size,
                            })?;
                        used.push((start, 2 * v.ring_size));
                        (start, start + v.ring_size)
                    }
                };
                if !self.maglev.write_at(live, ring) {
                    return Err(MapsError::RingSpace {
                        service: v.id,
                        size: v.ring_size,
                    });
                }
                next.ring_live = live;
                next.ring_idle = idle;
            }
            let written = self.services.insert(k, next, 0);
            self.epoch.bump();
            written.map_err(op("write", "SERVICES"))?;
        }
        Ok(())
    }

    /// The ring-space regions the services in the map hold now (both halves of each), as
    /// (start, length).
    fn ring_regions(&self) -> Result<Vec<(u32, u32)>, MapsError> {
        let mut used = Vec::new();
        for entry in self.services.iter() {
            let (_, v) = entry.map_err(op("iterate", "SERVICES"))?;
            if v.has_pool() {
                used.push((v.ring_live, v.ring_size));
                used.push((v.ring_idle, v.ring_size));
            }
        }
        Ok(used)
    }

    /// Writes service `service`'s pool-membership bitmap: exactly `members`.
    fn write_pool(&mut self, service: u32, members: &[u32]) -> Result<(), MapsError> {
        let mut words = [0u64; POOL_WORDS as usize];
        for &id in members {
            if let Some(w) = words.get_mut(id as usize / 64) {
                *w |= 1 << (id % 64);
            }
        }
        let Some(first) = pool_word(service, 0) else {
            return Ok(());
        };
        for (i, w) in words.iter().enumerate() {
            self.pool_members
                .set(first + i as u32, w, 0)
                .map_err(op("write", "POOL_MEMBERS"))?;
        }
        Ok(())
    }

    /// Service `service`'s pool as the bitmap holds it, ascending.
    fn read_pool(&self, service: u32) -> Result<Vec<u32>, MapsError> {
        let mut members = Vec::new();
        let Some(first) = pool_word(service, 0) else {
            return Ok(members);
        };
        for i in 0..POOL_WORDS {
            let w = self
                .pool_members
                .get(&(first + i), 0)
                .map_err(op("read", "POOL_MEMBERS"))?;
            members.extend((0..64).filter(|b| w >> b & 1 != 0).map(|b| i * 64 + b));
        }
        Ok(members)
    }

    /// One placement of a delta, written and timed; `false` if a full map refused it.
    fn write_counted(
        &mut self,
        key: &SessionKey,
        set: &ShardSet,
        out: &mut WriteOutcome,
    ) -> Result<bool, MapsError> {
        let old = self.sessions.get(key, 0).ok();
        let start = Instant::now();
        let written = self.write_placement(key, *set, old);
        self.epoch.bump();
        match written {
            Ok(()) => {
                out.placement_writes += start.elapsed();
                out.placements_written += 1;
                Ok(true)
            }
            Err(e) if is_full(&e) => Ok(false),
            Err(e) => Err(op("write", "SESSIONS")(e)),
        }
    }

    /// Writes `table` into the Maglev half packets are not reading and returns its index; it
    /// goes live only when [`Self::publish_globals`] names it.
    pub fn fill_idle_maglev(&mut self, table: &[u32]) -> Result<u32, MapsError> {
        let idle = self.globals()?.idle_half();
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

    /// Established flows per backend: flow-table entries live now, each counted for the
    /// backend its freshest live entry pins it to (what a drain waits for).
    pub fn live_flows(&self) -> Result<BTreeMap<u32, u64>, MapsError> {
        let idle_secs = self.globals()?.flow_idle_secs;
        let now = monotonic_ns();
        let mut out = BTreeMap::new();
        for item in self.flows.iter() {
            let (_, per_cpu) = item.map_err(op("iterate", "FLOWS"))?;
            if let Some(backend) = FlowEntry::freshest_live(per_cpu.iter(), now, idle_secs) {
                *out.entry(backend).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Replaces one session's shard set: one atomic map update.
    pub fn place_session(&mut self, key: &SessionKey, set: &ShardSet) -> Result<(), MapsError> {
        let old = self.sessions.get(key, 0).ok();
        let written = self.write_placement(key, *set, old);
        self.epoch.bump();
        written.map_err(op("write", "SESSIONS"))
    }

    /// Removes one session's shard set (its packets go back to the default table); its
    /// counters move back to the LRU counters. Removing an unplaced session does nothing.
    pub fn unplace_session(&mut self, key: &SessionKey) -> Result<(), MapsError> {
        self.remove_placement(key)
    }

    /// The previous placements of sessions in a handoff window (`HANDOFF_SLOTS`).
    pub fn handoffs(&self) -> &HandoffMap {
        &self.handoffs
    }

    /// The fronts' epoch, for writers of `SESSIONS` or `SERVICES` outside this type (benches):
    /// bump it after each write.
    pub fn front_epoch(&self) -> &FrontEpoch {
        &self.epoch
    }

    /// Writes `set` for `key` with one SESSIONS update (the caller bumps the fronts' epoch),
    /// keeping the counters slot `old` names or giving the session a free one. A new slot
    /// starts from the session's LRU counters, which are then dropped, so the session's totals
    /// carry on (less the packets of the few microseconds between the two); with no slot free
    /// the session keeps counting in the LRU.
    fn write_placement(
        &mut self,
        key: &SessionKey,
        mut set: ShardSet,
        old: Option<ShardSet>,
    ) -> Result<(), MapError> {
        self.clear_session_filter([key])?;
        let kept = old.map_or(0, |o| o.stats_slot);
        if kept != 0 {
            set.stats_slot = kept;
            self.sessions.insert(key, set, 0)?;
            self.slot_of.insert(*key, kept);
            return Ok(());
        }
        let Some(slot) = self.free_slots()?.take() else {
            set.stats_slot = 0;
            self.sessions.insert(key, set, 0)?;
            self.slot_of.remove(key);
            return Ok(());
        };
        let seed = match self.session_stats.get(key, 0) {
            Ok(per_cpu) => Some(per_cpu.to_vec()),
            Err(MapError::KeyNotFound) => None,
            Err(e) => return Err(self.give_back(slot, e)),
        };
        let owned = per_cpu_from(seed.as_deref(), |c| SlotCounter {
            owner: *key,
            counter: c,
        });
        if let Err(e) = owned.and_then(|owned| self.slot_stats.set(slot, owned, 0)) {
            return Err(self.give_back(slot, e));
        }
        set.stats_slot = slot;
        if let Err(e) = self.sessions.insert(key, set, 0) {
            let _ = self.free_slot(slot);
            return Err(e);
        }
        self.slot_of.insert(*key, slot);
        if seed.is_some() {
            match self.session_stats.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes `key`'s shard set, then folds its slot's counters into the LRU counters (where
    /// its packets now count) and frees the slot.
    fn remove_placement(&mut self, key: &SessionKey) -> Result<(), MapsError> {
        let slot = match self.sessions.get(key, 0) {
            Ok(set) => set.stats_slot,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(op("read", "SESSIONS")(e)),
        };
        let removed = self.sessions.remove(key);
        self.epoch.bump();
        match removed {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(op("delete", "SESSIONS")(e)),
        }
        self.slot_of.remove(key);
        if slot == 0 {
            return Ok(());
        }
        let counted = self
            .slot_stats
            .get(&slot, 0)
            .map_err(op("read", "SESSION_SLOT_STATS"))?;
        if counted.iter().any(|c| c.owner == *key) {
            let mut total: Vec<Counter> = match self.session_stats.get(key, 0) {
                Ok(per_cpu) => per_cpu.to_vec(),
                Err(MapError::KeyNotFound) => vec![Counter::default(); counted.len()],
                Err(e) => return Err(op("read", "SESSION_STATS")(e)),
            };
            for (t, c) in total.iter_mut().zip(counted.iter()) {
                if c.owner == *key {
                    t.packets += c.counter.packets;
                    t.bytes += c.counter.bytes;
                }
            }
            let total = per_cpu_from(Some(&total), |c| c).map_err(op("write", "SESSION_STATS"))?;
            // A full LRU makes room by evicting its least recently seen session.
            self.session_stats
                .insert(key, total, 0)
                .map_err(op("write", "SESSION_STATS"))?;
        }
        self.free_slot(slot)
            .map_err(op("write", "SESSION_SLOT_STATS"))
    }

    /// The slot allocator, built from the slots SESSIONS names on first use (at the daemon's
    /// start, from [`Self::mark_session_filter`]'s walk, so SESSIONS is walked once).
    fn free_slots(&mut self) -> Result<&mut StatsSlots, MapError> {
        if self.slots.is_none() {
            // One read per few thousand sessions: a million placements are read in a few
            // hundred syscalls, not two million.
            let mut seen = SlotsSeen::default();
            batch::read::<SessionKey, ShardSet>(
                batch::fd(&self.sessions),
                batch::Span::All,
                |key, set| seen.see(key, set),
            )
            .map_err(|e| syscall_error("bpf_map_lookup_batch", e))?;
            self.install_slots(seen);
        }
        Ok(self.slots.as_mut().expect("built above"))
    }

    /// Builds the slot allocator and `slot_of` from a whole walk of SESSIONS.
    fn install_slots(&mut self, seen: SlotsSeen) {
        self.slots = Some(StatsSlots::new(seen.used));
        self.slot_of = seen.held;
    }

    /// Marks `slot` free in the map (no owner) and in the allocator.
    fn free_slot(&mut self, slot: u32) -> Result<(), MapError> {
        let free = per_cpu_from(None, |c| SlotCounter {
            owner: SlotCounter::FREE,
            counter: c,
        })?;
        self.slot_stats.set(slot, free, 0)?;
        if let Some(slots) = self.slots.as_mut() {
            slots.release(slot);
        }
        Ok(())
    }

    /// Returns a slot that was never published and passes `e` on.
    fn give_back(&mut self, slot: u32, e: MapError) -> MapError {
        if let Some(slots) = self.slots.as_mut() {
            slots.release(slot);
        }
        e
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
        let mut sessions = std::collections::HashMap::new();
        let mut snap = self.read_tables_with(&mut |key, set| {
            sessions.insert(key, set);
        })?;
        snap.sessions = sessions;
        Ok(snap)
    }

    /// [`Self::read_snapshot`] but the placements, which go to `each` one at a time (counters
    /// slot 0) as `BPF_MAP_LOOKUP_BATCH` reads them: a million of them are never held here.
    pub fn read_tables_with(
        &self,
        each: &mut dyn FnMut(SessionKey, ShardSet),
    ) -> Result<Snapshot, MapsError> {
        let globals = self.globals()?;
        let mut snap = Snapshot {
            globals,
            ..Snapshot::default()
        };
        for entry in self.services.iter() {
            let (k, v) = entry.map_err(op("iterate", "SERVICES"))?;
            if v.has_pool() {
                snap.rings
                    .insert(v.id, self.maglev.read_at(v.ring_live, v.ring_size));
                snap.pools.insert(v.id, self.read_pool(v.id)?);
            }
            snap.services.insert(k, v.unplaced());
        }
        batch::read::<SessionKey, ShardSet>(batch::fd(&self.sessions), batch::Span::All, |k, v| {
            each(
                *k,
                ShardSet {
                    stats_slot: 0,
                    ..*v
                },
            )
        })
        .map_err(|e| op("iterate", "SESSIONS")(syscall_error("bpf_map_lookup_batch", e)))?;
        for id in 0..shardline_common::consts::MAX_BACKENDS {
            let b = self.backends.get(&id, 0).map_err(op("read", "BACKENDS"))?;
            if b != Backend::default() {
                snap.backends.insert(id, b);
            }
        }
        snap.maglev = self.read_maglev_half(globals.live_half())?;
        snap.globals = globals.with_live_half(0);
        Ok(snap)
    }
}

/// One value per possible CPU: `seed`'s counters (zeros without one) made into `T`s.
fn per_cpu_from<T: aya::Pod>(
    seed: Option<&[Counter]>,
    make: impl Fn(Counter) -> T,
) -> Result<PerCpuValues<T>, MapError> {
    let cpus = aya::util::nr_cpus().map_err(|(call, io_error)| syscall_error(call, io_error))?;
    let values: Vec<T> = (0..cpus)
        .map(|cpu| make(seed.and_then(|s| s.get(cpu).copied()).unwrap_or_default()))
        .collect();
    PerCpuValues::try_from(values).map_err(|e| syscall_error("per-CPU values", e))
}

fn syscall_error(call: &'static str, io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError { call, io_error })
}

/// Replays against the live maps, one lookup syscall per table read.
impl Tables for DataplaneMaps {
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key, 0).ok()
    }

    fn placed_backend(&self, key: &SessionKey, request_key: u64) -> Option<u32> {
        pick_shard(&self.sessions.get(key, 0).ok()?, request_key)
    }

    /// As the kernel: only a placement with the window flag, a handoff open by the clock.
    fn handoff_mark(&self, key: &SessionKey, request_key: u64, owner: u32, _at: usize) -> u8 {
        match self.sessions.get(key, 0) {
            Ok(set) => self
                .handoffs
                .mark(set.handoff, request_key, owner, monotonic_ns()),
            Err(_) => 0,
        }
    }

    fn maglev(&self, slot: u32) -> u32 {
        let half = self.globals().map(|g| g.live_half()).unwrap_or(0);
        self.maglev.slot(half, slot)
    }

    fn pool_ring(&self, service: &Service, hash: u64) -> u32 {
        match service.ring_index(hash) {
            Some(index) => self.maglev.at(index),
            None => shardline_common::consts::NO_BACKEND,
        }
    }

    fn in_pool(&self, service: &Service, backend: u32) -> bool {
        pool_word(service.id, backend)
            .and_then(|word| self.pool_members.get(&word, 0).ok())
            .is_some_and(|bits| bits >> (backend % 64) & 1 != 0)
    }

    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id, 0).ok()
    }

    /// The freshest live entry of any CPU (the kernel consults only the CPU it runs on).
    fn sticky_backend(&self, flow: &FlowKey) -> Option<u32> {
        let idle_secs = self.globals().ok()?.flow_idle_secs;
        let now = monotonic_ns();
        let per_cpu = self.flows.get(flow, 0).ok()?;
        FlowEntry::freshest_live(per_cpu.iter(), now, idle_secs)
    }

    /// A replay observes; it never records flows.
    fn remember_flow(&self, _flow: &FlowKey, _backend: u32, _held: bool, _opened: bool) {}

    fn options(&self) -> u32 {
        self.globals().map(|g| g.options).unwrap_or(0)
    }

    fn too_big_limit(&self, v6: bool) -> u32 {
        self.globals()
            .map(|g| g.too_big_limit(v6))
            .unwrap_or(u32::MAX)
    }
}

/// The first start in the pools' ring space of `len` free entries, given the regions in use
/// (start, length), first fit.
fn free_region(used: &[(u32, u32)], len: u32) -> Option<u32> {
    let mut taken: Vec<(u32, u32)> = used.to_vec();
    taken.sort_unstable();
    let mut start = DEFAULT_RING_ENTRIES;
    for (s, l) in taken {
        if s.saturating_sub(start) >= len {
            break;
        }
        start = start.max(s.saturating_add(l));
    }
    (u64::from(start) + u64::from(len) <= u64::from(MAGLEV_ENTRIES)).then_some(start)
}

/// `CLOCK_MONOTONIC` in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_region_fits_first_gap_and_refuses_when_full() {
        let d = DEFAULT_RING_ENTRIES;
        assert_eq!(free_region(&[], 502), Some(d));
        assert_eq!(free_region(&[(d, 251), (d + 251, 251)], 502), Some(d + 502));
        // A gap too small is skipped; one big enough is used.
        let used = [(d, 100), (d + 200, 100), (d + 1000, 10)];
        assert_eq!(free_region(&used, 100), Some(d + 100));
        assert_eq!(free_region(&used, 101), Some(d + 300));
        assert_eq!(free_region(&used, 701), Some(d + 1010));
        assert_eq!(free_region(&[], MAGLEV_ENTRIES - d), Some(d));
        assert_eq!(free_region(&[(d, 1)], MAGLEV_ENTRIES - d), None);
    }
}
