//! The daemon's HTTP API (axum): versioned JSON under `/v1`, `/metrics` for Prometheus and
//! its own OpenAPI description. Reads come from the control state, the control loop's
//! insights and the dataplane's counters; every write goes through [`Control::write`], so a
//! rejected request changes nothing and a cluster replicates what is accepted.
//!
//! - [`error`]: the JSON error shape and the status each failure maps to.
//! - [`auth`]: the bearer token guarding writes and critical-state reads.
//! - [`backends`], [`sessions`], [`cluster`]: the resources; [`owners`]: a key's owner now
//!   and before the last re-shard (the handoff).
//! - [`metrics`]: `/metrics` (the daemon's families plus dataplane counters read at scrape).
//! - [`peer_rates`]: `/cluster/rates` on the peer endpoint (not this router): the followers'
//!   per-session rates, which the leader's loop sums.
//! - [`openapi`]: the description served at `/v1/openapi.json`, built from [`routes`].
//! - [`views`]: every JSON shape it answers with or takes, the ones the operator CLI parses.
//!
//! Routes are one table ([`routes`]): the router and the OpenAPI description are both built
//! from it, so neither can list a route the other lacks.

pub mod auth;
pub mod backends;
pub mod cluster;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod owners;
pub mod peer_rates;
pub mod sessions;
pub mod views;

use std::{
    future::Future,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use axum::{
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request},
    handler::Handler,
    http::{request::Parts, Method, StatusCode},
    middleware::Next,
    response::Response,
    routing::{on, MethodFilter, MethodRouter},
    Json, Router,
};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

pub use auth::{Authorized, Token};
pub use error::ApiError;

use crate::{
    agent::health::HealthBoard, control::insight::Insights, maps::DataplaneMaps,
    reshard::board::HandoffBoard, state::Control, telemetry::Telemetry,
};

/// What the API serves from. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

/// The parts of [`ApiState`].
pub struct Shared {
    /// The control state's writer and reader.
    pub control: Arc<dyn Control>,
    /// The control loop's per-session views.
    pub insights: Arc<Insights>,
    /// The health checker's probe records.
    pub health: Arc<HealthBoard>,
    /// The handoffs in force, as the applier published them.
    pub handoffs: Arc<HandoffBoard>,
    /// The dataplane's maps, for counters (none when serving without a dataplane, in tests).
    pub maps: Option<Arc<Mutex<DataplaneMaps>>>,
    token: RwLock<Option<Token>>,
    metrics: metrics::Metrics,
    started: Instant,
}

impl ApiState {
    /// Serves `control`, `insights`, the probe records in `health`, the open `handoffs` and
    /// `telemetry`'s families, plus `maps`' counters if given. Without a `token` the API is
    /// read-only.
    pub fn new(
        control: Arc<dyn Control>,
        insights: Arc<Insights>,
        health: Arc<HealthBoard>,
        handoffs: Arc<HandoffBoard>,
        telemetry: &Telemetry,
        maps: Option<Arc<Mutex<DataplaneMaps>>>,
        token: Option<Token>,
    ) -> Self {
        let metrics = metrics::Metrics::new(telemetry, control.clone(), maps.clone());
        Self(Arc::new(Shared {
            control,
            insights,
            health,
            handoffs,
            maps,
            token: RwLock::new(token),
            metrics,
            started: Instant::now(),
        }))
    }

    /// Replaces the token (a configuration reload); `None` makes the API read-only.
    pub fn set_token(&self, token: Option<Token>) {
        *self.0.token.write().expect("token lock") = token;
    }

    pub(crate) fn token(&self) -> Option<Token> {
        self.0.token.read().expect("token lock").clone()
    }
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// One route: what it is for, whether it needs the token, and its handler.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{name}` parameters.
    pub path: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Needs `Authorization: Bearer TOKEN`.
    pub guarded: bool,
    /// Name of the JSON body it takes, if any (see [`openapi`]).
    pub body: Option<&'static str>,
    handler: MethodRouter<ApiState>,
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    summary: &'static str,
    guarded: bool,
    body: Option<&'static str>,
    handler: H,
) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        summary,
        guarded,
        body,
        handler: on(filter, handler),
    }
}

