//! `raft.reshard_10k_ms`: a decision re-placing 10,000 sessions, as one control-loop tick does
//! (one `Batch` log entry), travelling to every node's BPF maps on a 3-node cluster that holds
//! 1,000,000 placed sessions.
//!
//! Each node is what a daemon runs: a raft node (redb store, fsync per append, raft over HTTP on
//! loopback) and the daemon's applier writing each committed state into a dataplane of its own
//! (a private, loaded but unattached balancer: real pinned maps per node). The time runs from
//! the leader's write of the batch until every node's applier has written the generation that
//! carries it (`maps`), and until every node's state machine applied it (`applied`). The
//! appliers log as the daemon does, into a sink: formatting is paid, the terminal is not.
//!
//! Every decision moves sessions, and each move opens a handoff window (a `HANDOFF_SLOTS` slot
//! and a placement naming it) that the applier closes when it ends, a chunk at a time between
//! states, clearing each slot a quarantine later. The load opens up to the array's 65,536 of
//! them: the rounds start only once every node's slots are all cleared again
//! (`settle_seconds`), and each round after the last one's windows closed, so a round measures
//! one tick in a steady state, not the closing of earlier windows.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData};
use serde_json::{json, Value};
use shardline::{
    cluster::Cluster,
    config::Config,
    daemon::applier,
    maps::DataplaneMaps,
    private::PrivateDataplane,
    reshard::{board::HandoffBoard, DEFAULT_HANDOFF_WINDOW, HANDOFF_QUARANTINE},
    snapshot::Snapshot,
    state::{Command, Control, SessionRef},
    telemetry::Telemetry,
};
use shardline_common::maps::{SessionKey, ShardSet};
use tokio::sync::watch;
use tracing::instrument::WithSubscriber;

use super::{median, round, BenchError};

/// Sessions re-placed by the measured decision.
pub const MOVED: u64 = 10_000;

/// Backends of the seeded tables.
const BACKENDS: u32 = 8;

/// The `kv` service's id (the only service).
const KV: u32 = 1;

/// How long a node may take to reach a generation before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// How often the settle wait looks at the nodes' handoff slots.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// One header-mode service and [`BACKENDS`] backends (L2 DSR: no encapsulation source needed).
fn seed() -> String {
    let mut text = String::from(
        "interface = \"lo\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n",
    );
    for id in 1..=BACKENDS {
        text += &format!(
            "[[backends]]\nid = {id}\nipv4 = \"10.0.1.{id}\"\nmac = \"02:00:00:00:01:{id:02x}\"\n"
        );
    }
    text
}

/// A node of the cluster with the daemon's applier writing into its own dataplane.
struct Node {
    cluster: Arc<Cluster>,
    /// Keeps the private maps pinned (removed on drop).
    dataplane: PrivateDataplane,
    /// The generation the applier last wrote into the maps.
    written: watch::Receiver<u64>,
}

/// Runs the measurement with `sessions` placed and `rounds` decisions timed.
pub fn run(sessions: u64, rounds: usize) -> Result<Value, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(super::io("building a tokio runtime"))?
        .block_on(measure(sessions, rounds))
}

