//! The swap stage: the one path by which routing changes reach a dataplane's maps, for the
//! daemon's committed states ([`Resharder::apply`]) and for single re-shards alike
//! ([`Resharder::place`], [`Resharder::set_default_weights`], [`Resharder::add_backend`], which
//! build their target from the tables in force and apply it). It keeps the tables in force,
//! what moved (the plans) and who owned it before (the handoffs).
//!
//! - Only the delta from the tables in force is written ([`TableDelta`]), in an order that
//!   never routes to a missing entry, and every routing-visible write is atomic:
//! - a session's placement changes with one `SESSIONS` update carrying the next generation;
//! - the default table is built completely in the idle Maglev half, then made live by one
//!   globals write (build-then-flip).
//! - Header mode keeps the previous owners of every moved session known for a handoff window,
//!   while packets already go to the new owner: one owner per key at any instant, and the new
//!   owner knows whom to fetch state from (see the README for why).
//! - [`board`]: the handoffs in force, shared with the API's owners query.
//! - `publish`: the same handoffs in the dataplane (`HANDOFF_SLOTS` and the placements' window
//!   flag), so packets of moved keys reach their new owner marked with the previous one.
//! - `by_end`: sessions indexed by the end of their window, for the flagged sessions and the
//!   board's handoffs alike.
//! - `slots`: which handoff slot each open window uses, and when a slot may be written again.
//! - `moved`: a moved placement with its previous owners ([`Handoff`]), and as a swap records
//!   it ([`CompactHandoff`]).
//! - `whole`: the whole write (a start, a backend or service change), the target's placements
//!   visited and written a chunk at a time rather than built into one table.

pub mod board;
mod by_end;
mod moved;
pub mod placed;
mod publish;
mod slots;
mod whole;

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use rustc_hash::FxHashSet;
use shardline_common::{
    consts::{MAGLEV_SIZE, NO_BACKEND},
    handoff::{slot_of_flag, Handoff as MapHandoff},
    maglev::{self, Weighted},
    maps::{scheme, session_mode, Backend, SessionKey, ShardSet},
    partition::ShardSetError,
    plan::{maglev_plan, SlotMove},
    route::unplaced_backend,
};

use crate::{
    maps::{DataplaneMaps, MapsError, WriteOutcome},
    reshard::{by_end::ByEnd, placed::PlacedSets},
    snapshot::{
        delta::{PlacementsMut, TableDelta},
        Snapshot,
    },
};

use moved::moves_keys;
pub use moved::{CompactHandoff, Handoff};
pub use publish::CLOSE_CHUNK;
pub use slots::QUARANTINE as HANDOFF_QUARANTINE;
pub use whole::WHOLE_WRITE_CHUNK;

/// The maps as the swap stage sees them: read back whole (at the start, or after a failed
/// write), written as deltas. [`DataplaneMaps`] in production; an in-memory fake in tests.
pub trait TableWriter {
    /// The tables the maps hold now (live half 0, no counters slots) but the placements, which
    /// go to `each` one at a time (a million on a large node: never gathered in one table).
    fn read_tables(
        &self,
        each: &mut dyn FnMut(SessionKey, ShardSet),
    ) -> Result<Snapshot, MapsError>;
    /// Writes `delta` in its order (see [`DataplaneMaps::write_delta`]).
    fn write_delta(&mut self, delta: &TableDelta) -> Result<WriteOutcome, MapsError>;
    /// Writes `values[i]` into handoff slot `slots[i]`, in place: only slots no packet can be
    /// reading (see `slots`).
    fn write_handoff_slots(
        &mut self,
        slots: &[u32],
        values: &[MapHandoff],
    ) -> Result<(), MapsError>;
    /// Clears handoff slots (`until_ns` 0) that left their quarantine.
    fn clear_handoff_slots(&mut self, slots: &[u32]) -> Result<(), MapsError> {
        self.write_handoff_slots(slots, &vec![MapHandoff::default(); slots.len()])
    }
}

impl TableWriter for DataplaneMaps {
    fn read_tables(
        &self,
        each: &mut dyn FnMut(SessionKey, ShardSet),
    ) -> Result<Snapshot, MapsError> {
        self.read_tables_with(each)
    }

    fn write_delta(&mut self, delta: &TableDelta) -> Result<WriteOutcome, MapsError> {
        DataplaneMaps::write_delta(self, delta)
    }

