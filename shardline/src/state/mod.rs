//! The control state every daemon of a cluster agrees on, and the commands that change it.
//!
//! This is the replicated state machine's content (the Raft log carries [`Command`]s) and the
//! single source the dataplane tables are computed from: a node applies a committed command to
//! its [`ControlState`], then writes [`ControlState::tables`] into its own pinned maps. Applying
//! is deterministic and a rejected command changes nothing, so every node that applied the same
//! log holds the same state and routes every packet identically.
//!
//! - [`command`]: what can be written, and what a write answers; `apply`: how each
//!   command changes the state.
//! - [`control`]: the [`Control`] handle the API, the CLI and the control loop write through
//!   (a Raft cluster, or [`LocalControl`] in memory).
//! - [`journal`]: which sessions the last applied entries re-placed (the applier's delta).
//! - [`persistent`]: the maps of the state, shared between versions instead of copied.
//! - [`session`]: a session entry's compact fields (a million entries on a large node).
//! - `pools`: the pool commands (join, leave, weight, a service probe's verdict), each
//!   confined to one service.
//! - `votes`: backend health by majority of the LB nodes' probes.

mod apply;
pub mod command;
pub mod control;
pub mod journal;
pub mod persistent;
mod pools;
pub mod session;
mod votes;

use std::collections::{BTreeMap, BTreeSet};

use imbl::ordmap::DiffItem;
use serde::{Deserialize, Serialize};
use shardline_common::{
    consts::{MAX_BACKENDS, NO_BACKEND},
    maps::{backend_flags, scheme, session_mode, SessionKey, ShardSet},
    route::unplaced_backend,
};

pub use command::{Command, Response, StateError};
pub use control::{ClusterStatus, Control, ControlError, LocalControl, Member};
pub use journal::Journal;
pub use persistent::Map;
pub use session::{Members, Meta};

pub use crate::config::{session_number, ConfigTables, SessionRef};
use crate::{
    config::{BackendConfig, Config, Encap, IcmpConfig, ServiceConfig, ServiceName},
    snapshot::{delta::TargetPlacements, Snapshot},
};

pub use shardline_wire::bodies::SessionMeta;

/// Bytes of critical state one session may keep (keys plus values).
pub const SESSION_STATE_LIMIT: usize = 4096;

/// A backend as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendEntry {
    /// Addresses, next-hop MAC and configured weight.
    pub config: BackendConfig,
    /// Passing its health checks (new backends start healthy).
    pub healthy: bool,
    /// Draining: keeps its placed sessions' flows but gets no new share of the default table.
    pub draining: bool,
    /// Drained: the drain timeout passed, so it has left every shard set and its flows are
    /// re-decided (set by [`Command::DrainTimedOut`], cleared by any `Drain`).
    #[serde(default)]
    pub drained: bool,
    /// The pooled services whose probe it fails (by name): it is out of those services' pools
    /// only, and still serves every other (set by [`Command::SetServiceHealth`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub failing: BTreeSet<String>,
    /// Each probing LB node's verdict, by node id ([`Command::HealthVote`]; true: passes): it
    /// is unhealthy while more than half of them see it down.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub votes: BTreeMap<u64, bool>,
    /// Each probing LB node's verdict on each pooled service's probe, by service name then
    /// node id ([`Command::ServiceHealthVote`]): it fails the service while more than half of
    /// them see it fail.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_votes: BTreeMap<String, BTreeMap<u64, bool>>,
}

impl BackendEntry {
    /// Whether it may carry traffic at all: healthy, and not drained.
    pub fn usable(&self) -> bool {
        self.healthy && !self.drained
    }

    /// Whether it may carry `service`'s traffic: usable, and passing that service's probe.
    pub fn serves(&self, service: &str) -> bool {
        self.usable() && !self.failing.contains(service)
    }

    /// Its weight in the default table: zero while unhealthy or draining.
    pub fn effective_weight(&self) -> u32 {
        if self.healthy && !self.draining {
            self.config.weight
        } else {
            0
        }
    }
}

