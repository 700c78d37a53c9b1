//! Commands on the control state: the entries of the replicated log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shardline_common::{
    consts::MAX_SHARDS,
    maps::{scheme, ShardSet},
    partition::ShardSetError,
};

use super::{
    persistent, pools, session_number, valid_backend_id, votes, BackendEntry, ConfigTables,
    ControlState, Map, SessionEntry, SessionMeta, SessionRef, SESSION_STATE_LIMIT,
};
use crate::config::BackendConfig;

/// One change to the control state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Replaces services, backends and static placements with a configuration file's. Backends
    /// keep their health; dynamic placements of services that still exist, session metadata
    /// and critical state are kept.
    LoadConfig(ConfigTables),
    /// Adds a backend or replaces its addresses and weight.
    UpsertBackend(BackendConfig),
    /// A backend registering through its agent: as [`Command::UpsertBackend`], but it cannot
    /// take over: an existing id keeps its addresses (moving a backend is an operator's
    /// `UpsertBackend`), and no other backend may already have either address.
    RegisterBackend(BackendConfig),
    /// Sets a backend's weight in the default table.
    SetWeight {
        /// Backend id.
        id: u32,
        /// New weight.
        weight: u32,
    },
    /// Marks a backend healthy or not (health checks).
    SetHealth {
        /// Backend id.
        id: u32,
        /// Passing its checks.
        healthy: bool,
    },
    /// One LB node's health verdict on a backend: the backend is down fleet-wide while more
    /// than half of the nodes voting on it see it down (a single node decides alone).
    HealthVote {
        /// The voting node's Raft id.
        node: u64,
        /// Backend id.
        id: u32,
        /// Whether the node's probes pass.
        healthy: bool,
        /// The cluster's LB nodes (voters and learners) as the voter sees them: votes of
        /// other nodes are forgotten.
        members: Vec<u64>,
    },
    /// One LB node's verdict on a pool member's probe of one service: the member fails the
    /// service (as [`Command::SetServiceHealth`] says) while more than half of the nodes voting
    /// on it see the probe fail.
    ServiceHealthVote {
        /// The voting node.
        node: u64,
        /// Service name (a service with a pool holding the backend).
        service: String,
        /// Backend id.
        id: u32,
        /// This node's probes pass.
        healthy: bool,
        /// The cluster's LB nodes (voters and learners) as the voter sees them: votes of
        /// other nodes are forgotten.
        members: Vec<u64>,
    },
    /// Marks a backend passing or failing one pooled service's probe: failing, it leaves that
    /// service's ring, shard sets and membership (its flows there are re-decided) and keeps
    /// serving every other service.
    SetServiceHealth {
        /// Service name (a service with a pool holding the backend).
        service: String,
        /// Backend id.
        id: u32,
        /// Passing the service's probe.
        healthy: bool,
    },
    /// Starts or stops draining a backend.
    Drain {
        /// Backend id.
        id: u32,
        /// Draining or not.
        draining: bool,
    },
    /// A draining backend's drain timeout passed: it leaves every shard set and its flows are
    /// re-decided. Does nothing to a backend no longer draining.
    DrainTimedOut {
        /// Backend id.
        id: u32,
    },
    /// Removes a backend; it leaves every shard set.
    RemoveBackend {
        /// Backend id.
        id: u32,
    },
    /// Puts backend `id` in service `service`'s pool at `weight` (`None`: its own weight), or
    /// changes its weight there (0 drains it from this service only). A service without a pool
    /// gets one holding this backend alone.
    JoinPool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
        /// Weight in the service's ring.
        weight: Option<u32>,
    },
    /// Takes backend `id` out of service `service`'s pool; the service's sessions leave it.
    LeavePool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
    },
    /// Places a session on a shard set (a re-shard).
    Place {
        /// The session.
        session: SessionRef,
        /// 1 to 16 distinct backend ids.
        backends: Vec<u32>,
    },
    /// Returns a session to the default table.
    Unplace {
        /// The session.
        session: SessionRef,
    },
    /// Sets a session's class and labels.
    SetMeta {
        /// The session.
        session: SessionRef,
        /// Its metadata.
        meta: SessionMeta,
    },
    /// Writes one key of a session's critical state.
    PutState {
        /// The session.
        session: SessionRef,
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Deletes one key of a session's critical state.
    DeleteState {
        /// The session.
        session: SessionRef,
        /// Key.
        key: String,
    },
    /// Several commands in one log entry, applied in order. Each one is all-or-nothing on its
    /// own: a rejected command changes nothing and the rest still apply (its error is its
    /// slot of [`Response::each`]). The entry commits as a whole, so no node ever holds half a
    /// batch. A batch inside a batch is rejected ([`StateError::NestedBatch`]).
    Batch {
        /// The commands, in the order they apply.
        commands: Vec<Command>,
    },
}