    fn write_handoff_slots(
        &mut self,
        slots: &[u32],
        values: &[MapHandoff],
    ) -> Result<(), MapsError> {
        DataplaneMaps::write_handoff_slots(self, slots, values)
    }
}

/// How long the previous owners of a moved session stay published, unless configured
/// (`handoff_window_secs`).
pub const DEFAULT_HANDOFF_WINDOW: Duration =
    Duration::from_secs(crate::config::DEFAULT_HANDOFF_WINDOW_SECS as u64);

/// Errors applying a re-shard.
#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    /// A map write failed; the tables in force are read back from the maps before the next
    /// write.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// The change names a backend the tables do not have.
    #[error("backend {0} is not configured")]
    UnknownBackend(u32),
    /// The backends are not a shard set.
    #[error("{problem} (got {backends:?})")]
    BadShardSet {
        /// The backends given.
        backends: Vec<u32>,
        /// What is wrong with them.
        #[source]
        problem: ShardSetError,
    },
}

/// Which kind of atomic write made a swap visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapKind {
    /// Nothing routing-visible changed; nothing was written.
    Unchanged,
    /// Placements only: one `SESSIONS` update (or delete) per session.
    Session,
    /// The default Maglev table flipped to its other half (with whatever else changed).
    Maglev,
    /// Backends, services or globals changed, without a flip.
    Tables,
}

/// What one swap wrote.
#[derive(Clone, Debug)]
pub struct Swap {
    /// Generation now in force.
    pub generation: u64,
    /// The atomic write that made it visible.
    pub kind: SwapKind,
    /// Time spent preparing (filling the idle Maglev half); zero without a flip.
    pub build: Duration,
    /// Time of the routing-visible writes: the globals write of a flip, else the placement
    /// updates.
    pub flip: Duration,
    /// Placements a full SESSIONS map refused: those sessions keep routing as before.
    pub placements_refused: Vec<SessionKey>,
    /// Sessions placed that were not before (they leave the default table).
    pub placed: Vec<SessionKey>,
    /// Moved placements with their previous owners, published until the handoff window
    /// closes (with a zero window they are listed here, for the log, and published nowhere).
    /// Compact: a start on maps that hold the services but no placements moves every header
    /// session off its home, a million of them (see [`CompactHandoff`]).
    pub handoffs: Vec<CompactHandoff>,
    /// What the default table moved (empty without a flip).
    pub maglev_moves: Vec<SlotMove>,
}

/// What a swap's writes change, known before they are made (a whole write makes them in
/// parts).
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Nothing but placements (each one atomic SESSIONS update or delete).
    only_placements: bool,
    /// The default table.
    maglev: bool,
}

impl Shape {
    fn of(delta: &TableDelta) -> Self {
        Self {
            only_placements: delta.only_placements(),
            maglev: delta.maglev.is_some(),
        }
    }
}

/// Whether a delta's placements are in `Resharder::placed` before it is written: put there
/// as it was computed (`Ahead`, [`TableDelta::of_sessions_placing`]) or once written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    Ahead,
    After,
}

/// Applies routing changes to one dataplane's maps and tracks the tables in force.
pub struct Resharder {
    /// What the maps hold (as a snapshot: live half 0, no counters slots) but the placements,
    /// which are in `placed`: `tables.sessions` stays empty.
    tables: Snapshot,
    /// The placements the maps hold, compact (a million of them on a large node).
    placed: PlacedSets,
    /// `tables` cannot be trusted (never read, or a write failed half way): read the maps first.
    stale: bool,
    generation: u64,
    handoff_window: Duration,
    /// Moves whose previous owners are published, in the order they were made; a session's
    /// last record hides its earlier ones. The ends follow that order while the window stays
    /// the same (a shorter one keeps the records after a longer one's a little longer), so
    /// the ended records leave from the front, not in a pass over every one (a load of a
    /// million placements keeps a million, and a tick's moves used to walk them all twice).
    handoffs: VecDeque<CompactHandoff>,
    /// Sessions whose placement in the maps carries the window flag, with the window's end.
    flagged: ByEnd<()>,
    /// The handoff slot each flagged session's placement names, and the slots free to write.
    slots: slots::Slots,
    /// `flag_moves`' buffers, kept between swaps.
    moves: publish::Moves,
    last_maglev_plan: Vec<SlotMove>,
}

