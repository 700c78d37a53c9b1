//! The daemon's endpoint for agents: `POST /report` (an [`AgentReport`]), `POST /register` (a
//! new backend's [`BackendConfig`], committed as `Command::UpsertBackend`) and `GET /` (the
//! latest report of each backend). [`router`] returns routes relative to its mount point; the
//! daemon nests it under `/v1/agents`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use tracing::{info, warn};

use super::AgentReport;
use crate::{
    config::BackendConfig,
    state::{Command, Control, ControlError},
};

/// Where the agents' reports go: the latest per backend (for probes and readers) and a
/// channel to the control loop.
pub struct AgentsHub {
    control: Arc<dyn Control>,
    reports: crossbeam_channel::Sender<AgentReport>,
    latest: Mutex<BTreeMap<u32, (Instant, AgentReport)>>,
}

impl AgentsHub {
    /// A hub committing registrations through `control` and forwarding reports to `reports`.
    pub fn new(
        control: Arc<dyn Control>,
        reports: crossbeam_channel::Sender<AgentReport>,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            reports,
            latest: Mutex::new(BTreeMap::new()),
        })
    }

    /// The agent address a backend's last report gave.
    pub fn agent_of(&self, backend: u32) -> Option<String> {
        self.latest
            .lock()
            .expect("agents lock")
            .get(&backend)
            .map(|(_, r)| r.agent.clone())
    }

    /// Every backend's latest report and its age.
    pub fn latest(&self) -> Vec<(std::time::Duration, AgentReport)> {
        self.latest
            .lock()
            .expect("agents lock")
            .values()
            .map(|(at, r)| (at.elapsed(), r.clone()))
            .collect()
    }

    fn record(&self, report: AgentReport) {
        let mut latest = self.latest.lock().expect("agents lock");
        let was = latest
            .get(&report.backend)
            .is_some_and(|(_, r)| r.saturated);
        if report.saturated != was {
            if report.saturated {
                warn!(backend = report.backend, app = ?report.app, "backend reports saturation");
            } else {
                info!(backend = report.backend, "backend no longer saturated");
            }
        }
        latest.insert(report.backend, (Instant::now(), report.clone()));
        drop(latest);
        // A full channel means the loop is behind: it will get the next report.
        let _ = self.reports.try_send(report);
    }
}

/// The agents' routes, to be nested under `/v1/agents`.
pub fn router(hub: Arc<AgentsHub>) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/report", post(report))
        .route("/register", post(register))
        .with_state(hub)
}

async fn list(State(hub): State<Arc<AgentsHub>>) -> Json<Vec<AgentReport>> {
    Json(hub.latest().into_iter().map(|(_, r)| r).collect())
}

async fn report(State(hub): State<Arc<AgentsHub>>, Json(report): Json<AgentReport>) -> StatusCode {
    hub.record(report);
    StatusCode::OK
}

async fn register(
    State(hub): State<Arc<AgentsHub>>,
    Json(backend): Json<BackendConfig>,
) -> (StatusCode, String) {
    let id = backend.id;
    match hub.control.write(Command::UpsertBackend(backend)).await {
        Ok(r) => {
            info!(backend = id, "backend registered through its agent");
            (
                StatusCode::OK,
                format!("{{\"generation\":{}}}", r.generation),
            )
        }
        Err(e @ ControlError::Rejected(_)) => (StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ControlError::NotLeader { .. }) => (StatusCode::MISDIRECTED_REQUEST, e.to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Serves [`router`] under `/v1/agents` on `listener` until the task is dropped (the daemon's
/// own listener until the main API server mounts the router).
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<AgentsHub>) -> std::io::Result<()> {
    let app = Router::new().nest("/v1/agents", router(hub));
    axum::serve(listener, app).await
}
