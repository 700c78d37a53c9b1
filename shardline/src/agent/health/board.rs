//! The health checker's probe records, one per backend and one per (pooled service, member),
//! shared with the API so that `GET /v1/backends` (and `shardline backends`) shows each
//! backend's probe verdict, since when, and its current run of failures, and
//! `GET /v1/services` each pool member's verdict for that service. Every LB node probes and
//! fills its own board: it shows what *this* node sees, while the committed health (what
//! routes) is the vote of the nodes' verdicts (see [`super`]).

use std::{collections::BTreeMap, sync::Mutex};

use super::threshold::{ProbeState, Thresholds, Transition};

/// Every probed backend's [`ProbeState`], and every probed pool member's for its service.
#[derive(Debug, Default)]
pub struct HealthBoard {
    probes: Records<u32>,
    services: Records<(String, u32)>,
}

impl HealthBoard {
    /// One backend's probe record, if it has been probed.
    pub fn get(&self, backend: u32) -> Option<ProbeState> {
        self.probes.get(&backend)
    }

    /// Backend `backend`'s record for pooled service `service`'s probe, if it has one.
    pub fn get_service(&self, service: &str, backend: u32) -> Option<ProbeState> {
        self.services.get(&(service.to_owned(), backend))
    }

    /// Records a probe of `backend` (its agent, and the probes of services without a pool),
    /// whose committed health is `committed`; returns the transition it completed and the
    /// verdict the probes now give.
    pub fn observe(
        &self,
        backend: u32,
        committed: bool,
        outcome: Result<(), String>,
        now_ms: u64,
        thresholds: Thresholds,
    ) -> (Option<Transition>, bool) {
        self.probes
            .observe(backend, committed, outcome, now_ms, thresholds)
    }

    /// Records a probe of pooled service `service` on member `backend`, as [`Self::observe`]
    /// does; `committed` is whether the state has it passing that service's probe.
    pub fn observe_service(
        &self,
        service: &str,
        backend: u32,
        committed: bool,
        outcome: Result<(), String>,
        now_ms: u64,
        thresholds: Thresholds,
    ) -> (Option<Transition>, bool) {
        let key = (service.to_owned(), backend);
        self.services
            .observe(key, committed, outcome, now_ms, thresholds)
    }

    /// Forgets backends `keep` rejects (removed ones), and every record when this node stops
    /// probing (`keep` always false), so a later term starts from the committed health.
    pub fn retain(&self, mut keep: impl FnMut(u32) -> bool) {
        self.probes.retain(|id| keep(*id));
        self.services.retain(|(_, id)| keep(*id));
    }

    /// Forgets the service records `keep` rejects (members that left a pool, services whose
    /// probe or pool went away).
    pub fn retain_services(&self, mut keep: impl FnMut(&str, u32) -> bool) {
        self.services.retain(|(s, id)| keep(s, *id));
    }
}

/// Probe records by key.
#[derive(Debug)]
struct Records<K>(Mutex<BTreeMap<K, ProbeState>>);

impl<K> Default for Records<K> {
    fn default() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }
}

impl<K: Ord> Records<K> {
    fn get(&self, key: &K) -> Option<ProbeState> {
        self.0.lock().expect("health lock").get(key).cloned()
    }

    fn observe(
        &self,
        key: K,
        committed: bool,
        outcome: Result<(), String>,
        now_ms: u64,
        thresholds: Thresholds,
    ) -> (Option<Transition>, bool) {
        let mut probes = self.0.lock().expect("health lock");
        let probe = probes
            .entry(key)
            .or_insert_with(|| ProbeState::new(committed, now_ms));
        let transition = probe.observe(outcome, now_ms, thresholds);
        (transition, probe.healthy)
    }

    fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.0.lock().expect("health lock").retain(|k, _| keep(k));
    }
}
