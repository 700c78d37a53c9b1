//! The daemon's health checker: it probes each backend's agent (`GET /health`), runs the
//! outcomes through the fall/rise thresholds ([`threshold`]) and commits this node's vote when
//! its verdict differs from the one it last voted. An unhealthy backend leaves every shard
//! set and the default table at once (`ControlState::tables`); the control loop then
//! re-shards its sessions onto healthy backends.
//!
//! - [`threshold`]: the pure fall/rise state machine of one backend's probes.
//! - [`board`]: the probe records, shared with the API (`shardline backends` shows them).
//! - [`service`]: the per-service probes (`services[].probe`: TCP, UDP or HTTP), sent to the
//!   backend's address and the service port, or through the data path ([`datapath`]: to the
//!   VIP, encapsulated to the backend; [`get`] is the HTTP exchange either way). A backend
//!   passes when its agent and every probed service *without a pool* answer (the default table they share cannot drop it for one of
//!   them). A pooled service is probed on its pool's members only, each verdict through its own
//!   fall/rise thresholds: failing takes the backend out of that service's pool alone, and it
//!   keeps serving every other service.
//!
//! Backends without a known agent address are not checked (their health is whatever the
//! configuration and the API say). Every LB node of a cluster probes every backend it knows an
//! agent for and commits its own verdict as a vote (`HealthVote`, the first one and then each
//! change): a backend is down fleet-wide while more than half of the nodes voting on it see it
//! down, so one node's false positive takes nothing out. A pooled service's probe of a member
//! is voted on the same way (`ServiceHealthVote`): the member leaves that service's pool while
//! more than half of the nodes voting on it see the probe fail.

pub mod board;
pub mod datapath;
pub mod get;
pub mod service;
pub mod threshold;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinSet;
use tracing::{info, warn};

pub use board::HealthBoard;
pub use service::Target;
pub use threshold::{ProbeState, Thresholds, Transition};

use self::get::HttpCheck;
use super::server::AgentsHub;
use crate::{
    config::{ServiceConfig, ServiceProbe},
    http,
    state::{BackendEntry, ClusterStatus, Command, Control},
    telemetry::{Telemetry, TransitionLabels},
};

/// How the checker probes.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `control.health_interval_ms`: a dead backend is marked down within it.
    pub interval: Duration,
    /// `control.health_fall` and `control.health_rise`.
    pub thresholds: Thresholds,
}

impl Settings {
    /// Time between two probes of a backend, which is also a probe's timeout: the interval
    /// over `fall`, so `fall` failures in a row fit in one interval.
    pub fn period(&self) -> Duration {
        (self.interval / self.thresholds.fall.max(1)).max(Duration::from_millis(5))
    }
}

/// What the checker shares with the rest of the daemon.
pub struct Shared {
    /// Commits health and tells the role.
    pub control: Arc<dyn Control>,
    /// Agent addresses of registered backends.
    pub hub: Arc<AgentsHub>,
    /// The probe records the API shows.
    pub board: Arc<HealthBoard>,
    /// Where transitions are counted.
    pub telemetry: Arc<Telemetry>,
}