/// One member of a service's pool as the control state has it ([`ControlState::pool`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolMemberState {
    /// Backend id.
    pub id: u32,
    /// Its weight in the service's ring as configured (its own weight for a bare id).
    pub weight: u32,
    /// Its weight in the ring now: 0 while it is unhealthy, draining, drained or failing this
    /// service's probe.
    pub effective_weight: u32,
    /// Whether it may carry this service's traffic (healthy, not drained, passing the probe).
    pub healthy: bool,
    /// Failing this service's probe (and only out of this service's pool for it).
    pub probe_failing: bool,
    /// Draining everywhere.
    pub draining: bool,
}

/// A session's placement and metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Its shard set: backend ids, 1 to 16 (empty: not placed, the default table routes it).
    pub backends: Members,
    /// Placement generation: bumped by every change of `backends`.
    pub generation: u64,
    /// Class and labels.
    #[serde(default)]
    pub meta: Meta,
}

/// The replicated control state. Its maps are persistent ([`Map`]): cloning a state is cheap
/// and shares everything a later change does not touch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Encapsulation sources.
    pub encap: Encap,
    /// Flow stickiness window, seconds.
    pub flow_idle_secs: u32,
    /// ICMP options (absent from states written before it existed: the defaults).
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// Services, in id order (service id = position + 1).
    pub services: Vec<ServiceConfig>,
    /// Backends by id.
    pub backends: Map<u32, BackendEntry>,
    /// Sessions with a placement or metadata.
    #[serde(with = "persistent::pairs")]
    pub sessions: Map<SessionRef, SessionEntry>,
    /// Per-session critical state: key → value, at most [`SESSION_STATE_LIMIT`] bytes each.
    #[serde(with = "persistent::pairs")]
    pub kv: Map<SessionRef, BTreeMap<String, Vec<u8>>>,
    /// Count of applied commands that changed routing (the tables' generation).
    pub generation: u64,
    /// [`tables_digest`] of the configuration tables last loaded ([`Command::LoadConfig`]):
    /// a cluster of one reloads its file at start only when the file changed since, so the
    /// API's changes survive a restart. Absent from states written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<u64>,
    /// Which sessions the commands applied since the journal started re-placed (not state:
    /// never serialized, ignored by `==`).
    #[serde(skip)]
    pub journal: Journal,
}

