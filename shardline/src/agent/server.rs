//! The daemon's endpoint for agents: `POST /report` (an [`AgentReport`]), `POST /register` (a
//! new backend's [`Registration`], committed as `Command::RegisterBackend`, which cannot take
//! over another backend's id or address) and `GET /` (the latest report of each backend).
//! [`router`] returns routes relative to its mount point; the daemon nests it under
//! `/v1/agents`.
//!
//! Every write is authenticated ([`AgentAuth`]): a request without a token is refused before
//! its body is read, and one whose token is not the named backend's changes nothing. Bodies
//! are strict JSON of at most [`BODY_LIMIT`] bytes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tracing::{info, warn};

use super::{AgentReport, Registration};
use crate::{
    guard::{AgentAuth, Refusal, Strict},
    state::{Command, Control, ControlError},
};

/// Largest body the agents' endpoint reads, bytes (a report or a registration is well under
/// 2 KiB).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Where the agents' reports go: the latest per backend (for probes and readers) and a
/// channel to the control loop.
pub struct AgentsHub {
    control: Arc<dyn Control>,
    auth: AgentAuth,
    reports: crossbeam_channel::Sender<AgentReport>,
    latest: Mutex<BTreeMap<u32, (Instant, AgentReport)>>,
}

impl AgentsHub {
    /// A hub committing registrations through `control` and forwarding reports to `reports`,
    /// accepting agents as `auth` says.
    pub fn new(
        control: Arc<dyn Control>,
        reports: crossbeam_channel::Sender<AgentReport>,
        auth: AgentAuth,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            auth,
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
    let writes = Router::new()
        .route("/report", post(report))
        .route("/register", post(register))
        .route_layer(axum::middleware::from_fn_with_state(hub.clone(), precheck));
    Router::new()
        .route("/", get(list))
        .merge(writes)
        .fallback(|| async {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "the agents' endpoint has POST /report, POST /register and GET /",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(hub)
}

/// Refuses a write before its body is read when no agent could be accepted.
async fn precheck(State(hub): State<Arc<AgentsHub>>, request: Request, next: Next) -> Response {
    match hub.auth.precheck(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn list(State(hub): State<Arc<AgentsHub>>) -> Json<Vec<AgentReport>> {
    Json(hub.latest().into_iter().map(|(_, r)| r).collect())
}

async fn report(
    State(hub): State<Arc<AgentsHub>>,
    headers: HeaderMap,
    Strict(report): Strict<AgentReport>,
) -> Result<StatusCode, Refusal> {
    hub.auth.check(&headers, report.backend)?;
    hub.record(report);
    Ok(StatusCode::OK)
}

async fn register(
    State(hub): State<Arc<AgentsHub>>,
    headers: HeaderMap,
    Strict(Registration { backend, services }): Strict<Registration>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let id = backend.id;
    hub.auth.check(&headers, id)?;
    let state = hub.control.local();
    if let Some(name) = services.iter().find(|n| state.service_id(n).is_none()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown_service",
            format!("no service named {name:?}"),
        ));
    }
    match hub.control.write(Command::RegisterBackend(backend)).await {
        Ok(mut r) => {
            // Join the pools it is not in yet (a member keeps the weight an operator gave it);
            // a service without a pool is served by every backend already.
            let state = hub.control.local();
            let joins: Vec<Command> = services
                .iter()
                .filter(|name| {
                    state
                        .services
                        .iter()
                        .find(|s| s.name == **name)
                        .is_some_and(|s| s.backends.is_some() && !s.served_by(id))
                })
                .map(|name| Command::JoinPool {
                    service: name.clone(),
                    id,
                    weight: None,
                })
                .collect();
            if !joins.is_empty() {
                match hub.control.write(Command::batch(joins)).await {
                    Ok(joined) => r.generation = joined.generation,
                    Err(e) => {
                        warn!(backend = id, "joining its services' pools: {e}");
                        return Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            e.to_string(),
                        ));
                    }
                }
            }
            info!(
                backend = id,
                ?services,
                "backend registered through its agent"
            );
            Ok(Json(serde_json::json!({"generation": r.generation})))
        }
        Err(e) => {
            let (status, code) = match &e {
                ControlError::Rejected(crate::state::StateError::Takeover { .. }) => {
                    (StatusCode::CONFLICT, "takeover")
                }
                ControlError::Rejected(_) => (StatusCode::BAD_REQUEST, "rejected"),
                ControlError::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            };
            warn!(backend = id, "registration refused: {e}");
            Err(Refusal::new(status, code, e.to_string()))
        }
    }
}

/// Serves [`router`] under `/v1/agents` on `listener` until the task is dropped (the daemon's
/// own listener until the main API server mounts the router).
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<AgentsHub>) -> std::io::Result<()> {
    let app = Router::new().nest("/v1/agents", router(hub));
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{header, Request},
    };
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::{
        config::Config,
        guard::agents::token_path,
        state::{ControlState, LocalControl},
    };

    const TABLES: &str = r#"
