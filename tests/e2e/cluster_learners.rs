//! More LB nodes than voters: 3 voters and 20 learners in this process, raft over HTTP on
//! loopback, each node with its own store. Learners apply every committed state like voters
//! (so every node's tables agree) without being waited on by commits. No root needed.

use std::{path::Path, sync::Arc, time::Duration};

use shardline::{
    cluster::Cluster,
    config::Config,
    state::{Command, ConfigTables, Control, ControlState, SessionRef},
};

use crate::support::cluster::leader_among;

const VOTERS: u64 = 3;
const LEARNERS: u64 = 20;
/// Generous: a loaded 2-core machine runs the other engineers' builds too.
const CONVERGE: Duration = Duration::from_secs(60);

const SERVICE: &str = "interface = \"lo\"\npin_dir = \"/sys/fs/bpf/unused\"\n[[services]]\nname = \"kv\"\nvip = \"10.100.0.1\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nforward = \"l2dsr\"\n";

fn backends() -> String {
    (1..=4)
        .map(|id| {
            format!(
                "[[backends]]\nid = {id}\nipv4 = \"10.0.0.{id}\"\nmac = \"02:00:00:00:00:0{id}\"\n"
            )
        })
        .collect()
}

/// A free port below the kernel's ephemeral range (32768 and up), so no outgoing connection of
/// another test can take it between this check and the node's bind, as one can a port the
/// kernel hands out for `:0`.
fn port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 400) as u16 * 30,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32_768, "no free port below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

async fn node(dir: &Path, id: u64, port: u16, cluster: &str) -> Arc<Cluster> {
    // Peers authenticate with one shared secret, as a real cluster's nodes do.
    let secret = dir.join("cluster.secret");
    if !secret.exists() {
        std::fs::create_dir_all(dir).expect("the test directory");
        std::fs::write(&secret, "5e1f0b3c9a7d2e4f8a6b1c0d3e5f7a9b\n").expect("write the secret");
    }
    let text = format!(
        "{SERVICE}[cluster]\nnode_id = {id}\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nsecret_file = \"{}\"\nheartbeat_ms = 100\nelection_timeout_ms = [800, 1600]\n{cluster}\n",
        dir.join(format!("node{id}")).display(),
        secret.display(),
    );
    let config = Config::parse(&text, "test").expect("node config");
    Cluster::start(&config)
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

fn kv(session: u64) -> SessionRef {
    SessionRef {
        service: "kv".into(),
        session,
    }
}

/// Polls until `node`'s applied state equals `want` (or panics naming what differs).
async fn converge(node: &Cluster, want: &ControlState) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let have = node.local();
        if *have == *want {
            assert_eq!(have.tables().sessions, want.tables().sessions);
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "node {} did not converge within {CONVERGE:?}: generation {} vs {}, {} vs {} sessions",
                node.id(),
                have.generation,
                want.generation,
                have.sessions.len(),
                want.sessions.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A burst of re-placements: `writers` concurrent writers (group-committed) plus one tick's
/// worth as one batch entry.
async fn burst(via: &Arc<Cluster>, round: u64) {
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let via = via.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                let s = w * 10 + i;
                let b = (s + round) % 4 + 1;
                via.write(Command::Place {
                    session: kv(s),
                    backends: vec![b as u32, (b % 4 + 1) as u32],
                })
                .await
                .unwrap_or_else(|e| panic!("placing {s}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let commands = (1000..1200u64)
        .map(|s| Command::Place {
            session: kv(s),
            backends: vec![((s + round) % 4 + 1) as u32],
        })
        .collect();
    let r = via
        .write(Command::batch(commands))
        .await
        .expect("one tick's placements");
    assert_eq!(r.each.len(), 200);
    assert!(r.each.iter().all(Result::is_ok), "{:?}", r.each);
}

#[test]
fn learners_apply_what_the_voters_commit_through_a_leader_kill() {
    let dir = std::env::temp_dir().join(format!("shardline-e2e-learners-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = std::time::Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let ports: Vec<u16> = (0..VOTERS + LEARNERS).map(|_| port()).collect();
            let members: Vec<String> = (0..VOTERS as usize)
                .map(|i| format!("{{ id = {}, addr = \"127.0.0.1:{}\" }}", i + 1, ports[i]))
                .collect();
            let membership = format!("members = [{}]", members.join(", "));
            let mut voters = Vec::new();
            for id in 1..=VOTERS {
                voters.push(node(&dir, id, ports[id as usize - 1], &membership).await);
            }
            let leader = leader_among(&voters, CONVERGE).await;
            let tables = Config::parse(&format!("{SERVICE}{}", backends()), "test").unwrap();
            leader
                .write(Command::LoadConfig(ConfigTables::of(&tables)))
                .await
                .expect("loading the tables");
            let mut learners = Vec::new();
            for id in VOTERS + 1..=VOTERS + LEARNERS {
                let port = ports[id as usize - 1];
                learners.push(node(&dir, id, port, "join = true").await);
                leader
                    .add_member(id, format!("127.0.0.1:{port}"), false)
                    .await
                    .unwrap_or_else(|e| panic!("adding learner {id}: {e}"));
            }
            let status = leader.status().await;
            assert_eq!(status.members.len() as u64, VOTERS + LEARNERS);
            assert_eq!(
                status.members.iter().filter(|m| m.voter).count() as u64,
                VOTERS,
                "learners must not vote: {:?}",
                status.members
            );
            for l in &learners {
                assert_eq!(l.status().await.role, "learner");
            }

            // A burst, through the leader and through a follower.
            burst(&leader, 0).await;
            let follower = voters
                .iter()
                .find(|v| v.id() != leader.id())
                .unwrap()
                .clone();
            burst(&follower, 1).await;
            let want = leader.read().await.expect("leader read");
            assert_eq!(want.sessions.len(), 160 + 200);
            for l in &learners {
                converge(l, &want).await;
            }

            // Kill the leader: the other voters elect one, the learners follow it.
            leader.shutdown().await;
            let rest: Vec<_> = voters
                .iter()
                .filter(|v| v.id() != leader.id())
                .cloned()
                .collect();
            let next = leader_among(&rest, CONVERGE).await;
            assert_ne!(next.id(), leader.id());
            burst(&next, 2).await;
            let want = next.read().await.expect("new leader read");
            for n in rest.iter().chain(&learners) {
                converge(n, &want).await;
            }
            for n in rest.iter().chain(&learners) {
                n.shutdown().await;
            }
        });
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{VOTERS} voters, {LEARNERS} learners converged in {:?}",
        started.elapsed()
    );
}
