//! The faults, one at a time, each recovered from before the next, and the stream of critical
//! writes that runs through all of them. Each fault is a [`Phase`]: when it began, how long
//! until every node routed by the state it led to, and what else was seen.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use shardline_lab::cluster_lab::{ClusterLab, DRAIN_SECS, NODES};

use super::{set_weight, timeline::Timeline};
use crate::cluster::harness::put;

/// Traffic before the first fault and after each recovery.
const STEADY: Duration = Duration::from_secs(3);
/// Bound on an election among the nodes left.
const ELECTION: Duration = Duration::from_secs(15);
/// Bound on every node reaching a state.
const CONVERGE: Duration = Duration::from_secs(20);
/// Bound on a daemon (re)start.
const BOOT: Duration = Duration::from_secs(60);
/// The `kv` sessions the write stream keeps its keys in: a new one every 100 writes, so no
/// session outgrows its critical-state limit.
pub const KV_SESSION: u64 = 900;
/// The backend killed, and the one drained.
const KILLED: u32 = 2;
const DRAINED: u32 = 3;

/// One stretch of the run.
#[derive(Clone, Debug)]
pub struct Phase {
    /// What happened.
    pub name: String,
    /// When it began, since the test started.
    pub at: Duration,
    /// How long until every node was read at the state the fault led to.
    pub converged: Option<Duration>,
    /// What else was measured.
    pub note: String,
    /// The backend this phase killed on purpose: its requests may be lost.
    pub killed: Option<u32>,
    /// The backend whose established connections this phase ends on purpose (killed, or
    /// drained past the drain timeout).
    pub ended: Option<u32>,
}

impl Phase {
    fn begin(name: String, start: Instant) -> Self {
        println!("fault test: {name} at {:.1?}", start.elapsed());
        Self {
            name,
            at: start.elapsed(),
            converged: None,
            note: String::new(),
            killed: None,
            ended: None,
        }
    }
}

/// The phase running at `at`.
pub fn phase_of(phases: &[Phase], at: Duration) -> Option<&Phase> {
    phases.iter().rev().find(|p| p.at <= at)
}

/// The session and key of the stream's `i`-th write.
pub fn written(i: u64) -> (u64, String) {
    (KV_SESSION + i / 100, format!("w{i}"))
}