interface = "eth0"
[[backends]]
id = 1
ipv4 = "10.77.0.11"
mac = "02:77:00:00:00:11"
[[backends]]
id = 2
ipv4 = "10.77.0.12"
mac = "02:77:00:00:00:12"
"#;

    struct Fixture {
        router: Router,
        control: Arc<LocalControl>,
        hub: Arc<AgentsHub>,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str, auth: impl FnOnce(&std::path::Path) -> AgentAuth) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("shardline-agents-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (id, token) in [(1, "token-one"), (2, "token-two"), (3, "token-three")] {
            std::fs::write(token_path(&dir, id), token).unwrap();
        }
        let config = Config::parse(TABLES, "test").unwrap();
        let control = Arc::new(LocalControl::new(ControlState::from_config(&config)));
        let (tx, _rx) = crossbeam_channel::bounded(16);
        let hub = AgentsHub::new(control.clone(), tx, auth(&dir));
        let router = Router::new().nest("/v1/agents", router(hub.clone()));
        Fixture {
            router,
            control,
            hub,
            dir,
        }
    }

    async fn post(f: &Fixture, path: &str, token: Option<&str>, body: String) -> (u16, Value) {
        let mut req = Request::post(format!("/v1/agents/{path}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = f
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        crate::guard::testing::answer(response).await
    }

    fn backend(id: u32, ipv4: &str) -> String {
        json!({"id": id, "ipv4": ipv4, "mac": "02:77:00:00:00:fa", "weight": 50}).to_string()
    }

    fn report(id: u32) -> Value {
        json!({"backend": id, "agent": "10.77.0.11:7071", "resources": {"cpu": 0.5, "mem_used": 1, "mem_total": 2, "rx_bps": 0.0, "tx_bps": 0.0}, "app": null, "saturated": true})
    }

    fn code(answer: &(u16, Value)) -> (u16, &str) {
        (answer.0, answer.1["error"]["code"].as_str().unwrap_or("-"))
    }

    #[tokio::test]
    async fn strangers_and_other_backends_agents_change_nothing() {
        let f = fixture("strangers", |d| AgentAuth::Tokens(d.to_owned()));
        let before = f.control.local();
        // The issue's request: backend 1 moved to the attacker's address, weight 50.
        let attack = backend(1, "10.77.0.250");
        for (token, expected) in [
            (None, (401, "missing_token")),
            (Some("wrong"), (401, "bad_token")),
            (Some("token-two"), (401, "bad_token")),
            (Some("token-one"), (409, "takeover")),
        ] {
            let answer = post(&f, "register", token, attack.clone()).await;
            assert_eq!(code(&answer), expected, "{token:?}: {answer:?}");
        }
        // A new id at backend 2's address, with the new id's own token.
        let answer = post(
            &f,
            "register",
            Some("token-three"),
            backend(3, "10.77.0.12"),
        )
        .await;
        assert_eq!(code(&answer), (409, "takeover"), "{answer:?}");
        assert!(answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("backend 2"));
        // Reports for backend 1 without its token.
        for token in [None, Some("wrong"), Some("token-two")] {
            let answer = post(&f, "report", token, report(1).to_string()).await;
            assert_eq!(answer.0, 401, "{token:?}: {answer:?}");
        }
        assert_eq!(
            f.control.local(),
            before,
            "a refused request changed the state"
        );
        assert!(f.hub.latest().is_empty(), "a refused report was recorded");

        // The right tokens: a new backend registers, backend 1 reports.
        let answer = post(
            &f,
            "register",
            Some("token-three"),
            backend(3, "10.77.0.13"),
        )
        .await;
        assert_eq!(answer.0, 200, "{answer:?}");
        assert!(answer.1["generation"].as_u64().is_some());
        assert!(f.control.local().backends.contains_key(&3));
        let answer = post(&f, "report", Some("token-one"), report(1).to_string()).await;
        assert_eq!(answer.0, 200, "{answer:?}");
        assert_eq!(f.hub.latest().len(), 1);
    }

    #[tokio::test]
    async fn a_report_may_carry_a_capacity_per_service_and_one_without_is_as_before() {
        let f = fixture("per-service", |d| AgentAuth::Tokens(d.to_owned()));
        let mut r = report(1);
        r["app"] = json!({"load": 1.0, "capacity": 2000.0, "saturated": false,
                          "services": {"kv": 500.0, "web": 0.0}});
        let answer = post(&f, "report", Some("token-one"), r.to_string()).await;
        assert_eq!(answer.0, 200, "{answer:?}");
        let (_, got) = f.hub.latest().pop().expect("recorded");
        assert_eq!(got.capacity(), Some(2000.0));
        assert_eq!(got.service_capacity("kv"), Some(500.0));
        assert_eq!(got.service_capacity("web"), None, "0 is no capacity");
        assert_eq!(got.service_capacity("dns"), None);
        // Without per-service capacities the report is the one agents always sent.
        let mut plain = got.clone();
        plain.app.as_mut().expect("app").services.clear();
        let wire = serde_json::to_value(&plain).unwrap();
        assert!(wire["app"].get("services").is_none(), "{wire}");
    }

    #[tokio::test]
    async fn unknown_fields_and_oversized_bodies_are_refused_as_json() {
        let f = fixture("bodies", |d| AgentAuth::Tokens(d.to_owned()));
        let before = f.control.local();
        let mut extra: Value = serde_json::from_str(&backend(3, "10.77.0.13")).unwrap();
        extra["owner"] = json!("me");
        let answer = post(&f, "register", Some("token-three"), extra.to_string()).await;
        assert_eq!(code(&answer), (422, "unknown_field"), "{answer:?}");
        assert!(answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("owner"));
        let mut nested = report(1);
        nested["resources"]["gpu"] = json!(1.0);
        let answer = post(&f, "report", Some("token-one"), nested.to_string()).await;
        assert_eq!(code(&answer), (422, "unknown_field"), "{answer:?}");
        let mut app = report(1);
        app["app"] = json!({"load": 1.0, "capacity": 2.0, "saturated": false, "extra": 1});
        let answer = post(&f, "report", Some("token-one"), app.to_string()).await;
        assert_eq!(code(&answer), (422, "unknown_field"), "{answer:?}");
        let huge = format!("{{\"id\": 3, \"mac\": \"{}\"}}", "a".repeat(BODY_LIMIT));
        let answer = post(&f, "register", Some("token-three"), huge).await;
        assert_eq!(code(&answer), (413, "body_too_large"), "{answer:?}");
        let answer = post(&f, "register", Some("token-three"), "{not json".into()).await;
        assert_eq!(code(&answer), (400, "bad_json"), "{answer:?}");
        assert_eq!(f.control.local(), before);
        assert!(f.hub.latest().is_empty());
    }

    #[tokio::test]
    async fn unconfigured_refuses_everyone_and_insecure_still_refuses_takeovers() {
        let f = fixture("unconfigured", |_| AgentAuth::Unconfigured);
        let answer = post(
            &f,
            "register",
            Some("token-three"),
            backend(3, "10.77.0.13"),
        )
        .await;
        assert_eq!(
            code(&answer),
            (401, "agent_auth_unconfigured"),
            "{answer:?}"
        );
        assert!(answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent_token_dir"));
        let answer = post(&f, "report", None, report(1).to_string()).await;
        assert_eq!(answer.0, 401);
        assert!(!f.control.local().backends.contains_key(&3));

        let f = fixture("insecure", |_| AgentAuth::Insecure);
        let answer = post(&f, "register", None, backend(1, "10.77.0.250")).await;
        assert_eq!(code(&answer), (409, "takeover"), "{answer:?}");
        let answer = post(&f, "register", None, backend(3, "10.77.0.13")).await;
        assert_eq!(answer.0, 200, "{answer:?}");
    }
}
