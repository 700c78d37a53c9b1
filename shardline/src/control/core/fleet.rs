//! The fleet as the loop sees it: each backend's committed load (packets and bytes, per service
//! where agents report a capacity for it) and the shortfall the autoscale hook is told of.

use std::time::Instant;

use super::Core;
use crate::{
    agent::AgentReport,
    control::hook::{ServiceShortfall, Shortfall},
    control::placement::BackendLoad,
    control::tick::SessionState,
    state::{ControlState, SessionRef},
};

impl Core {
    /// Every backend as the placement sees it: healthy means passing health checks, not
    /// draining and not reporting saturation; committed load (packets, and bytes where its
    /// agent reports the network's capacity) is the larger of what it reports serving and
    /// this loop's forecasts of the shards it holds. Also fills `service_committed`, those
    /// forecasts per service (only while some agent reports a capacity per service), and
    /// `placed` and `broken`, which the tick's repair reads instead of walking every placed
    /// session again (so call it after the tick's shard counts and `alive` are set). Listed
    /// in id order (the state's backend map's), which `load_of` relies on. `forecasts`: a
    /// leader's forecasters, if this loop follows one.
    pub(super) fn backend_loads(
        &mut self,
        state: &ControlState,
        forecasts: Option<&[SessionState]>,
    ) -> Vec<BackendLoad> {
        // Per backend: forecast packets and bytes of the shards it holds.
        let mut committed = std::mem::take(&mut self.committed);
        committed.fill((0.0, 0.0));
        self.service_committed.clear();
        self.placed.clear();
        self.placed.resize(self.refs.len(), false);
        self.broken.clear();
        // Only a capacity an agent reports for a service makes its committed load count
        // (`BackendLoad::for_service`): without one, the per-service sums are not kept.
        self.per_service_reports = self
            .reports
            .values()
            .any(|r| r.app.as_ref().is_some_and(|a| !a.services.is_empty()));
        let per_service = self.per_service_reports;
        // The last session's service and its position (sessions come in service order).
        let mut last: Option<(&str, Option<usize>)> = None;
        // The last session's service and whether it has a pool, for the intact check.
        let mut last_pooled: Option<(&str, bool)> = None;
        let forecasters = forecasts.unwrap_or(&self.states);
        // The last placed session found: the next is tried right after it.
        let mut last_found = usize::MAX;
        for (session, entry) in &state.sessions {
            if entry.backends.is_empty() {
                continue;
            }
            let index = self.find_after(session, last_found);
            last_found = index.unwrap_or(last_found);
            let pooled = match last_pooled {
                Some((name, pooled)) if name == session.service => pooled,
                _ => {
                    // A service without a pool takes every live backend.
                    let pooled = state
                        .services
                        .iter()
                        .find(|s| s.name == session.service)
                        .is_none_or(|s| s.backends.is_some());
                    last_pooled = Some((&session.service, pooled));
                    pooled
                }
            };
            if !self.intact(index, session, &entry.backends, pooled, state) {
                self.broken.push(session.clone());
            }
            let Some(i) = index else {
                continue;
            };
            self.placed[i] = true;
            let upper = forecasters[i].selector().upper();
            if !upper.is_finite() {
                continue;
            }
            let share = 1.0 / entry.backends.len() as f64;
            let bytes = upper * self.states[i].packet_bytes();
            let service = match last {
                _ if !per_service => None,
                Some((name, position)) if name == session.service => position,
                _ => {
                    let position = state
                        .services
                        .iter()
                        .position(|s| s.name == session.service);
                    last = Some((&session.service, position));
                    position
                }
            };
            for id in &entry.backends {
                let at = *id as usize;
                if at >= committed.len() {
                    committed.resize(at + 1, (0.0, 0.0));
                }
                let c = &mut committed[at];
                c.0 += upper * share;
                c.1 += bytes * share;
                if let Some(s) = service {
                    *self.service_committed.entry((s, *id)).or_default() += upper * share;
                }
            }
        }
        let loads = state
            .backends
            .iter()
            .map(|(id, b)| {
                let report = self.reports.get(id);
                let capacity = b
                    .config
                    .capacity
                    .or_else(|| report.and_then(AgentReport::capacity))
                    .unwrap_or(f64::INFINITY);
                let serving = report
                    .and_then(|r| r.app.as_ref())
                    .map(|a| a.load)
                    .unwrap_or(0.0);
                let (packets, bytes) = committed.get(*id as usize).copied().unwrap_or_default();
                BackendLoad {
                    id: *id,
                    weight: b.config.weight,
                    healthy: b.healthy && !b.draining && !report.is_some_and(|r| r.saturated),
                    capacity,
                    committed: packets.max(serving),
                    net_capacity: report
                        .and_then(AgentReport::net_capacity)
                        .unwrap_or(f64::INFINITY),
                    net_committed: bytes.max(report.map_or(0.0, AgentReport::net_load)),
                }
            })
            .collect();
        self.committed = committed;
        self.ranked_stale = true;
        loads
    }

