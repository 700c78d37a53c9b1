//! Commands on the control state: the entries of the replicated log.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shardline_common::consts::MAX_SHARDS;

use super::{ConfigTables, SessionMeta, SessionRef, SESSION_STATE_LIMIT};
use crate::config::BackendConfig;

/// One change to the control state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Replaces services, backends and static placements with a configuration file's. Backends
    /// keep their health; dynamic placements of services that still exist, session metadata
    /// and critical state are kept.
    LoadConfig(ConfigTables),
    /// Adds a backend or replaces its addresses and weight.
    UpsertBackend(BackendConfig),
    /// A backend registering through its agent: as [`Command::UpsertBackend`], but it cannot
    /// take over: an existing id keeps its addresses (moving a backend is an operator's
    /// `UpsertBackend`), and no other backend may already have either address.
    RegisterBackend(BackendConfig),
    /// Sets a backend's weight in the default table.
    SetWeight {
        /// Backend id.
        id: u32,
        /// New weight.
        weight: u32,
    },
    /// Marks a backend healthy or not (health checks).
    SetHealth {
        /// Backend id.
        id: u32,
        /// Passing its checks.
        healthy: bool,
    },
    /// One LB node's health verdict on a backend: the backend is down fleet-wide while more
    /// than half of the nodes voting on it see it down (a single node decides alone).
    HealthVote {
        /// The voting node's Raft id.
        node: u64,
        /// Backend id.
        id: u32,
        /// Whether the node's probes pass.
        healthy: bool,
        /// The cluster's LB nodes (voters and learners) as the voter sees them: votes of
        /// other nodes are forgotten.
        members: Vec<u64>,
    },
    /// One LB node's verdict on a pool member's probe of one service: the member fails the
    /// service (as [`Command::SetServiceHealth`] says) while more than half of the nodes voting
    /// on it see the probe fail.
    ServiceHealthVote {
        /// The voting node.
        node: u64,
        /// Service name (a service with a pool holding the backend).
        service: String,
        /// Backend id.
        id: u32,
        /// This node's probes pass.
        healthy: bool,
        /// The cluster's LB nodes (voters and learners) as the voter sees them: votes of
        /// other nodes are forgotten.
        members: Vec<u64>,
    },
    /// Marks a backend passing or failing one pooled service's probe: failing, it leaves that
    /// service's ring, shard sets and membership (its flows there are re-decided) and keeps
    /// serving every other service.
    SetServiceHealth {
        /// Service name (a service with a pool holding the backend).
        service: String,
        /// Backend id.
        id: u32,
        /// Passing the service's probe.
        healthy: bool,
    },
    /// Starts or stops draining a backend.
    Drain {
        /// Backend id.
        id: u32,
        /// Draining or not.
        draining: bool,
    },
    /// A draining backend's drain timeout passed: it leaves every shard set and its flows are
    /// re-decided. Does nothing to a backend no longer draining.
    DrainTimedOut {
        /// Backend id.
        id: u32,
    },
    /// Removes a backend; it leaves every shard set.
    RemoveBackend {
        /// Backend id.
        id: u32,
    },
    /// Puts backend `id` in service `service`'s pool at `weight` (`None`: its own weight), or
    /// changes its weight there (0 drains it from this service only). A service without a pool
    /// gets one holding this backend alone.
    JoinPool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
        /// Weight in the service's ring.
        weight: Option<u32>,
    },
    /// Takes backend `id` out of service `service`'s pool; the service's sessions leave it.
    LeavePool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
    },
    /// Places a session on a shard set (a re-shard).
    Place {
        /// The session.
        session: SessionRef,
        /// 1 to 16 distinct backend ids.
        backends: Vec<u32>,
    },
    /// Returns a session to the default table.
    Unplace {
        /// The session.
        session: SessionRef,
    },
    /// Sets a session's class and labels.
    SetMeta {
        /// The session.
        session: SessionRef,
        /// Its metadata.
        meta: SessionMeta,
    },
    /// Writes one key of a session's critical state.
    PutState {
        /// The session.
        session: SessionRef,
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Deletes one key of a session's critical state.
    DeleteState {
        /// The session.
        session: SessionRef,
        /// Key.
        key: String,
    },
    /// Several commands in one log entry, applied in order. Each one is all-or-nothing on its
    /// own: a rejected command changes nothing and the rest still apply (its error is its
    /// slot of [`Response::each`]). The entry commits as a whole, so no node ever holds half a
    /// batch. A batch inside a batch is rejected ([`StateError::NestedBatch`]).
    Batch {
        /// The commands, in the order they apply. Shared: the log store, each follower's
        /// replication, the apply ahead and the state machine all hold the entry's command,
        /// and a tick's 10,000 placements were copied (and freed) at each of them.
        #[serde(with = "shared")]
        commands: Arc<Vec<Command>>,
    },
}

