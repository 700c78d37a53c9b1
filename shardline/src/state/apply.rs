//! Applying a command to the control state: each command's rules and effects, the order of a
//! configuration load, and the checks shared by the commands that name backends.

use std::collections::BTreeMap;

use shardline_common::{
    maps::{scheme, ShardSet},
    partition::ShardSetError,
};

use super::{
    command::{Command, Response, StateError},
    persistent, pools, session_number, valid_backend_id, votes, BackendEntry, ConfigTables,
    ControlState, Map, SessionEntry, SessionRef, SESSION_STATE_LIMIT,
};
use crate::config::BackendConfig;

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