impl Resharder {
    /// A swap stage that reads the tables in force from the maps at its first write.
    pub fn new(handoff_window: Duration) -> Self {
        Self {
            tables: Snapshot::default(),
            placed: PlacedSets::default(),
            stale: true,
            generation: 0,
            handoff_window,
            handoffs: VecDeque::new(),
            flagged: ByEnd::default(),
            slots: slots::Slots::default(),
            moves: publish::Moves::default(),
            last_maglev_plan: Vec::new(),
        }
    }

    /// A swap stage starting from what `maps` hold now.
    pub fn adopt(maps: &impl TableWriter, handoff_window: Duration) -> Result<Self, MapsError> {
        let mut r = Self::new(handoff_window);
        r.refresh(maps)?;
        Ok(r)
    }

    /// Publishes the moves of later swaps for `window` (a reload's `handoff_window_secs`);
    /// handoffs already published keep their end.
    pub fn set_handoff_window(&mut self, window: Duration) {
        self.handoff_window = window;
    }

    /// Reads the tables in force back from `maps` if they are not known.
    fn refresh(&mut self, maps: &impl TableWriter) -> Result<(), MapsError> {
        if self.stale {
            // The window flag is the dataplane's, not a placement's: a window found open (a
            // restart) stays open one more window, then closes.
            let now = Instant::now();
            let reopened = now + self.handoff_window;
            let (mut placed, mut generation) = (PlacedSets::default(), self.generation);
            let (flagged, mut named) = (&mut self.flagged, Vec::new());
            // Straight into the compact table, a placement at a time.
            let tables = maps.read_tables(&mut |key, mut set| {
                if let Some(slot) = slot_of_flag(set.handoff) {
                    if !flagged.contains_key(&key) {
                        flagged.insert(key, reopened, ());
                    }
                    named.push((key, slot));
                }
                set.handoff = 0;
                generation = generation.max(set.generation);
                placed.insert(key, set);
            })?;
            self.slots.rebuild(named, now);
            self.generation = generation;
            self.placed = placed;
            self.tables = tables;
            self.stale = false;
        }
        Ok(())
    }

    /// The tables in force now (what a replay of the current generation runs against), built
    /// whole: every placement is copied out of the compact [`Resharder::placed`].
    pub fn tables(&self) -> Snapshot {
        Snapshot {
            sessions: self.placed.to_map(),
            ..self.tables.clone()
        }
    }

    /// The placements in force now.
    pub fn placed(&self) -> &PlacedSets {
        &self.placed
    }

    /// The current generation: one more per swap that wrote something, starting above every
    /// placement generation the maps held.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes `maps` hold `target`, writing only what differs from the tables in force, and
    /// publishes the previous owners of every moved placement until `now` + the handoff window.
    /// [`Resharder::apply_placements`] with the target's placements in `target.sessions`.
    pub fn apply(
        &mut self,
        maps: &mut impl TableWriter,
        target: &Snapshot,
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.apply_placements(maps, target, &target.sessions, now)
    }

    /// Makes the placements of `changes` (a session's new shard set, or `None` for the
    /// default table) hold in `maps`, everything else unchanged: what [`Resharder::apply`]
    /// does for the tables in force with those changes made, without walking every session.
    pub fn apply_sessions(
        &mut self,
        maps: &mut impl TableWriter,
        changes: &[(SessionKey, Option<ShardSet>)],
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.refresh(maps)?;
        // Windows due close first, from the placements in force: the delta then updates them
        // as it is computed (see `TableDelta::of_sessions_placing`), so from here on any
        // failure reads the maps again.
        let mut swap = self.begin(maps, now)?;
        let mut delta = TableDelta::of_sessions_placing(&mut self.placed, changes);
        if delta.is_empty() {
            return Ok(swap);
        }
        let shape = Shape::of(&delta);
        let written = self
            .write_part(maps, &mut delta, now, &mut swap, Placed::Ahead)
            .inspect_err(|_| self.stale = true)?;
        Ok(self.finish(swap, written, shape, None))
    }

