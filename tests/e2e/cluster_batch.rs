//! Group commit on 3 voters in this process (raft over HTTP on loopback, a redb store each,
//! started by the raft benchmark's own `start`): concurrent session-state writes share log
//! entries, yet each writer gets its own answer, forwarding from followers works, and a leader
//! killed in the middle loses no acknowledged write. No root needed.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use shardline::{
    cluster::Cluster,
    state::{Command, Control, ControlError, ControlState, SessionRef, StateError},
};
use shardline_bench::suite::raft;

use crate::support::cluster::leader_among;

/// Generous: a loaded 2-core machine runs the other engineers' builds too.
const CONVERGE: Duration = Duration::from_secs(60);

const SEED: &str = "interface = \"lo\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n";

const WRITERS: u64 = 64;

/// The write number `n`: its own session and key, so no write overwrites another.
fn put(n: u64) -> Command {
    Command::PutState {
        session: SessionRef {
            service: "kv".into(),
            session: n,
        },
        key: format!("k{n}"),
        value: n.to_le_bytes().to_vec(),
    }
}

fn value_of(state: &ControlState, n: u64) -> Option<Vec<u8>> {
    let session = SessionRef {
        service: "kv".into(),
        session: n,
    };
    state.kv.get(&session)?.get(&format!("k{n}")).cloned()
}

/// Runs `test` on a fresh 3-voter cluster in a runtime of its own, then stops the nodes.
fn with_cluster<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Vec<Arc<Cluster>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(format!("shardline-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let nodes = raft::start(&dir, SEED)
                .await
                .unwrap_or_else(|e| panic!("starting 3 voters: {e}"));
            test(nodes.clone()).await;
            for n in &nodes {
                n.shutdown().await;
            }
        });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `node`'s applied state holds every value of `acked` (write number → value).
async fn holds_all(node: &Cluster, acked: &BTreeMap<u64, Vec<u8>>) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let state = node.local();
        let missing: Vec<u64> = acked
            .iter()
            .filter(|(n, v)| value_of(&state, **n).as_ref() != Some(*v))
            .map(|(n, _)| *n)
            .take(5)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} lacks acknowledged writes (first: {missing:?}) after {CONVERGE:?}",
            node.id()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn concurrent_writers_each_get_their_own_answer_and_every_node_holds_the_values() {
    with_cluster("batch", |nodes| async move {
        let per = 30u64;
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            // Through every node: two thirds of the writers go through a follower.
            let via = nodes[w as usize % nodes.len()].clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..per {
                    let n = w * per + i;
                    let command = match n % 50 {
                        // An unknown service: rejected when applied, inside a shared entry.
                        7 => Command::PutState {
                            session: SessionRef {
                                service: "nope".into(),
                                session: n,
                            },
                            key: "k".into(),
                            value: vec![1],
                        },
                        // Over the state limit: refused before it is queued.
                        13 => Command::PutState {
                            session: SessionRef {
                                service: "kv".into(),
                                session: n,
                            },
                            key: "k".into(),
                            value: vec![0; shardline::state::SESSION_STATE_LIMIT + 1],
                        },
                        _ => put(n),
                    };
                    out.push((n, via.write(command).await));
                }
                out
            }));
        }
        let mut acked = BTreeMap::new();
        let mut indexes = std::collections::BTreeSet::new();
        for t in tasks {
            for (n, result) in t.await.expect("writer") {
                match n % 50 {
                    7 => assert!(
                        matches!(result, Err(ControlError::Rejected(StateError::UnknownService(ref s))) if s == "nope"),
                        "write {n}: {result:?}"
                    ),
                    13 => assert!(
                        matches!(
                            result,
                            Err(ControlError::Rejected(StateError::StateTooLarge { .. }))
                        ),
                        "write {n}: {result:?}"
                    ),
                    _ => {
                        let r = result.unwrap_or_else(|e| panic!("write {n}: {e}"));
                        assert!(r.each.is_empty(), "write {n} got a whole batch's answer");
                        indexes.insert(r.generation);
                        acked.insert(n, n.to_le_bytes().to_vec());
                    }
                }
            }
        }
        let bad = (0..WRITERS * per)
            .filter(|n| [7, 13].contains(&(n % 50)))
            .count();
        assert_eq!(acked.len(), (WRITERS * per) as usize - bad);
        // Fewer entries than writes: the writes were group-committed. (`generation` does not
        // move for state writes, so count the log instead.)
        let applied = leader_among(&nodes, CONVERGE).await.status().await.applied;
        assert!(
            applied < acked.len() as u64 / 2,
            "{applied} log entries for {} writes: not batched",
            acked.len()
        );
        for n in &nodes {
            holds_all(n, &acked).await;
        }
    });
}

#[test]
fn a_leader_kill_in_the_middle_loses_no_acknowledged_write() {
    with_cluster("batch-kill", |nodes| async move {
        let leader = leader_among(&nodes, CONVERGE).await;
        let followers: Vec<_> = nodes
            .iter()
            .filter(|n| n.id() != leader.id())
            .cloned()
            .collect();
        // Set once the leader is down; writers stop when told.
        let killed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let after_kill = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            // Half through the leader (killed below), half through the followers, which survive.
            let via = if w % 2 == 0 {
                leader.clone()
            } else {
                followers[w as usize / 2 % 2].clone()
            };
            let (killed, stop, after_kill) = (killed.clone(), stop.clone(), after_kill.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let n = w * 100_000 + i;
                    // An error is an unacknowledged write: its outcome is unknown, and the
                    // test asks nothing of it.
                    if via.write(put(n)).await.is_ok() {
                        acked.push(n);
                        if killed.load(Ordering::SeqCst) {
                            after_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        leader.shutdown().await;
        killed.store(true, Ordering::SeqCst);
        // Writes go on after the kill until the survivors took a few hundred of them.
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while after_kill.load(Ordering::SeqCst) < 300 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut acked = BTreeMap::new();
        for t in tasks {
            for n in t.await.expect("writer") {
                acked.insert(n, n.to_le_bytes().to_vec());
            }
        }
        assert!(
            after_kill.load(Ordering::SeqCst) >= 300,
            "the survivors acknowledged only {} writes within {CONVERGE:?} of the kill",
            after_kill.load(Ordering::SeqCst)
        );
        let next = leader_among(&followers, CONVERGE).await;
        assert_ne!(next.id(), leader.id());
        let state = next
            .read()
            .await
            .expect("a linearizable read on the new leader");
        for (n, v) in &acked {
            assert_eq!(
                value_of(&state, *n).as_ref(),
                Some(v),
                "acknowledged write {n} is lost"
            );
        }
        for f in &followers {
            holds_all(f, &acked).await;
        }
    });
}