/// Probes every backend every [`Settings::period`] until the task is dropped.
pub async fn run(shared: Shared, settings: Settings) {
    let Shared {
        control,
        hub,
        board,
        telemetry,
    } = shared;
    let period = settings.period();
    let client = http::Client::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let status = control.status().await;
        let Some(voter) = Voter::of(&status) else {
            board.retain(|_| false);
            continue;
        };
        let state = control.local();
        board.retain(|id| state.backends.contains_key(&id));
        board.retain_services(|service, id| {
            state.services.iter().any(|s| {
                s.name == service && s.probe.is_some() && s.backends.is_some() && s.served_by(id)
            })
        });
        let mut probes = JoinSet::new();
        for (&id, backend) in &state.backends {
            let plan = plan(&state.services, id, backend);
            let agent = backend.config.agent.clone().or_else(|| hub.agent_of(id));
            // Pooled services' verdicts are voted on too, per (service, member).
            for (service, target) in plan.pooled {
                let voted = backend
                    .service_votes
                    .get(&service)
                    .and_then(|votes| votes.get(&voter.node))
                    .copied();
                let committed = voted.unwrap_or(!backend.failing.contains(&service));
                probes.spawn(async move {
                    let outcome = target.probe(period).await;
                    Verdict::Service {
                        service,
                        id,
                        committed,
                        voted: voted.is_some(),
                        outcome,
                    }
                });
            }
            if agent.is_none() && plan.shared.is_empty() {
                continue;
            }
            // What this node voted last (none yet: it votes its first verdict, whatever it
            // is); a backend is down fleet-wide only by majority.
            let voted = backend.votes.get(&voter.node).copied();
            let committed = voted.unwrap_or(backend.healthy);
            let client = client.clone();
            let shared = plan.shared;
            probes.spawn(async move {
                let mut outcome = match agent {
                    Some(addr) => {
                        match client.get(&format!("http://{addr}/health"), period).await {
                            Ok(answer) if answer.status == 200 => Ok(()),
                            Ok(answer) => Err(format!("status {}", answer.status)),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    None => Ok(()),
                };
                for target in shared {
                    if outcome.is_err() {
                        break;
                    }
                    outcome = target.probe(period).await;
                }
                Verdict::Backend {
                    id,
                    committed,
                    voted: voted.is_some(),
                    outcome,
                }
            });
        }
        while let Some(Ok(verdict)) = probes.join_next().await {
            let now_ms = unix_ms();
            let t = settings.thresholds;
            let command = match verdict {
                Verdict::Backend {
                    id,
                    committed,
                    voted,
                    outcome,
                } => {
                    let error = outcome.as_ref().err().cloned();
                    let (transition, healthy) = board.observe(id, committed, outcome, now_ms, t);
                    if let Some(tr) = transition {
                        record(&telemetry, id, tr, t, error.as_deref());
                    }
                    // A first vote waits until this node's own probes agree with the verdict
                    // its record started from (a passing probe of a backend the fleet has down
                    // is not yet a vote either way).
                    let settled = healthy == error.is_none();
                    (healthy != committed || (!voted && settled)).then(|| Command::HealthVote {
                        node: voter.node,
                        id,
                        healthy,
                        members: voter.members.clone(),
                    })
                }
                Verdict::Service {
                    service,
                    id,
                    committed,
                    voted,
                    outcome,
                } => {
                    let error = outcome.as_ref().err().cloned();
                    let (transition, healthy) =
                        board.observe_service(&service, id, committed, outcome, now_ms, t);
                    if let Some(tr) = transition {
                        record_service(&service, id, tr, t, error.as_deref());
                    }
                    let settled = healthy == error.is_none();
                    (healthy != committed || (!voted && settled)).then(|| {
                        Command::ServiceHealthVote {
                            node: voter.node,
                            service,
                            id,
                            healthy,
                            members: voter.members.clone(),
                        }
                    })
                }
            };
            if let Some(command) = command {
                if let Err(e) = control.write(command.clone()).await {
                    warn!("committing {command:?}: {e}");
                }
            }
        }
    }
}

/// This node as a health voter: its id and the cluster's LB nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Voter {
    node: u64,
    members: Vec<u64>,
}

impl Voter {
    /// Every member of the cluster (voter or learner) probes and votes; a node that is not a
    /// member yet, or is shutting down, does not.
    fn of(status: &ClusterStatus) -> Option<Self> {
        let member = status.members.iter().any(|m| m.id == status.node);
        (member && status.role != "shutdown").then(|| Self {
            node: status.node,
            members: status.members.iter().map(|m| m.id).collect(),
        })
    }
}