    /// Before a swap's first write: forgets the handoffs whose window ended and closes up to
    /// [`CLOSE_CHUNK`] of the dataplane's (the daemon's applier closes the rest between
    /// swaps, a chunk at a time: a swap waits for no backlog of them); the swap as nothing
    /// written yet.
    fn begin(&mut self, maps: &mut impl TableWriter, now: Instant) -> Result<Swap, ReshardError> {
        // The oldest records first (see `handoffs`): a look at the front, not a pass.
        while self.handoffs.front().is_some_and(|h| h.until <= now) {
            self.handoffs.pop_front();
        }
        self.close_due(maps, now, CLOSE_CHUNK)?;
        Ok(Swap {
            generation: self.generation,
            kind: SwapKind::Unchanged,
            build: Duration::ZERO,
            flip: Duration::ZERO,
            placements_refused: Vec::new(),
            placed: Vec::new(),
            handoffs: Vec::new(),
            maglev_moves: Vec::new(),
        })
    }

    /// Writes `delta` (its placements flagged as `flag_moves` does), one swap's writes or a
    /// part of them, and records its placements: in `placed` (unless they are there already,
    /// `Placed::Ahead`), and in `swap` the sessions it placed and the moves it made. The
    /// tables but the placements stay the ones before the swap until [`Resharder::finish`] (a
    /// header session's home under them is the previous owner of its first placement).
    fn write_part(
        &mut self,
        maps: &mut impl TableWriter,
        delta: &mut TableDelta,
        now: Instant,
        swap: &mut Swap,
        placed: Placed,
    ) -> Result<WriteOutcome, ReshardError> {
        self.flag_moves(maps, delta, now)?;
        let written = maps.write_delta(delta).inspect_err(|_| self.stale = true)?;
        self.forget_removed(&delta.removed_sessions);
        // A refused placement's slot was written, but no placement names it.
        self.forget_removed(&written.placements_refused);
        // The placements that named the retiring slots are replaced now (or at the swap's
        // instant, if a caller gave one ahead of the clock).
        self.slots.retired(Instant::now().max(now));
        if placed == Placed::After {
            for key in &delta.removed_sessions {
                self.placed.remove(key);
            }
        }
        let refused: FxHashSet<&SessionKey> = written.placements_refused.iter().collect();
        swap.handoffs.reserve(delta.sessions.len());
        for (i, (key, set)) in delta.sessions.iter().enumerate() {
            // The tables in force carry no window flag (see `refresh`).
            let set = &ShardSet { handoff: 0, ..*set };
            let in_force = match placed {
                // What the delta found in force as it placed the session.
                Placed::Ahead => delta
                    .replaced
                    .at(i, key)
                    .expect("a delta computed ahead lists what each placement replaced"),
                Placed::After if refused.contains(key) => continue,
                // One hash lookup: the insert answers what was placed before.
                Placed::After => self.placed.insert(*key, *set),
            };
            if refused.contains(key) {
                // The map kept what it had: what was placed ahead goes back.
                self.placed.update(key, |_| in_force);
                continue;
            }
            let previous = match in_force {
                Some(previous) => previous,
                None => {
                    swap.placed.push(*key);
                    // A header session's first placement moves keys off its home.
                    match home_set(&self.tables, key) {
                        Some(home) => home,
                        None => continue,
                    }
                }
            };
            if moves_keys(&previous, set) {
                let until = now + self.handoff_window;
                swap.handoffs
                    .push(CompactHandoff::new(*key, &previous, set, until));
            }
        }
        Ok(written)
    }

    /// After a swap's last write (`written`, its parts' outcomes together): one generation
    /// more, the handoffs it opened kept for their window, and (`target`, a whole write) the
    /// tables but the placements are the target's.
    fn finish(
        &mut self,
        mut swap: Swap,
        written: WriteOutcome,
        shape: Shape,
        target: Option<&Snapshot>,
    ) -> Swap {
        self.generation += 1;
        // A whole write: the tables but the placements are the target's (the placements were
        // made part by part, from the deltas, which list every one that differs).
        let before = target.map(|target| {
            let tables = Snapshot {
                services: target.services.clone(),
                backends: target.backends.clone(),
                sessions: HashMap::new(),
                maglev: target.maglev.clone(),
                rings: target.rings.clone(),
                pools: target.pools.clone(),
                globals: target.globals,
                handoffs: target.handoffs.clone(),
            };
            let before = std::mem::replace(&mut self.tables, tables);
            self.tables.globals = target.globals.with_live_half(0);
            before
        });
        // A session moved again drops its earlier handoff: the newer record hides it (see
        // `handoffs`). A zero window keeps no record: nothing is published, nothing is asked
        // of the old owners (the moves are still in the swap, for the log), and the earlier
        // records of the moved sessions go (one pass; only with handoffs turned off).
        if !self.handoff_window.is_zero() {
            self.handoffs.extend(swap.handoffs.iter().cloned());
        } else if !swap.handoffs.is_empty() && !self.handoffs.is_empty() {
            let moved: FxHashSet<&SessionKey> = swap.handoffs.iter().map(|h| &h.session).collect();
            self.handoffs.retain(|h| !moved.contains(&h.session));
        }
        if let (Some(before), true) = (&before, shape.maglev) {
            self.last_maglev_plan = maglev_plan(&before.maglev, &self.tables.maglev);
            swap.maglev_moves = self.last_maglev_plan.clone();
        }
        swap.generation = self.generation;
        swap.build = written.maglev_build;
        (swap.kind, swap.flip) = match written.maglev_flip {
            Some(flip) => (SwapKind::Maglev, flip),
            None if shape.only_placements => (SwapKind::Session, written.placement_writes),
            None => (SwapKind::Tables, written.placement_writes),
        };
        swap.placements_refused = written.placements_refused;
        swap
    }

