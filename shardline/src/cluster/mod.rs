//! The Raft cluster behind [`Control`]: every daemon is a node; the log carries
//! [`Command`]s, the state machine is [`ControlState`], and every node publishes each applied
//! state so its applier writes the tables into its own pinned maps.
//!
//! - [`config`]: the `[cluster]` section.
//! - [`store`]: log, vote and snapshots in redb; the state machine.
//! - [`codec`]: the binary encoding of log entries, in the store and on the wire.
//! - `recent`: the newest log entries kept decoded, so reading them back costs no decode.
//! - [`seed`]: whether a starting leader loads its configuration file into the state.
//! - [`network`]: raft RPCs to peers over HTTP.
//! - [`api`]: the peer endpoint (raft RPCs, forwarded writes and reads, status, membership).
//! - [`batch`]: group commit, so concurrent writes share log entries.
//! - `writer`: the thread that writes the log, so openraft never waits for an fsync.
//! - [`ahead`]: a large entry applied while it replicates, taken at its commit.
//!
//! Any node accepts writes: a follower forwards them to the leader. Reads are linearizable (a
//! read index confirmed by a quorum, on the leader). A daemon without a `[cluster]` section is
//! a cluster of one and needs no set-up.

pub mod ahead;
pub mod api;
pub mod batch;
pub mod codec;
pub mod network;
mod recent;
pub mod seed;
pub mod store;
mod writer;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use openraft::{
    error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError},
    BasicNode, ChangeMembers, ServerState, SnapshotPolicy,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

pub use crate::config::cluster::{default_data_dir, ClusterConfig, PeerConfig};

use crate::{
    config::Config,
    guard::PeerAuth,
    state::{
        ClusterStatus, Command, ConfigTables, Control, ControlError, ControlState, Member,
        Response, StateError,
    },
};

/// Node ids.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// shardline's Raft types: commands in, `Result<Response, StateError>` out, nodes named
    /// by their peer address.
    pub TypeConfig:
        D = Command,
        R = Result<Response, StateError>,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A Raft node of shardline's types.