    pub(super) fn fleet_check(
        &mut self,
        now: Instant,
        at_ms: u64,
        rates: &[(SessionRef, f64)],
        loads: &[BackendLoad],
        state: &ControlState,
        forecasts: Option<&[SessionState]>,
    ) -> Option<Shortfall> {
        let (lead, cooldown) = self.hook_lead?;
        let fleet = self.fleet.as_mut()?;
        let total: f64 = rates.iter().map(|(_, r)| r).filter(|r| r.is_finite()).sum();
        fleet.update(total);
        self.seasons.fleet_sample(total);
        // What the backends passing their checks carry, saturated or not (saturation is load,
        // not loss of capacity).
        let healthy: Vec<&BackendLoad> = loads
            .iter()
            .filter(|b| self.alive.contains(b.id) && b.weight > 0)
            .collect();
        let capacity: f64 = healthy.iter().map(|b| b.capacity).sum();
        let demand = fleet.upper() * (1.0 + self.decide.headroom);
        let fleet_short = capacity.is_finite() && demand.is_finite() && demand > capacity;
        let services = self.pools_short(state, &healthy, forecasts);
        if !fleet_short && services.is_empty() {
            return None;
        }
        if self
            .last_hook
            .is_some_and(|t| now.saturating_duration_since(t) < cooldown)
        {
            return None;
        }
        self.last_hook = Some(now);
        let shortfall = if fleet_short {
            demand - capacity
        } else {
            services.iter().map(|s| s.demand - s.capacity).sum()
        };
        Some(Shortfall {
            at_ms,
            shortfall,
            demand,
            capacity,
            lead_secs: lead.as_secs_f64(),
            healthy_backends: healthy.iter().map(|b| b.id).collect(),
            services,
        })
    }

    /// The services with a pool whose healthy members cannot carry the upper forecasts of the
    /// service's sessions, headroom included; a member counts the capacity its agent reports
    /// for the service where it reports one (at most its host's).
    fn pools_short(
        &self,
        state: &ControlState,
        healthy: &[&BackendLoad],
        forecasts: Option<&[SessionState]>,
    ) -> Vec<ServiceShortfall> {
        let mut out = Vec::new();
        let forecasters = forecasts.unwrap_or(&self.states);
        for s in state.services.iter().filter(|s| s.backends.is_some()) {
            let upper: f64 = (0..self.refs.len())
                .filter(|&i| self.refs[i].service == s.name)
                .map(|i| forecasters[i].selector().upper())
                .filter(|u| u.is_finite())
                .sum();
            let demand = upper * (1.0 + self.decide.headroom);
            let capacity: f64 = healthy
                .iter()
                .filter(|b| {
                    state
                        .pool_weight(&s.name, b.id, b.weight)
                        .is_some_and(|w| w > 0)
                })
                .map(|b| {
                    // A member's agent may say it carries less of this service than its host.
                    let reported = self.reports.get(&b.id);
                    let of_service = reported.and_then(|r| r.service_capacity(&s.name));
                    of_service.map_or(b.capacity, |c| c.min(b.capacity))
                })
                .sum();
            if capacity.is_finite() && demand > capacity {
                out.push(ServiceShortfall {
                    service: s.name.clone(),
                    demand,
                    capacity,
                });
            }
        }
        out
    }
}
