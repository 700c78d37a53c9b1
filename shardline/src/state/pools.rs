//! The pool commands: a backend joins or leaves a service's pool, changes its weight there,
//! or passes or fails that service's probe. Each touches one service's pool (and the
//! placements of that service's sessions), never another's.

use super::{apply::backend_mut, ControlState, SessionEntry, SessionRef, StateError};
use crate::config::{PoolMember, ServiceConfig};

/// [`super::Command::JoinPool`]: puts `id` in `service`'s pool at `weight` (`None`: its own),
/// or sets its weight there; a service without a pool gets one holding `id` alone.
pub(super) fn join(
    state: &mut ControlState,
    service: &str,
    id: u32,
    weight: Option<u32>,
) -> Result<(), StateError> {
    backend_mut(state, id)?;
    let s = service_mut(state, service)?;
    let member = match weight {
        Some(weight) => PoolMember::Weighted { id, weight },
        None => PoolMember::Id(id),
    };
    let pool = s.backends.get_or_insert_with(Vec::new);
    match pool.iter_mut().find(|m| m.id() == id) {
        Some(m) => *m = member,
        None => pool.push(member),
    }
    Ok(())
}

/// [`super::Command::LeavePool`]: takes `id` out of `service`'s pool, and the service's
/// sessions off it.
pub(super) fn leave(state: &mut ControlState, service: &str, id: u32) -> Result<(), StateError> {
    let s = service_mut(state, service)?;
    let pool = s
        .backends
        .as_mut()
        .ok_or_else(|| StateError::NoPool(service.to_owned()))?;
    let before = pool.len();
    pool.retain(|m| m.id() != id);
    if pool.len() == before {
        return Err(StateError::OutsidePool {
            service: service.to_owned(),
            id,
        });
    }
    if let Some(b) = state.backends.get_mut(&id) {
        b.failing.remove(service);
    }
    leave_outside(state);
    Ok(())
}

/// [`super::Command::SetServiceHealth`]: `id` passes or fails `service`'s probe. Only a
/// member of the service's pool can: a service without a pool is served through the default
/// table, which one service cannot take a backend out of.
pub(super) fn set_health(
    state: &mut ControlState,
    service: &str,
    id: u32,
    healthy: bool,
) -> Result<(), StateError> {
    backend_mut(state, id)?;
    let s = state
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| StateError::UnknownService(service.to_owned()))?;
    if s.backends.is_none() {
        return Err(StateError::NoPool(service.to_owned()));
    }
    if !s.served_by(id) {
        return Err(StateError::OutsidePool {
            service: service.to_owned(),
            id,
        });
    }
    let b = backend_mut(state, id)?;
    if healthy {
        b.failing.remove(service);
    } else {
        b.failing.insert(service.to_owned());
    }
    Ok(())
}

/// Every backend of a shard set of `service` is in its pool.
pub(super) fn check(
    state: &ControlState,
    service: &str,
    backends: &[u32],
) -> Result<(), StateError> {
    let Some(s) = state.services.iter().find(|s| s.name == service) else {
        return Err(StateError::UnknownService(service.to_owned()));
    };
    match backends.iter().find(|id| !s.served_by(**id)) {
        Some(id) => Err(StateError::OutsidePool {
            service: service.to_owned(),
            id: *id,
        }),
        None => Ok(()),
    }
}

/// Takes every placed session off the backends its service's pool no longer holds.
pub(super) fn leave_outside(state: &mut ControlState) {
    let outside = |state: &ControlState, s: &SessionRef, e: &SessionEntry| {
        let service = state.services.iter().find(|x| x.name == s.service);
        e.backends
            .iter()
            .any(|id| !service.is_some_and(|x| x.served_by(*id)))
    };
    let moved: Vec<SessionRef> = state
        .sessions
        .iter()
        .filter(|(s, e)| outside(state, s, e))
        .map(|(s, _)| s.clone())
        .collect();
    for session in moved {
        let Some(service) = state
            .services
            .iter()
            .find(|x| x.name == session.service)
            .cloned()
        else {
            continue;
        };
        if let Some(entry) = state.sessions.get_mut(&session) {
            entry.backends.retain(|id| service.served_by(*id));
            entry.generation += 1;
        }
    }
}

fn service_mut<'a>(
    state: &'a mut ControlState,
    name: &str,
) -> Result<&'a mut ServiceConfig, StateError> {
    state
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| StateError::UnknownService(name.to_owned()))
}

#[cfg(test)]
mod tests;