/// What one probe task found.
enum Verdict {
    /// The backend's own probes: its agent and the services without a pool.
    Backend {
        id: u32,
        committed: bool,
        /// This node has voted on it before.
        voted: bool,
        outcome: Result<(), String>,
    },
    /// One pooled service's probe of one member.
    Service {
        service: String,
        id: u32,
        committed: bool,
        /// This node has voted on it before.
        voted: bool,
        outcome: Result<(), String>,
    },
}

/// The service probes one backend gets.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Probes of services without a pool: every backend serves them through the shared
    /// default table, so failing one takes the backend down everywhere.
    shared: Vec<Target>,
    /// Probes of the pooled services whose pool holds it: failing one takes it out of that
    /// pool only. Services whose pool does not hold it are not probed on it at all.
    pooled: Vec<(String, Target)>,
}

/// Which service probes backend `id` gets. A service's probe goes to the backend's address the
/// balancer encapsulates the VIP's packets to when it travels the data path (an IPv6 VIP's
/// probe is encapsulated in IPv6; an IPv4 VIP's in IPv4, or in IPv6 to a backend with only
/// IPv6, as `shardline_common::encap::outer_v6` picks), else straight to the backend's IPv4
/// address (its IPv6 one when it has no IPv4); a backend without a usable address is not
/// probed for the service.
fn plan(services: &[ServiceConfig], id: u32, backend: &BackendEntry) -> Plan {
    let mut plan = Plan::default();
    let (v4, v6) = (backend.config.ipv4, backend.config.ipv6);
    // Validated with the configuration; a MAC that does not parse cannot be steered to.
    let mac = crate::config::parse_mac(&backend.config.mac).unwrap_or_default();
    for s in services {
        let Some(kind) = s.probe else { continue };
        let http = (kind == ServiceProbe::Http).then(|| HttpCheck::of(s));
        let on_data_path = match s.vip {
            IpAddr::V4(_) if s.probes_on_data_path() => v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)),
            IpAddr::V6(_) if s.probes_on_data_path() => v6.map(IpAddr::V6),
            _ => None,
        };
        let target = match on_data_path {
            Some(ip) => Target {
                kind,
                addr: SocketAddr::new(ip, s.port),
                via_vip: Some(SocketAddr::new(s.vip, s.port)),
                http,
                mac,
            },
            None => {
                let Some(ip) = v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)) else {
                    continue;
                };
                Target {
                    kind,
                    addr: SocketAddr::new(ip, s.port),
                    via_vip: None,
                    http,
                    mac,
                }
            }
        };
        match &s.backends {
            None => plan.shared.push(target),
            Some(_) if s.served_by(id) => plan.pooled.push((s.name.clone(), target)),
            Some(_) => {}
        }
    }
    plan
}

/// Logs a pool member's transition for one service.
fn record_service(
    service: &str,
    id: u32,
    transition: Transition,
    t: Thresholds,
    error: Option<&str>,
) {
    match transition {
        Transition::Down => warn!(
            backend = id,
            service,
            "service probe failed {} times in a row (last: {}); out of this service's pool only",
            t.fall,
            error.unwrap_or("-")
        ),
        Transition::Up => info!(
            backend = id,
            service,
            "service probe passes again ({} in a row); back in this service's pool",
            t.rise
        ),
    }
}

/// Logs a transition and counts it in `shardline_backend_health_transitions_total`.
fn record(
    telemetry: &Telemetry,
    id: u32,
    transition: Transition,
    t: Thresholds,
    error: Option<&str>,
) {
    match transition {
        Transition::Down => warn!(
            backend = id,
            fall = t.fall,
            "health check failed {} times in a row (last: {}); this node votes it down (it leaves every shard set once most probing LB nodes agree)",
            t.fall,
            error.unwrap_or("-")
        ),
        Transition::Up => info!(
            backend = id,
            rise = t.rise,
            "health check passes again ({} in a row); this node votes it up",
            t.rise
        ),
    }
    telemetry
        .health_transitions
        .get_or_create(&TransitionLabels {
            backend: id.to_string(),
            to: transition.to().into(),
        })
        .inc();
}

/// Now as Unix milliseconds (0 on a clock before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