/// Every route the API serves.
#[rustfmt::skip]
pub fn routes() -> Vec<Route> {
    use Method as M;
    let (open, guarded) = (false, true);
    vec![
        route(M::GET, "/v1/status", "Node, cluster and dataplane summary", open, None, cluster::status),
        route(M::GET, "/v1/backends", "Every backend with health, weight and counters", open, None, backends::list),
        route(M::POST, "/v1/backends", "Add a backend (or replace its addresses and weight)", guarded, Some("Backend"), backends::add),
        route(M::GET, "/v1/backends/{id}", "One backend", open, None, backends::get),
        route(M::DELETE, "/v1/backends/{id}", "Remove a backend; it leaves every shard set", guarded, None, backends::remove),
        route(M::PUT, "/v1/backends/{id}/weight", "Set a backend's weight in the default table", guarded, Some("Weight"), backends::weight),
        route(M::POST, "/v1/backends/{id}/drain", "Drain a backend: no new share of the default table", guarded, None, backends::drain),
        route(M::POST, "/v1/backends/{id}/undrain", "Stop draining a backend", guarded, None, backends::undrain),
        route(M::GET, "/v1/services", "Every service with its pool, placed sessions and traffic", open, None, backends::services),
        route(M::PUT, "/v1/services/{service}/backends/{id}", "Put a backend in a service's pool, or set its weight there (0 drains it from the service)", guarded, Some("PoolWeight"), backends::join_pool),
        route(M::DELETE, "/v1/services/{service}/backends/{id}", "Take a backend out of a service's pool", guarded, None, backends::leave_pool),
        route(M::GET, "/v1/sessions", "Every known session: placement, shards, rate, forecast (query: service, class, label=NAME=VALUE[,…] to filter)", open, None, sessions::list),
        route(M::GET, "/v1/sessions/{service}/{session}", "One session with its forecast history and re-shard events", open, None, sessions::show),
        route(M::GET, "/v1/sessions/{service}/{session}/owners", "Who owns request key `key` now, and during the handoff window who owned it before (query: key)", open, None, sessions::owners),
        route(M::PUT, "/v1/sessions/{service}/{session}/placement", "Place a session on a shard set (manual re-shard)", guarded, Some("Placement"), sessions::place),
        route(M::DELETE, "/v1/sessions/{service}/{session}/placement", "Return a session to the default table", guarded, None, sessions::unplace),
        route(M::PUT, "/v1/sessions/{service}/{session}/meta", "Set a session's class and labels", guarded, Some("SessionMeta"), sessions::set_meta),
        route(M::GET, "/v1/sessions/{service}/{session}/state/{key}", "Read one key of a session's critical state (linearizable)", guarded, None, sessions::get_state),
        route(M::PUT, "/v1/sessions/{service}/{session}/state/{key}", "Write one key of a session's critical state", guarded, Some("StateValue"), sessions::put_state),
        route(M::DELETE, "/v1/sessions/{service}/{session}/state/{key}", "Delete one key of a session's critical state", guarded, None, sessions::delete_state),
        route(M::GET, "/v1/cluster", "Role, term, leader and members", open, None, cluster::cluster),
        route(M::POST, "/v1/cluster/members", "Add a node (learner, then voter unless `voter` is false)", guarded, Some("Member"), cluster::add_member),
        route(M::DELETE, "/v1/cluster/members/{id}", "Remove a node", guarded, None, cluster::remove_member),
        route(M::GET, "/v1/openapi.json", "This description", open, None, openapi::serve),
        route(M::GET, "/metrics", "Prometheus metrics (OpenMetrics text)", open, None, metrics::serve),
    ]
}

/// Required query parameters by route path: (path, name, description), for the OpenAPI
/// description (the handlers refuse a request without them with a JSON error).
pub const QUERY_PARAMS: &[(&str, &str, &str)] = &[(
    "/v1/sessions/{service}/{session}/owners",
    "key",
    "The request key (an unsigned 64-bit integer, as the shardline header carries it)",
)];

/// The API as a router over `state`, bodies limited to `body_limit` bytes. Merge other
/// routers into it to serve them on the same address.
pub fn router(state: ApiState, body_limit: usize) -> Router {
    let mut router = Router::new();
    for r in routes() {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route; see /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Logs writes at info and everything else at debug, with the status answered.
async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if method == Method::GET {
        tracing::debug!(%method, %path, status, "api");
    } else {
        tracing::info!(%method, %path, status, "api");
    }
    response
}

/// A JSON request body whose rejections (syntax, types, content type, size) are
/// [`ApiError`]s.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Path parameters whose rejections are [`ApiError`]s.
pub struct Param<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Param<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Query parameters whose rejections (an unknown parameter, a bad value) are [`ApiError`]s.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests;
