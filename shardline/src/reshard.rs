//! The swap stage: applies re-shards to the pinned maps so that every routing-visible change is
//! one atomic write, and keeps what moved (the plan) and who owned it before (the handoff).
//!
//! - A session's placement changes with one `SESSIONS` update carrying the next generation.
//! - The default table is built in the idle Maglev half, then made live by one globals write.
//! - Header mode keeps the previous owner of every moved key range known for a handoff window,
//!   while packets already go to the new owner: one owner per key at any instant, and the new
//!   owner knows whom to fetch state from (see the README for why).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use shardline_common::{
    consts::MAGLEV_SIZE,
    maglev::{self, Weighted},
    maps::{Backend, SessionKey, ShardSet},
    partition::ShardSetError,
    plan::{maglev_plan, session_plan, SessionPlan, SlotMove},
};

use crate::{
    maps::{DataplaneMaps, MapsError},
    snapshot::Snapshot,
};

/// Errors applying a re-shard.
#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    /// A map write failed; the routing-visible state is the previous generation.
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

/// Which kind of atomic write a swap was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapKind {
    /// One session's shard set replaced.
    Session,
    /// The default Maglev table flipped to its other half.
    Maglev,
}

/// What one applied re-shard did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// Generation now in force.
    pub generation: u64,
    /// The atomic write that made it visible.
    pub kind: SwapKind,
    /// Time spent preparing (filling the idle Maglev half); zero for a session update.
    pub build: Duration,
    /// Time of the one routing-visible write.
    pub flip: Duration,
}

/// A moved placement whose previous owners stay known until `until`.
#[derive(Clone, Debug)]
pub struct Handoff {
    /// The session.
    pub session: SessionKey,
    /// The placement before the move.
    pub previous: ShardSet,
    /// The placement after it.
    pub current: ShardSet,
    /// What moved.
    pub plan: SessionPlan,
    /// When the previous owners stop being published.
    pub until: Instant,
}

/// Applies re-shards to one dataplane's maps and tracks the tables in force.
pub struct Resharder {
    maps: DataplaneMaps,
    tables: Snapshot,
    weights: BTreeMap<u32, u32>,
    generation: u64,
    handoff_window: Duration,
    handoffs: Vec<Handoff>,
    last_maglev_plan: Vec<SlotMove>,
}

impl Resharder {
    /// Starts from `tables`, which the maps must already hold (as after
    /// [`DataplaneMaps::apply`]), with every backend at `weights` (id → weight).
    pub fn new(
        maps: DataplaneMaps,
        tables: Snapshot,
        weights: BTreeMap<u32, u32>,
        handoff_window: Duration,
    ) -> Self {
        let generation = tables
            .sessions
            .values()
            .map(|s| s.generation)
            .max()
            .unwrap_or(0);
        Self {
            maps,
            tables,
            weights,
            generation,
            handoff_window,
            handoffs: Vec::new(),
            last_maglev_plan: Vec::new(),
        }
    }

    /// The tables in force now (what a replay of the current generation runs against).
    pub fn tables(&self) -> &Snapshot {
        &self.tables
    }

    /// The maps being written.
    pub fn maps(&self) -> &DataplaneMaps {
        &self.maps
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Places `session` on `backends` (1 to 16 distinct, configured) under `scheme` (see
    /// `maps::scheme`): one atomic update.
    pub fn place(
        &mut self,
        session: SessionKey,
        backends: &[u32],
        scheme: u32,
    ) -> Result<Applied, ReshardError> {
        let set =
            ShardSet::from_members(backends, scheme, self.generation + 1).map_err(|problem| {
                ReshardError::BadShardSet {
                    backends: backends.to_vec(),
                    problem,
                }
            })?;
        if let Some(id) = backends
            .iter()
            .find(|id| !self.tables.backends.contains_key(id))
        {
            return Err(ReshardError::UnknownBackend(*id));
        }
        let start = Instant::now();
        self.maps.place_session(&session, &set)?;
        let flip = start.elapsed();
        self.generation += 1;
        let previous = self.tables.sessions.insert(session, set);
        let plan = session_plan(previous.as_ref(), &set);
        if let Some(previous) = previous {
            if plan != SessionPlan::Unchanged {
                let now = Instant::now();
                self.handoffs
                    .retain(|h| h.until > now && h.session != session);
                self.handoffs.push(Handoff {
                    session,
                    previous,
                    current: set,
                    plan,
                    until: now + self.handoff_window,
                });
            }
        }
        Ok(Applied {
            generation: self.generation,
            kind: SwapKind::Session,
            build: Duration::ZERO,
            flip,
        })
    }

    /// Sets backend weights (0 drains: no new default-table traffic) and swaps the default
    /// table build-then-flip. Backends not named keep their weight.
    pub fn set_weights(&mut self, changes: &[(u32, u32)]) -> Result<Applied, ReshardError> {
        for (id, _) in changes {
            if !self.tables.backends.contains_key(id) {
                return Err(ReshardError::UnknownBackend(*id));
            }
        }
        for (id, weight) in changes {
            self.weights.insert(*id, *weight);
        }
        let weighted: Vec<Weighted> = self
            .weights
            .iter()
            .map(|(id, weight)| Weighted {
                id: *id,
                weight: *weight,
            })
            .collect();
        let table = maglev::build(&weighted, MAGLEV_SIZE);
        let start = Instant::now();
        let idle = self.maps.fill_idle_maglev(&table)?;
        let build = start.elapsed();
        let globals = self.maps.globals()?.with_live_half(idle);
        let start = Instant::now();
        self.maps.publish_globals(&globals)?;
        let flip = start.elapsed();
        self.generation += 1;
        self.last_maglev_plan = maglev_plan(&self.tables.maglev, &table);
        self.tables.maglev = table;
        Ok(Applied {
            generation: self.generation,
            kind: SwapKind::Maglev,
            build,
            flip,
        })
    }

    /// Adds (or replaces) backend `id` with weight 0: present, but routed to only once a
    /// placement or a weight names it.
    pub fn add_backend(&mut self, id: u32, backend: Backend) -> Result<(), ReshardError> {
        self.maps.set_backend(id, &backend)?;
        self.tables.backends.insert(id, backend);
        self.weights.entry(id).or_insert(0);
        Ok(())
    }

    /// What the last default-table swap moved.
    pub fn last_maglev_plan(&self) -> &[SlotMove] {
        &self.last_maglev_plan
    }

    /// Moved placements whose previous owners are still published at `now`.
    pub fn handoffs(&self, now: Instant) -> impl Iterator<Item = &Handoff> {
        self.handoffs.iter().filter(move |h| h.until > now)
    }
}
