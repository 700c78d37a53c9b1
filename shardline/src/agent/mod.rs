//! `shardline agent`, the backend-side reporter, and the daemon's side of it.
//!
//! - [`resources`]: /proc and cgroup v2 readers.
//! - [`server`]: the daemon's `/v1/agents` router: reports in, registrations in.
//! - [`health`]: the daemon's health checker, probing each agent's `/health`.
//! - [`drain`]: the daemon's drain timer, ending drains after `control.drain_timeout_secs`.
//!
//! An agent runs on each backend host. Every interval it reads the host's (or its cgroup's)
//! CPU, memory and network, plus the application's own load and capacity from a small JSON
//! file the application rewrites (see [`AppLoad`]), and pushes an [`AgentReport`] to the
//! daemon. It answers `GET /health` so the daemon can tell a dead backend within an interval.
//! A new backend registers through the agent ([`AgentOptions::register`]).

pub mod drain;
pub mod health;
pub mod resources;
pub mod server;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use axum::{routing::get, Router};
use tracing::{info, warn};

use crate::http;

pub use resources::Resources;
pub use shardline_wire::agent::{AgentReport, AppLoad, Registration};

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The backend this agent reports for.
    pub backend: u32,
    /// The daemon's agents endpoint (`host:port`).
    pub daemon: String,
    /// Where to serve `/health`.
    pub listen: SocketAddr,
    /// Report interval.
    pub interval: Duration,
    /// A cgroup v2 directory to account CPU and memory of (default: the host's /proc).
    pub cgroup: Option<PathBuf>,
    /// The application's [`AppLoad`] file.
    pub load_file: Option<PathBuf>,
    /// Busy-CPU fraction above which the backend reports saturation (default: never).
    pub cpu_limit: Option<f64>,
    /// Bytes per second its network carries (default: the links' speeds,
    /// [`resources::link_capacity`]).
    pub net_capacity: Option<f64>,
    /// Register this backend with the daemon before reporting (a new backend joining), and
    /// the services it serves.
    pub register: Option<Registration>,
    /// This backend's token (`[control] agent_token_dir` on the daemon holds its twin); none
    /// for a daemon with `insecure_agents = true`.
    pub token: Option<crate::guard::Token>,
}

/// Reads an [`AppLoad`] file; a missing or half-written file is "no report".
pub fn read_app_load(path: &Path) -> Option<AppLoad> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Runs the agent until the process is stopped. `ready` is called once `/health` listens.
pub async fn run(opts: AgentOptions, ready: impl FnOnce()) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let advertised = listener.local_addr()?.to_string();
    let app = Router::new().route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("agent health server stopped: {e}");
        }
    });
    let timeout = opts.interval.max(Duration::from_millis(200));
    let client = http::Client::new().with_bearer(opts.token.clone());
    let (register_url, report_url) = (
        format!("http://{}/v1/agents/register", opts.daemon),
        format!("http://{}/v1/agents/report", opts.daemon),
    );
    if let Some(mut registration) = opts.register.clone() {
        registration.backend.agent = Some(advertised.clone());
        let backend = &registration.backend;
        loop {
            match client
                .post_json(&register_url, &registration, timeout)
                .await
            {
                Ok(answer) if answer.status == 200 => break,
                Ok(answer) => warn!(
                    status = answer.status,
                    body = %String::from_utf8_lossy(&answer.body),
                    "registration refused; retrying"
                ),
                Err(e) => warn!("registering with {}: {e}; retrying", opts.daemon),
            }
            tokio::time::sleep(opts.interval).await;
        }
        info!(backend = backend.id, "registered with the daemon");
    }
    ready();
    let source = match &opts.cgroup {
        Some(dir) => resources::Source::Cgroup(dir.clone()),
        None => resources::Source::Proc,
    };
    let mut reader = resources::Reader::new(source);
    let net_capacity = opts.net_capacity.unwrap_or_else(resources::link_capacity);
    let mut ticks = tokio::time::interval(opts.interval);
    let mut was_saturated = false;
    loop {
        ticks.tick().await;
        let resources = match reader.read() {
            Ok(r) => Resources { net_capacity, ..r },
            Err(e) => {
                warn!("reading resources: {e}");
                Resources::default()
            }
        };
        let app = opts.load_file.as_deref().and_then(read_app_load);
        let saturated = app.as_ref().is_some_and(|a| a.saturated)
            || opts.cpu_limit.is_some_and(|l| resources.cpu > l)
            || (resources.mem_total > 0
                && resources.mem_used as f64 / resources.mem_total as f64 > 0.98);
        if saturated != was_saturated {
            info!(
                backend = opts.backend,
                saturated,
                ?app,
                "saturation changed"
            );
            was_saturated = saturated;
        }
        let report = AgentReport {
            backend: opts.backend,
            agent: advertised.clone(),
            resources,
            app,
            saturated,
        };
        match client.post_json(&report_url, &report, timeout).await {
            Ok(answer) if answer.status == 200 => {}
            Ok(answer) => warn!(
                status = answer.status,
                body = %String::from_utf8_lossy(&answer.body),
                "the daemon refused a report"
            ),
            Err(e) => warn!("pushing a report to {}: {e}", opts.daemon),
        }
    }
}
