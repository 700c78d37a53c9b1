//! The health checker's probe records, one per backend, shared with the API so that
//! `GET /v1/backends` (and `shardline backends`) shows each backend's probe verdict, since
//! when, and its current run of failures. Only the node that probes (the leader) fills it; on
//! other nodes a backend has no probe record.

use std::{collections::BTreeMap, sync::Mutex};

use super::threshold::{ProbeState, Thresholds, Transition};

/// Every probed backend's [`ProbeState`].
#[derive(Debug, Default)]
pub struct HealthBoard {
    probes: Mutex<BTreeMap<u32, ProbeState>>,
}

impl HealthBoard {
    /// One backend's probe record, if it has been probed.
    pub fn get(&self, backend: u32) -> Option<ProbeState> {
        self.probes
            .lock()
            .expect("health lock")
            .get(&backend)
            .cloned()
    }

    /// Records a probe of `backend`, whose committed health is `committed`; returns the
    /// transition it completed and the verdict the probes now give.
    pub fn observe(
        &self,
        backend: u32,
        committed: bool,
        outcome: Result<(), String>,
        now_ms: u64,
        thresholds: Thresholds,
    ) -> (Option<Transition>, bool) {
        let mut probes = self.probes.lock().expect("health lock");
        let probe = probes
            .entry(backend)
            .or_insert_with(|| ProbeState::new(committed, now_ms));
        let transition = probe.observe(outcome, now_ms, thresholds);
        (transition, probe.healthy)
    }

    /// Forgets backends `keep` rejects (removed ones), and every record when this node stops
    /// probing (`keep` always false), so a later term starts from the committed health.
    pub fn retain(&self, mut keep: impl FnMut(u32) -> bool) {
        self.probes
            .lock()
            .expect("health lock")
            .retain(|id, _| keep(*id));
    }
}
