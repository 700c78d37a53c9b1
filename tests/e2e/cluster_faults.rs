//! Faults under traffic in a three-node load-balancer cluster: every node runs the XDP
//! balancer in its own namespace and routes by the replicated tables, and the client spreads
//! its flows over the three through an ECMP route. While the traffic runs, one fault at a
//! time, each recovered from before the next: the leader is SIGKILLed, a node is cut off the
//! peer network, a backend dies, a daemon restarts, a backend is drained. Every answer is
//! judged against the userspace replay of the states the nodes were in while it was in flight
//! ([`timeline`]); per fault the test prints what was sent, answered, misrouted and lost, and
//! how long until every node routed by the state the fault led to. Nothing may be misrouted,
//! no acknowledged write lost, and no request lost but those a killed backend owned.

mod client;
mod faults;
mod timeline;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use client::Sent;
use faults::Phase;
use serde_json::json;
use shardline::maps::DataplaneMaps;
use shardline_common::verdict::Action;
use shardline_lab::{
    cluster_lab::{ClusterLab, ClusterLabOptions, NODES},
    topology::{CLIENT4, VIP4},
    traffic::SessionKind,
};
use timeline::Timeline;

const BACKENDS: u32 = 4;
const SESSIONS: u32 = 8;
/// Client threads: the sessions are dealt round robin over them.
const WORKERS: usize = 4;
/// Long-lived TCP connections kept open through every fault.
const HELD: usize = 6;

/// A request's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Answered by a backend a state in force names.
    Routed,
    /// Answered by a backend no state in force names but a flow entry an earlier request of
    /// the same 5-tuple left (see [`judge`]).
    Held,
    /// Answered by a backend no state in force names.
    Misrouted,
    /// Lost, but a state in force sent it to the backend killed on purpose.
    LostToKilled,
    /// Lost without that reason.
    Lost,
}

/// Counts of one phase.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    misrouted: u64,
    lost: u64,
    lost_to_killed: u64,
    /// Long-lived connections broken, or moved to another backend, for no backend's end.
    broken: u64,
}

