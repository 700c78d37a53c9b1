//! Starts the predictive side of the daemon when `[control]` is configured: the history store,
//! the agents' endpoint, the health checker, the sampler thread and the control loop thread.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context;
use tracing::{info, warn};

use crate::{
    agent::{
        health::{self, HealthBoard},
        server::AgentsHub,
    },
    config::control::ControlConfig,
    control::history::History,
    control::insight::Insights,
    control::sample::Sampler,
    control::{self, sample::Rate, LoopHandles, StageConfigs, TickInput},
    daemon::fleet::FleetTick,
    guard::AgentAuth,
    maps::DataplaneMaps,
    state::{Control, SessionRef},
    telemetry::Telemetry,
};

/// What the running loop exposes to the rest of the daemon (the API mounts the agents' router
/// with `hub` and serves `insights` and `telemetry`).
pub struct Predict {
    /// The agents' hub (mount `crate::agent::server::router(hub)` under `/v1/agents`).
    pub hub: Arc<AgentsHub>,
    /// Per-session views.
    pub insights: Arc<Insights>,
    /// Metric families.
    pub telemetry: Arc<Telemetry>,
}

/// Starts everything; fails (without panicking) on a corrupt history when told to refuse,
/// or when the agents' address cannot be bound.
pub async fn start(
    config: &ControlConfig,
    control: Arc<dyn Control>,
    maps: Arc<Mutex<DataplaneMaps>>,
    insights: Arc<Insights>,
    telemetry: Arc<Telemetry>,
    board: Arc<HealthBoard>,
    mut fleet: FleetTick,
) -> anyhow::Result<Predict> {
    let history = match &config.history_path {
        Some(path) => {
            let (history, warning) =
                History::open(path, config.tiers(), config.history_on_corrupt)?;
            if let Some(w) = warning {
                warn!("{w}");
            }
            info!(path = %path.display(), "history store open");
            Some(history)
        }
        None => None,
    };
    let (report_tx, report_rx) = crossbeam_channel::bounded(1024);
    let (sample_tx, sample_rx) = crossbeam_channel::bounded::<TickInput>(4);
    let auth = AgentAuth::from_config(config);
    match &auth {
        AgentAuth::Tokens(dir) if !dir.is_dir() => warn!(
            "control.agent_token_dir {} is not a directory: every agent will be refused",
            dir.display()
        ),
        AgentAuth::Tokens(dir) => info!(dir = %dir.display(), "agents authenticate with per-backend tokens"),
        AgentAuth::Insecure => warn!("control.insecure_agents = true: any host that reaches the agents' endpoint may speak for any backend"),
        AgentAuth::Unconfigured if config.listen.is_some() => warn!(
            "neither control.agent_token_dir nor control.insecure_agents is set: the agents' endpoint refuses every agent"
        ),
        AgentAuth::Unconfigured => {}
    }
    let hub = AgentsHub::new(control.clone(), report_tx, auth);
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the agents' endpoint on {addr} (control.listen)"))?;
        info!(addr = %listener.local_addr()?, "agents' endpoint listening on /v1/agents");
        let hub = hub.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::agent::server::serve(listener, hub).await {
                warn!("agents' endpoint stopped: {e}");
            }
        });
    }
    tokio::spawn(health::run(
        health::Shared {
            control: control.clone(),
            hub: hub.clone(),
            board,
            telemetry: telemetry.clone(),
        },
        health::Settings {
            interval: std::time::Duration::from_millis(config.health_interval_ms),
            thresholds: health::Thresholds {
                fall: config.health_fall,
                rise: config.health_rise,
            },
        },
    ));
    tokio::spawn(crate::agent::drain::run(
        control.clone(),
        std::time::Duration::from_secs_f64(config.drain_timeout_secs),
        std::time::Duration::from_millis(config.health_interval_ms),
    ));
    control::spawn(
        config.clone(),
        LoopHandles {
            control: control.clone(),
            runtime: tokio::runtime::Handle::current(),
            insights: insights.clone(),
            telemetry: telemetry.clone(),
            history,
        },
        sample_rx,
        report_rx,
    )?;
    let tick = config.tick();
    std::thread::Builder::new()
        .name("shardline-sampler".into())
        .spawn(move || {
            let mut sampler = Sampler::new();
            let mut rates = Vec::new();
            let mut named: Vec<(SessionRef, Rate)> = Vec::new();
            let mut last = Instant::now();
            let mut next = last + tick;
            loop {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += tick;
                let now = Instant::now();
                let counters = match maps.lock().expect("maps lock").session_counters() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("reading session counters: {e}");
                        continue;
                    }
                };
                sampler.rates(&counters, now - last, &mut rates);
                last = now;
                let state = control.local();
                named.clear();
                named.extend(rates.iter().filter_map(|(k, rate)| {
                    let service = state.services.get((k.service as usize).checked_sub(1)?)?;
                    let session = SessionRef {
                        service: service.name.as_str().into(),
                        session: k.session,
                    };
                    Some((session, *rate))
                }));
                // On the leader, the whole cluster's load; on a follower, its own.
                let sampled = fleet.rates(&named, now, control::unix_ms());
                let (packets, bytes) = sampled
                    .iter()
                    .map(|(session, rate)| ((session.clone(), rate.packets), rate.bytes))
                    .unzip();
                if sample_tx
                    .send(TickInput {
                        at: now,
                        rates: packets,
                        bytes,
                    })
                    .is_err()
                {
                    return;
                }
            }
        })?;
    info!(
        tick_ms = config.tick_ms,
        horizon = config.horizon,
        "predictive control loop running"
    );
    Ok(Predict {
        hub,
        insights,
        telemetry,
    })
}
