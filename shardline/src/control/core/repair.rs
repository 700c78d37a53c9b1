//! Repair: placed sessions that lost a backend (unhealthy, removed, out of their pool) or hold
//! fewer shards than decided are re-sharded. Every placed session is looked at each tick, so
//! the common case (nothing to do) is checked without allocating; only a session that needs
//! work is cloned and resized.

use std::time::Instant;

use rustc_hash::FxHashSet;

use super::{Core, TickOutput};
use crate::{
    control::placement::BackendLoad,
    control::tick::SessionState,
    snapshot::Snapshot,
    state::{Command, ControlState, SessionRef},
};

/// What one tick's repairs share: the state, its unplaced tables once built, the forecasters
/// (a leader's, if this loop follows one) and the tick's time.
struct Context<'a> {
    state: &'a ControlState,
    unplaced_tables: &'a mut Option<Snapshot>,
    forecasts: Option<&'a [SessionState]>,
    at_ms: u64,
    now: Instant,
}

impl Core {
    /// Re-shards placed sessions that lost a backend (unhealthy or removed) or hold fewer
    /// shards than decided (the fleet was short when they grew). `unplaced_tables` holds the
    /// tick's [`ControlState::unplaced_tables`] once built (the state does not change within a
    /// tick, so the decisions' copy serves here too). `forecasts`: a leader's forecasters, if
    /// this loop follows one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn repair(
        &mut self,
        out: &mut TickOutput,
        state: &ControlState,
        loads: &mut [BackendLoad],
        unplaced_tables: &mut Option<Snapshot>,
        forecasts: Option<&[SessionState]>,
        at_ms: u64,
        now: Instant,
    ) {
        let mut cx = Context {
            state,
            unplaced_tables,
            forecasts,
            at_ms,
            now,
        };
        // Sessions this tick's decisions placed already.
        let decided: FxHashSet<SessionRef> = out
            .placements
            .iter()
            .filter_map(|p| match &p.command {
                Command::Place { session, .. } => Some(session.clone()),
                _ => None,
            })
            .collect();
        // The placed sessions to look at, in the state's order: those `backend_loads` found
        // broken on the same state, and those with a placement of this loop in flight (their
        // current set may not be the applied one; this tick's decisions are in flight too,
        // but skipped, so they are not looked up).
        let mut look = std::mem::take(&mut self.broken);
        let before = look.len();
        look.extend(
            self.pending
                .keys()
                .filter(|s| {
                    !decided.contains(*s)
                        && state
                            .sessions
                            .get(*s)
                            .is_some_and(|e| !e.backends.is_empty())
                })
                .cloned(),
        );
        if look.len() > before {
            look.sort_unstable();
            look.dedup();
        }
        for session in look.drain(..) {
            if !decided.contains(&session) {
                self.repair_one(out, &mut cx, loads, session);
            }
        }
        self.broken = look;
        // Sessions wider than one shard by their class's prior, not yet placed.
        for i in 0..self.refs.len() {
            if self.states[i].shards() <= 1
                || self.placed.get(i).copied().unwrap_or_else(|| {
                    state
                        .sessions
                        .get(&self.refs[i])
                        .is_some_and(|e| !e.backends.is_empty())
                })
                || decided.contains(&self.refs[i])
            {
                continue;
            }
            let session = self.refs[i].clone();
            self.repair_one(out, &mut cx, loads, session);
        }
    }

    /// Whether placed session `session`, were its current set the applied `backends`, needs
    /// no repair: every member alive and in its service's pool, and as many as decided. The
    /// common case, checked without allocating. `index` is the session's here, if the loop
    /// knows it; `pooled`: whether its service has a pool (one without takes every live
    /// backend, so there is no pool to look members up in).
    pub(super) fn intact(
        &self,
        index: Option<usize>,
        session: &SessionRef,
        backends: &[u32],
        pooled: bool,
        state: &ControlState,
    ) -> bool {
        let lost = backends.iter().any(|id| {
            !self.alive.contains(*id)
                || pooled
                    && state
                        .pool_weight(&session.service, *id, 1)
                        .is_none_or(|w| w == 0)
        });
        let wanted = index
            .map(|i| self.states[i].shards() as usize)
            .unwrap_or(backends.len())
            .max(1);
        !lost && backends.len() >= wanted
    }

    /// Re-shards one session if it lost a backend or holds fewer shards than decided.
    fn repair_one(
        &mut self,
        out: &mut TickOutput,
        cx: &mut Context<'_>,
        loads: &mut [BackendLoad],
        session: SessionRef,
    ) {
        let Context {
            state,
            ref mut unplaced_tables,
            forecasts,
            at_ms,
            now,
        } = *cx;
        let (current, unplaced) = self.current_or_home(&session, state, now, unplaced_tables);
        let lost: Vec<u32> = current
            .iter()
            .copied()
            .filter(|id| {
                // Down, or out of (or drained from) the service's pool.
                !self.alive.contains(*id)
                    || state
                        .pool_weight(&session.service, *id, 1)
                        .is_none_or(|w| w == 0)
            })
            .collect();
        let index = self.index.get(&session).copied();
        let wanted = index
            .map(|i| self.states[i].shards() as usize)
            .unwrap_or(current.len())
            .max(1);
        if lost.is_empty() && (current.len() >= wanted || (unplaced && wanted <= 1)) {
            return;
        }
        let (upper, packet_bytes) = index
            .map(|i| {
                (
                    forecasts.unwrap_or(&self.states)[i].selector().upper(),
                    self.states[i].packet_bytes(),
                )
            })
            .unwrap_or((0.0, 0.0));
        let upper = if upper.is_finite() { upper } else { 0.0 };
        let load = (upper, upper * packet_bytes);
        let set = self.grow_or_shrink(&session, state, &current, wanted, load, loads);
        if set == current || set.is_empty() || set.len() < 2 && unplaced {
            return;
        }
        let reason = if lost.is_empty() {
            format!(
                "session {session} {} → {} shards: backends free again for the decided {wanted}",
                current.len(),
                set.len()
            )
        } else {
            format!("session {session} re-sharded off unhealthy backends {lost:?}: {current:?} → {set:?}")
        };
        match index {
            Some(i) => self.emit(out, i, session, current.len(), set, reason, at_ms, now),
            None => self.commit(out, session, set, reason, now),
        }
    }
}