#[test]
fn a_three_node_cluster_under_traffic_survives_faults_without_misrouting() {
    crate::support::require_root();
    let opts = ClusterLabOptions {
        tag: crate::support::unique_tag("f"),
        backends: BACKENDS,
        sessions: SESSIONS,
        bins: crate::support::bins(),
    };
    let lab = ClusterLab::start(&opts).unwrap_or_else(|e| panic!("starting the cluster lab: {e}"));
    let start = Instant::now();
    let timeline = Timeline::default();
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(BTreeMap::new());
    let (phases, sent, lives) = std::thread::scope(|s| {
        for node in 1..=NODES {
            let (timeline, lab, stop) = (&timeline, &lab, &stop);
            s.spawn(move || timeline.poll(lab, node, start, stop));
        }
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (lab, stop) = (&lab, &stop);
                s.spawn(move || {
                    client::run(
                        &lab.net.client,
                        &lab.sessions,
                        |i| i % WORKERS == w,
                        start,
                        stop,
                    )
                })
            })
            .collect();
        // From the client's main address, which no request uses for TCP: a request reusing a
        // held connection's 5-tuple would meet its flow entry, which the judge does not know.
        let held: Vec<_> = (0..HELD)
            .map(|_| {
                let (lab, stop) = (&lab, &stop);
                s.spawn(move || {
                    client::hold(&lab.net.client, CLIENT4.into(), VIP4.into(), start, stop)
                })
            })
            .collect();
        let (lab, stop, acked_ref) = (&lab, &stop, &acked);
        s.spawn(move || faults::write_stream(lab, stop, acked_ref));
        let phases = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            faults::run(lab, &timeline, start)
        }));
        stop.store(true, Ordering::Relaxed);
        let mut sent: Vec<Sent> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect();
        sent.sort_by_key(|r| r.at);
        let lives: Vec<client::Life> = held
            .into_iter()
            .map(|h| h.join().expect("held connection"))
            .collect();
        (
            phases.unwrap_or_else(|e| std::panic::resume_unwind(e)),
            sent,
            lives,
        )
    });

    let verdicts = judge(&lab, &timeline, &phases, &sent);
    let mut tallies = tally(&phases, &sent, &verdicts);
    let broken = broken_connections(&phases, &lives);
    for (i, _) in &broken {
        tallies[*i].broken += 1;
    }
    for (i, event) in &broken {
        let life = lives.iter().find(|l| l.contains(event));
        println!(
            "long-lived connection broken or moved during {}: {event:?}; its life: {life:?}",
            phases[*i].name
        );
    }
    println!(
        "{} long-lived connections, {} answering backends seen over their lives",
        lives.len(),
        lives
            .iter()
            .map(|l| l.iter().filter(|e| e.1.is_ok()).count())
            .sum::<usize>()
    );
    print_table(&phases, &tallies);
    println!(
        "answered by a backend only a flow entry of an earlier request explains: {}",
        verdicts.iter().filter(|v| **v == Verdict::Held).count()
    );
    let spread = forwarded_per_node(&lab);
    println!("forwarded per node (XDP counters): {spread:?}");

    // No acknowledged write is lost: a linearizable read through every node has each.
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    for node in 1..=NODES {
        let state = lab
            .read(node)
            .unwrap_or_else(|e| panic!("read via {node}: {e}"));
        for ((session, key), value) in &acked {
            assert_eq!(
                crate::cluster::harness::get(&state, *session, key).as_deref(),
                Some(value.as_str()),
                "acknowledged write {key} lost on node {node}"
            );
        }
    }
    let total = tallies.iter().fold(Tally::default(), |a, t| Tally {
        sent: a.sent + t.sent,
        answered: a.answered + t.answered,
        misrouted: a.misrouted + t.misrouted,
        lost: a.lost + t.lost,
        lost_to_killed: a.lost_to_killed + t.lost_to_killed,
        broken: a.broken + t.broken,
    });
    assert!(total.answered > 2000, "only {total:?}");
    assert!(
        spread.iter().all(|n| *n > 0),
        "the ECMP route spreads flows over every node: {spread:?}"
    );
    let examples = |want: Verdict| -> Vec<String> {
        sent.iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == want)
            .take(5)
            .map(|(r, _)| {
                // Earlier requests of the same 5-tuple: a flow entry any of them left.
                let earlier: Vec<String> = sent
                    .iter()
                    .filter(|e| e.at < r.at && (e.source, e.destination) == (r.source, r.destination))
                    .map(|e| format!("{:?}..{:?}: {:?}", e.at, e.done, e.answer))
                    .collect();
                format!(
                    "{} at {:?} from {}: {:?}, replay says {:?}; earlier uses of its 5-tuple: {earlier:?}",
                    lab.sessions[r.session].label,
                    r.at,
                    r.source,
                    r.answer,
                    timeline.expected(&lab.sessions, r)
                )
            })
            .collect()
    };
    assert_eq!(
        total.broken, 0,
        "long-lived connections broke or moved for no backend's end (printed above)"
    );
    assert_eq!(
        total.misrouted,
        0,
        "misrouted: {:#?}\n{}",
        examples(Verdict::Misrouted),
        timeline.describe()
    );
    assert_eq!(
        total.lost,
        0,
        "lost without a killed backend: {:#?}\n{}",
        examples(Verdict::Lost),
        timeline.describe()
    );
}

/// Each request's verdict. A flow-mode request may also reach a backend an earlier request of
/// the same 5-tuple reached within the flow idle time: the load balancer's flow table holding
/// it. The table is per CPU, so a reused source port may meet the entry of any earlier use.
///
/// An entry lives for the idle time after its flow's last packet, so a pin dates from when
/// the earlier request was answered or given up on, not from when it was sent. A request
/// lost to the killed backend pins its 5-tuple too: its SYN or datagram went through the
/// load balancer, which remembered the backend it chose. The client binds port 0, so a later
/// request may draw that port again and, once the backend is back, reach it while the tables
/// name another.
fn judge(lab: &ClusterLab, timeline: &Timeline, phases: &[Phase], sent: &[Sent]) -> Vec<Verdict> {
    let idle = Duration::from_secs(u64::from(lab.config.flow_idle_secs));
    type Tuple = (std::net::SocketAddr, std::net::SocketAddr);
    let mut pinned: BTreeMap<Tuple, BTreeMap<u32, Duration>> = BTreeMap::new();
    sent.iter()
        .map(|r| {
            let expected = timeline.expected(&lab.sessions, r);
            let flow = !matches!(lab.sessions[r.session].kind, SessionKind::Header { .. });
            let tuple = (r.source, r.destination);
            let held = |b: u32| {
                flow && pinned
                    .get(&tuple)
                    .and_then(|m| m.get(&b))
                    .is_some_and(|last| r.at.saturating_sub(*last) < idle)
            };
            let (verdict, reached) = match r.answer {
                Ok(b) if expected.contains(&b) => (Verdict::Routed, Some(b)),
                Ok(b) if held(b) => (Verdict::Held, Some(b)),
                Ok(_) => (Verdict::Misrouted, None),
                Err(_) => {
                    // The backend killed while the request was in flight: in the phase in force
                    // when it was sent, or one that began before its answer was due.
                    let due = r.at + client::REPLY_TIMEOUT;
                    let killed = faults::phase_of(phases, r.at)
                        .and_then(|p| p.killed)
                        .or_else(|| {
                            phases
                                .iter()
                                .filter(|p| p.at > r.at && p.at <= due)
                                .find_map(|p| p.killed)
                        });
                    match killed.filter(|k| expected.contains(k) || held(*k)) {
                        Some(k) => (Verdict::LostToKilled, Some(k)),
                        None => (Verdict::Lost, None),
                    }
                }
            };
            if let Some(b) = reached.filter(|_| flow) {
                pinned.entry(tuple).or_default().insert(b, r.done);
            }
            verdict
        })
        .collect()
}