/// A digest of `tables` that is the same in every process and version that serializes them
/// alike (64-bit FNV-1a of their JSON): what [`ControlState::loaded`] records.
pub fn tables_digest(tables: &ConfigTables) -> u64 {
    let json = serde_json::to_vec(tables).expect("configuration tables serialize");
    json.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl ControlState {
    /// The state a configuration file describes (services, backends, static placements).
    pub fn from_config(config: &Config) -> Self {
        let mut state = ControlState::default();
        let _ = state.apply(&Command::LoadConfig(ConfigTables::of(config)));
        state
    }

    /// Applies one command: either all of it or, with an error, nothing.
    pub fn apply(&mut self, command: &Command) -> Result<Response, StateError> {
        apply::apply(self, command)
    }

    /// The service id (1-based) of a service name.
    pub fn service_id(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u32 + 1)
    }

    /// Backend `id`'s weight in service `service`'s pool, given its own weight `own`: `own`
    /// for a service without a pool (every backend serves it), 0 while it fails the service's
    /// probe, `None` when the backend is not in the pool or the service is unknown.
    pub fn pool_weight(&self, service: &str, id: u32, own: u32) -> Option<u32> {
        let s = self.services.iter().find(|s| s.name == service)?;
        match &s.backends {
            None => Some(own),
            Some(pool) => pool.iter().find(|m| m.id() == id).map(|m| {
                let failing = self
                    .backends
                    .get(&id)
                    .is_some_and(|b| b.failing.contains(service));
                if failing {
                    0
                } else {
                    m.weight(own)
                }
            }),
        }
    }

    /// Service `service`'s pool as it stands: each member with its weight there as configured
    /// and as the ring has it now, and its health for this service. `None` for a service
    /// without a pool (or an unknown one).
    pub fn pool(&self, service: &str) -> Option<Vec<PoolMemberState>> {
        let s = self.services.iter().find(|s| s.name == service)?;
        let pool = s.backends.as_ref()?;
        Some(
            pool.iter()
                .map(|m| {
                    let b = self.backends.get(&m.id());
                    let own = b.map_or(0, |b| b.config.weight);
                    let weight = m.weight(own);
                    let serves = b.is_some_and(|b| b.serves(service));
                    // Unhealthy, draining or failing the probe: no share of the ring.
                    let live = b.is_some_and(|b| b.effective_weight() > 0) && serves;
                    PoolMemberState {
                        id: m.id(),
                        weight,
                        effective_weight: if live { weight } else { 0 },
                        healthy: serves,
                        probe_failing: b.is_some_and(|b| b.failing.contains(service)),
                        draining: b.is_some_and(|b| b.draining),
                    }
                })
                .collect(),
        )
    }

    /// Bytes of critical state a session holds.
    pub fn state_bytes(&self, session: &SessionRef) -> usize {
        self.kv
            .get(session)
            .map(|m| m.iter().map(|(k, v)| k.len() + v.len()).sum())
            .unwrap_or(0)
    }

    /// The dataplane tables this state implies. Unhealthy backends are left out of every shard
    /// set (a set with none left is unplaced: the default table routes it), a backend failing
    /// a pooled service's probe out of that service's shard sets, ring and membership, draining or
    /// unhealthy ones get no share of the default table, and unhealthy or drained ones are
    /// marked [`backend_flags::DOWN`], so flows and QUIC connection ids naming them are
    /// re-decided. Drained backends leave shard sets as unhealthy ones do.
    pub fn tables(&self) -> Snapshot {
        let mut snap = self.unplaced_tables();
        for (session, entry) in &self.sessions {
            if let Some((key, set)) = self.placement(session, entry) {
                snap.sessions.insert(key, set);
            }
        }
        snap
    }

    /// [`Self::tables`] without the placements: the services, backends, default table and
    /// pools' rings, which route every unplaced session.
    pub fn unplaced_tables(&self) -> Snapshot {
        let mut services = self.services.clone();
        // A member failing the service's probe keeps its slot count (the ring keeps its size)
        // at weight 0, and leaves the membership below (its flows there are re-decided).
        let failing = |service: &str, id: u32| {
            self.backends
                .get(&id)
                .is_some_and(|b| b.failing.contains(service))
        };
        for s in &mut services {
            let name = s.name.clone();
            for m in s.backends.iter_mut().flatten() {
                if failing(&name, m.id()) {
                    *m = crate::config::PoolMember::Weighted {
                        id: m.id(),
                        weight: 0,
                    };
                }
            }
        }
        let tables = ConfigTables {
            encap: self.encap.clone(),
            flow_idle_secs: self.flow_idle_secs,
            icmp: self.icmp.clone(),
            services,
            backends: self
                .backends
                .values()
                .map(|b| BackendConfig {
                    weight: b.effective_weight(),
                    ..b.config.clone()
                })
                .collect(),
            sessions: Vec::new(),
        };
        let mut snap = Snapshot::from_tables(&tables);
        for (id, entry) in &self.backends {
            if let (false, Some(b)) = (entry.usable(), snap.backends.get_mut(id)) {
                b.flags |= backend_flags::DOWN;
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            if let Some(pool) = snap.pools.get_mut(&(i as u32 + 1)) {
                pool.retain(|id| !failing(&s.name, *id));
            }
        }
        snap
    }

    /// The backend an unplaced header-mode session's requests all go to, its *home*, under
    /// `tables` (from [`Self::unplaced_tables`]); `None` for other modes, whose unplaced
    /// sessions spread by request key, or when the table names no backend.
    pub fn home(&self, tables: &Snapshot, session: &SessionRef) -> Option<u32> {
        let id = self.service_id(&session.service)?;
        let service = tables.services.values().find(|s| s.id == id)?;
        if service.mode != session_mode::HEADER {
            return None;
        }
        let home = unplaced_backend(tables, service, session.session, 0);
        (home != NO_BACKEND).then_some(home)
    }

    /// A session's key in the tables, if its service exists.
    pub(crate) fn key_of(&self, session: &SessionRef) -> Option<SessionKey> {
        Some(SessionKey {
            service: self.service_id(&session.service)?,
            _pad: 0,
            session: session.session,
        })
    }

    /// A session's key and shard set in the tables, or `None` if the default table routes it.
    /// `session`'s shard set in the tables, as [`Self::tables`] would hold it (none: unplaced).
    pub fn placed_set(&self, session: &SessionRef) -> Option<ShardSet> {
        let entry = self.sessions.get(session)?;
        self.placement(session, entry).map(|(_, set)| set)
    }

    fn placement(
        &self,
        session: &SessionRef,
        entry: &SessionEntry,
    ) -> Option<(SessionKey, ShardSet)> {
        let key = self.key_of(session)?;
        let set = self.shard_set(&session.service, &entry.backends, entry.generation)?;
        Some((key, set))
    }

    /// The shard set in the tables of a session of `service` (known to exist) whose entry
    /// holds `members` at placement `generation`: the members that serve the service (none
    /// left: unplaced).
    fn shard_set(&self, service: &str, members: &[u32], generation: u64) -> Option<ShardSet> {
        // Inline for the common few members: no heap block per session of a tick.
        let live: Members = members
            .iter()
            .copied()
            .filter(|id| self.backends.get(id).is_some_and(|b| b.serves(service)))
            .collect();
        // None left (or, never for a committed placement, not a shard set): unplaced.
        ShardSet::from_members(&live, scheme::HASH, generation.max(1)).ok()
    }

    /// The placements that differ from `before`'s, if nothing else in the tables does (same
    /// services, backends and globals): each session's new shard set, or `None` for the
    /// default table. Visits only what changed (the maps share every untouched node), so
    /// the applier writes a re-placement without walking every session.
    pub fn placement_changes(
        &self,
        before: &ControlState,
    ) -> Option<Vec<(SessionKey, Option<ShardSet>)>> {
        if self.encap != before.encap
            || self.flow_idle_secs != before.flow_idle_secs
            || self.icmp != before.icmp
            || self.services != before.services
            || !(self.backends.ptr_eq(&before.backends) || self.backends == before.backends)
        {
            return None;
        }
        let mut changes = Vec::new();
        for item in before.sessions.diff(&self.sessions) {
            let (session, set) = match item {
                DiffItem::Add(session, entry)
                | DiffItem::Update {
                    new: (session, entry),
                    ..
                } => (session, self.placement(session, entry).map(|(_, set)| set)),
                DiffItem::Remove(session, _) => (session, None),
            };
            if let Some(key) = self.key_of(session) {
                changes.push((key, set));
            }
        }
        Some(changes)
    }
}

/// The placements of [`ControlState::tables`], computed as they are visited: the applier's
/// whole write goes through a million of them a chunk at a time instead of building the table.
impl TargetPlacements for ControlState {
    fn target_placements(&self) -> Box<dyn Iterator<Item = (SessionKey, ShardSet)> + '_> {
        Box::new(
            self.sessions
                .iter()
                .filter_map(|(session, entry)| self.placement(session, entry)),
        )
    }

    fn places(&self, key: &SessionKey) -> bool {
        let Some(service) = (key.service as usize)
            .checked_sub(1)
            .and_then(|i| self.services.get(i))
        else {
            return false;
        };
        self.placed_set(&SessionRef {
            service: ServiceName::new(&service.name),
            session: key.session,
        })
        .is_some()
    }
}

/// Whether `id` can name a backend.
pub fn valid_backend_id(id: u32) -> bool {
    id < MAX_BACKENDS
}

#[cfg(test)]
mod tests;
