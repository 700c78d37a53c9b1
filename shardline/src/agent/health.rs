//! The daemon's health checker: it probes each backend's agent (`GET /health`), runs the
//! outcomes through the fall/rise thresholds ([`threshold`]) and commits `SetHealth` when the
//! verdict differs from what the control state says. An unhealthy backend leaves every shard
//! set and the default table at once (`ControlState::tables`); the control loop then
//! re-shards its sessions onto healthy backends.
//!
//! - [`threshold`]: the pure fall/rise state machine of one backend's probes.
//! - [`board`]: the probe records, shared with the API (`shardline backends` shows them).
//! - [`service`]: the per-service probes (`services[].probe`: TCP, UDP or HTTP), sent to the
//!   backend's address and the service port; a backend passes when its agent and every
//!   probed service answer.
//!
//! Backends without a known agent address are not checked (their health is whatever the
//! configuration and the API say). Only the leader checks: followers would race it.

pub mod board;
pub mod service;
pub mod threshold;

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tracing::{info, warn};

pub use board::HealthBoard;
pub use threshold::{ProbeState, Thresholds, Transition};

use super::server::AgentsHub;
use crate::{
    http,
    state::{Command, Control},
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
        if control.status().await.role != "leader" {
            board.retain(|_| false);
            continue;
        }
        let state = control.local();
        board.retain(|id| state.backends.contains_key(&id));
        let mut probes = JoinSet::new();
        for (id, backend) in &state.backends {
            let agent = backend.config.agent.clone().or_else(|| hub.agent_of(*id));
            let ip = backend.config.ipv4.map(std::net::IpAddr::V4);
            let services: Vec<_> = state
                .services
                .iter()
                .filter_map(|s| Some((s.probe?, std::net::SocketAddr::new(ip?, s.port))))
                .collect();
            if agent.is_none() && services.is_empty() {
                continue;
            }
            let (id, committed) = (*id, backend.healthy);
            let client = client.clone();
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
                for (kind, addr) in services {
                    if outcome.is_err() {
                        break;
                    }
                    outcome = service::probe(&client, kind, addr, period).await;
                }
                (id, committed, outcome)
            });
        }
        while let Some(Ok((id, committed, outcome))) = probes.join_next().await {
            let error = outcome.as_ref().err().cloned();
            let now_ms = unix_ms();
            let (transition, healthy) =
                board.observe(id, committed, outcome, now_ms, settings.thresholds);
            if let Some(t) = transition {
                record(&telemetry, id, t, settings.thresholds, error.as_deref());
            }
            if healthy == committed {
                continue;
            }
            if let Err(e) = control.write(Command::SetHealth { id, healthy }).await {
                warn!(backend = id, "committing its health: {e}");
            }
        }
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
            "health check failed {} times in a row (last: {}); removing it from every shard set",
            t.fall,
            error.unwrap_or("-")
        ),
        Transition::Up => info!(
            backend = id,
            rise = t.rise,
            "health check passes again ({} in a row); it is back",
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
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn a_dead_backend_is_down_within_one_interval_and_transitions_are_counted() {
        let settings = Settings {
            interval: Duration::from_millis(900),
            thresholds: Thresholds { fall: 3, rise: 2 },
        };
        assert_eq!(settings.period(), Duration::from_millis(300));
        let (board, telemetry) = (HealthBoard::default(), Telemetry::default());
        let t = settings.thresholds;
        let mut down_at = None;
        for probe in 1..=4u64 {
            let (tr, healthy) = board.observe(2, true, Err("refused".into()), probe * 300, t);
            if let Some(tr) = tr {
                record(&telemetry, 2, tr, t, Some("refused"));
                down_at = Some(probe * 300);
            }
            assert_eq!(healthy, probe < 3, "probe {probe}");
        }
        assert_eq!(
            down_at,
            Some(900),
            "down after three failures, one interval"
        );
        for probe in 5..=6u64 {
            if let (Some(tr), _) = board.observe(2, false, Ok(()), probe * 300, t) {
                record(&telemetry, 2, tr, t, None);
            }
        }
        let probe = board.get(2).expect("probed");
        assert!(probe.healthy && probe.transitions == 2 && probe.since_ms == 1800);
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for to in ["down", "up"] {
            let series = format!(
                "shardline_backend_health_transitions_total{{backend=\"2\",to=\"{to}\"}} 1"
            );
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        board.retain(|id| id != 2);
        assert_eq!(board.get(2), None, "a removed backend is forgotten");
    }
}