async fn measure(sessions: u64, rounds: usize) -> Result<Value, BenchError> {
    let dir = std::env::temp_dir().join(format!("shardline-bench-reshard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seed = seed();
    let clusters = super::raft::start(&dir, &seed).await;
    let result = match &clusters {
        Ok(clusters) => match nodes(clusters, &seed) {
            Ok(nodes) => bench(&nodes, sessions, rounds).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(BenchError::Check(e.clone())),
    };
    for node in clusters.iter().flatten() {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A private dataplane and an applier per cluster node.
fn nodes(clusters: &[Arc<Cluster>], seed: &str) -> Result<Vec<Node>, BenchError> {
    let config = Config::parse(seed, "bench seed")
        .map_err(|e| BenchError::Check(format!("seed config: {e}")))?;
    let sink = super::log_sink();
    let mut nodes = Vec::new();
    for cluster in clusters {
        let dataplane = PrivateDataplane::new(
            &format!("reshard{}", cluster.id()),
            Snapshot::from_config(&config),
        )
        .map_err(|e| {
            BenchError::Check(format!("loading node {}'s dataplane: {e}", cluster.id()))
        })?;
        let maps = Arc::new(Mutex::new(DataplaneMaps::open(&dataplane.pin_dir)?));
        let (written_tx, written) = watch::channel(0);
        let (_, window) = watch::channel(DEFAULT_HANDOFF_WINDOW);
        tokio::spawn(
            applier::run(
                maps,
                cluster.subscribe(),
                written_tx,
                Arc::new(Telemetry::default()),
                (Arc::new(HandoffBoard::default()), window),
            )
            .with_subscriber(sink.clone()),
        );
        nodes.push(Node {
            cluster: cluster.clone(),
            dataplane,
            written,
        });
    }
    Ok(nodes)
}

/// Session `i`'s placement before the measured moves: one backend.
fn first(i: u64) -> Vec<u32> {
    vec![1 + (i % u64::from(BACKENDS)) as u32]
}

/// Session `i`'s placement after move `round`: two backends, neither the one before.
fn moved(i: u64, round: usize) -> Vec<u32> {
    let b = u64::from(BACKENDS);
    let a = (i + 1 + round as u64) % b;
    vec![1 + a as u32, 1 + ((a + b / 2) % b) as u32]
}

fn place(i: u64, backends: Vec<u32>) -> Command {
    Command::Place {
        session: SessionRef {
            service: "kv".into(),
            session: i,
        },
        backends,
    }
}

/// Commits `commands` as one entry through whichever node leads. A failed attempt (no leader
/// yet, a leader change, no quorum in time) is tried again, up to 5 times: a batch of
/// placements is idempotent, so a retry of one whose outcome is unknown is safe.
async fn commit(nodes: &[Node], commands: Vec<Command>) -> Result<u64, BenchError> {
    let n = commands.len();
    let batch = Command::batch(commands);
    let mut last = String::new();
    for _ in 0..5 {
        let leader = nodes[0].cluster.status().await.leader;
        let Some(leader) = nodes.iter().find(|node| Some(node.cluster.id()) == leader) else {
            last = "no leader".into();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        match leader.cluster.write_here(batch.clone()).await {
            Ok(response) => {
                if let Some(e) = response.each.iter().find_map(|r| r.as_ref().err()) {
                    return Err(BenchError::Check(format!("a placement was rejected: {e}")));
                }
                return Ok(response.generation);
            }
            Err(e) => {
                last = e.to_string();
                println!("bench:   a batch of {n} was not committed ({last}); trying again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Err(BenchError::Check(format!(
        "committing a batch of {n}: {last}"
    )))
}

/// Waits until `rx` holds at least `generation`.
async fn reach(mut rx: watch::Receiver<u64>, generation: u64) -> Result<(), BenchError> {
    let wait = rx.wait_for(|g| *g >= generation);
    match tokio::time::timeout(PATIENCE, wait).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(BenchError::Check(format!(
            "generation {generation} did not reach a node within {PATIENCE:?}"
        ))),
    }
}

/// Per node, the time from `t0` until its maps hold `generation`, and until its state machine
/// applied it: all nodes waited on at once, each timed when it gets there.
async fn arrivals(
    nodes: &[Node],
    generation: u64,
    t0: Instant,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let mut tasks = Vec::new();
    for node in nodes {
        let written = node.written.clone();
        let applied = node.cluster.subscribe();
        tasks.push(tokio::spawn(async move {
            let (maps, state) = tokio::join!(
                async {
                    reach(written, generation).await?;
                    Ok::<_, BenchError>(t0.elapsed())
                },
                async {
                    let mut applied = applied;
                    let wait = applied.wait_for(|s| s.generation >= generation);
                    let _ = tokio::time::timeout(PATIENCE, wait).await;
                    t0.elapsed()
                }
            );
            Ok::<_, BenchError>((maps?, state))
        }));
    }
    let (mut maps, mut applied) = (Vec::new(), Vec::new());
    for t in tasks {
        let (m, a) = t.await.map_err(|e| BenchError::Check(e.to_string()))??;
        maps.push(m.as_secs_f64() * 1e3);
        applied.push(a.as_secs_f64() * 1e3);
    }
    Ok((maps, applied))
}

/// Waits until every node's handoff slots are all cleared: every handoff window opened so far
/// has ended, its applier closed it (flags cleared) and its slot's quarantine passed (a move
/// only flags a placement whose slot was written). Returns the seconds waited; fails after the
/// window, the quarantine and [`PATIENCE`].
async fn settle(nodes: &[Node]) -> Result<f64, BenchError> {
    let maps = nodes
        .iter()
        .map(|node| DataplaneMaps::open(&node.dataplane.pin_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    let limit = DEFAULT_HANDOFF_WINDOW + HANDOFF_QUARANTINE + PATIENCE;
    loop {
        let mut open = Vec::new();
        for (node, maps) in nodes.iter().zip(&maps) {
            if maps.handoff_slots_in_use()? > 0 {
                open.push(node.cluster.id());
            }
        }
        if open.is_empty() {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > limit {
            return Err(BenchError::Check(format!(
                "handoff slots still in use on nodes {open:?} after {limit:?} (window \
                 {DEFAULT_HANDOFF_WINDOW:?}): their appliers did not close them"
            )));
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Fails unless every node's SESSIONS map holds `want` for the sampled sessions.
fn check_maps(nodes: &[Node], sample: &[(u64, Vec<u32>)]) -> Result<(), BenchError> {
    for node in nodes {
        let map: HashMap<MapData, SessionKey, ShardSet> =
            super::open_pinned(&node.dataplane.pin_dir, "SESSIONS")?;
        for (session, want) in sample {
            let key = SessionKey {
                service: KV,
                _pad: 0,
                session: *session,
            };
            let got = map.get(&key, 0).map_err(|source| BenchError::Map {
                what: format!("reading session {session} on node {}", node.cluster.id()),
                source,
            })?;
            let mut members = got.backends[..got.count as usize].to_vec();
            let mut want = want.clone();
            members.sort_unstable();
            want.sort_unstable();
            if members != want {
                return Err(BenchError::Check(format!(
                    "node {}: session {session} is on {members:?}, not {want:?}",
                    node.cluster.id()
                )));
            }
        }
    }
    Ok(())
}

async fn bench(nodes: &[Node], sessions: u64, rounds: usize) -> Result<Value, BenchError> {
    // Load: the sessions placed in entries of MOVED placements each, one after the other.
    let t = Instant::now();
    let mut generation = 0;
    let mut i = 0;
    while i < sessions {
        let end = (i + MOVED).min(sessions);
        generation = commit(nodes, (i..end).map(|i| place(i, first(i))).collect()).await?;
        i = end;
    }
    arrivals(nodes, generation, t).await?;
    let load_s = t.elapsed().as_secs_f64();
    println!("bench:   {sessions} sessions placed on 3 nodes' maps in {load_s:.1} s");
    let settle_s = settle(nodes).await?;
    println!("bench:   the load's handoff windows closed on every node {settle_s:.1} s later");
    // The measured decisions: MOVED sessions spread over the whole range, one entry each.
    let stride = (sessions / MOVED).max(1);
    let (mut all_maps, mut all_applied, mut commits, mut cpus, mut per_round) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // The previous round's windows closed first (the load's were, above).
        let settled = match r {
            0 => settle_s,
            _ => settle(nodes).await?,
        };
        let chosen: Vec<u64> = (0..MOVED.min(sessions))
            .map(|j| j * stride + (r as u64 % stride))
            .collect();
        let commands = chosen.iter().map(|&i| place(i, moved(i, r))).collect();
        let (t0, cpu0) = (Instant::now(), super::raft::cpu_seconds());
        let generation = commit(nodes, commands).await?;
        let committed = t0.elapsed().as_secs_f64() * 1e3;
        let (maps, applied) = arrivals(nodes, generation, t0).await?;
        let cpu = (super::raft::cpu_seconds() - cpu0) * 1e3;
        let sample: Vec<(u64, Vec<u32>)> = chosen
            .iter()
            .step_by(997)
            .map(|&i| (i, moved(i, r)))
            .collect();
        check_maps(nodes, &sample)?;
        let slowest = maps.iter().copied().fold(0.0, f64::max);
        println!(
            "bench:   round {r}: committed in {committed:.1} ms, every node's maps in {slowest:.1} ms, {cpu:.0} ms of CPU"
        );
        per_round.push(json!({
            "settle_seconds": round(settled, 1),
            "commit_ms": round(committed, 2),
            "cpu_ms": round(cpu, 1),
            "maps_ms_by_node": maps.iter().map(|m| round(*m, 2)).collect::<Vec<_>>(),
            "applied_ms_by_node": applied.iter().map(|m| round(*m, 2)).collect::<Vec<_>>(),
        }));
        all_maps.push(slowest);
        all_applied.push(applied.iter().copied().fold(0.0, f64::max));
        commits.push(committed);
        cpus.push(cpu);
    }
    let worst = all_maps.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "reshard_10k_ms": round(median(&mut all_maps.clone()), 1),
        "reshard_10k": {
            "setup": "3 raft nodes in one process (redb, fsync per append, raft over HTTP on 127.0.0.1), each with the daemon's applier writing into its own private pinned BPF maps (loaded, not attached); the decision is one Batch entry of Place commands, as one control-loop tick commits",
            "sessions_loaded": sessions,
            "sessions_moved": MOVED.min(sessions),
            "load_seconds": round(load_s, 1),
            "settle_seconds": round(settle_s, 1),
            "handoff_window_seconds": DEFAULT_HANDOFF_WINDOW.as_secs_f64(),
            "rounds": rounds,
            "maps_ms_median": round(median(&mut all_maps), 1),
            "maps_ms_max": round(worst, 1),
            "applied_ms_median": round(median(&mut all_applied), 1),
            "commit_ms_median": round(median(&mut commits), 1),
            "cpu_ms_median": round(median(&mut cpus), 1),
            "per_round": per_round,
            "target_ms": 100,
            "note": "maps: from the leader's write of the batch until every node's applier wrote the generation into its SESSIONS map (checked by reading sampled sessions back); applied: until every node's state machine applied it; commit: until the leader's write returned; cpu: this process's CPU time (the 3 nodes and their appliers together, user and system) from the write until every node's maps hold it, which a loaded machine does not inflate as it does the wall-clock figures; settle_seconds: after the load's last write reached every node's maps, the wait until every node's handoff slots were all cleared (the load's handoff windows ended and closed by the appliers, and the slots' quarantine passed), before the first round; each round starts likewise only once the previous round's windows closed (per_round settle_seconds, the wait before that round), so no round overlaps the closing of earlier windows (a loop moving 10,000 sessions every tick would also close the windows opened one window earlier in the same period: not in these figures)",
        },
    }))
}