/// A batch's commands (de)serialized as the list they share.
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Command;

    pub fn serialize<S: Serializer>(commands: &Arc<Vec<Command>>, s: S) -> Result<S::Ok, S::Error> {
        commands.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<Command>>, D::Error> {
        Vec::deserialize(d).map(Arc::new)
    }
}

impl Command {
    /// A batch of `commands` ([`Command::Batch`]).
    pub fn batch(commands: Vec<Command>) -> Self {
        Command::Batch {
            commands: Arc::new(commands),
        }
    }

    /// Whether applying it can change the dataplane tables.
    pub fn routes(&self) -> bool {
        match self {
            Command::SetMeta { .. } | Command::PutState { .. } | Command::DeleteState { .. } => {
                false
            }
            Command::Batch { commands } => commands.iter().any(Command::routes),
            _ => true,
        }
    }

    /// The checks that need no state, so a write that can never apply is refused before it
    /// takes a place in a shared log entry (a group commit) and makes that entry large: a key
    /// and value over [`SESSION_STATE_LIMIT`] on their own. Applying checks again, with
    /// everything else.
    pub fn check(&self) -> Result<(), StateError> {
        match self {
            Command::PutState {
                session,
                key,
                value,
            } if key.len() + value.len() > SESSION_STATE_LIMIT => Err(StateError::StateTooLarge {
                session: session.to_string(),
                bytes: key.len() + value.len(),
                limit: SESSION_STATE_LIMIT,
            }),
            _ => Ok(()),
        }
    }
}

/// What an applied command answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The state's generation after the command.
    pub generation: u64,
    /// For `Place`: the session's placement generation.
    pub placement: Option<u64>,
    /// For `Batch`: one result per command, in order (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub each: Vec<Result<Response, StateError>>,
}

/// Why a command was rejected (the state is unchanged).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// No service has this name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// No backend has this id.
    #[error("unknown backend {0}")]
    UnknownBackend(u32),
    /// A backend id outside `0..4096`.
    #[error("backend id {0} is out of range (0..4096)")]
    BadBackendId(u32),
    /// A shard set must have 1 to 16 distinct backends.
    #[error("a shard set needs 1 to {MAX_SHARDS} distinct backends, got {0:?}")]
    BadShardSet(Vec<u32>),
    /// A session's critical state would exceed its limit.
    #[error("session {session} would hold {bytes} bytes of state; the limit is {limit}")]
    StateTooLarge {
        /// The session, `service/number`.
        session: String,
        /// Bytes it would hold.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A backend needs at least one address and a valid MAC.
    #[error("backend {id}: {problem}")]
    BadBackend {
        /// Backend id.
        id: u32,
        /// What is wrong.
        problem: String,
    },
    /// A registration would take over another backend's id or address.
    #[error("registering backend {id}: {problem}")]
    Takeover {
        /// The id registering.
        id: u32,
        /// Whose id or address it would take.
        problem: String,
    },
    /// A shard set names a backend outside its service's pool.
    #[error("backend {id} is not in the pool of service {service:?}")]
    OutsidePool {
        /// Service name.
        service: String,
        /// Backend id.
        id: u32,
    },
    /// The service has no pool to leave (every backend serves it).
    #[error("service {0:?} has no pool (every backend serves it); `JoinPool` makes one")]
    NoPool(String),
    /// A health vote from a node outside the cluster's members.
    #[error("node {0} is not a member of the cluster, so it cannot vote on health")]
    NotAMember(u64),
    /// A `Batch` holds only plain commands.
    #[error("a batch cannot contain a batch; flatten it")]
    NestedBatch,
}