impl Command {
    /// Whether applying it can change the dataplane tables.
    pub fn routes(&self) -> bool {
        match self {
            Command::SetMeta { .. } | Command::PutState { .. } | Command::DeleteState { .. } => {
                false
            }
            Command::Batch { commands } => commands.iter().any(Command::routes),
            _ => true,
        }
    }

    /// The checks that need no state, so a write that can never apply is refused before it
    /// takes a place in a shared log entry (a group commit) and makes that entry large: a key
    /// and value over [`SESSION_STATE_LIMIT`] on their own. Applying checks again, with
    /// everything else.
    pub fn check(&self) -> Result<(), StateError> {
        match self {
            Command::PutState {
                session,
                key,
                value,
            } if key.len() + value.len() > SESSION_STATE_LIMIT => Err(StateError::StateTooLarge {
                session: session.to_string(),
                bytes: key.len() + value.len(),
                limit: SESSION_STATE_LIMIT,
            }),
            _ => Ok(()),
        }
    }
}

/// What an applied command answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The state's generation after the command.
    pub generation: u64,
    /// For `Place`: the session's placement generation.
    pub placement: Option<u64>,
    /// For `Batch`: one result per command, in order (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub each: Vec<Result<Response, StateError>>,
}

/// Why a command was rejected (the state is unchanged).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// No service has this name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// No backend has this id.
    #[error("unknown backend {0}")]
    UnknownBackend(u32),
    /// A backend id outside `0..4096`.
    #[error("backend id {0} is out of range (0..4096)")]
    BadBackendId(u32),
    /// A shard set must have 1 to 16 distinct backends.
    #[error("a shard set needs 1 to {MAX_SHARDS} distinct backends, got {0:?}")]
    BadShardSet(Vec<u32>),
    /// A session's critical state would exceed its limit.
    #[error("session {session} would hold {bytes} bytes of state; the limit is {limit}")]
    StateTooLarge {
        /// The session, `service/number`.
        session: String,
        /// Bytes it would hold.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A backend needs at least one address and a valid MAC.
    #[error("backend {id}: {problem}")]
    BadBackend {
        /// Backend id.
        id: u32,
        /// What is wrong.
        problem: String,
    },
    /// A registration would take over another backend's id or address.
    #[error("registering backend {id}: {problem}")]
    Takeover {
        /// The id registering.
        id: u32,
        /// Whose id or address it would take.
        problem: String,
    },
    /// A shard set names a backend outside its service's pool.
    #[error("backend {id} is not in the pool of service {service:?}")]
    OutsidePool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
    },
    /// The service has no pool to leave (every backend serves it).
    #[error("service {0:?} has no pool (every backend serves it); `JoinPool` makes one")]
    NoPool(String),
    /// A health vote from a node outside the cluster's members.
    #[error("node {0} is not a member of the cluster, so it cannot vote on health")]
    NotAMember(u64),
    /// A `Batch` holds only plain commands.
    #[error("a batch cannot contain a batch; flatten it")]
    NestedBatch,
}

pub(super) fn apply(state: &mut ControlState, command: &Command) -> Result<Response, StateError> {
    if let Command::Batch { commands } = command {
        let each = commands.iter().map(|c| apply_one(state, c)).collect();
        return Ok(Response {
            generation: state.generation,
            placement: None,
            each,
        });
    }
    apply_one(state, command)
}

