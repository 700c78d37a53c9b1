//! `/v1/backends` and `/v1/services`: the backends with their health, weight and counters,
//! and the services with their placed sessions and traffic.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use axum::{extract::State, http::StatusCode, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Authorized, Body, Param};
use crate::{
    agent::health::ProbeState,
    config::{BackendConfig, ForwardMode, Protocol, SessionMode},
    state::{BackendEntry, Command, ControlState, Response},
};

pub use shardline_wire::bodies::{PoolWeight, Weight};

/// A backend as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    /// Id.
    pub id: u32,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Next hop's MAC.
    pub mac: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight in the default table now (0 while draining or unhealthy).
    pub effective_weight: u32,
    /// Passing health checks (the committed verdict every node routes by).
    pub healthy: bool,
    /// This node's probe record: verdict, since when, failures in a row (absent on a node that
    /// does not probe, or for a backend without an agent).
    #[serde(default)]
    pub probe: Option<ProbeState>,
    /// Each probing LB node's vote (node id: passes), which decides `healthy` by majority.
    #[serde(default)]
    pub votes: BTreeMap<u64, bool>,
    /// Draining.
    pub draining: bool,
    /// While draining: what the drain waits for.
    #[serde(default)]
    pub drain: Option<DrainProgress>,
    /// Packets forwarded to it (dataplane counter; absent without a dataplane).
    pub packets: Option<u64>,
    /// Bytes forwarded to it.
    pub bytes: Option<u64>,
}

/// What a drain waits for: the established flows and placed sessions still on the backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// Established flows still pinned to it in the flow table (absent without a dataplane).
    pub flows_left: Option<u64>,
    /// Sessions placed on a shard set that holds it.
    pub placed_sessions: usize,
    /// The drain timeout ended the drain: it has left every shard set and its flows are
    /// re-decided, so nothing is waited for any more.
    pub timed_out: bool,
}

/// Answer of `POST /v1/backends/{id}/drain`: the committed write and what the drain waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainView {
    /// The write.
    #[serde(flatten)]
    pub written: Response,
    /// The backend.
    pub backend: u32,
    /// What it waits for now.
    pub progress: DrainProgress,
}

/// A service as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service id (1-based, the dataplane's).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Virtual IP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: Protocol,
    /// `header`, `flow` or `quic`.
    pub mode: SessionMode,
    /// `encap` or `l2dsr`.
    pub forward: ForwardMode,
    /// The backends that serve it, with their weights and health there; `None`: every
    /// backend, through the default table.
    pub pool: Option<Vec<PoolMemberView>>,
    /// Slots of the pool's Maglev ring (0 without a pool: the default table's 65,537).
    pub ring_size: u32,
    /// Sessions placed on a shard set.
    pub placed_sessions: usize,
    /// Packets of its sessions the dataplane still tracks (an LRU: recent sessions only).
    pub packets: Option<u64>,
}

/// One backend of a service's pool as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolMemberView {
    /// Backend id.
    pub id: u32,
    /// Its weight in the service's ring as configured.
    pub weight: u32,
    /// Its weight in the ring now (0 while it is unhealthy, draining, drained or failing
    /// this service's probe).
    pub effective_weight: u32,
    /// May carry this service's traffic: passing its own checks and this service's probe.
    pub healthy: bool,
    /// Draining (everywhere).
    pub draining: bool,
    /// Failing this service's probe: out of this pool only, still serving other services.
    #[serde(default)]
    pub probe_failing: bool,
    /// This service's probe record on this member (on the node that probes, for services with
    /// a `probe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeState>,
}

/// Established flows per backend, read only when some backend drains (it walks the flow
/// table); none without a dataplane or when the read fails.
fn live_flows(api: &ApiState, state: &ControlState) -> Option<BTreeMap<u32, u64>> {
    if !state.backends.values().any(|b| b.draining) {
        return Some(BTreeMap::new());
    }
    let maps = api.maps.as_ref()?.lock().ok()?;
    maps.live_flows()
        .map_err(|e| tracing::warn!("counting the flows drains wait for: {e}"))
        .ok()
}

/// What backend `id`'s drain waits for, given the flows per backend (`None`: unknown).
fn progress(state: &ControlState, id: u32, flows: Option<&BTreeMap<u32, u64>>) -> DrainProgress {
    DrainProgress {
        flows_left: flows.map(|f| f.get(&id).copied().unwrap_or(0)),
        placed_sessions: state
            .sessions
            .values()
            .filter(|e| e.backends.contains(&id))
            .count(),
        timed_out: state.backends.get(&id).is_some_and(|b| b.drained),
    }
}