/// The events of long-lived connections that broke or moved for no backend's end: the phase
/// each happened in and the event. A connection may break when its backend is killed or its
/// drain times out; a new connection may fail while a killed backend is still in the tables.
fn broken_connections(phases: &[Phase], lives: &[client::Life]) -> Vec<(usize, client::Event)> {
    let mut out = Vec::new();
    for life in lives {
        let mut last: Option<u32> = None;
        for event in life {
            // Before the first phase (the connection opened as traffic started) nothing is
            // judged, but the backend it reached is still the one it holds.
            let Some(i) = phases.iter().rposition(|p| p.at <= event.0) else {
                last = event.1.ok();
                continue;
            };
            let phase = &phases[i];
            let fine = match (last, event.1) {
                (None, Ok(_)) => true,
                (Some(b), Ok(now)) => b == now,
                (Some(b), Err(_)) => phase.ended == Some(b),
                (None, Err(_)) => phase.killed.is_some(),
            };
            if !fine {
                out.push((i, *event));
            }
            last = event.1.ok();
        }
    }
    out
}

fn tally(phases: &[Phase], sent: &[Sent], verdicts: &[Verdict]) -> Vec<Tally> {
    let mut out = vec![Tally::default(); phases.len()];
    for (r, v) in sent.iter().zip(verdicts) {
        let Some(i) = phases.iter().rposition(|p| p.at <= r.at) else {
            continue;
        };
        let t = &mut out[i];
        t.sent += 1;
        match v {
            Verdict::Routed | Verdict::Held => t.answered += 1,
            Verdict::Misrouted => {
                t.answered += 1;
                t.misrouted += 1;
            }
            Verdict::LostToKilled => t.lost_to_killed += 1,
            Verdict::Lost => t.lost += 1,
        }
    }
    out
}

fn print_table(phases: &[Phase], tallies: &[Tally]) {
    println!(
        "\n{:<34} {:>7} {:>8} {:>9} {:>5} {:>13} {:>6} {:>10}  note",
        "fault", "sent", "answered", "misrouted", "lost", "lost (killed)", "broken", "converged"
    );
    for (p, t) in phases.iter().zip(tallies) {
        let converged = p
            .converged
            .map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        println!(
            "{:<34} {:>7} {:>8} {:>9} {:>5} {:>13} {:>6} {:>10}  {}",
            p.name,
            t.sent,
            t.answered,
            t.misrouted,
            t.lost,
            t.lost_to_killed,
            t.broken,
            converged,
            p.note
        );
    }
}

/// Packets each node's XDP program sent to a backend.
fn forwarded_per_node(lab: &ClusterLab) -> Vec<u64> {
    (1..=NODES)
        .map(|node| {
            let counts = DataplaneMaps::open(lab.pin_dir(node))
                .and_then(|m| m.reason_counts())
                .unwrap_or_else(|e| panic!("node {node}'s counters: {e}"));
            counts
                .iter()
                .filter(|(r, _)| matches!(r.action(), Action::Tx | Action::Redirect))
                .map(|(_, n)| n)
                .sum()
        })
        .collect()
}

/// A `set_weight` command (a routing change every node must apply).
fn set_weight(id: u32, weight: u32) -> serde_json::Value {
    json!({"op": "set_weight", "id": id, "weight": weight})
}