pub type Raft = openraft::Raft<TypeConfig>;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store is missing, locked or damaged.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The stored snapshot does not decode.
    #[error("the raft snapshot in {path} is corrupt: {problem}; move the file away and the node rejoins from its peers")]
    Snapshot {
        /// The store's file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// openraft refused the configuration or could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The cluster secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::guard::TokenError),
    /// The peer endpoint could not bind.
    #[error("cannot listen on {addr} (cluster.listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running node: the [`Control`] handle the daemon writes through.
pub struct Cluster {
    id: NodeId,
    raft: Raft,
    states: watch::Sender<Arc<ControlState>>,
    client: reqwest::Client,
    /// How long a write or read may wait for a quorum or a leader before giving up.
    patience: Duration,
    /// Where [`Control::write`] queues its commands.
    group: batch::GroupCommit,
}

impl Cluster {
    /// Opens the store, starts the node, its peer endpoint (if `cluster.listen` is set) and
    /// bootstraps the initial membership on first start.
    pub async fn start(config: &Config) -> Result<Arc<Self>, ClusterError> {
        let cc = config.cluster();
        let data_dir = cc.data_dir(&config.pin_dir);
        let db = store::open(&data_dir)?;
        let sm = store::StateMachine::new(db.clone()).map_err(|e| ClusterError::Snapshot {
            path: data_dir.join(store::FILE).display().to_string(),
            problem: e.to_string(),
        })?;
        let states = sm.publisher();
        let ahead = sm.ahead();
        let [min, max] = cc.election_timeout_ms;
        let raft_config = openraft::Config {
            cluster_name: "shardline".into(),
            heartbeat_interval: cc.heartbeat_ms,
            election_timeout_min: min,
            election_timeout_max: max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cc.snapshot_logs),
            max_in_snapshot_log_to_keep: cc.snapshot_logs.min(1000),
            // A chunk travels as JSON (up to 4 bytes a byte): keep it well under the limit.
            snapshot_max_chunk_size: api::BODY_LIMIT as u64 / 8,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let auth = Arc::new(PeerAuth::load(&cc)?);
        if matches!(*auth, PeerAuth::Insecure) && cc.listen.is_some() {
            warn!("cluster.insecure = true: any host that reaches the peer endpoint is a peer");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .default_headers(auth.headers())
            .build()
            .map_err(|e| ClusterError::Raft(format!("http client: {e}")))?;
        let raft = Raft::new(
            cc.node_id,
            Arc::new(raft_config),
            network::Network::new(client.clone()),
            store::LogStore::new(db, ahead)
                .map_err(|e| ClusterError::Raft(format!("starting the raft log writer: {e}")))?,
            sm,
        )
        .await
        .map_err(|e| ClusterError::Raft(format!("starting node {}: {e}", cc.node_id)))?;
        let cluster = Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let me = me.clone();
            Self {
                id: cc.node_id,
                raft,
                states,
                client,
                patience: Duration::from_millis(2 * max + 3000),
                group: batch::GroupCommit::spawn(Arc::new(move |command: Command| {
                    let me = me.clone();
                    Box::pin(async move {
                        match me.upgrade() {
                            Some(cluster) => cluster.write_routed(command).await,
                            None => Err(ControlError::Unavailable("the node stopped".into())),
                        }
                    }) as batch::Commit
                })),
            }
        });
        if let Some(addr) = cc.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ClusterError::Listen { addr, source })?;
            let app = api::router(cluster.clone(), auth.clone());
            // Answers are small and awaited: send them at once, not after the peer's delayed
            // ACK (the client side, reqwest, sets TCP_NODELAY already).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    warn!("peer endpoint stopped: {e}");
                }
            });
        }
        cluster.bootstrap(&cc).await?;
        Ok(cluster)
    }

    async fn bootstrap(&self, cc: &ClusterConfig) -> Result<(), ClusterError> {
        let fatal = |e: openraft::error::Fatal<NodeId>| ClusterError::Raft(e.to_string());
        if self.raft.is_initialized().await.map_err(fatal)? {
            if self.voters() == BTreeSet::from([self.id]) {
                // Alone: no one else can win, so do not wait out an election timeout.
                self.raft.trigger().elect().await.map_err(fatal)?;
            }
            return Ok(());
        }
        if cc.join {
            info!(node = self.id, "waiting to be added to a cluster");
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = if cc.members.is_empty() {
            BTreeMap::from([(self.id, BasicNode::new(cc.advertised()))])
        } else {
            cc.members
                .iter()
                .map(|p| (p.id, BasicNode::new(p.addr.clone())))
                .collect()
        };
        info!(node = self.id, ?members, "bootstrapping the cluster");
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Raft(format!("initializing: {e}"))),
        }
    }

    /// The openraft node (metrics, triggers) for tests and benches.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node (the store stays on disk).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.membership_config.membership().voter_ids().collect()
    }

    fn addr_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    fn not_leader(&self, f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> ControlError {
        let leader = f.leader_id.and_then(|id| {
            f.leader_node
                .map(|n| n.addr)
                .or_else(|| self.addr_of(id))
                .map(|addr| (id, addr))
        });
        ControlError::NotLeader { leader }
    }

    /// Commits `command` if this node leads; never forwards.
    pub async fn write_here(&self, command: Command) -> Result<Response, ControlError> {
        let write = self.raft.client_write(command);
        match tokio::time::timeout(self.patience, write).await {
            Err(_) => Err(ControlError::Unavailable(format!(
                "not committed within {:?} (no quorum?); the outcome is unknown",
                self.patience
            ))),
            Ok(Ok(reply)) => Ok(reply.data?),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f))
            }
            Ok(Err(e)) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// A linearizable read if this node leads; never forwards.
    pub async fn read_here(&self) -> Result<Arc<ControlState>, ControlError> {
        let check = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.patience, check).await {
            Err(_) => Err(ControlError::Unavailable(format!(
                "no quorum confirmed the leader within {:?}",
                self.patience
            ))),
            Ok(Ok(_)) => Ok(self.local()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f))
            }
            Ok(Err(e)) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// Adds a learner, waits until it caught up and, if `voter`, promotes it; never forwards.
    pub async fn add_here(
        &self,
        id: NodeId,
        addr: String,
        voter: bool,
    ) -> Result<(), ControlError> {
        // A node that cannot be reached would be added as a learner that never catches up (and
        // the call would wait for it forever): check first (a node just started gets a few
        // seconds to listen), change nothing if it is not there.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let probe = self
                .client
                .get(format!("http://{addr}{}", api::path::STATUS))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await;
            match probe {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ControlError::Membership(format!(
                        "node {id} does not answer at {addr} (is its daemon running with `cluster.listen` there?): {e}"
                    )));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        let learner = self.raft.add_learner(id, BasicNode::new(addr), true).await;
        self.membership_result(learner)?;
        if !voter {
            return Ok(());
        }
        let promote = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await;
        self.membership_result(promote)
    }

    /// Removes a voter or learner; never forwards.
    pub async fn remove_here(&self, id: NodeId) -> Result<(), ControlError> {
        let change = if self.voters().contains(&id) {
            if self.voters().len() == 1 {
                return Err(ControlError::Membership(format!(
                    "node {id} is the last voter; a cluster cannot remove all of them"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if self.addr_of(id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(ControlError::Membership(format!(
                "node {id} is not a member"
            )));
        };
        let result = self.raft.change_membership(change, false).await;
        self.membership_result(result)
    }

    fn membership_result<T>(
        &self,
        result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    ) -> Result<(), ControlError> {
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f))
            }
            Err(RaftError::APIError(e)) => Err(ControlError::Membership(e.to_string())),
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// Runs `here` on this node, or on the leader through its peer endpoint at `path`, retrying
    /// while no leader is known or the request provably did not reach one.
    async fn routed<Req, Resp, F, Fut>(
        &self,
        path: &str,
        body: &Req,
        here: F,
    ) -> Result<Resp, ControlError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ControlError>>,
    {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let leader = match here().await {
                Err(ControlError::NotLeader { leader }) => leader,
                done => return done,
            };
            if let Some((_, addr)) = &leader {
                match self.forward(addr, path, body).await {
                    Ok(Err(ControlError::NotLeader { .. })) | Err(Retry) => {}
                    Ok(done) => return done,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::NotLeader { leader });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn forward<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
    ) -> Result<Result<Resp, ControlError>, Retry> {
        let reply = self
            .client
            .post(format!("http://{addr}{path}"))
            .timeout(self.patience + Duration::from_secs(1))
            .json(body)
            .send()
            .await;
        match reply {
            // Never sent: safe to try again.
            Err(e) if e.is_connect() => Err(Retry),
            Err(e) => Ok(Err(ControlError::Unavailable(format!(
                "forwarding to the leader at {addr}: {e}; the outcome is unknown"
            )))),
            Ok(reply) if !reply.status().is_success() => {
                let status = reply.status();
                let body = reply.text().await.unwrap_or_default();
                Ok(Err(ControlError::Unavailable(format!(
                    "the leader at {addr} refused the forwarded request ({status}): {body}"
                ))))
            }
            Ok(reply) => Ok(reply.json().await.unwrap_or_else(|e| {
                Err(ControlError::Unavailable(format!(
                    "bad answer from the leader at {addr}: {e}"
                )))
            })),
        }
    }

    /// Seeds the replicated state with the configuration file's tables once this node leads,
    /// when [`seed::should_seed`] says so: an empty state, or for a cluster of one a file that
    /// changed since it was last loaded. A follower leaves it to the leader.
    pub async fn seed(&self, config: &Config) -> Result<(), ControlError> {
        let alone = self.voters() == BTreeSet::from([self.id]);
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.patience * 4;
        loop {
            let m = metrics.borrow_and_update().clone();
            if m.current_leader.is_some() {
                break;
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(ControlError::Unavailable(
                    "no leader elected; is a quorum of the members up?".into(),
                ));
            }
        }
        // A fresh leader answers "not the leader" until its first entry commits: ask again.
        loop {
            if self.raft.current_leader().await != Some(self.id) {
                return Ok(());
            }
            let tables = ConfigTables::of(config);
            let seeded = match self.read_here().await {
                Ok(state) => match seed::should_seed(alone, &state, &tables) {
                    Some(reason) => self.write_here(Command::LoadConfig(tables)).await.map(
                        |_| info!(%reason, "replicated state loaded from the configuration file"),
                    ),
                    None if alone => {
                        info!(
                            "replicated state kept: the configuration file is unchanged since it \
                             was last loaded, so the changes made through the API since stay"
                        );
                        Ok(())
                    }
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            match seeded {
                Err(ControlError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                done => return done,
            }
        }
    }
}

/// The request did not reach a leader; trying again is safe.
struct Retry;

impl Cluster {
    /// Commits `command` as one entry, here or through the leader.
    async fn write_routed(&self, command: Command) -> Result<Response, ControlError> {
        self.routed(api::path::LEADER_WRITE, &command, || {
            self.write_here(command.clone())
        })
        .await
    }
}

#[async_trait]
impl Control for Cluster {
    /// Group-committed with concurrent writes ([`batch`]); a batch goes as it is.
    async fn write(&self, command: Command) -> Result<Response, ControlError> {
        match command {
            Command::Batch { .. } => self.write_routed(command).await,
            command => self.group.submit(command).await,
        }
    }

    async fn read(&self) -> Result<Arc<ControlState>, ControlError> {
        self.routed(api::path::LEADER_READ, &(), || self.read_here())
            .await
    }

    fn local(&self) -> Arc<ControlState> {
        self.states.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.states.subscribe()
    }

    async fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        ClusterStatus {
            node: self.id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader: m.current_leader,
            applied: m.last_applied.map_or(0, |l| l.index),
            members: membership
                .nodes()
                .map(|(id, node)| Member {
                    id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
        }
    }

    async fn add_member(&self, id: u64, addr: String, voter: bool) -> Result<(), ControlError> {
        let body = api::AddMember {
            id,
            addr: addr.clone(),
            voter,
        };
        self.routed(api::path::LEADER_ADD, &body, || {
            self.add_here(id, addr.clone(), voter)
        })
        .await
    }

    async fn remove_member(&self, id: u64) -> Result<(), ControlError> {
        self.routed(api::path::LEADER_REMOVE, &id, || self.remove_here(id))
            .await
    }
}