    /// Places `session` on `backends` (1 to 16 distinct, configured) under `scheme` (see
    /// `maps::scheme`): one atomic update.
    pub fn place(
        &mut self,
        maps: &mut impl TableWriter,
        session: SessionKey,
        backends: &[u32],
        scheme: u32,
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.refresh(maps)?;
        let set =
            ShardSet::from_members(backends, scheme, self.generation + 1).map_err(|problem| {
                ReshardError::BadShardSet {
                    backends: backends.to_vec(),
                    problem,
                }
            })?;
        self.known(backends.iter())?;
        let mut target = self.tables();
        target.sessions.insert(session, set);
        self.apply(maps, &target, now)
    }

    /// Rebuilds the default table over exactly `weights` (backend id, weight; 0 drains) and
    /// swaps it build-then-flip. A backend not named gets no share.
    pub fn set_default_weights(
        &mut self,
        maps: &mut impl TableWriter,
        weights: &[(u32, u32)],
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.refresh(maps)?;
        self.known(weights.iter().map(|(id, _)| id))?;
        let weighted: Vec<Weighted> = weights
            .iter()
            .map(|(id, weight)| Weighted {
                id: *id,
                weight: *weight,
            })
            .collect();
        let mut target = self.tables();
        target.maglev = maglev::build(&weighted, MAGLEV_SIZE);
        self.apply(maps, &target, now)
    }

    /// Adds (or replaces) backend `id`: present, but routed to only once a placement or the
    /// default table names it.
    pub fn add_backend(
        &mut self,
        maps: &mut impl TableWriter,
        id: u32,
        backend: Backend,
        now: Instant,
    ) -> Result<Swap, ReshardError> {
        self.refresh(maps)?;
        let mut target = self.tables();
        target.backends.insert(id, backend);
        self.apply(maps, &target, now)
    }

    fn known<'a>(&self, mut ids: impl Iterator<Item = &'a u32>) -> Result<(), ReshardError> {
        match ids.find(|id| !self.tables.backends.contains_key(id)) {
            Some(id) => Err(ReshardError::UnknownBackend(*id)),
            None => Ok(()),
        }
    }

    /// What the last default-table swap moved.
    pub fn last_maglev_plan(&self) -> &[SlotMove] {
        &self.last_maglev_plan
    }

    /// Moved placements whose previous owners are still published at `now`.
    pub fn handoffs(&self, now: Instant) -> impl Iterator<Item = Handoff> + '_ {
        let mut seen = FxHashSet::default();
        self.handoffs
            .iter()
            .rev()
            .filter(move |h| seen.insert(h.session))
            .filter(move |h| h.until > now)
            .map(CompactHandoff::handoff)
    }
}

#[cfg(test)]
pub(crate) mod held;
/// An unplaced header session's home under `tables` as a one-member shard set (generation 0),
/// the previous owner of every key its first placement moves; `None` for other modes.
fn home_set(tables: &Snapshot, key: &SessionKey) -> Option<ShardSet> {
    let service = tables.services.values().find(|s| s.id == key.service)?;
    if service.mode != session_mode::HEADER {
        return None;
    }
    let home = unplaced_backend(tables, service, key.session, 0);
    ShardSet::from_members(&[home], scheme::HASH, 0)
        .ok()
        .filter(|_| home != NO_BACKEND)
}

#[cfg(test)]
mod tests;
