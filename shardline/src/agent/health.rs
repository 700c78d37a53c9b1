//! The daemon's health checker: every interval it probes each backend's agent (`GET /health`)
//! and commits `SetHealth` when the answer changes what the control state says. An unhealthy
//! backend leaves every shard set and the default table at once (`ControlState::tables`); the
//! control loop then re-shards its sessions onto healthy backends.
//!
//! Backends without a known agent address are not checked (their health is whatever the
//! configuration and the API say). Only the leader checks: followers would race it.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::server::AgentsHub;
use crate::{
    http,
    state::{Command, Control},
};

/// Probes every `interval` with a timeout of half of it, so a dead backend is marked within
/// one interval of its death. Runs until the task is dropped.
pub async fn run(control: Arc<dyn Control>, hub: Arc<AgentsHub>, interval: Duration) {
    let timeout = interval / 2;
    let client = http::Client::new();
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if control.status().await.role != "leader" {
            continue;
        }
        let state = control.local();
        let mut probes = JoinSet::new();
        for (id, backend) in &state.backends {
            let Some(addr) = backend.config.agent.clone().or_else(|| hub.agent_of(*id)) else {
                continue;
            };
            let (id, was) = (*id, backend.healthy);
            let client = client.clone();
            probes.spawn(async move {
                let answer = client.get(&format!("http://{addr}/health"), timeout).await;
                let result = match answer {
                    Ok(answer) if answer.status == 200 => Ok(()),
                    Ok(answer) => Err(format!("status {}", answer.status)),
                    Err(e) => Err(e.to_string()),
                };
                (id, was, result)
            });
        }
        while let Some(Ok((id, was, result))) = probes.join_next().await {
            let healthy = result.is_ok();
            if healthy == was {
                continue;
            }
            match &result {
                Err(e) => warn!(
                    backend = id,
                    "health check failed ({e}); removing it from every shard set"
                ),
                Ok(()) => info!(backend = id, "health check passes again"),
            }
            if let Err(e) = control.write(Command::SetHealth { id, healthy }).await {
                warn!(backend = id, "committing its health: {e}");
            }
        }
    }
}
