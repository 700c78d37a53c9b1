//! The peer endpoint: raft RPCs; writes, linearizable reads and membership changes (any node:
//! a follower forwards to the leader's `/cluster/leader/…` twin, which acts on that node only,
//! so a request crosses at most one hop); status, metrics and this node's applied state. Not
//! the public API: every route needs the cluster secret ([`PeerAuth`]), checked before a body
//! is read, and bodies are strict JSON of at most [`BODY_LIMIT`] bytes (AppendEntries also
//! comes binary, [`super::codec`], and is refused whole if it does not decode). Bind it to the peer
//! network anyway.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use openraft::{
    error::{InstallSnapshotError, RaftError},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Deserialize, Serialize};

use super::{codec, network, Cluster, NodeId, TypeConfig};
use crate::guard::{peers, PeerAuth, Refusal, Strict};
use crate::state::{ClusterStatus, Command, Control, ControlError, ControlState, Response};

/// Paths of the internal calls. `LEADER_*` act on the receiving node only (the forwarding
/// target); the others forward to the leader when needed.
pub mod path {
    /// POST a [`Command`](crate::state::Command): `Result<Response, ControlError>`.
    pub const WRITE: &str = "/cluster/write";
    /// POST `null`: `Result<ControlState, ControlError>`, linearizable.
    pub const READ: &str = "/cluster/read";
    /// POST an [`AddMember`](super::AddMember): `Result<(), ControlError>`.
    pub const ADD: &str = "/cluster/add";
    /// POST a node id: `Result<(), ControlError>`.
    pub const REMOVE: &str = "/cluster/remove";
    /// [`WRITE`] on this node only.
    pub const LEADER_WRITE: &str = "/cluster/leader/write";
    /// [`READ`] on this node only.
    pub const LEADER_READ: &str = "/cluster/leader/read";
    /// [`ADD`] on this node only.
    pub const LEADER_ADD: &str = "/cluster/leader/add";
    /// [`REMOVE`] on this node only.
    pub const LEADER_REMOVE: &str = "/cluster/leader/remove";
    /// GET: openraft's metrics of this node (snapshot, log indexes, replication).
    pub const METRICS: &str = "/cluster/metrics";
    /// GET: this node's [`ClusterStatus`](crate::state::ClusterStatus).
    pub const STATUS: &str = "/cluster/status";
    /// GET: this node's applied state (no round trip; may be behind the leader).
    pub const LOCAL: &str = "/cluster/local";
}

/// Largest body the peer endpoint reads, bytes: a batch of log entries or one snapshot chunk
/// (sized from this, see `Cluster::start`) as JSON.
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A node to add: id and peer address.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Node id.
    pub id: NodeId,
    /// Its peer address, `host:port`.
    pub addr: String,
    /// Promote to voter once caught up (an older peer sends none: a voter).
    #[serde(default = "voter")]
    pub voter: bool,
}

fn voter() -> bool {
    true
}

/// The peer endpoint's routes over `cluster`, open only to requests `auth` accepts.
pub fn router(cluster: Arc<Cluster>, auth: Arc<PeerAuth>) -> Router {
    Router::new()
        .route(network::path::APPEND, post(append))
        .route(network::path::APPEND_BIN, post(append_binary))
        .route(network::path::VOTE, post(vote))
        .route(network::path::SNAPSHOT, post(snapshot))
        .route(path::WRITE, post(write))
        .route(path::READ, post(read))
        .route(path::ADD, post(add))
        .route(path::REMOVE, post(remove))
        .route(path::LEADER_WRITE, post(leader_write))
        .route(path::LEADER_READ, post(leader_read))
        .route(path::LEADER_ADD, post(leader_add))
        .route(path::LEADER_REMOVE, post(leader_remove))
        .route(path::METRICS, get(metrics))
        .route(path::STATUS, get(status))
        .route(path::LOCAL, get(local))
        .fallback(|| async {
            Refusal::new(StatusCode::NOT_FOUND, "no_route", "no such peer route")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(auth, peers::require))
        .with_state(cluster)
}

type Shared = State<Arc<Cluster>>;

async fn append(
    State(c): Shared,
    Strict(req): Strict<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(c.raft.append_entries(req).await)
}

async fn append_binary(
    State(c): Shared,
    body: axum::body::Bytes,
) -> Result<Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, Refusal> {
    let req = codec::decode_append(&body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_entries",
            format!("the AppendEntries body does not decode: {e}"),
        )
    })?;
    Ok(Json(c.raft.append_entries(req).await))
}

async fn vote(
    State(c): Shared,
    Strict(req): Strict<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(c.raft.vote(req).await)
}

async fn snapshot(
    State(c): Shared,
    Strict(req): Strict<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(c.raft.install_snapshot(req).await)
}

type Answer<T> = Json<Result<T, ControlError>>;

async fn write(State(c): Shared, Strict(command): Strict<Command>) -> Answer<Response> {
    Json(c.write(command).await)
}

async fn read(State(c): Shared) -> Answer<ControlState> {
    Json(c.read().await.map(|s| (*s).clone()))
}

async fn add(State(c): Shared, Strict(m): Strict<AddMember>) -> Answer<()> {
    Json(c.add_member(m.id, m.addr, m.voter).await)
}

async fn remove(State(c): Shared, Strict(id): Strict<NodeId>) -> Answer<()> {
    Json(c.remove_member(id).await)
}

async fn leader_write(State(c): Shared, Strict(command): Strict<Command>) -> Answer<Response> {
    Json(c.write_here(command).await)
}

async fn leader_read(State(c): Shared) -> Answer<ControlState> {
    Json(c.read_here().await.map(|s| (*s).clone()))
}

async fn leader_add(State(c): Shared, Strict(m): Strict<AddMember>) -> Answer<()> {
    Json(c.add_here(m.id, m.addr, m.voter).await)
}

async fn leader_remove(State(c): Shared, Strict(id): Strict<NodeId>) -> Answer<()> {
    Json(c.remove_here(id).await)
}

async fn metrics(State(c): Shared) -> Json<openraft::RaftMetrics<NodeId, openraft::BasicNode>> {
    Json(c.raft.metrics().borrow().clone())
}

async fn status(State(c): Shared) -> Json<ClusterStatus> {
    Json(c.status().await)
}

async fn local(State(c): Shared) -> Json<ControlState> {
    Json((*c.local()).clone())
}
