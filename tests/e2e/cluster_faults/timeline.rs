//! Which replicated state each node routed by, and when: a poller per node reads its applied
//! state through its peer endpoint every [`POLL`], and every distinct state seen is kept with
//! its tables. A request is judged against the states any node was in while it was in flight
//! (the client cannot tell which load balancer its flow hashed to): answered by a backend the
//! replay of one of them names, or misrouted.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use shardline::{snapshot::Snapshot, state::ControlState};
use shardline_lab::{cluster_lab::ClusterLab, replay::expected_backend, traffic::Session};

use super::client::Sent;

/// How often each node's state is read.
pub const POLL: Duration = Duration::from_millis(100);
/// Slack on either side of a request's flight: a poll's staleness plus the applier's write.
const SLACK: Duration = Duration::from_millis(500);

/// One reading of a node's state.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Duration,
    node: u64,
    /// Index into [`Timeline::states`].
    state: usize,
}

/// Every node's states over time.
#[derive(Default)]
pub struct Timeline {
    readings: Mutex<Vec<Reading>>,
    /// Distinct states (their critical key/values cleared: they do not route) with tables.
    states: Mutex<Vec<(ControlState, Snapshot)>>,
}

impl Timeline {
    /// Reads node `node`'s state every [`POLL`] until `stop` (times since `start`). A node
    /// that does not answer (killed, restarting) keeps the state last read: its dataplane keeps
    /// routing by it.
    pub fn poll(&self, lab: &ClusterLab, node: u64, start: Instant, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut state) = lab.local(node) {
                let at = start.elapsed();
                state.kv = Default::default();
                let state = self.intern(state);
                let mut readings = self.readings.lock().unwrap();
                readings.push(Reading { at, node, state });
            }
            std::thread::sleep(POLL);
        }
    }

    fn intern(&self, state: ControlState) -> usize {
        let mut states = self.states.lock().unwrap();
        if let Some(i) = states.iter().position(|(s, _)| *s == state) {
            return i;
        }
        let tables = state.tables();
        states.push((state, tables));
        states.len() - 1
    }

    /// The generation node `node` was last read at, if it was ever read.
    pub fn generation(&self, node: u64) -> Option<u64> {
        let readings = self.readings.lock().unwrap();
        let last = readings.iter().rev().find(|r| r.node == node)?;
        Some(self.states.lock().unwrap()[last.state].0.generation)
    }

    /// Waits (at most `within`) until every node in `nodes` was read at generation `generation`
    /// or later: how long that took from `since`, or `None`.
    pub fn converged(
        &self,
        nodes: &[u64],
        generation: u64,
        since: Instant,
        within: Duration,
    ) -> Option<Duration> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if nodes
                .iter()
                .all(|n| self.generation(*n).is_some_and(|g| g >= generation))
            {
                return Some(since.elapsed());
            }
            std::thread::sleep(POLL / 2);
        }
        None
    }

    /// The states each node went through, and what each says of the backends and placed
    /// sessions (for a failure's message).
    pub fn describe(&self) -> String {
        let readings = self.readings.lock().unwrap();
        let states = self.states.lock().unwrap();
        let mut out = String::new();
        let mut last = std::collections::BTreeMap::new();
        for r in readings.iter() {
            if last.insert(r.node, r.state) != Some(r.state) {
                out += &format!("{:.2?}: node {} at state {}\n", r.at, r.node, r.state);
            }
        }
        for (i, (s, _)) in states.iter().enumerate() {
            let backends: Vec<String> = s
                .backends
                .iter()
                .map(|(id, b)| {
                    let (w, h, d) = (b.config.weight, b.healthy, b.draining);
                    format!("{id}: weight {w} healthy {h} draining {d}")
                })
                .collect();
            let placed: Vec<String> = s
                .sessions
                .iter()
                .map(|(k, v)| format!("{}/{}: {:?}", k.service, k.session, v.backends))
                .collect();
            out += &format!(
                "state {i}, generation {}: backends {backends:?}, placed {placed:?}\n",
                s.generation
            );
        }
        out
    }

    /// Indices of the states some node was in while `sent` was in flight (with [`SLACK`]).
    fn in_force(&self, sent: &Sent, readings: &[Reading]) -> BTreeSet<usize> {
        let from = sent.at.saturating_sub(SLACK);
        let to = sent.done + SLACK;
        let mut out = BTreeSet::new();
        let mut before: std::collections::BTreeMap<u64, usize> = Default::default();
        for r in readings {
            if r.at <= from {
                before.insert(r.node, r.state);
            } else if r.at <= to {
                out.insert(r.state);
            }
        }
        out.extend(before.values());
        out
    }

    /// The backends the states in force while `sent` was in flight send it to.
    pub fn expected(&self, sessions: &[Session], sent: &Sent) -> BTreeSet<u32> {
        let readings = self.readings.lock().unwrap();
        let states = self.states.lock().unwrap();
        let session = &sessions[sent.session];
        let obs = sent.observation();
        self.in_force(sent, &readings)
            .into_iter()
            .filter_map(|i| expected_backend(&states[i].1, session, &obs))
            .collect()
    }

    /// Node `node`'s latest state read, with its tables.
    pub fn state_of(&self, node: u64) -> Option<ControlState> {
        let readings = self.readings.lock().unwrap();
        let last = readings.iter().rev().find(|r| r.node == node)?;
        Some(self.states.lock().unwrap()[last.state].0.clone())
    }
}
