//! `/v1/status` and `/v1/cluster`: what this node is, what the cluster looks like, and
//! membership changes.

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Authorized, Body, Param};
use crate::state::ClusterStatus;

pub use shardline_wire::bodies::NewMember;

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// shardline's version.
    pub version: String,
    /// Seconds since the API started.
    pub uptime_secs: u64,
    /// Whether writes are possible (a token is configured).
    pub writable: bool,
    /// This node's view of the cluster.
    pub cluster: ClusterStatus,
    /// The control state's generation (count of routing changes applied).
    pub generation: u64,
    /// Services configured.
    pub services: usize,
    /// Backends known.
    pub backends: usize,
    /// Backends passing health checks.
    pub healthy_backends: usize,
    /// Backends draining.
    pub draining_backends: usize,
    /// Sessions placed on a shard set.
    pub placed_sessions: usize,
    /// Sessions the control loop is forecasting.
    pub forecast_sessions: usize,
    /// Dataplane packets by outcome (absent without a dataplane).
    pub dataplane: Option<DataplaneTotals>,
}

/// Dataplane packets by what happened to them, summed over reasons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneTotals {
    /// Sent to a backend.
    pub forwarded: u64,
    /// Passed to the kernel stack (not for a service).
    pub passed: u64,
    /// Dropped (malformed, no backend, …).
    pub dropped: u64,
}

pub(super) async fn status(State(api): State<ApiState>) -> Json<StatusView> {
    let state = api.control.local();
    let cluster = api.control.status().await;
    let dataplane = api.maps.as_ref().and_then(|m| {
        use shardline_common::verdict::Action;
        let counts = m.lock().ok()?.reason_counts().ok()?;
        let mut t = DataplaneTotals::default();
        for (reason, n) in counts {
            match reason.action() {
                Action::Tx | Action::Redirect => t.forwarded += n,
                Action::Pass => t.passed += n,
                _ => t.dropped += n,
            }
        }
        Some(t)
    });
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: api.started.elapsed().as_secs(),
        writable: api.token().is_some(),
        cluster,
        generation: state.generation,
        services: state.services.len(),
        backends: state.backends.len(),
        healthy_backends: state.backends.values().filter(|b| b.healthy).count(),
        draining_backends: state.backends.values().filter(|b| b.draining).count(),
        placed_sessions: state
            .sessions
            .values()
            .filter(|e| !e.backends.is_empty())
            .count(),
        forecast_sessions: api.insights.count(),
        dataplane,
    })
}

pub(super) async fn cluster(State(api): State<ApiState>) -> Json<ClusterStatus> {
    Json(api.control.status().await)
}

pub(super) async fn add_member(
    _: Authorized,
    State(api): State<ApiState>,
    Body(member): Body<NewMember>,
) -> Result<Json<ClusterStatus>, ApiError> {
    api.control
        .add_member(member.id, member.addr, member.voter)
        .await?;
    Ok(Json(api.control.status().await))
}

pub(super) async fn remove_member(
    _: Authorized,
    State(api): State<ApiState>,
    Param(id): Param<u64>,
) -> Result<Json<ClusterStatus>, ApiError> {
    api.control.remove_member(id).await?;
    Ok(Json(api.control.status().await))
}
