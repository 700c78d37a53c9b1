//! Placement: a session's new shard set from its current one (or its home while unplaced),
//! grown onto the backends with room for its forecast or shrunk keeping its oldest members,
//! and the command that writes it, recorded as the session's reshard event.

use std::time::Instant;

use super::{Core, Placement, TickOutput, EVENTS_KEPT, PENDING_FOR};
use crate::{
    control::insight::ReshardEvent,
    control::placement::{choose_backends, BackendLoad},
    snapshot::Snapshot,
    state::{Command, ControlState, SessionRef},
};

impl Core {
    /// The session's shard set as this loop last wrote it, or as the state says.
    pub(super) fn current(
        &mut self,
        session: &SessionRef,
        state: &ControlState,
        now: Instant,
    ) -> Vec<u32> {
        let applied = state
            .sessions
            .get(session)
            .map(|e| e.backends.to_vec())
            .unwrap_or_default();
        match self.pending.get(session) {
            Some((set, _)) if *set == applied => {
                self.pending.remove(session);
                applied
            }
            Some((set, at)) if now.saturating_duration_since(*at) < PENDING_FOR => set.clone(),
            _ => applied,
        }
    }

    /// [`Self::current`], or for an unplaced header session its home (and `true`: unplaced).
    /// Such a session's new set keeps the home and widens from there, so its keys there stay.
    /// `tables` holds [`ControlState::unplaced_tables`] once built.
    pub(super) fn current_or_home(
        &mut self,
        session: &SessionRef,
        state: &ControlState,
        now: Instant,
        tables: &mut Option<Snapshot>,
    ) -> (Vec<u32>, bool) {
        let mut current = self.current(session, state, now);
        let unplaced = current.is_empty();
        if unplaced {
            let tables = tables.get_or_insert_with(|| state.unplaced_tables());
            current.extend(state.home(tables, session));
        }
        (current, unplaced)
    }

    /// The session's shard set resized to `to`: the live members of `current` its service's
    /// pool still holds, then new ones from the pool (at their weights in it) with room for
    /// their share of `(upper, bytes)`, the session's packets and bytes per second.
    pub(super) fn grow_or_shrink(
        &mut self,
        session: &SessionRef,
        state: &ControlState,
        current: &[u32],
        to: usize,
        (upper, bytes): (f64, f64),
        loads: &mut [BackendLoad],
    ) -> Vec<u32> {
        let alive = &self.alive;
        let in_pool = |b: &BackendLoad| state.pool_weight(&session.service, b.id, b.weight);
        let mut set: Vec<u32> = current
            .iter()
            .copied()
            .filter(|id| alive.contains(*id))
            .filter(|id| load_of(loads, *id).and_then(in_pool).is_some_and(|w| w > 0))
            .take(to)
            .collect();
        if set.len() < to {
            let per_shard = upper.max(0.0) / to as f64;
            let per_shard_bytes = if bytes.is_finite() {
                bytes.max(0.0) / to as f64
            } else {
                0.0
            };
            let service = state
                .services
                .iter()
                .position(|s| s.name == session.service);
            // A service without a pool or per-service capacities sees the fleet's loads as
            // they are: the ranked walk picks what the pass below would, in O(picked).
            let plain = !self.per_service_reports
                && service.is_some_and(|i| state.services[i].backends.is_none());
            if plain {
                if self.ranked_stale {
                    self.ranked.rebuild(loads);
                    self.ranked_stale = false;
                }
                self.ranked.choose(
                    loads,
                    &set,
                    to - set.len(),
                    per_shard,
                    per_shard_bytes,
                    &mut self.chosen,
                );
            } else {
                self.choose_scoped(
                    session,
                    state,
                    service,
                    &set,
                    loads,
                    to - set.len(),
                    (per_shard, per_shard_bytes),
                );
            }
            set.extend(self.chosen.iter().copied());
            // `loads` is in id order (see `load_of`): find each pick, not scan the fleet.
            for id in &self.chosen {
                let Ok(at) = loads.binary_search_by_key(id, |b| b.id) else {
                    continue;
                };
                let b = &mut loads[at];
                let before = *b;
                b.committed += per_shard;
                b.net_committed += per_shard_bytes;
                if !self.ranked_stale {
                    self.ranked.update(&before, b);
                }
                if let (Some(i), true) = (service, self.per_service_reports) {
                    *self.service_committed.entry((i, b.id)).or_default() += per_shard;
                }
            }
        }
        set
    }

    /// Picks `count` backends into `self.chosen` from every backend of `loads` not in `set`,
    /// each seen as `session`'s service sees it: at its weight in the service's pool, its free
    /// capacity bounded by what its agent reports it can carry of the service.
    #[allow(clippy::too_many_arguments)]
    fn choose_scoped(
        &mut self,
        session: &SessionRef,
        state: &ControlState,
        service: Option<usize>,
        set: &[u32],
        loads: &[BackendLoad],
        count: usize,
        (per_shard, per_shard_bytes): (f64, f64),
    ) {
        let in_pool = |b: &BackendLoad| state.pool_weight(&session.service, b.id, b.weight);
        let (reports, committed) = (&self.reports, &self.service_committed);
        // The host's free capacity, or the service's where the agent reports one.
        let scoped = |b: BackendLoad| {
            let reported = reports
                .get(&b.id)
                .and_then(|r| r.service_capacity(&session.service));
            let held = service.and_then(|i| committed.get(&(i, b.id)));
            b.for_service(reported, held.copied().unwrap_or(0.0))
        };
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(
            loads
                .iter()
                .filter(|b| !set.contains(&b.id))
                .filter_map(|b| {
                    Some(scoped(BackendLoad {
                        weight: in_pool(b)?,
                        ..*b
                    }))
                }),
        );
        choose_backends(
            candidates,
            count,
            per_shard,
            per_shard_bytes,
            &mut self.chosen,
        );
    }

    /// Records the re-shard of session `index` (from `from` shards to `set`) among its events
    /// and [`Self::commit`]s it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
        &mut self,
        out: &mut TickOutput,
        index: usize,
        session: SessionRef,
        from: usize,
        set: Vec<u32>,
        reason: String,
        at_ms: u64,
        now: Instant,
    ) {
        let events = &mut self.extras[index].events;
        if events.len() >= EVENTS_KEPT {
            events.remove(0);
        }
        events.push(ReshardEvent {
            at_ms,
            from: from.max(1) as u8,
            to: set.len() as u8,
            reason: reason.clone(),
        });
        self.commit(out, session, set, reason, now);
    }

    /// Puts `session`'s placement on `set` in the tick's output and remembers it as in flight
    /// (until the state shows it, or [`PENDING_FOR`] passes): the tail every placement shares,
    /// a session the loop does not know (repair of a forgotten one) included.
    pub(super) fn commit(
        &mut self,
        out: &mut TickOutput,
        session: SessionRef,
        set: Vec<u32>,
        reason: String,
        now: Instant,
    ) {
        self.pending.insert(session.clone(), (set.clone(), now));
        out.placements.push(Placement {
            command: Command::Place {
                session,
                backends: set,
            },
            reason,
        });
    }
}

/// Backend `id` in `loads`, which [`Core::backend_loads`] lists in id order (the state's
/// backend map's).
pub(super) fn load_of(loads: &[BackendLoad], id: u32) -> Option<&BackendLoad> {
    loads
        .binary_search_by_key(&id, |b| b.id)
        .ok()
        .map(|i| &loads[i])
}
