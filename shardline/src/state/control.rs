//! The one handle everything that changes the control state writes through.
//!
//! The API, the CLI's daemon side, health checks and the predictive control loop call
//! [`Control::write`]; what stands behind it decides how a command becomes committed: a Raft
//! cluster replicates it first, [`LocalControl`] applies it at once. Either way every committed
//! state is published on a `watch` channel, and the daemon's applier writes its tables into the
//! pinned maps in generation order.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Command, ControlState, Response, StateError};

/// Why a write or a read did not happen.
#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    /// The command was committed and rejected by the state machine: nothing changed.
    #[error("rejected: {0}")]
    Rejected(#[from] StateError),
    /// This node is not the leader; writes go to `leader` (id and API address) if known.
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader {
        /// Leader's node id and address, if one is known.
        leader: Option<(u64, String)>,
    },
    /// No quorum or an I/O failure: the outcome is unknown or nothing was committed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A membership change that cannot be done (unknown node, removing the last voter, …).
    #[error("membership: {0}")]
    Membership(String),
}

/// A cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Address peers and clients reach it at (`host:port`).
    pub addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// What a node knows of its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Leader id, if known.
    pub leader: Option<u64>,
    /// Index of the last applied log entry.
    pub applied: u64,
    /// Members.
    pub members: Vec<Member>,
}

/// The control state's writer and reader.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Commits `command` and returns what applying it answered.
    async fn write(&self, command: Command) -> Result<Response, ControlError>;

    /// The state after every write acknowledged before this call (a linearizable read).
    async fn read(&self) -> Result<Arc<ControlState>, ControlError>;

    /// This node's applied state, possibly behind the leader's (no round trip).
    fn local(&self) -> Arc<ControlState>;

    /// Every state this node applies, in order (for the dataplane applier).
    fn subscribe(&self) -> watch::Receiver<Arc<ControlState>>;

    /// Cluster role, term, leader and members.
    async fn status(&self) -> ClusterStatus;

    /// Adds a node as a learner and, if `voter`, promotes it to voter once it has caught up.
    async fn add_member(&self, id: u64, addr: String, voter: bool) -> Result<(), ControlError>;

    /// Removes a node from the cluster.
    async fn remove_member(&self, id: u64) -> Result<(), ControlError>;
}

/// A cluster of one, in memory: commands apply at once. For tests and tools that need no
/// persistence; the daemon runs a (possibly single-node) Raft cluster instead.
pub struct LocalControl {
    state: Mutex<Arc<ControlState>>,
    publish: watch::Sender<Arc<ControlState>>,
}

impl LocalControl {
    /// Starts from `state`.
    pub fn new(state: ControlState) -> Self {
        let state = Arc::new(state);
        let (publish, _) = watch::channel(state.clone());
        Self {
            state: Mutex::new(state),
            publish,
        }
    }
}

#[async_trait]
impl Control for LocalControl {
    async fn write(&self, command: Command) -> Result<Response, ControlError> {
        let mut guard = self.state.lock().expect("control state lock");
        let mut next = (**guard).clone();
        let response = next.apply(&command)?;
        *guard = Arc::new(next);
        self.publish.send_replace(guard.clone());
        Ok(response)
    }

    async fn read(&self) -> Result<Arc<ControlState>, ControlError> {
        Ok(self.local())
    }

    fn local(&self) -> Arc<ControlState> {
        self.state.lock().expect("control state lock").clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.publish.subscribe()
    }

    async fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node: 1,
            role: "leader".into(),
            term: 1,
            leader: Some(1),
            applied: self.local().generation,
            members: vec![Member {
                id: 1,
                addr: String::new(),
                voter: true,
            }],
        }
    }

    async fn add_member(&self, _id: u64, _addr: String, _voter: bool) -> Result<(), ControlError> {
        Err(ControlError::Membership(
            "an in-memory control has no peers".into(),
        ))
    }

    async fn remove_member(&self, _id: u64) -> Result<(), ControlError> {
        Err(ControlError::Membership(
            "an in-memory control has no peers".into(),
        ))
    }
}