fn view(
    api: &ApiState,
    state: &ControlState,
    flows: Option<&BTreeMap<u32, u64>>,
    id: u32,
    b: &BackendEntry,
) -> BackendView {
    let counter = api
        .maps
        .as_ref()
        .and_then(|m| m.lock().ok()?.backend_counter(id).ok());
    BackendView {
        id,
        ipv4: b.config.ipv4,
        ipv6: b.config.ipv6,
        mac: b.config.mac.clone(),
        weight: b.config.weight,
        effective_weight: b.effective_weight(),
        healthy: b.healthy,
        probe: api.health.get(id),
        votes: b.votes.clone(),
        draining: b.draining,
        drain: b.draining.then(|| progress(state, id, flows)),
        packets: counter.map(|c| c.packets),
        bytes: counter.map(|c| c.bytes),
    }
}

fn find(api: &ApiState, state: &ControlState, id: u32) -> Result<BackendView, ApiError> {
    let flows = live_flows(api, state);
    state
        .backends
        .get(&id)
        .map(|b| view(api, state, flows.as_ref(), id, b))
        .ok_or_else(|| crate::state::StateError::UnknownBackend(id).into())
}

pub(super) async fn list(State(api): State<ApiState>) -> Json<Vec<BackendView>> {
    let state = api.control.local();
    let flows = live_flows(&api, &state);
    Json(
        state
            .backends
            .iter()
            .map(|(id, b)| view(&api, &state, flows.as_ref(), *id, b))
            .collect(),
    )
}

pub(super) async fn get(
    State(api): State<ApiState>,
    Param(id): Param<u32>,
) -> Result<Json<BackendView>, ApiError> {
    find(&api, &api.control.local(), id).map(Json)
}

pub(super) async fn add(
    _: Authorized,
    State(api): State<ApiState>,
    Body(config): Body<BackendConfig>,
) -> Result<(StatusCode, Json<BackendView>), ApiError> {
    let id = config.id;
    api.control.write(Command::UpsertBackend(config)).await?;
    Ok((
        StatusCode::CREATED,
        Json(find(&api, &api.control.local(), id)?),
    ))
}

pub(super) async fn remove(
    _: Authorized,
    State(api): State<ApiState>,
    Param(id): Param<u32>,
) -> Result<Json<Response>, ApiError> {
    Ok(Json(
        api.control.write(Command::RemoveBackend { id }).await?,
    ))
}

pub(super) async fn weight(
    _: Authorized,
    State(api): State<ApiState>,
    Param(id): Param<u32>,
    Body(Weight { weight }): Body<Weight>,
) -> Result<Json<Response>, ApiError> {
    Ok(Json(
        api.control.write(Command::SetWeight { id, weight }).await?,
    ))
}

pub(super) async fn drain(
    _: Authorized,
    State(api): State<ApiState>,
    Param(id): Param<u32>,
) -> Result<Json<DrainView>, ApiError> {
    let command = Command::Drain { id, draining: true };
    let written = api.control.write(command).await?;
    let state = api.control.local();
    let flows = live_flows(&api, &state);
    Ok(Json(DrainView {
        written,
        backend: id,
        progress: progress(&state, id, flows.as_ref()),
    }))
}

pub(super) async fn undrain(
    _: Authorized,
    State(api): State<ApiState>,
    Param(id): Param<u32>,
) -> Result<Json<Response>, ApiError> {
    let command = Command::Drain {
        id,
        draining: false,
    };
    Ok(Json(api.control.write(command).await?))
}

pub(super) async fn services(State(api): State<ApiState>) -> Json<Vec<ServiceView>> {
    let state = api.control.local();
    let mut packets: BTreeMap<u32, u64> = BTreeMap::new();
    let counters = api
        .maps
        .as_ref()
        .and_then(|m| m.lock().ok()?.session_counters().ok());
    for (key, c) in counters.iter().flatten() {
        *packets.entry(key.service).or_default() += c.packets;
    }
    Json(
        state
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| ServiceView {
                id: i as u32 + 1,
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                protocol: s.protocol,
                mode: s.mode,
                forward: s.forward,
                pool: state.pool(&s.name).map(|pool| {
                    pool.into_iter()
                        .map(|m| PoolMemberView {
                            id: m.id,
                            weight: m.weight,
                            effective_weight: m.effective_weight,
                            healthy: m.healthy,
                            draining: m.draining,
                            probe_failing: m.probe_failing,
                            probe: api.health.get_service(&s.name, m.id),
                        })
                        .collect()
                }),
                ring_size: s.ring_slots(),
                placed_sessions: state
                    .sessions
                    .iter()
                    .filter(|(r, e)| r.service == s.name && !e.backends.is_empty())
                    .count(),
                packets: counters
                    .as_ref()
                    .map(|_| packets.get(&(i as u32 + 1)).copied().unwrap_or(0)),
            })
            .collect(),
    )
}

pub(super) async fn join_pool(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, id)): Param<(String, u32)>,
    Body(PoolWeight { weight }): Body<PoolWeight>,
) -> Result<Json<Response>, ApiError> {
    let command = Command::JoinPool {
        service,
        id,
        weight,
    };
    Ok(Json(api.control.write(command).await?))
}

pub(super) async fn leave_pool(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, id)): Param<(String, u32)>,
) -> Result<Json<Response>, ApiError> {
    let command = Command::LeavePool { service, id };
    Ok(Json(api.control.write(command).await?))
}
