//! Raft RPCs to peers over HTTP: one `reqwest` client shared by every connection (it sends the
//! cluster secret with every request), JSON bodies but for AppendEntries, which goes in the
//! log's binary encoding ([`super::codec`]; JSON to a peer that does not have that route), the peer's answer carried as
//! `Result<_, RaftError>` so a remote refusal stays typed. A peer that refuses the request
//! itself (a wrong secret, a body it will not take) answers a JSON error instead, reported as a
//! network error naming it, so a misconfigured node says why it cannot replicate.

use std::time::Duration;

use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
    BasicNode,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{codec, NodeId, TypeConfig};

/// Paths of the raft RPCs on a peer's endpoint.
pub mod path {
    /// AppendEntries as JSON (what a peer of an older version sends and takes).
    pub const APPEND: &str = "/raft/append";
    /// AppendEntries as a binary body ([`codec::encode_append`](super::super::codec)).
    pub const APPEND_BIN: &str = "/raft/append-bin";
    /// RequestVote.
    pub const VOTE: &str = "/raft/vote";
    /// One chunk of InstallSnapshot.
    pub const SNAPSHOT: &str = "/raft/snapshot";
}

/// Makes a connection per peer; all share one HTTP client (and its connection pool).
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
}

impl Network {
    /// Over `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

/// One peer.
pub struct Connection {
    client: reqwest::Client,
    target: NodeId,
    addr: String,
    /// Send AppendEntries binary; cleared for good when the peer does not know the route.
    binary: bool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
            binary: true,
        }
    }
}

/// What a body is sent as.
enum Body<'a, Req> {
    Json(&'a Req),
    Binary(Vec<u8>),
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.send(path, Body::Json(req), option).await
    }

    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        body: Body<'_, Req>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}{path}", self.addr);
        let request = self
            .client
            .post(url)
            .timeout(option.hard_ttl().max(Duration::from_millis(50)));
        let request = match body {
            Body::Json(req) => request.json(req),
            Body::Binary(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        };
        let reply = request.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        if !reply.status().is_success() {
            let status = reply.status();
            let body = reply.text().await.unwrap_or_default();
            let refused = std::io::Error::other(format!(
                "peer {} at {} refused {path} ({status}): {body}",
                self.target, self.addr
            ));
            return Err(RPCError::Network(NetworkError::new(&refused)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = reply
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Whether the peer answered that it has no binary AppendEntries route (an older version).
    async fn knows_binary(&self) -> bool {
        let url = format!("http://{}{}", self.addr, path::APPEND_BIN);
        let probe = self.client.post(url).body(Vec::new()).send().await;
        !matches!(probe, Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND)
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if self.binary {
            let body = Body::<()>::Binary(codec::encode_append(&rpc));
            match self.send(path::APPEND_BIN, body, &option).await {
                Err(RPCError::Network(_)) if !self.knows_binary().await => {
                    tracing::info!(
                        peer = self.target,
                        "the peer has no binary AppendEntries route (an older version): sending JSON"
                    );
                    self.binary = false;
                }
                done => return done,
            }
        }
        self.call(path::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(path::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(path::VOTE, &rpc, &option).await
    }
}