/// Writes a critical key every 200 ms through each node in turn until `stop`, recording the
/// acknowledged ones in `acked` (session and key to value).
pub fn write_stream(
    lab: &ClusterLab,
    stop: &AtomicBool,
    acked: &Mutex<BTreeMap<(u64, String), String>>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let node = i % NODES + 1;
        let (session, key) = written(i);
        let value = format!("v{i}");
        if lab.write(node, put(session, &key, &value)).is_ok() {
            acked.lock().unwrap().insert((session, key), value);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Commits `command` through `node`: the state's generation after it.
fn commit(lab: &ClusterLab, node: u64, command: Value) -> u64 {
    let answer = lab
        .write(node, command)
        .unwrap_or_else(|e| panic!("writing through node {node}: {e}"));
    answer["generation"].as_u64().expect("a generation")
}

fn others(but: u64) -> Vec<u64> {
    (1..=NODES).filter(|n| *n != but).collect()
}

fn all() -> Vec<u64> {
    (1..=NODES).collect()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// Waits until every node's state says `ok` of the backend `id`: how long since `since`.
fn backend_state(
    timeline: &Timeline,
    id: u32,
    since: Instant,
    ok: impl Fn(&shardline::state::BackendEntry) -> bool,
) -> Option<Duration> {
    let deadline = Instant::now() + CONVERGE;
    while Instant::now() < deadline {
        let everywhere = all().into_iter().all(|n| {
            timeline
                .state_of(n)
                .and_then(|s| s.backends.get(&id).cloned())
                .is_some_and(|b| ok(&b))
        });
        if everywhere {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs every fault in turn; the phases, the baseline first.
pub fn run(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Vec<Phase> {
    let mut phases = vec![Phase::begin("baseline".into(), start)];
    std::thread::sleep(STEADY);
    phases.push(kill_leader(lab, timeline, start));
    std::thread::sleep(STEADY);
    phases.push(partition(lab, timeline, start));
    std::thread::sleep(STEADY);
    phases.push(kill_backend(lab, timeline, start));
    std::thread::sleep(STEADY);
    phases.push(restart_daemon(lab, timeline, start));
    std::thread::sleep(STEADY);
    phases.push(drain(lab, timeline, start));
    std::thread::sleep(STEADY);
    phases
}

/// SIGKILL the leader; the survivors elect another and commit a routing change; the old
/// leader restarts from its disk and catches up. Converged: both survivors at the change.
fn kill_leader(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Phase {
    let old = lab
        .leader(&all(), ELECTION)
        .expect("a leader before the fault");
    let mut p = Phase::begin(format!("kill -9 the leader (node {old})"), start);
    let t0 = Instant::now();
    lab.stop_node(old, true);
    let survivors = others(old);
    let new = lab
        .leader(&survivors, ELECTION)
        .unwrap_or_else(|| panic!("no new leader among {survivors:?}"));
    let elected = t0.elapsed();
    let generation = commit(lab, new, set_weight(1, 2));
    p.converged = timeline.converged(&survivors, generation, t0, CONVERGE);
    lab.start_node(old, BOOT)
        .unwrap_or_else(|e| panic!("restarting node {old}: {e}"));
    let back = timeline.converged(&all(), generation, t0, CONVERGE);
    p.note = format!(
        "node {new} elected in {elected:.2?}; node {old} restarted and caught up at {}",
        secs(back)
    );
    p
}

/// Cut the leader off the peer network: the majority elects another and commits a routing
/// change the isolated node cannot; after the heal it catches up. Converged: the majority at
/// the change.
fn partition(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Phase {
    let cut = lab
        .leader(&all(), ELECTION)
        .expect("a leader before the fault");
    let mut p = Phase::begin(format!("partition the leader (node {cut})"), start);
    let t0 = Instant::now();
    lab.partition(cut, true).expect("cutting the peer link");
    let majority = others(cut);
    let new = lab
        .leader(&majority, ELECTION)
        .unwrap_or_else(|| panic!("no new leader among {majority:?}"));
    let generation = commit(lab, new, set_weight(1, 1));
    p.converged = timeline.converged(&majority, generation, t0, CONVERGE);
    let lonely = lab.write(cut, put(KV_SESSION - 1, "minority", "lost"));
    assert!(lonely.is_err(), "the isolated node committed: {lonely:?}");
    lab.partition(cut, false).expect("healing the peer link");
    let healed = Instant::now();
    let back = timeline.converged(&[cut], generation, healed, CONVERGE);
    p.note = format!(
        "node {new} elected; node {cut} caught up {} after the heal",
        secs(back)
    );
    p
}

/// Kill a backend's service and agent: its flows are lost until the nodes' health checks
/// take it out. Converged: every node has it down; then it restarts and comes back.
fn kill_backend(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Phase {
    let mut p = Phase::begin(format!("kill backend {KILLED}"), start);
    (p.killed, p.ended) = (Some(KILLED), Some(KILLED));
    let t0 = Instant::now();
    lab.kill_backend(KILLED);
    p.converged = backend_state(timeline, KILLED, t0, |b| !b.healthy);
    std::thread::sleep(Duration::from_secs(1));
    lab.start_backend(KILLED)
        .unwrap_or_else(|e| panic!("restarting backend {KILLED}: {e}"));
    let t1 = Instant::now();
    let back = backend_state(timeline, KILLED, t1, |b| b.healthy);
    p.note = format!("restarted, healthy on every node {} later", secs(back));
    p
}

/// SIGTERM a follower's daemon; a routing change commits while it is down; it restarts and
/// catches up. Converged: every node at the change.
fn restart_daemon(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Phase {
    let leader = lab
        .leader(&all(), ELECTION)
        .expect("a leader before the fault");
    let node = others(leader)[0];
    let mut p = Phase::begin(format!("restart a daemon (node {node})"), start);
    let t0 = Instant::now();
    lab.stop_node(node, false);
    let generation = commit(lab, leader, set_weight(3, 2));
    lab.start_node(node, BOOT)
        .unwrap_or_else(|e| panic!("restarting node {node}: {e}"));
    let ready = t0.elapsed();
    p.converged = timeline.converged(&all(), generation, t0, CONVERGE);
    p.note = format!("ready again {ready:.2?} after the stop");
    p
}

/// Drain a backend through the API: no new flows reach it; after the drain timeout it leaves
/// every shard set. Converged: every node at the drain.
fn drain(lab: &ClusterLab, timeline: &Timeline, start: Instant) -> Phase {
    let leader = lab
        .leader(&all(), ELECTION)
        .expect("a leader before the fault");
    let mut p = Phase::begin(format!("drain backend {DRAINED}"), start);
    p.ended = Some(DRAINED);
    let t0 = Instant::now();
    let path = format!("/v1/backends/{DRAINED}/drain");
    let answer = lab
        .api(leader, "POST", &path, None)
        .unwrap_or_else(|e| panic!("draining backend {DRAINED}: {e}"));
    let generation = answer["generation"].as_u64().expect("a generation");
    p.converged = timeline.converged(&all(), generation, t0, CONVERGE);
    let drained = backend_state(timeline, DRAINED, t0, |b| b.drained);
    p.note = format!(
        "left every shard set on every node at {} (drain timeout {DRAIN_SECS} s)",
        secs(drained)
    );
    p
}
