//! Waiting on in-process Raft clusters (`shardline::cluster::Cluster`).

use std::{sync::Arc, time::Duration};

use shardline::{cluster::Cluster, state::Control};

/// The node among `nodes` that says it is the leader; panics when none does within `within`.
pub async fn leader_among(nodes: &[Arc<Cluster>], within: Duration) -> Arc<Cluster> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for n in nodes {
            if n.status().await.role == "leader" {
                return n.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader among the voters within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