/// One plain command; a batch here is nested (the outer one is unpacked by [`apply`]).
fn apply_one(state: &mut ControlState, command: &Command) -> Result<Response, StateError> {
    let mut placement = None;
    // What a `Place` or an `Unplace` left in its session's entry (members, generation), for
    // the journal: read from the entry it just changed, not looked up again.
    let mut left = None;
    match command {
        Command::Batch { .. } => return Err(StateError::NestedBatch),
        Command::LoadConfig(tables) => load_config(state, tables)?,
        Command::RegisterBackend(config) => {
            check_backend(config)?;
            check_takeover(state, config)?;
            upsert_backend(state, config);
        }
        Command::UpsertBackend(config) => {
            check_backend(config)?;
            upsert_backend(state, config);
        }
        Command::SetWeight { id, weight } => backend_mut(state, *id)?.config.weight = *weight,
        Command::SetHealth { id, healthy } => backend_mut(state, *id)?.healthy = *healthy,
        Command::HealthVote {
            node,
            id,
            healthy,
            members,
        } => votes::vote(state, *node, *id, *healthy, members)?,
        Command::SetServiceHealth {
            service,
            id,
            healthy,
        } => pools::set_health(state, service, *id, *healthy)?,
        Command::ServiceHealthVote {
            node,
            service,
            id,
            healthy,
            members,
        } => votes::service_vote(state, *node, service, *id, *healthy, members)?,
        Command::Drain { id, draining } => {
            let b = backend_mut(state, *id)?;
            // Draining a backend that is already draining (an operator re-running `drain` to
            // see what it waits for) keeps a drain that timed out ended.
            if b.draining != *draining {
                b.drained = false;
            }
            b.draining = *draining;
        }
        Command::DrainTimedOut { id } => {
            let b = backend_mut(state, *id)?;
            b.drained = b.draining;
        }
        Command::RemoveBackend { id } => {
            state
                .backends
                .remove(id)
                .ok_or(StateError::UnknownBackend(*id))?;
            for service in &mut state.services {
                if let Some(pool) = &mut service.backends {
                    pool.retain(|m| m.id() != *id);
                }
            }
            for session in sessions_where(state, |e| e.backends.contains(id)) {
                if let Some(entry) = state.sessions.get_mut(&session) {
                    entry.backends.retain(|b| b != id);
                    entry.generation += 1;
                }
            }
        }
        Command::JoinPool {
            service,
            id,
            weight,
        } => pools::join(state, service, *id, *weight)?,
        Command::LeavePool { service, id } => pools::leave(state, service, *id)?,
        Command::Place { session, backends } => {
            known_service(state, session)?;
            check_shard_set(state, backends)?;
            pools::check(state, &session.service, backends)?;
            let place = |entry: &mut SessionEntry| {
                if entry.backends != *backends {
                    entry.backends = backends[..].into();
                    entry.generation += 1;
                }
                (entry.backends.clone(), entry.generation)
            };
            // One walk down the million-entry map for a session it holds (a tick's
            // re-placements), where `entry` walks it twice; a new session is inserted.
            let (members, generation) = match state.sessions.get_mut(session) {
                Some(entry) => place(entry),
                None => {
                    let mut entry = SessionEntry::default();
                    let placed = place(&mut entry);
                    state.sessions.insert(session.clone(), entry);
                    placed
                }
            };
            placement = Some(generation);
            left = Some((members, generation));
        }
        Command::Unplace { session } => {
            known_service(state, session)?;
            if let Some(entry) = state.sessions.get_mut(session) {
                if !entry.backends.is_empty() {
                    entry.backends.clear();
                    entry.generation += 1;
                }
                left = Some((entry.backends.clone(), entry.generation));
            }
        }
        Command::SetMeta { session, meta } => {
            known_service(state, session)?;
            state.sessions.entry(session.clone()).or_default().meta = meta.into();
        }
        Command::PutState {
            session,
            key,
            value,
        } => {
            known_service(state, session)?;
            let old = state
                .kv
                .get(session)
                .and_then(|m| m.get(key))
                .map_or(0, |v| key.len() + v.len());
            let bytes = state.state_bytes(session) - old + key.len() + value.len();
            if bytes > SESSION_STATE_LIMIT {
                return Err(StateError::StateTooLarge {
                    session: session.to_string(),
                    bytes,
                    limit: SESSION_STATE_LIMIT,
                });
            }
            state
                .kv
                .entry(session.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        Command::DeleteState { session, key } => {
            if let Some(m) = state.kv.get_mut(session) {
                m.remove(key);
                if m.is_empty() {
                    state.kv.remove(session);
                }
            }
        }
    }
    if command.routes() {
        state.generation += 1;
    }
    state.journal.record(command, left);
    Ok(Response {
        generation: state.generation,
        placement,
        each: Vec::new(),
    })
}

fn load_config(state: &mut ControlState, tables: &ConfigTables) -> Result<(), StateError> {
    for b in &tables.backends {
        check_backend(b)?;
    }
    let names: Vec<&str> = tables.services.iter().map(|s| s.name.as_str()).collect();
    let mut sessions = BTreeMap::new();
    for s in &tables.sessions {
        if !names.contains(&s.service.as_str()) {
            return Err(StateError::UnknownService(s.service.clone()));
        }
        sessions.insert(
            SessionRef {
                service: s.service.as_str().into(),
                session: session_number(&s.session),
            },
            s.backends.clone(),
        );
    }
    let mut backends = Map::new();
    for b in &tables.backends {
        let votes = state
            .backends
            .get(&b.id)
            .map(|e| e.votes.clone())
            .unwrap_or_default();
        let (healthy, draining, drained) = state
            .backends
            .get(&b.id)
            .map_or((true, false, false), |e| (e.healthy, e.draining, e.drained));
        // A failing service probe, and the votes on it, are kept while the service still
        // pools the backend.
        let pools_it = |name: &str| {
            tables
                .services
                .iter()
                .any(|s| s.name == name && s.backends.is_some() && s.served_by(b.id))
        };
        let failing = state
            .backends
            .get(&b.id)
            .map(|e| e.failing.iter().filter(|n| pools_it(n)).cloned().collect())
            .unwrap_or_default();
        let service_votes = state
            .backends
            .get(&b.id)
            .map(|e| {
                let kept = e.service_votes.iter().filter(|(n, _)| pools_it(n));
                kept.map(|(n, votes)| (n.clone(), votes.clone())).collect()
            })
            .unwrap_or_default();
        backends.insert(
            b.id,
            BackendEntry {
                config: b.clone(),
                healthy,
                draining,
                drained,
                failing,
                votes,
                service_votes,
            },
        );
    }
    for set in sessions.values() {
        if shard_set_rule(set).is_err() || set.iter().any(|id| !backends.contains_key(id)) {
            return Err(StateError::BadShardSet(set.clone()));
        }
    }
    for s in &tables.services {
        if let Some(m) = s
            .backends
            .iter()
            .flatten()
            .find(|m| !backends.contains_key(&m.id()))
        {
            return Err(StateError::UnknownBackend(m.id()));
        }
    }
    for (session, set) in &sessions {
        let service = tables.services.iter().find(|s| s.name == session.service);
        if let Some(id) = set
            .iter()
            .find(|id| !service.is_some_and(|s| s.served_by(**id)))
        {
            return Err(StateError::OutsidePool {
                service: session.service.to_string(),
                id: *id,
            });
        }
    }
    state.encap = tables.encap.clone();
    state.flow_idle_secs = tables.flow_idle_secs;
    state.icmp = tables.icmp.clone();
    state.services = tables.services.clone();
    state.backends = backends;
    state.loaded = Some(super::tables_digest(tables));
    persistent::retain(&mut state.sessions, |s, _| {
        names.contains(&s.service.as_str())
    });
    persistent::retain(&mut state.kv, |s, _| names.contains(&s.service.as_str()));
    let known = state.backends.clone();
    for session in sessions_where(state, |e| {
        e.backends.iter().any(|id| !known.contains_key(id))
    }) {
        if let Some(entry) = state.sessions.get_mut(&session) {
            entry.backends.retain(|id| known.contains_key(id));
            entry.generation += 1;
        }
    }
    pools::leave_outside(state);
    for (session, set) in sessions {
        let entry = state.sessions.entry(session).or_default();
        if entry.backends != set {
            entry.backends = set.into();
            entry.generation += 1;
        }
    }
    Ok(())
}

fn upsert_backend(state: &mut ControlState, config: &BackendConfig) {
    let entry = state
        .backends
        .entry(config.id)
        .or_insert_with(|| BackendEntry {
            config: config.clone(),
            healthy: true,
            draining: false,
            drained: false,
            failing: Default::default(),
            votes: Default::default(),
            service_votes: Default::default(),
        });
    entry.config = config.clone();
}

/// A registration may refresh its own backend (same addresses) or add a new one at addresses
/// no other backend has.
fn check_takeover(state: &ControlState, config: &BackendConfig) -> Result<(), StateError> {
    let takeover = |problem: String| StateError::Takeover {
        id: config.id,
        problem,
    };
    if let Some(existing) = state.backends.get(&config.id) {
        let (ipv4, ipv6) = (existing.config.ipv4, existing.config.ipv6);
        if (ipv4, ipv6) != (config.ipv4, config.ipv6) {
            return Err(takeover(format!(
                "backend {} exists at {}; an agent cannot move it (an operator can, with \
                 `shardline backends add`)",
                config.id,
                addresses(ipv4, ipv6)
            )));
        }
    }
    let taken = state.backends.iter().find(|(id, b)| {
        **id != config.id
            && ((config.ipv4.is_some() && b.config.ipv4 == config.ipv4)
                || (config.ipv6.is_some() && b.config.ipv6 == config.ipv6))
    });
    if let Some((other, b)) = taken {
        return Err(takeover(format!(
            "backend {other} already has {}",
            addresses(b.config.ipv4, b.config.ipv6)
        )));
    }
    Ok(())
}

fn addresses(ipv4: Option<std::net::Ipv4Addr>, ipv6: Option<std::net::Ipv6Addr>) -> String {
    let all: Vec<String> = ipv4
        .map(|a| a.to_string())
        .into_iter()
        .chain(ipv6.map(|a| a.to_string()))
        .collect();
    all.join(" and ")
}

/// The sessions whose entry matches (collected first: a persistent map has no `values_mut`).
fn sessions_where(state: &ControlState, hit: impl Fn(&SessionEntry) -> bool) -> Vec<SessionRef> {
    state
        .sessions
        .iter()
        .filter(|(_, e)| hit(e))
        .map(|(s, _)| s.clone())
        .collect()
}

pub(super) fn backend_mut(
    state: &mut ControlState,
    id: u32,
) -> Result<&mut BackendEntry, StateError> {
    state
        .backends
        .get_mut(&id)
        .ok_or(StateError::UnknownBackend(id))
}

fn known_service(state: &ControlState, session: &SessionRef) -> Result<(), StateError> {
    state
        .service_id(&session.service)
        .map(|_| ())
        .ok_or_else(|| StateError::UnknownService(session.service.to_string()))
}

fn check_backend(config: &BackendConfig) -> Result<(), StateError> {
    if !valid_backend_id(config.id) {
        return Err(StateError::BadBackendId(config.id));
    }
    if config.ipv4.is_none() && config.ipv6.is_none() {
        return Err(StateError::BadBackend {
            id: config.id,
            problem: "needs an ipv4 or ipv6 address".into(),
        });
    }
    // A FIB-routed backend may go without a static MAC (its fallback).
    if config.mac.is_empty() && config.nexthop == crate::config::NextHop::Fib {
        return Ok(());
    }
    crate::config::parse_mac(&config.mac).map_err(|problem| StateError::BadBackend {
        id: config.id,
        problem,
    })?;
    Ok(())
}

/// The common shard-set rule (1 to `MAX_SHARDS` distinct backends), whatever the scheme.
fn shard_set_rule(backends: &[u32]) -> Result<ShardSet, ShardSetError> {
    ShardSet::from_members(backends, scheme::HASH, 0)
}

fn check_shard_set(state: &ControlState, backends: &[u32]) -> Result<(), StateError> {
    if shard_set_rule(backends).is_err() {
        return Err(StateError::BadShardSet(backends.to_vec()));
    }
    if let Some(id) = backends.iter().find(|id| !state.backends.contains_key(*id)) {
        return Err(StateError::UnknownBackend(*id));
    }
    Ok(())
}
